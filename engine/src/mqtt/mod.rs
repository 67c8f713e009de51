//! MQTT wire format and topic rules, independent of sessions and routing.

pub mod codec;
pub mod topic;
