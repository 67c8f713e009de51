//! A load generator usable against any MQTT 3.1.1 server: N publishers × M messages with K in
//! flight each, and one counting subscriber. It counts what the subscriber actually receives,
//! because some brokers acknowledge messages they then drop. Against Samos it also counts what
//! is stored, from the server's `samos_readings_committed_total`.
//!
//! Client-side frames are written with `mqttbytes` directly, independent of Samos's codec.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use crate::client::ClientTls;
use crate::client::{self, ClientError, ConnectOptions, Stream, read_packet};

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
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
    /// Publish sensor readings as joined nodes instead of plain messages: publisher i joins
    /// as node `SIM{i:03}` of this network (the whole admission, validation and durable-storage
    /// path is measured) and sends `float,0-70,…` on its temperature topic.
    pub as_nodes: Option<NodeMode>,
    /// Run a subscriber on `{prefix}/#` and count what it receives.
    pub subscriber: bool,
    /// Give up waiting for the subscriber after this long without a message.
    pub idle_timeout: Duration,
    /// Stop counting receipts this long after the first publish (what has not arrived by then
    /// is reported missing).
    pub deadline: Duration,
    /// Samos's metrics endpoint: count the readings stored (durable in the WAL) and when the
    /// last of them was.
    pub stored_metrics: Option<SocketAddr>,
    /// Print a progress line on standard error every second.
    pub progress: bool,
}

impl LoadSpec {
    /// One plain QoS 1 publisher of one 16-byte message, paper style; adjust from there.
    pub fn new(addr: SocketAddr) -> LoadSpec {
        LoadSpec {
            addr,
            tls: None,
            credentials: None,
            publishers: 1,
            messages_per_publisher: 1,
            qos: QoS::AtLeastOnce,
            inflight: 1,
            payload_bytes: 16,
            topic_prefix: "loadgen".into(),
            as_nodes: None,
            subscriber: false,
            idle_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(600),
            stored_metrics: None,
            progress: false,
        }
    }
}

/// The network simulated nodes join.
#[derive(Debug, Clone)]
pub struct NodeMode {
    pub network: String,
    pub server_id: String,
    /// Each node's readings follow a sine (period 200 readings, 18.5 to 21.5, a phase per
    /// node) instead of a constant 23.45: shapes for a streaming matrix profile to compare,
    /// gentle enough (under 0.05 °C a reading) that the paper's severity cross-check, which
    /// takes a reading a minute, stays quiet.
    pub wave: bool,
}

/// Reading `k` of node `index` with [`NodeMode::wave`], as the five bytes `DD.DD`.
fn wave_value(index: usize, k: usize) -> [u8; 5] {
    let phase = index as f64 * 0.7;
    let v = 20.0 + 1.5 * (k as f64 * std::f64::consts::TAU / 200.0 + phase).sin();
    // Hundredths, written as digits in place: no allocation per message.
    let c = (v * 100.0).round() as u32;
    let digit = |n: u32| b'0' + (n % 10) as u8;
    [
        digit(c / 1000),
        digit(c / 100),
        b'.',
        digit(c / 10),
        digit(c),
    ]
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
    /// Readings the server stored during the run (with `stored_metrics`).
    pub stored: Option<u64>,
    /// From the first publish until the poll (every millisecond) that saw the last reading
    /// stored: an upper bound, whatever the server's durability mode.
    pub stored_seconds: Option<f64>,
}

impl LoadReport {
    pub fn acknowledged_per_second(&self) -> f64 {
        self.acknowledged as f64 / self.publish_seconds.max(1e-9)
    }
    pub fn received_per_second(&self) -> f64 {
        self.received as f64 / self.delivery_seconds.max(1e-9)
    }
    pub fn stored_per_second(&self) -> Option<f64> {
        Some(self.stored? as f64 / self.stored_seconds?.max(1e-9))
    }
}

/// `samos_readings_committed_total` from a Samos metrics endpoint.
pub async fn stored_readings(metrics: SocketAddr) -> Result<u64, LoadError> {
    let mut s = tokio::net::TcpStream::connect(metrics).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: samos\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    body.lines()
        .find_map(|l| l.strip_prefix("samos_readings_committed_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            LoadError::Protocol(format!(
                "{metrics} has no samos_readings_committed_total: not a Samos metrics endpoint?"
            ))
        })
}

/// Polls the stored count until `target` (or until told to stop, or `idle` without change);
/// returns the count and when it was reached, relative to `start`.
async fn watch_stored(
    metrics: SocketAddr,
    target: u64,
    start: Instant,
    idle: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(u64, Duration), LoadError> {
    let mut last = (0, start.elapsed());
    let mut changed = Instant::now();
    loop {
        let n = stored_readings(metrics).await?;
        if n != last.0 {
            last = (n, start.elapsed());
            changed = Instant::now();
        }
        if n >= target || (*stop.borrow() && changed.elapsed() >= idle) {
            return Ok(last);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

fn connect_options(spec: &LoadSpec) -> ConnectOptions {
    ConnectOptions {
        addr: spec.addr,
        tls: spec.tls.clone(),
        credentials: spec.credentials.clone(),
        keep_alive: 60,
    }
}

async fn open(spec: &LoadSpec, client_id: &str) -> Result<Box<dyn Stream>, LoadError> {
    Ok(client::open(&connect_options(spec), client_id).await?)
}

/// Connects as simulated node `i` and completes its join.
async fn join_as_node(
    spec: &LoadSpec,
    mode: &NodeMode,
    i: usize,
) -> Result<(Box<dyn Stream>, BytesMut), LoadError> {
    use samos_schemas::fleet::{node_document, node_id, node_location};
    let id = node_id(i);
    let control = samos_schemas::topic::control_topic(&mode.network, &id, &node_location(i));
    let mut c = client::Client::connect(&connect_options(spec), &id).await?;
    c.subscribe(&control, QoS::AtLeastOnce).await?;
    let doc = node_document(&mode.network, &mode.server_id, i);
    c.publish(
        &control,
        samos_schemas::payload::join_request(&doc).as_bytes(),
        QoS::AtLeastOnce,
    )
    .await?;
    loop {
        match c.next_message(spec.idle_timeout).await? {
            Some((_, p)) if p.starts_with(b"SET_CN_FUNCTIONAL_MODE, active") => break,
            Some((_, p)) if p.starts_with(b"SET_CN_FUNCTIONAL_MODE") => {
                return Err(LoadError::Protocol(format!(
                    "node {id} refused: {}",
                    String::from_utf8_lossy(&p)
                )));
            }
            Some(_) => {}
            None => {
                return Err(LoadError::Protocol(format!(
                    "node {id}: no answer to its join"
                )));
            }
        }
    }
    Ok(c.into_parts())
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

    // The subscriber gets a thread and runtime of its own, so that a hundred busy publisher
    // tasks cannot starve the one task whose receipts are being measured.
    let subscriber = if spec.subscriber {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<Instant>();
        let spec = spec.clone();
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("loadgen-subscriber".into())
            .spawn(move || -> Result<(), LoadError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let opened = subscribe(&spec).await;
                    let (stream, rbuf) = match opened {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let Ok(start) = start_rx.await else {
                        return Ok(());
                    };
                    let deadline = start + spec.deadline;
                    subscribe_loop(stream, rbuf, expected, spec.idle_timeout, deadline, shared)
                        .await
                })
            })?;
        ready_rx
            .await
            .map_err(|_| LoadError::Protocol("subscriber thread died".into()))??;
        Some((thread, start_tx))
    } else {
        None
    };

    let mut streams = Vec::with_capacity(spec.publishers);
    for i in 0..spec.publishers {
        streams.push(match &spec.as_nodes {
            None => (
                open(&spec, &format!("loadgen-{}-{i}", std::process::id())).await?,
                BytesMut::new(),
            ),
            Some(mode) => join_as_node(&spec, mode, i).await?,
        });
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    let stored_before = match spec.stored_metrics {
        Some(m) => Some(stored_readings(m).await?),
        None => None,
    };

    let start = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = match (spec.stored_metrics, stored_before) {
        (Some(m), Some(before)) => Some(tokio::spawn(watch_stored(
            m,
            before + expected,
            start,
            spec.idle_timeout,
            stop_rx,
        ))),
        _ => None,
    };
    let progress = spec.progress.then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = shared.acknowledged.load(Relaxed);
                let secs = start.elapsed().as_secs_f64();
                let done = n as f64 / expected.max(1) as f64;
                let filled = (done * 30.0).round() as usize;
                eprintln!(
                    "[{}{}] {:>5.1} %  {n:>10} / {expected} acknowledged  {:>9.0}/s  {secs:>6.1} s",
                    "#".repeat(filled.min(30)),
                    ".".repeat(30 - filled.min(30)),
                    100.0 * done,
                    n as f64 / secs,
                );
            }
        })
    });
    let sub_thread = subscriber.map(|(thread, start_tx)| {
        let _ = start_tx.send(start);
        thread
    });
    let mut tasks = Vec::new();
    for (i, (stream, rbuf)) in streams.into_iter().enumerate() {
        let spec = spec.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            publish_loop(stream, rbuf, &spec, i, shared).await
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
    if let Some(p) = progress {
        p.abort();
    }
    let _ = stop_tx.send(true);
    let stored = match watcher {
        Some(w) => Some(
            w.await
                .map_err(|e| LoadError::Protocol(format!("stored-count watcher: {e}")))??,
        ),
        None => None,
    };
    if let Some(t) = sub_thread {
        tokio::task::spawn_blocking(move || t.join())
            .await
            .map_err(|e| LoadError::Protocol(format!("subscriber thread: {e}")))?
            .map_err(|_| LoadError::Protocol("subscriber thread panicked".into()))??;
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
        stored: stored
            .zip(stored_before)
            .map(|((n, _), before)| n.saturating_sub(before)),
        stored_seconds: stored.map(|(_, at)| at.as_secs_f64()),
    })
}

async fn subscribe(spec: &LoadSpec) -> Result<(Box<dyn Stream>, BytesMut), LoadError> {
    let mut s = open(spec, &format!("loadgen-sub-{}", std::process::id())).await?;
    let mut buf = BytesMut::new();
    let filter = match &spec.as_nodes {
        // The nodes' readings only, not their control traffic.
        Some(mode) => format!("{}/+/+/+/+/+/+/+/+/indoorTemperatureSensor", mode.network),
        None => format!("{}/#", spec.topic_prefix),
    };
    let mut sub = v4::Subscribe::new(filter, spec.qos);
    sub.pkid = 1;
    sub.write(&mut buf)
        .map_err(|e| LoadError::Protocol(e.to_string()))?;
    s.write_all(&buf).await?;
    let mut rbuf = BytesMut::new();
    match read_packet(&mut s, &mut rbuf).await? {
        v4::Packet::SubAck(_) => Ok((s, rbuf)),
        other => Err(LoadError::Protocol(format!(
            "expected SUBACK, got {other:?}"
        ))),
    }
}

async fn publish_loop(
    mut stream: Box<dyn Stream>,
    mut rbuf: BytesMut,
    spec: &LoadSpec,
    index: usize,
    shared: Arc<Shared>,
) -> Result<(u64, Vec<Duration>), LoadError> {
    let (topic, payload) = match &spec.as_nodes {
        None => (
            format!("{}/{index}", spec.topic_prefix),
            vec![b'x'; spec.payload_bytes],
        ),
        Some(mode) => (
            samos_schemas::topic::data_topic(
                &mode.network,
                &samos_schemas::fleet::node_id(index),
                &samos_schemas::fleet::node_location(index),
                "indoorTemperatureSensor",
            ),
            b"float,0-70,23.45".to_vec(),
        ),
    };
    let payload_len = payload.len();
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
    // One encoded frame, reused with its packet id patched in place.
    let mut template = BytesMut::new();
    let mut proto = v4::Publish::new(topic.as_str(), spec.qos, payload);
    proto.pkid = 1;
    proto
        .write(&mut template)
        .map_err(|e| LoadError::Protocol(e.to_string()))?;
    let pkid_at = template.len() - payload_len - 2;
    // The value's five digits end the payload (`float,0-70,23.45`).
    let wave = spec.as_nodes.as_ref().is_some_and(|m| m.wave);
    let value_at = template.len() - 5;
    let mut wbuf = BytesMut::with_capacity(window.min(1024) * template.len());
    let mut free: Vec<u16> = (1..=window as u16).rev().collect();

    while done < total {
        while sent < total && (spec.qos == QoS::AtMostOnce || !free.is_empty()) {
            let at = wbuf.len();
            wbuf.extend_from_slice(&template);
            if wave {
                wbuf[at + value_at..at + value_at + 5].copy_from_slice(&wave_value(index, sent));
            }
            if spec.qos != QoS::AtMostOnce {
                let id = free.pop().expect("checked");
                wbuf[at + pkid_at..at + pkid_at + 2].copy_from_slice(&id.to_be_bytes());
                sent_at[id as usize] = Some(Instant::now());
            }
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
        let mut at = 0;
        while let Some((b1, header, len)) = frame_at(&rbuf[at..])? {
            if len < 2 {
                return Err(LoadError::Protocol(format!("short packet {b1:#04x}")));
            }
            let id = u16::from_be_bytes([rbuf[at + header], rbuf[at + header + 1]]);
            at += header + len;
            let finished = match b1 >> 4 {
                4 if spec.qos == QoS::AtLeastOnce => Some(id),
                5 => {
                    wbuf.extend_from_slice(&[0x62, 2]);
                    wbuf.extend_from_slice(&id.to_be_bytes());
                    None
                }
                7 => Some(id),
                _ => None,
            };
            if let Some(id) = finished
                && let Some(t) = sent_at.get_mut(id as usize).and_then(Option::take)
            {
                latencies.push(t.elapsed());
                free.push(id);
                done += 1;
                shared.acknowledged.fetch_add(1, Relaxed);
            }
        }
        let _ = rbuf.split_to(at);
    }
    if spec.qos == QoS::AtMostOnce {
        shared.acknowledged.fetch_add(sent as u64, Relaxed);
    }
    stream.write_all(&[0xE0, 0]).await?;
    let _ = stream.flush().await;
    Ok((sent as u64, latencies))
}

/// One frame at the front of `buf`: (first byte, header length, remaining length).
fn frame_at(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, LoadError> {
    let Some(&b1) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 1..=4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= ((b & 0x7F) as usize) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Ok((buf.len() >= i + 1 + len).then_some((b1, i + 1, len)));
        }
    }
    Err(LoadError::Protocol("malformed remaining length".into()))
}

/// Counts PUBLISHes and answers them, scanning frames in place: the subscriber must not be
/// the bottleneck of what it measures.
async fn subscribe_loop(
    mut stream: Box<dyn Stream>,
    mut rbuf: BytesMut,
    expected: u64,
    idle: Duration,
    deadline: Instant,
    shared: Arc<Shared>,
) -> Result<(), LoadError> {
    let mut wbuf = BytesMut::new();
    let mut received = 0u64;
    while received < expected {
        let mut at = 0;
        while let Some((b1, header, len)) = frame_at(&rbuf[at..])? {
            let body = &rbuf[at + header..at + header + len];
            match b1 >> 4 {
                3 => {
                    received += 1;
                    let qos = (b1 >> 1) & 3;
                    if qos > 0 {
                        let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                        let id = &body[2 + topic_len..4 + topic_len];
                        wbuf.extend_from_slice(&[
                            if qos == 1 { 0x40 } else { 0x50 },
                            2,
                            id[0],
                            id[1],
                        ]);
                    }
                }
                6 => wbuf.extend_from_slice(&[0x70, 2, body[0], body[1]]),
                _ => {}
            }
            at += header + len;
        }
        let _ = rbuf.split_to(at);
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
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(64 * 1024);
        }
        let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, stream.read_buf(&mut rbuf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let _ = stream.write_all(&[0xE0, 0]).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wave_values_keep_the_payload_length_and_the_declared_range() {
        for index in 0..20 {
            for k in 0..100 {
                let text = wave_value(index, k);
                let v: f64 = std::str::from_utf8(&text).unwrap().parse().unwrap();
                assert!((18.495..=21.505).contains(&v), "{v}");
            }
        }
        assert_ne!(wave_value(0, 0), wave_value(0, 12));
    }
}
