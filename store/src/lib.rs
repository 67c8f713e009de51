//! A Samos data directory on disk, for the process that writes it (`samos-server`), for
//! `samos mine` (which publishes its result tables the same way) and for readers beside it
//! (`samos-analytics`, and anything else that must agree on the format). Every name on disk is
//! spelled here ([`layout`]) and nowhere else:
//!
//! ```text
//! data/
//!   wal/{first sequence:020}.wal       write-ahead log segments (see [`wal`], [`record`])
//!   wal/checkpoint                     last WAL sequence whose rows are in Parquet
//!   wal/store-id                       this directory's identity (PostgreSQL records it)
//!   readings/date=YYYY-MM-DD/part-{first}-{last}.parquet   the Parquet store ([`parquet`])
//!   nodes.json                         the node registry (written whole, renamed into place)
//!   events.jsonl, rejected.jsonl       the event log and the quarantine, one JSON object a line
//! ```
//!
//! Only the server writes; readers may open any of it at any time, while the server runs.
//! Files are published whole (temporary name, fsync, rename, directory fsync), so a reader
//! never sees a partial one.
//!
//! This crate depends only on `samos-schemas` and the Arrow/Parquet crates: it must never
//! import the server, an async runtime or a network client.

pub mod file;
pub mod layout;
#[cfg(feature = "columnar")]
pub mod parquet;
#[cfg(feature = "record")]
pub mod record;
pub mod wal;
