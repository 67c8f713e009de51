//! Samos engine: MQTT listeners and sessions, the router, and (growing) the sensor-network
//! protocol and durable ingest path. The `samos` binary is a thin CLI over [`server`].
//!
//! Data flows listener → [`link::connection`] (codec, auth, keep-alive, QoS state) →
//! [`broker::router`] (subscriptions, retained, wills) → subscribers' outboxes.

pub mod api;
pub mod auth;
pub mod broker;
pub mod client;
pub mod config;
pub mod ingest;
pub mod link;
pub mod loadgen;
pub mod metrics;
pub mod mine;
pub mod mqtt;
pub mod protocol;
pub mod server;
pub mod simulate;
