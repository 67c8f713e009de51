//! Untrusted topic names into the sensor-network topic grammar: never panics, and whatever
//! parses rebuilds into the same topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_schemas::topic::{self, Location, TopicKind};

fuzz_target!(|data: &[u8]| {
    let Ok(t) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(p) = topic::parse(t) {
        let location = Location::from_levels(p.location);
        let rebuilt = match p.kind {
            TopicKind::Data { sensor } => topic::data_topic(p.network, p.node_id, &location, sensor),
            TopicKind::Control => topic::control_topic(p.network, p.node_id, &location),
        };
        assert_eq!(rebuilt, topic::normalize(t));
    }
});
