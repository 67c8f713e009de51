//! A small MQTT 3.1.1 client (TCP or TLS) for Samos's own tools — the load generator and the
//! node simulator — usable against any broker. Frames are written and read with `mqttbytes`
//! directly, independent of the server's codec.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqttbytes::{QoS, v4};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connection refused by the server (CONNACK {0:?})")]
    Refused(v4::ConnectReturnCode),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// TLS settings for a client.
#[derive(Clone)]
pub struct ClientTls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Trusts the PEM CA at `ca` and checks the server as `name`.
    pub fn from_ca(ca: &std::path::Path, name: &str) -> Result<ClientTls, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(|e| e.to_string())?,
        })
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub addr: SocketAddr,
    pub tls: Option<ClientTls>,
    pub credentials: Option<(String, String)>,
    pub keep_alive: u16,
}

/// A TCP or TLS byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens a connection and completes CONNECT/CONNACK (clean session).
pub async fn open(
    options: &ConnectOptions,
    client_id: &str,
) -> Result<Box<dyn Stream>, ClientError> {
    let tcp = TcpStream::connect(options.addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: options.addr,
            source,
        })?;
    tcp.set_nodelay(true)?;
    let mut stream: Box<dyn Stream> = match &options.tls {
        None => Box::new(tcp),
        Some(tls) => Box::new(tls.connector.connect(tls.server_name.clone(), tcp).await?),
    };
    let mut connect = v4::Connect::new(client_id);
    connect.keep_alive = options.keep_alive;
    if let Some((u, p)) = &options.credentials {
        connect.set_login(u, p);
    }
    let mut buf = BytesMut::new();
    connect
        .write(&mut buf)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    stream.write_all(&buf).await?;
    let mut rbuf = BytesMut::new();
    match read_packet(&mut stream, &mut rbuf).await? {
        v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success => Ok(stream),
        v4::Packet::ConnAck(a) => Err(ClientError::Refused(a.code)),
        other => Err(ClientError::Protocol(format!(
            "expected CONNACK, got {other:?}"
        ))),
    }
}

/// Reads one whole packet.
pub async fn read_packet(
    stream: &mut Box<dyn Stream>,
    rbuf: &mut BytesMut,
) -> Result<v4::Packet, ClientError> {
    loop {
        match v4::read(rbuf, 1 << 20) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(ClientError::Protocol(e.to_string())),
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(ClientError::Protocol("connection closed".into()));
        }
    }
}

/// A connected client with one request in flight at a time; messages that arrive meanwhile
/// are queued for [`Client::next_message`].
pub struct Client {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    next_pkid: u16,
    inbox: VecDeque<(String, Bytes)>,
}

impl Client {
    pub async fn connect(options: &ConnectOptions, client_id: &str) -> Result<Client, ClientError> {
        Ok(Client {
            stream: open(options, client_id).await?,
            rbuf: BytesMut::new(),
            next_pkid: 0,
            inbox: VecDeque::new(),
        })
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
        self.next_pkid
    }

    async fn write(
        &mut self,
        f: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>,
    ) -> Result<(), ClientError> {
        let mut buf = BytesMut::new();
        f(&mut buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// Reads one packet, answering and queueing incoming PUBLISHes; returns the others.
    async fn pump(&mut self) -> Result<Option<v4::Packet>, ClientError> {
        let packet = read_packet(&mut self.stream, &mut self.rbuf).await?;
        self.handle(packet).await
    }

    async fn handle(&mut self, packet: v4::Packet) -> Result<Option<v4::Packet>, ClientError> {
        match packet {
            v4::Packet::Publish(p) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => self.write(|b| v4::PubAck::new(p.pkid).write(b)).await?,
                    QoS::ExactlyOnce => self.write(|b| v4::PubRec::new(p.pkid).write(b)).await?,
                }
                self.inbox.push_back((p.topic, p.payload));
                Ok(None)
            }
            v4::Packet::PubRel(r) => {
                self.write(|b| v4::PubComp::new(r.pkid).write(b)).await?;
                Ok(None)
            }
            other => Ok(Some(other)),
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), ClientError> {
        let pkid = self.pkid();
        let mut s = v4::Subscribe::new(filter, qos);
        s.pkid = pkid;
        self.write(|b| s.write(b)).await?;
        loop {
            if let Some(v4::Packet::SubAck(a)) = self.pump().await?
                && a.pkid == pkid
            {
                return Ok(());
            }
        }
    }

    /// Publishes and waits for the whole QoS exchange to finish.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
    ) -> Result<(), ClientError> {
        let mut p = v4::Publish::new(topic, qos, payload.to_vec());
        if qos == QoS::AtMostOnce {
            return self.write(|b| p.write(b)).await;
        }
        let pkid = self.pkid();
        p.pkid = pkid;
        self.write(|b| p.write(b)).await?;
        loop {
            match self.pump().await? {
                Some(v4::Packet::PubAck(a)) if a.pkid == pkid && qos == QoS::AtLeastOnce => {
                    return Ok(());
                }
                Some(v4::Packet::PubRec(r)) if r.pkid == pkid => {
                    self.write(|b| v4::PubRel::new(pkid).write(b)).await?;
                }
                Some(v4::Packet::PubComp(c)) if c.pkid == pkid => return Ok(()),
                _ => {}
            }
        }
    }

    /// The next message received, waiting at most `timeout`.
    pub async fn next_message(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(String, Bytes)>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Ok(Some(m));
            }
            match v4::read(&mut self.rbuf, 1 << 20) {
                Ok(p) => {
                    self.handle(p).await?;
                    continue;
                }
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            // Only the read is timed: an answer is never cut off half-written.
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(ClientError::Protocol("connection closed".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends PINGREQ (keeps the connection alive while idle).
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.stream.write_all(&[0xC0, 0]).await?;
        Ok(())
    }

    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.stream.write_all(&[0xE0, 0]).await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// The underlying stream and read buffer, for callers that take over the connection.
    pub fn into_parts(self) -> (Box<dyn Stream>, BytesMut) {
        (self.stream, self.rbuf)
    }
}
