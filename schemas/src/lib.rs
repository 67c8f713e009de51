//! The one source of truth for Samos's data model: the sensor-network topic and payload
//! grammar ([`topic`], [`payload`]) and the node-configuration XSD. The Arrow schemas of
//! `readings`/`nodes`/`events` and the PostgreSQL DDL join them with the durable-ingest work.
//!
//! `engine`, `analytics` and `offload` depend on this crate, never the reverse.

pub mod payload;
pub mod topic;

/// The node-configuration schema (version 1.0), as published in `schemas/xsd/`.
pub const NODE_CONFIG_XSD: &str = include_str!("../xsd/node-configuration-1.0.xsd");

/// Version of [`NODE_CONFIG_XSD`].
pub const NODE_CONFIG_XSD_VERSION: &str = "1.0";

/// Target namespace of node configurations (the paper's, kept so its nodes join unchanged).
pub const NODE_CONFIG_NAMESPACE: &str = "https://www.w3schools.com";
