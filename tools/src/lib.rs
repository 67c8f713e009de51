//! Samos's MQTT tools, usable against Samos or any MQTT broker: a small async client
//! ([`client`]), the load generator behind `samos bench` and the benchmarks ([`loadgen`]), and
//! virtual sensor nodes speaking the paper's protocol ([`simulate`]); lifting the open-files
//! limit a crowd of connections needs ([`fd_limit`]).
//!
//! Client-side frames are written with `mqttbytes` directly, independent of the server's
//! codec, so a codec bug cannot hide behind a matching client bug. This crate builds on
//! `samos-schemas` (topics, payloads, node documents, severity rules) only: it must never
//! import the server.

pub mod client;
pub mod fd_limit;
pub mod loadgen;
pub mod simulate;
