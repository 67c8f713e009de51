//! The one source of truth for Samos's data model.
//!
//! The node-configuration XSD, the Arrow schemas of `readings`/`nodes`/`events` and the
//! PostgreSQL DDL land here with the sensor-network protocol and durable-ingest work
//! (issues 3 and 4); `engine`, `analytics` and `offload` depend on this crate, never the reverse.
