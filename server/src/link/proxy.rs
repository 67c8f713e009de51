//! Reading the PROXY protocol header of a load-balanced listener's connection: exactly the
//! header's bytes, as `samos_mqtt::proxy::needed` delimits them, so the MQTT stream behind it
//! is untouched; then the client address it names (`samos_mqtt::proxy::parse`).

use std::net::SocketAddr;

use samos_mqtt::proxy::{self, Needed, ProxyError};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a connection's PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header at the start of `stream`: the client's address, or `None` for the
/// balancer's own connections (v2 `LOCAL`, v1 `UNKNOWN`).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ReadError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match proxy::needed(&buf)? {
            Needed::Complete(n) => return Ok(proxy::parse(&buf[..n])?.source),
            Needed::More(more) => {
                let start = buf.len();
                buf.resize(start + more, 0);
                stream.read_exact(&mut buf[start..]).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn the_header_is_taken_and_the_mqtt_bytes_behind_it_are_left() {
        let (mut client, mut server) = tokio::io::duplex(256);
        client
            .write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 40001 1883\r\n\x10\x0c")
            .await
            .unwrap();
        let source = read_header(&mut server).await.unwrap();
        assert_eq!(source, Some("192.0.2.7:40001".parse().unwrap()));
        let mut rest = [0u8; 2];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x10\x0c");

        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(b"\x10\x0c\x00\x04MQTT").await.unwrap();
        assert!(matches!(
            read_header(&mut server).await,
            Err(ReadError::Proxy(ProxyError::Missing))
        ));
    }
}
