//! The end-to-end tests: each module starts the real `samos` binary (and the real peers it
//! meets: clients, PostgreSQL, Garage, HAProxy, Chromium…) on ephemeral loopback ports.
//!
//! They are one test binary, not one per file: every integration-test binary links the
//! whole dependency tree again (about 77 MB each in the dev profile), so 23 of them cost
//! 1.8 GB of disk and 23 links on every cold build. Run one module with
//! `cargo test -p samos --test e2e storage::`, one test by its full path.

mod common;

mod alerts;
mod balancer;
mod bridge;
mod cli;
mod cluster;
mod dashboard;
mod faults;
mod hostile;
mod lake;
mod loadgen;
mod mine;
mod mosquitto_clients;
mod nodes;
mod operator;
mod paho;
mod protocol;
mod rust_client;
mod scale_out;
mod sessions;
mod simulate;
mod sql;
mod sql_endpoints;
mod storage;
