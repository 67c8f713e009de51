//! The PROXY protocol preamble (HAProxy's `send-proxy` / `send-proxy-v2`) that a TCP load
//! balancer writes before the client's first MQTT byte, naming the client's real address.
//!
//! Sans-IO like the rest of this crate: [`needed`] says how many bytes of the header are still
//! missing from what has been read so far, so a listener reads exactly the header and not one
//! byte of the MQTT stream behind it; [`parse`] decodes a complete header (through the `ppp`
//! crate) into the source address it names. Version 1 (text) and 2 (binary) are accepted.
//!
//! Invariants: [`needed`] never asks for more than [`MAX_HEADER`] bytes in total, and never
//! for bytes past the end of the header; neither function panics on any input (fuzzed:
//! `fuzz/fuzz_targets/proxy_header.rs`).

use std::net::SocketAddr;

/// Version 2's 12-byte signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Version 1's longest line (the specification's 107 bytes, CRLF included).
const V1_MAX: usize = 107;
/// Version 2's fixed part: signature, version/command, family/protocol, length.
const V2_FIXED: usize = 16;
/// The largest header accepted: version 2's fixed part and the address block and TLVs a
/// balancer sends (HAProxy: well under 512 bytes).
pub const MAX_HEADER: usize = V2_FIXED + 1024;

/// What a listener must do next with the bytes it has read (`buf`, from the connection's
/// first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Read exactly this many more bytes, then ask again.
    More(usize),
    /// The header is the first this-many bytes of `buf`: hand them to [`parse`].
    Complete(usize),
}

/// Why a connection's preamble is not a PROXY header the listener accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// How many more bytes the header needs, given the first `buf.len()` bytes of the connection.
pub fn needed(buf: &[u8]) -> Result<Needed, ProxyError> {
    // Until the first six bytes are in, ask for just enough to tell the versions apart:
    // "PROXY " (v1) or the start of v2's signature.
    if buf.len() < V1_PREFIX.len() {
        let seen = buf.len();
        let v1 = V1_PREFIX.starts_with(buf);
        let v2 = V2_SIGNATURE.starts_with(buf);
        return if v1 || v2 {
            Ok(Needed::More(V1_PREFIX.len() - seen))
        } else {
            Err(ProxyError::Missing)
        };
    }
    if buf.starts_with(V1_PREFIX) {
        // A line ending in CRLF; read one byte at a time, so nothing past it is taken.
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(Needed::Complete(end + 2));
        }
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(Needed::More(1))
        };
    }
    let signature = &buf[..buf.len().min(V2_SIGNATURE.len())];
    if !V2_SIGNATURE.starts_with(signature) {
        return Err(ProxyError::Missing);
    }
    if buf.len() < V2_FIXED {
        return Ok(Needed::More(V2_FIXED - buf.len()));
    }
    let total = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if total > MAX_HEADER {
        return Err(ProxyError::TooLong);
    }
    Ok(match total.checked_sub(buf.len()) {
        Some(0) | None => Needed::Complete(total),
        Some(more) => Needed::More(more),
    })
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address as the balancer saw it; `None` for a connection the balancer made
    /// on its own behalf (v2 `LOCAL`, v1 `UNKNOWN`: health checks), or a non-IP family.
    pub source: Option<SocketAddr>,
}

/// Decodes the complete header `header` (exactly the bytes [`needed`] delimited).
pub fn parse(header: &[u8]) -> Result<ProxyHeader, ProxyError> {
    use ppp::v1;
    use ppp::v2;
    let malformed = |e: &dyn std::fmt::Display| ProxyError::Malformed(e.to_string());
    if header.starts_with(V1_PREFIX) {
        let parsed = v1::Header::try_from(header).map_err(|e| malformed(&e))?;
        let source = match parsed.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        };
        return Ok(ProxyHeader { source });
    }
    let parsed = v2::Header::try_from(header).map_err(|e| malformed(&e))?;
    let source = match (parsed.command, parsed.addresses) {
        (v2::Command::Local, _) => None,
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (v2::Command::Proxy, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
    };
    Ok(ProxyHeader { source })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `stream` to [`needed`] the way a listener does: reading exactly what it asks.
    /// Returns the header's length, or the error.
    fn frame(stream: &[u8]) -> Result<usize, ProxyError> {
        let mut read = 0;
        loop {
            match needed(&stream[..read])? {
                Needed::Complete(n) => return Ok(n),
                Needed::More(more) => {
                    assert!(more > 0);
                    read += more;
                    assert!(read <= MAX_HEADER, "asked past the largest header");
                    if read > stream.len() {
                        return Err(ProxyError::Missing);
                    }
                }
            }
        }
    }

    fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn version_1_and_2_headers_are_framed_exactly_and_name_the_client() {
        let mqtt = b"\x10\x0c\x00\x04MQTT";
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 40001 1883\r\n";
        let stream = [line.as_slice(), mqtt].concat();
        assert_eq!(frame(&stream), Ok(line.len()));
        assert_eq!(
            parse(line).unwrap().source,
            Some("192.0.2.7:40001".parse().unwrap())
        );

        let src: SocketAddr = "[2001:db8::5]:40002".parse().unwrap();
        let header = v2(src, "[2001:db8::1]:1883".parse().unwrap());
        let stream = [header.as_slice(), mqtt].concat();
        assert_eq!(frame(&stream), Ok(header.len()));
        assert_eq!(parse(&header).unwrap().source, Some(src));

        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().source, None);
        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(frame(&local), Ok(local.len()));
        assert_eq!(parse(&local).unwrap().source, None);
    }

    #[test]
    fn a_client_speaking_mqtt_directly_is_told_apart_at_once() {
        assert_eq!(needed(b"\x10"), Err(ProxyError::Missing));
        assert_eq!(needed(b"PROXY"), Ok(Needed::More(1)));
        assert_eq!(needed(b"PROXYX"), Err(ProxyError::Missing));
        assert_eq!(needed(b""), Ok(Needed::More(6)));
        let long = [b"PROXY ".as_slice(), &[b'1'; V1_MAX]].concat();
        assert_eq!(frame(&long), Err(ProxyError::TooLong));
        assert!(matches!(
            parse(b"PROXY TCP4 x y 1 2\r\n"),
            Err(ProxyError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn no_input_panics_or_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(n) = frame(&bytes) {
                prop_assert!(n <= bytes.len() && n <= MAX_HEADER);
                let _ = parse(&bytes[..n]);
            }
        }

        #[test]
        fn any_ipv4_client_round_trips(a in any::<[u8; 4]>(), port in 1u16.., tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let src = SocketAddr::from((a, port));
            let header = v2(src, "10.0.0.1:1883".parse().unwrap());
            let stream = [header.as_slice(), &tail].concat();
            prop_assert_eq!(frame(&stream), Ok(header.len()));
            prop_assert_eq!(parse(&header).unwrap().source, Some(src));
        }
    }
}
