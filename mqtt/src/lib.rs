//! MQTT for Samos without I/O: the wire codec ([`codec`]) that frames bytes into packets for
//! MQTT 3.1, 3.1.1 and 5.0 and back, the topic rules ([`topic`]) for names and filters, and
//! reason codes across packet types ([`reason`]); also the PROXY protocol preamble a load
//! balancer writes before them ([`proxy`]).
//!
//! This crate owns no sockets, no runtime and no session state: it turns bytes into values and
//! values into bytes, so it can be property-tested and fuzzed alone. It must never import
//! tokio, a Samos crate, or anything that does I/O; the server drives it.

pub mod codec;
pub mod proxy;
pub mod reason;
pub mod topic;
