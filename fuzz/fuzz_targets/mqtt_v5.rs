//! Untrusted bytes into the MQTT 5.0 decoder after CONNECT: properties, reason codes, user
//! properties and subscription options as a client may send them (the first byte picks the
//! chunk size). Must never panic, loop or allocate past the packet limit.
#![no_main]

use bytes::BytesMut;
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
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(usize::from(first).max(1)) {
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
