//! Untrusted bytes into the MQTT decoder: CONNECT first (every protocol version), then the
//! stream that follows, in arbitrary chunks. Must never panic, loop or over-allocate.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use samos_mqtt::codec::{Codec, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::new();
    let mut version = None;
    for chunk in rest.chunks(usize::from(split).max(1)) {
        buf.extend_from_slice(chunk);
        match version {
            None => match Codec::decode_connect(&mut buf, 4096) {
                Ok(Some((v, _))) => version = Some(v),
                Ok(None) => continue,
                Err(_) => return,
            },
            Some(_) => {}
        }
        let codec = Codec {
            version: version.unwrap_or(ProtocolVersion::V5),
            max_incoming: 4096,
            max_outgoing: usize::MAX,
        };
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
