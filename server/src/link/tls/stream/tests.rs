//! The unbuffered TLS stream against rustls's own client (tokio-rustls) over loopback, with
//! certificates made by the openssl command line: data both ways in records of every size,
//! a reader with a small buffer, a client certificate, close_notify both ways, a refused
//! protocol, and no buffer held while the connection waits.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientStream;

use super::TlsStream;
use crate::config::TlsConfig;
use crate::link::tls::{client_config, server_config};

/// A CA, a server certificate for 127.0.0.1 and a client certificate (CN `node-7`), P-256.
fn certificates(dir: &Path) {
    let script = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -days 2 -subj "/CN=Test CA" -keyout ca.key -out ca.crt \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req $ec -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile server.ext -out server.crt 2>/dev/null
openssl req $ec -subj "/CN=node-7" -keyout client.key -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile client.ext -out client.crt 2>/dev/null
"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory holding the certificates of [`certificates`].
fn certified_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    dir
}

struct Pair {
    server: TlsStream,
    client: ClientStream<TcpStream>,
}

/// One handshake: the server side through [`TlsStream::accept`], the client through
/// tokio-rustls offering `alpn`, with its certificate when `with_cert`.
async fn connect(dir: &Path, alpn: &[u8], with_cert: bool) -> Result<Pair, String> {
    let server = server_config(
        &TlsConfig {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: Some(dir.join("ca.crt")),
            require_client_cert: false,
            use_identity_as_username: false,
        },
        b"mqtt",
    )
    .unwrap();
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let identity = with_cert.then_some((cert.as_path(), key.as_path()));
    let client = client_config(Some(&dir.join("ca.crt")), identity, Some(alpn)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        TlsStream::accept(tcp, server).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let client = TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("client: {e}"));
    let server = accepting.await.unwrap().map_err(|e| format!("server: {e}"));
    match (server, client) {
        (Ok(server), Ok(client)) => Ok(Pair { server, client }),
        (server, client) => Err(format!("{:?}; {:?}", server.err(), client.err())),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn data_both_ways_in_records_of_every_size() {
    let dir = certified_dir();
    let Pair {
        mut server,
        mut client,
    } = connect(dir.path(), b"mqtt", false).await.unwrap();
    // 1 byte, a small packet, exactly one record, one record and a byte, many records.
    for (i, len) in [1, 37, 16_384, 16_385, 300_000].into_iter().enumerate() {
        let up = pattern(len, i as u8);
        let down = pattern(len, 100 + i as u8);
        let (sent, received) = tokio::join!(
            async {
                client.write_all(&up).await.unwrap();
                client.flush().await.unwrap();
                let mut back = vec![0; len];
                client.read_exact(&mut back).await.unwrap();
                back
            },
            async {
                // The connection's quiet read is 256 bytes: most records do not fit.
                let mut got = Vec::with_capacity(len);
                let mut small = [0u8; 256];
                while got.len() < len {
                    let n = server.read(&mut small).await.unwrap();
                    assert!(n > 0, "EOF after {} of {len}", got.len());
                    got.extend_from_slice(&small[..n]);
                }
                server.write_all(&down).await.unwrap();
                server.flush().await.unwrap();
                got
            }
        );
        assert_eq!(received, up, "client to server, {len} bytes");
        assert_eq!(sent, down, "server to client, {len} bytes");
        assert_eq!(
            server.buffered_capacity(),
            0,
            "after {len} bytes each way, a waiting connection holds no buffer"
        );
    }
}

#[tokio::test]
async fn the_client_certificate_and_close_notify_both_ways() {
    let dir = certified_dir();
    let Pair {
        mut server,
        mut client,
    } = connect(dir.path(), b"mqtt", true).await.unwrap();
    let chain = server.peer_certificates().expect("the client's chain");
    assert_eq!(
        crate::link::tls::common_name(&chain[0]).as_deref(),
        Some("node-7")
    );

    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words", "data before close_notify, then EOF");

    server.write_all(b"goodbye").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(
        got, b"goodbye",
        "the client reads to a clean close_notify, not a truncation"
    );
}

#[tokio::test]
async fn a_client_naming_another_protocol_is_refused_with_an_alert() {
    let dir = certified_dir();
    let Err(e) = connect(dir.path(), b"http/1.1", false).await else {
        panic!("a client naming http/1.1 was served");
    };
    assert!(
        e.contains("client: received fatal alert: NoApplicationProtocol"),
        "the client hears why: {e}"
    );
}

#[tokio::test]
async fn a_peer_that_closes_mid_handshake_is_an_error_not_a_hang() {
    let dir = certified_dir();
    let config = server_config(
        &TlsConfig {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: None,
            require_client_cert: false,
            use_identity_as_username: false,
        },
        b"mqtt",
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    // The start of a ClientHello record, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01])
        .await
        .unwrap();
    drop(tcp);
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        TlsStream::accept(accepted, config),
    )
    .await
    .expect("no hang");
    assert!(result.is_err());
}
