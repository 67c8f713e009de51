//! A load generator usable against any MQTT 3.1.1 server: N publishers × M messages with K in
//! flight each, and one counting subscriber. It counts what the subscriber actually receives,
//! because some brokers acknowledge messages they then drop.
//!
//! Client-side frames are written with `mqttbytes` directly, independent of Samos's codec.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
}

/// TLS settings for the generator's clients.
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

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub tls: Option<ClientTls>,
    pub credentials: Option<(String, String)>,
    pub publishers: usize,
    pub messages_per_publisher: usize,
    pub qos: QoS,
    /// Messages each publisher keeps unacknowledged (1 = paper style, wait for each exchange).
    pub inflight: usize,
    pub payload_bytes: usize,
    /// Topic prefix; publisher i sends to `{prefix}/{i}`.
    pub topic_prefix: String,
    /// Run a subscriber on `{prefix}/#` and count what it receives.
    pub subscriber: bool,
    /// Give up waiting for the subscriber after this long without a message.
    pub idle_timeout: Duration,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub published: u64,
    /// Messages whose QoS exchange completed (QoS 0: written).
    pub acknowledged: u64,
    pub received: u64,
    pub connect_seconds: f64,
    /// From the first publish to the last acknowledgement.
    pub publish_seconds: f64,
    /// From the first publish to the last message received by the subscriber.
    pub delivery_seconds: f64,
    /// Acknowledgement latency percentiles in milliseconds (p50, p90, p99, max).
    pub ack_latency_ms: [f64; 4],
}

impl LoadReport {
    pub fn acknowledged_per_second(&self) -> f64 {
        self.acknowledged as f64 / self.publish_seconds.max(1e-9)
    }
    pub fn received_per_second(&self) -> f64 {
        self.received as f64 / self.delivery_seconds.max(1e-9)
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn open(spec: &LoadSpec, client_id: &str) -> Result<Box<dyn Stream>, LoadError> {
    let tcp = TcpStream::connect(spec.addr)
        .await
        .map_err(|source| LoadError::Connect {
            addr: spec.addr,
            source,
        })?;
    tcp.set_nodelay(true)?;
    let mut stream: Box<dyn Stream> = match &spec.tls {
        None => Box::new(tcp),
        Some(tls) => Box::new(tls.connector.connect(tls.server_name.clone(), tcp).await?),
    };
    let mut connect = v4::Connect::new(client_id);
    connect.keep_alive = 60;
    if let Some((u, p)) = &spec.credentials {
        connect.set_login(u, p);
    }
    let mut buf = BytesMut::new();
    connect
        .write(&mut buf)
        .map_err(|e| LoadError::Protocol(e.to_string()))?;
    stream.write_all(&buf).await?;
    let mut rbuf = BytesMut::new();
    match read_packet(&mut stream, &mut rbuf).await? {
        v4::Packet::ConnAck(a) if a.code == v4::ConnectReturnCode::Success => Ok(stream),
        v4::Packet::ConnAck(a) => Err(LoadError::Refused(a.code)),
        other => Err(LoadError::Protocol(format!(
            "expected CONNACK, got {other:?}"
        ))),
    }
}

async fn read_packet(
    stream: &mut Box<dyn Stream>,
    rbuf: &mut BytesMut,
) -> Result<v4::Packet, LoadError> {
    loop {
        match v4::read(rbuf, 1 << 20) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(LoadError::Protocol(e.to_string())),
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(LoadError::Protocol("connection closed".into()));
        }
    }
}

struct Shared {
    acknowledged: AtomicU64,
    received: AtomicU64,
    last_received: std::sync::Mutex<Option<Instant>>,
}

/// Runs the load and reports.
pub async fn run(spec: LoadSpec) -> Result<LoadReport, LoadError> {
    let shared = Arc::new(Shared {
        acknowledged: AtomicU64::new(0),
        received: AtomicU64::new(0),
        last_received: std::sync::Mutex::new(None),
    });
    let connect_start = Instant::now();
    let expected = (spec.publishers * spec.messages_per_publisher) as u64;

    let subscriber = if spec.subscriber {
        let mut s = open(&spec, &format!("loadgen-sub-{}", std::process::id())).await?;
        let mut buf = BytesMut::new();
        let mut sub = v4::Subscribe::new(format!("{}/#", spec.topic_prefix), spec.qos);
        sub.pkid = 1;
        sub.write(&mut buf)
            .map_err(|e| LoadError::Protocol(e.to_string()))?;
        s.write_all(&buf).await?;
        let mut rbuf = BytesMut::new();
        match read_packet(&mut s, &mut rbuf).await? {
            v4::Packet::SubAck(_) => {}
            other => {
                return Err(LoadError::Protocol(format!(
                    "expected SUBACK, got {other:?}"
                )));
            }
        }
        Some((s, rbuf))
    } else {
        None
    };

    let mut streams = Vec::with_capacity(spec.publishers);
    for i in 0..spec.publishers {
        streams.push(open(&spec, &format!("loadgen-{}-{i}", std::process::id())).await?);
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();

    let start = Instant::now();
    let sub_task = subscriber.map(|(stream, rbuf)| {
        let shared = shared.clone();
        let idle = spec.idle_timeout;
        tokio::spawn(subscribe_loop(stream, rbuf, expected, idle, shared))
    });
    let mut tasks = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let spec = spec.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            publish_loop(stream, &spec, i, shared).await
        }));
    }
    let mut latencies = Vec::new();
    let mut published = 0;
    for t in tasks {
        let (sent, lat) = t
            .await
            .map_err(|e| LoadError::Protocol(format!("publisher task: {e}")))??;
        published += sent;
        latencies.extend(lat);
    }
    let publish_seconds = start.elapsed().as_secs_f64();
    if let Some(t) = sub_task {
        t.await
            .map_err(|e| LoadError::Protocol(format!("subscriber task: {e}")))??;
    }
    let last = *shared.last_received.lock().expect("last");
    let delivery_seconds = last.map_or(0.0, |l| l.duration_since(start).as_secs_f64());
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1e3
    };
    Ok(LoadReport {
        published,
        acknowledged: shared.acknowledged.load(Relaxed),
        received: shared.received.load(Relaxed),
        connect_seconds,
        publish_seconds,
        delivery_seconds,
        ack_latency_ms: [pct(0.5), pct(0.9), pct(0.99), pct(1.0)],
    })
}

async fn publish_loop(
    mut stream: Box<dyn Stream>,
    spec: &LoadSpec,
    index: usize,
    shared: Arc<Shared>,
) -> Result<(u64, Vec<Duration>), LoadError> {
    let topic = format!("{}/{index}", spec.topic_prefix);
    let payload = vec![b'x'; spec.payload_bytes];
    let total = spec.messages_per_publisher;
    let window = spec.inflight.max(1);
    let mut sent = 0usize;
    let mut done = 0usize;
    // Send time per packet id (ids cycle through 1..=window).
    let mut sent_at: Vec<Option<Instant>> = vec![None; window + 1];
    let mut latencies = Vec::with_capacity(if spec.qos == QoS::AtMostOnce {
        0
    } else {
        total
    });
    let mut wbuf = BytesMut::with_capacity(window * (spec.payload_bytes + topic.len() + 8));
    let mut rbuf = BytesMut::with_capacity(8192);
    let mut free: Vec<u16> = (1..=window as u16).rev().collect();
    let err = |e: mqttbytes::Error| LoadError::Protocol(e.to_string());

    while done < total {
        while sent < total && (spec.qos == QoS::AtMostOnce || !free.is_empty()) {
            let mut p = v4::Publish::new(topic.as_str(), spec.qos, payload.clone());
            if spec.qos != QoS::AtMostOnce {
                let id = free.pop().expect("checked");
                p.pkid = id;
                sent_at[id as usize] = Some(Instant::now());
            }
            p.write(&mut wbuf).map_err(err)?;
            sent += 1;
            if spec.qos == QoS::AtMostOnce && wbuf.len() > 64 * 1024 {
                break;
            }
        }
        if !wbuf.is_empty() {
            stream.write_all(&wbuf).await?;
            wbuf.clear();
        }
        if spec.qos == QoS::AtMostOnce {
            done = sent;
            continue;
        }
        if stream.read_buf(&mut rbuf).await? == 0 {
            return Err(LoadError::Protocol("server closed the connection".into()));
        }
        loop {
            let packet = match v4::read(&mut rbuf, 1 << 20) {
                Ok(p) => p,
                Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(err(e)),
            };
            let finished = match packet {
                v4::Packet::PubAck(a) if spec.qos == QoS::AtLeastOnce => Some(a.pkid),
                v4::Packet::PubRec(r) => {
                    v4::PubRel::new(r.pkid).write(&mut wbuf).map_err(err)?;
                    None
                }
                v4::Packet::PubComp(c) => Some(c.pkid),
                _ => None,
            };
            if let Some(id) = finished {
                if let Some(t) = sent_at[id as usize].take() {
                    latencies.push(t.elapsed());
                }
                free.push(id);
                done += 1;
                shared.acknowledged.fetch_add(1, Relaxed);
            }
        }
    }
    if spec.qos == QoS::AtMostOnce {
        shared.acknowledged.fetch_add(sent as u64, Relaxed);
    }
    stream.write_all(&[0xE0, 0]).await?;
    let _ = stream.flush().await;
    Ok((sent as u64, latencies))
}

async fn subscribe_loop(
    mut stream: Box<dyn Stream>,
    mut rbuf: BytesMut,
    expected: u64,
    idle: Duration,
    shared: Arc<Shared>,
) -> Result<(), LoadError> {
    let mut wbuf = BytesMut::new();
    let err = |e: mqttbytes::Error| LoadError::Protocol(e.to_string());
    let mut received = 0u64;
    while received < expected {
        loop {
            let packet = match v4::read(&mut rbuf, 1 << 20) {
                Ok(p) => p,
                Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(err(e)),
            };
            match packet {
                v4::Packet::Publish(p) => {
                    received += 1;
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => v4::PubAck::new(p.pkid)
                            .write(&mut wbuf)
                            .map(drop)
                            .map_err(err)?,
                        QoS::ExactlyOnce => v4::PubRec::new(p.pkid)
                            .write(&mut wbuf)
                            .map(drop)
                            .map_err(err)?,
                    }
                }
                v4::Packet::PubRel(r) => {
                    v4::PubComp::new(r.pkid).write(&mut wbuf).map_err(err)?;
                }
                _ => {}
            }
        }
        if received > 0 {
            shared.received.store(received, Relaxed);
            *shared.last_received.lock().expect("last") = Some(Instant::now());
        }
        if !wbuf.is_empty() {
            stream.write_all(&wbuf).await?;
            wbuf.clear();
        }
        if received >= expected {
            break;
        }
        match tokio::time::timeout(idle, stream.read_buf(&mut rbuf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let _ = stream.write_all(&[0xE0, 0]).await;
    Ok(())
}
