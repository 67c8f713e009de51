//! The Samos server: everything `samos serve` runs, in the order a reading meets it.
//!
//! ```text
//! link (listeners, TLS, one task per connection: handshake, session loop, outgoing QoS)
//!   └─▶ broker (router task: subscriptions, retained, wills, offline and durable sessions)
//!   └─▶ protocol (node admission, registry, reading checks, control replies)
//!         └─▶ ingest (bounded queue → batcher → WAL fsync → acks released → Parquet, PostgreSQL)
//! api (HTTP: the JSON API, SQL, the dashboard and its live stream, fed by `live`)
//! sql (the PostgreSQL wire protocol and Arrow Flight SQL over the same read-only tables)
//! alerts (rules over the latest readings, alert states, notifications through a durable outbox)
//! bridge (readings, events and alerts forwarded to upstream brokers from the WAL and event log)
//! auth, config, metrics, clock, refusal, disk_space, memory: used by all
//! ```
//!
//! Imports run down that picture: `link` may use everything below it; `protocol` uses
//! `broker` (to answer nodes) and `ingest`'s types; `ingest` uses only `broker::durable` (the
//! session state it makes durable); `broker` uses none of them. This crate builds on
//! `samos-mqtt` (the wire codec), `samos-schemas`, `samos-store` and `samos-analytics`, and
//! must never import the tools (client, load generator, simulator), the mining backends or
//! anything of the command line: `cargo build -p samos-server` compiles no GPU, plotting or
//! line-editing crate.
//!
//! The path of one reading, file by file, is in ARCHITECTURE.md.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod bridge;
pub mod broker;
pub mod clock;
pub mod config;
pub mod disk_space;
pub mod ingest;
pub mod link;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod protocol;
pub mod refusal;
pub mod server;
pub mod sql;
