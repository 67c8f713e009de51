//! One connection to an upstream broker: TCP or TLS (rustls, public roots or a private CA,
//! optional client certificate), MQTT 3.1.1 with a clean session, frames written by a task of
//! their own so that reading acknowledgements never waits on a full socket.
//!
//! MQTT 3.1.1 because every cloud broker speaks it (AWS IoT Core, Azure IoT Hub, HiveMQ
//! Cloud, Mosquitto). The session is clean: what the broker has not acknowledged is sent
//! again from the bridge's own checkpoint on the next connection, never from the broker's
//! session state, so a broker that lost its state loses nothing. Frames are encoded with
//! `mqttbytes`, the codec the tools' client uses.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mqttbytes::v4;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::{BridgeConfig, Upstream};

/// Why a connection ended or could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the broker refused the connection: {0:?}")]
    Refused(v4::ConnectReturnCode),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker closed the connection")]
    Closed,
}

/// Why the bridge's TLS could not be set up (a configuration error: the server does not start).
#[derive(Debug, thiserror::Error)]
#[error("bridge {bridge:?}: {message}")]
pub struct TlsSetupError {
    pub bridge: String,
    pub message: String,
}

/// How to reach one upstream broker.
#[derive(Clone)]
pub struct Dialer {
    pub upstream: Upstream,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    client_id: String,
    login: Option<(String, String)>,
    pub keep_alive: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("upstream", &self.upstream)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Dialer {
    pub fn new(config: &BridgeConfig, instance_id: &str) -> Result<Dialer, TlsSetupError> {
        let err = |message: String| TlsSetupError {
            bridge: config.name.clone(),
            message,
        };
        let upstream = Upstream::parse(&config.url).map_err(&err)?;
        let tls = if upstream.tls {
            Some(tls_connector(config, &upstream).map_err(err)?)
        } else {
            None
        };
        Ok(Dialer {
            tls,
            client_id: config
                .client_id
                .clone()
                .unwrap_or_else(|| format!("samos-{instance_id}-{}", config.name)),
            login: config
                .username
                .clone()
                .map(|u| (u, config.password.clone().unwrap_or_default())),
            keep_alive: Duration::from_secs(u64::from(config.keep_alive_secs)),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            upstream,
        })
    }

    /// Connects and completes CONNECT / CONNACK within the connect timeout.
    pub async fn connect(&self) -> Result<Connection, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, self.handshake())
            .await
            .map_err(|_| UpstreamError::Timeout(self.connect_timeout))?
    }

    async fn handshake(&self) -> Result<Connection, UpstreamError> {
        let addr = format!("{}:{}", self.upstream.host, self.upstream.port);
        let tcp = TcpStream::connect(
            // A bracketed IPv6 host was unbracketed by the parser.
            (self.upstream.host.as_str(), self.upstream.port),
        )
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
        };
        let mut connect = v4::Connect::new(self.client_id.as_str());
        connect.keep_alive = u16::try_from(self.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = true;
        if let Some((u, p)) = &self.login {
            connect.set_login(u.as_str(), p.as_str());
        }
        let mut frame = BytesMut::new();
        connect
            .write(&mut frame)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        stream.write_all(&frame).await?;
        stream.flush().await?;
        let mut rbuf = BytesMut::new();
        let (mut reader, writer) = tokio::io::split(stream);
        match read_packet(&mut reader, &mut rbuf).await? {
            v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success => {}
            v4::Packet::ConnAck(a) => return Err(UpstreamError::Refused(a.code)),
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "expected CONNACK, got {other:?}"
                )));
            }
        }
        let (frames, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_frames(writer, rx));
        Ok(Connection {
            reader,
            rbuf,
            frames,
            writer: Some(writer),
        })
    }
}

/// A connected session: frames go out through the writer task, packets are read here.
pub struct Connection {
    reader: ReadHalf<Box<dyn Stream>>,
    rbuf: BytesMut,
    frames: mpsc::UnboundedSender<BytesMut>,
    writer: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Connection {
    /// Queues a frame for the writer task (whose queue the in-flight window bounds).
    pub fn send(&self, frame: BytesMut) -> Result<(), UpstreamError> {
        self.frames.send(frame).map_err(|_| UpstreamError::Closed)
    }

    /// The next packet from the broker. Cancel-safe: bytes read stay in the buffer.
    pub async fn next_packet(&mut self) -> Result<v4::Packet, UpstreamError> {
        read_packet(&mut self.reader, &mut self.rbuf).await
    }

    /// A packet already read whole into the buffer, if any (no I/O).
    pub fn buffered_packet(&mut self) -> Result<Option<v4::Packet>, UpstreamError> {
        match v4::read(&mut self.rbuf, 1 << 20) {
            Ok(p) => Ok(Some(p)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(UpstreamError::Protocol(e.to_string())),
        }
    }

    /// Sends DISCONNECT and waits (briefly) for the writer to drain.
    pub async fn close(mut self) {
        let _ = self.frames.send(BytesMut::from(&[0xE0u8, 0][..]));
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.frames, closed));
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

/// Writes queued frames, as many per write as are waiting.
async fn write_frames(
    mut writer: tokio::io::WriteHalf<Box<dyn Stream>>,
    mut rx: mpsc::UnboundedReceiver<BytesMut>,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    while let Some(frame) = rx.recv().await {
        out.extend_from_slice(&frame);
        while let Ok(more) = rx.try_recv() {
            out.extend_from_slice(&more);
            if out.len() >= 256 * 1024 {
                break;
            }
        }
        writer.write_all(&out).await?;
        writer.flush().await?;
        out.clear();
    }
    let _ = writer.shutdown().await;
    Ok(())
}

async fn read_packet(
    reader: &mut ReadHalf<Box<dyn Stream>>,
    rbuf: &mut BytesMut,
) -> Result<v4::Packet, UpstreamError> {
    loop {
        match v4::read(rbuf, 1 << 20) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(UpstreamError::Protocol(e.to_string())),
        }
        if reader.read_buf(rbuf).await? == 0 {
            return Err(UpstreamError::Closed);
        }
    }
}

/// A QoS 1 PUBLISH frame.
pub fn publish_frame(topic: &str, payload: Vec<u8>, pkid: u16) -> Result<BytesMut, UpstreamError> {
    let mut p = v4::Publish::new(topic, mqttbytes::QoS::AtLeastOnce, payload);
    p.pkid = pkid;
    let mut frame = BytesMut::with_capacity(topic.len() + p.payload.len() + 8);
    p.write(&mut frame)
        .map_err(|e| UpstreamError::Protocol(format!("cannot encode a PUBLISH: {e:?}")))?;
    Ok(frame)
}

/// PINGREQ.
pub fn ping_frame() -> BytesMut {
    BytesMut::from(&[0xC0u8, 0][..])
}

/// The TLS connector (`link::tls::client_config`) and the name the broker's certificate is
/// checked against.
fn tls_connector(
    config: &BridgeConfig,
    upstream: &Upstream,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let identity = config.cert_file.as_deref().zip(config.key_file.as_deref());
    let tls = crate::link::tls::client_config(
        config.ca_file.as_deref(),
        identity,
        config.alpn.as_deref().map(str::as_bytes),
    )
    .map_err(|e| e.to_string())?;
    let name = config.server_name.clone().unwrap_or(upstream.host.clone());
    let name = ServerName::try_from(name.clone())
        .map_err(|e| format!("{name:?} is not a server name: {e}"))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(tls)), name))
}
