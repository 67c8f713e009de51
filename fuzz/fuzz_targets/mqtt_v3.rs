//! Untrusted bytes into the MQTT 3.1 / 3.1.1 decoder after CONNECT (the first byte picks the
//! version and the chunk size the stream arrives in). Must never panic, loop or allocate past
//! the packet limit.
#![no_main]

use bytes::BytesMut;
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
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(usize::from(first >> 1).max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 4096 + 5, "a partial packet larger than the limit is buffered");
    }
});
