//! A Samos data directory on disk, for the process that writes it (`engine`) and for readers
//! beside it (`analytics`, and anything else that must agree on the format):
//!
//! ```text
//! data/
//!   wal/{first sequence:020}.wal       write-ahead log segments (see [`wal`], [`record`])
//!   wal/checkpoint                     last WAL sequence whose rows are in Parquet
//!   wal/store-id                       this directory's identity (PostgreSQL records it)
//!   readings/date=YYYY-MM-DD/part-{first}-{last}.parquet   the Parquet store ([`layout`])
//!   nodes.json                         the node registry (written whole, renamed into place)
//!   events.jsonl, rejected.jsonl       the event log and the quarantine, one JSON object a line
//! ```
//!
//! Only the engine writes; readers may open any of it at any time, while the server runs.

pub mod layout;
pub mod record;
pub mod wal;
