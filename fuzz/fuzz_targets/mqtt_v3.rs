//! Untrusted bytes into the MQTT 3.1 / 3.1.1 decoder after CONNECT (the first byte picks the
//! version and the chunk size the stream arrives in). Must never panic, loop or allocate past
//! the packet limit.
#![no_main]

#[path = "common/stream.rs"]
mod stream;

use libfuzzer_sys::fuzz_target;
use samos_mqtt::codec::{Codec, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let version = if first & 1 == 0 {
        ProtocolVersion::V3_1
    } else {
        ProtocolVersion::V3_1_1
    };
    let codec = Codec {
        version,
        max_incoming: 4096,
        max_outgoing: usize::MAX,
    };
    stream::decode_in_chunks(&codec, rest, usize::from(first >> 1));
});
