//! Shared by the MQTT targets: a byte stream fed to a decoder in chunks, as a socket would.

use bytes::BytesMut;
use samos_mqtt::codec::Codec;

/// Decodes `bytes` arriving `chunk` bytes at a time until the stream ends or is refused;
/// asserts a partial packet never buffers past the packet limit.
pub fn decode_in_chunks(codec: &Codec, bytes: &[u8], chunk: usize) {
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            buf.len() <= codec.max_incoming + 5,
            "a partial packet larger than the limit is buffered"
        );
    }
}
