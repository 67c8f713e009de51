//! Untrusted bytes into the MQTT 5.0 decoder after CONNECT: properties, reason codes, user
//! properties and subscription options as a client may send them (the first byte picks the
//! chunk size). Must never panic, loop or allocate past the packet limit.
#![no_main]

#[path = "common/stream.rs"]
mod stream;

use libfuzzer_sys::fuzz_target;
use samos_mqtt::codec::{Codec, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let codec = Codec {
        version: ProtocolVersion::V5,
        max_incoming: 4096,
        max_outgoing: usize::MAX,
    };
    stream::decode_in_chunks(&codec, rest, usize::from(first));
});
