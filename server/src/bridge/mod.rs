//! Store and forward to upstream MQTT brokers (`[[bridge]]`): readings follow the WAL, events
//! and alerts follow `events.jsonl`, each from the bridge's own durable checkpoint, so an
//! upstream outage only delays messages and a crash never loses one.
//!
//! ```text
//!  WAL (committed records) ──┐                                   ┌─ PUBACK ─┐
//!                            ├─ Producer: forward rules ─▶ window ─▶ upstream ┘
//!  events.jsonl (lines) ─────┘   (messages, each with the         (QoS 1, TLS)
//!                                 position after it)  ─▶ acknowledged prefix ─▶ checkpoint
//! ```
//!
//! Invariants:
//! - **At least once, in order.** Messages go out in WAL / file order, at most
//!   `max_in_flight` unacknowledged. The position moves only over the acknowledged prefix of
//!   what was sent (a PUBACK that overtakes an earlier one waits for it), and it is made
//!   durable (`checkpoint.rs`) before the bridge's WAL watermark moves, so the WAL keeps every
//!   segment the bridge may still have to send. After a broken connection or a crash the
//!   bridge sends again from its position: what was in flight may arrive twice (QoS 1's
//!   at-least-once; each message carries an id to drop it by), nothing acknowledged by Samos
//!   is ever skipped.
//! - **Backpressure, never a drop.** A bridge is a follower of the WAL like PostgreSQL: while
//!   it is more than `storage.max_wal_backlog_batches` behind, commits wait and publishers are
//!   paused. A message is never discarded for an unreachable broker.
//! - **A new bridge starts at the end**: it forwards what arrives from its first start on,
//!   not the history (its position is written before the first reading is accepted).
//!
//! Each bridge runs on a thread of its own with a small runtime (it reads WAL segments and
//! the event log with blocking file I/O), reconnecting with backoff (0.2 s doubling to 5 s).

mod checkpoint;
pub mod messages;
mod upstream;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mqttbytes::v4;
use samos_store::layout;
use tracing::{error, info, warn};

use crate::config::{BridgeConfig, Config};
use crate::ingest::Ingest;
use crate::ingest::log_tail::LogTail;
use crate::ingest::wal::WalTail;
use crate::ingest::watermark::Watermark;
use crate::metrics::{BridgeMetrics, Metrics};
use checkpoint::{Checkpoint, Position};
use messages::{Forwarder, Message, RangeLookup};
use upstream::{Connection, Dialer, UpstreamError};

/// Why the bridges could not start (the server does not).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {bridge:?}: checkpoint: {source}")]
    Checkpoint {
        bridge: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] upstream::TlsSetupError),
    #[error("bridge {bridge:?}: a forward rule: {message}")]
    Rule { bridge: String, message: String },
    #[error("bridge {bridge:?}: cannot start its thread: {source}")]
    Thread {
        bridge: String,
        source: std::io::Error,
    },
    #[error(
        "[[bridge]] forwards the sensor network's readings and events: it needs \
         protocol.enabled = true"
    )]
    NoProtocol,
}

/// The name a bridge follows the WAL under (logs, backpressure).
fn follower_name(bridge: &str) -> String {
    format!("bridge {bridge}")
}

fn checkpoint_of(config: &Config, bridge: &BridgeConfig) -> Checkpoint {
    Checkpoint::new(
        &config.data_dir,
        &bridge.name,
        serde_json::to_value(&bridge.forwards).expect("forward rules serialize"),
    )
}

/// Every bridge's saved position, read once before storage starts (`None`: a new bridge,
/// which starts at the end of the WAL and of the event log).
#[derive(Debug)]
pub struct Saved(Vec<Option<Position>>);

impl Saved {
    pub fn load(config: &Config) -> Result<Saved, BridgeError> {
        config
            .bridges
            .iter()
            .map(|b| {
                checkpoint_of(config, b)
                    .load()
                    .map_err(|source| BridgeError::Checkpoint {
                        bridge: b.name.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()
            .map(Saved)
    }

    /// Each bridge's WAL follower and where it starts, for `Ingest::start`.
    pub fn wal_followers(&self, config: &Config) -> Vec<(String, Option<u64>)> {
        config
            .bridges
            .iter()
            .zip(&self.0)
            .map(|(b, saved)| (follower_name(&b.name), saved.map(|p| p.wal_seq)))
            .collect()
    }
}

/// Starts every bridge, after storage and before the listeners accept readings. A new
/// bridge's position (the end of the WAL and of the event log) is written here.
pub fn start(
    config: &Config,
    saved: &Saved,
    ingest: &Ingest,
    ranges: RangeLookup,
    instance_id: &str,
    metrics: &Metrics,
) -> Result<(), BridgeError> {
    for (b, saved) in config.bridges.iter().zip(&saved.0) {
        let checkpoint = checkpoint_of(config, b);
        let follower = ingest
            .follower(&follower_name(&b.name))
            .expect("every bridge is a WAL follower");
        let events = config.data_dir.join(layout::EVENTS_FILE);
        let position = match *saved {
            Some(p) => p,
            None => {
                let p = Position {
                    wal_seq: follower.get(),
                    wal_done: 0,
                    events_offset: std::fs::metadata(&events).map_or(0, |m| m.len()),
                };
                checkpoint
                    .store(p)
                    .map_err(|source| BridgeError::Checkpoint {
                        bridge: b.name.clone(),
                        source,
                    })?;
                p
            }
        };
        let bridge = Bridge {
            dialer: Dialer::new(b, instance_id)?,
            forwarder: Forwarder::new(&b.forwards, instance_id, ranges.clone()).map_err(
                |message| BridgeError::Rule {
                    bridge: b.name.clone(),
                    message,
                },
            )?,
            max_in_flight: usize::from(b.max_in_flight),
            checkpoint,
            stored: position,
            position,
            follower,
            committed: ingest.committed(),
            wal_dir: ingest.wal_dir().to_path_buf(),
            events,
            metrics: metrics.bridge(&b.name),
            name: b.name.clone(),
        };
        info!(bridge = %b.name, url = %b.url, wal_seq = position.wal_seq, events_offset = position.events_offset, "bridge starting");
        std::thread::Builder::new()
            .name(format!("samos-bridge-{}", b.name))
            .spawn(move || bridge.run())
            .map_err(|source| BridgeError::Thread {
                bridge: b.name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// One bridge: its upstream, its rules and how far it has got.
struct Bridge {
    name: String,
    dialer: Dialer,
    forwarder: Forwarder,
    max_in_flight: usize,
    checkpoint: Checkpoint,
    /// Acknowledged upstream.
    position: Position,
    /// Written to the checkpoint file (and so the WAL watermark).
    stored: Position,
    follower: Arc<Watermark>,
    committed: Arc<Watermark>,
    wal_dir: PathBuf,
    events: PathBuf,
    metrics: Arc<BridgeMetrics>,
}

/// A message sent (or a record or line with none) and the position once it is acknowledged.
struct InFlight {
    /// 0 for a record or line that gave no message: done at once.
    pkid: u16,
    acked: bool,
    after: Position,
}

impl Bridge {
    fn run(mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("bridge runtime");
        rt.block_on(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let result = match self.dialer.connect().await {
                    Ok(mut conn) => {
                        info!(bridge = %self.name, upstream = %format!("{}:{}", self.dialer.upstream.host, self.dialer.upstream.port), "bridge connected");
                        self.metrics.connected.store(1, Relaxed);
                        backoff = Duration::from_millis(200);
                        let ended = self.session(&mut conn).await;
                        conn.close().await;
                        ended
                    }
                    Err(e) => Err(e),
                };
                self.metrics.connected.store(0, Relaxed);
                self.metrics.in_flight.store(0, Relaxed);
                self.metrics.connection_errors.fetch_add(1, Relaxed);
                self.store();
                if let Err(e) = result {
                    warn!(bridge = %self.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "bridge: upstream unreachable or lost; messages wait in the WAL and the event log");
                }
                // The lag gauge stays current while the broker is away.
                let wake = tokio::time::Instant::now() + backoff;
                while tokio::time::Instant::now() < wake {
                    self.update_lag();
                    tokio::time::sleep_until(wake.min(
                        tokio::time::Instant::now() + Duration::from_millis(100),
                    ))
                    .await;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Forwards until the connection breaks (it never ends otherwise).
    async fn session(&mut self, conn: &mut Connection) -> Result<(), UpstreamError> {
        let mut producer = Producer::new(self, self.position);
        let mut window: VecDeque<InFlight> = VecDeque::new();
        let mut pkid = 0u16;
        let mut unacked = 0usize;
        let keep_alive = self.dialer.keep_alive.max(Duration::from_secs(1));
        let mut last_sent = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut last_store = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            while window.front().is_some_and(|f| f.acked) {
                self.position = window.pop_front().expect("front").after;
            }
            let committed = self.committed.get();
            let mut caught_up = false;
            while window.len() < self.max_in_flight {
                let Some((message, after)) = producer.next(&self.forwarder, committed) else {
                    caught_up = true;
                    break;
                };
                let Some(Message { topic, payload }) = message else {
                    window.push_back(InFlight {
                        pkid: 0,
                        acked: true,
                        after,
                    });
                    continue;
                };
                pkid = pkid.wrapping_add(1).max(1);
                conn.send(upstream::publish_frame(&topic, payload, pkid)?)?;
                unacked += 1;
                last_sent = Instant::now();
                window.push_back(InFlight {
                    pkid,
                    acked: false,
                    after,
                });
            }
            while window.front().is_some_and(|f| f.acked) {
                self.position = window.pop_front().expect("front").after;
            }
            self.metrics.in_flight.store(unacked as u64, Relaxed);
            // The checkpoint is fsync'd at most every 100 ms under load, and at once when all
            // that was sent is acknowledged and nothing waits: never once per message.
            if self.position != self.stored
                && ((caught_up && window.is_empty())
                    || last_store.elapsed() >= Duration::from_millis(100))
            {
                self.store();
                last_store = Instant::now();
            }
            tokio::select! {
                packet = conn.next_packet() => {
                    let mut packet = Some(packet?);
                    // Every acknowledgement already read, before the window is topped up.
                    while let Some(p) = packet {
                        match p {
                            v4::Packet::PubAck(ack) => {
                                if let Some(f) = window.iter_mut().find(|f| f.pkid == ack.pkid && !f.acked) {
                                    f.acked = true;
                                    unacked -= 1;
                                    self.metrics.forwarded.fetch_add(1, Relaxed);
                                }
                            }
                            v4::Packet::PingResp => ping_sent = None,
                            other => warn!(bridge = %self.name, packet = ?other, "bridge: unexpected packet from upstream, ignored"),
                        }
                        packet = conn.buffered_packet()?;
                    }
                }
                _ = self.committed.changed_from(committed), if caught_up => {}
                _ = tick.tick() => {
                    self.update_lag();
                    if ping_sent.is_some_and(|t| t.elapsed() > keep_alive) {
                        return Err(UpstreamError::Timeout(keep_alive));
                    }
                    if ping_sent.is_none() && last_sent.elapsed() >= keep_alive / 2 {
                        conn.send(upstream::ping_frame())?;
                        ping_sent = Some(Instant::now());
                        last_sent = Instant::now();
                    }
                }
            }
        }
    }

    /// Makes the acknowledged position durable, then lets the WAL go below it.
    fn store(&mut self) {
        if self.position == self.stored {
            return;
        }
        match self.checkpoint.store(self.position) {
            Ok(()) => {
                self.stored = self.position;
                self.follower.set(self.stored.wal_seq);
                self.update_lag();
            }
            // The position stays in memory; the next store tries again, and until then the
            // WAL keeps what the old checkpoint needs.
            Err(e) => {
                error!(bridge = %self.name, error = %e, "bridge: cannot write its checkpoint");
            }
        }
    }

    fn update_lag(&self) {
        self.metrics.lag_batches.store(
            self.committed.get().saturating_sub(self.position.wal_seq),
            Relaxed,
        );
    }
}

/// Messages in forwarding order, each with the position once it (and all before it) is
/// acknowledged; a record or line that gives none yields `None` with its position.
struct Producer {
    wal: Option<WalTail>,
    /// Messages of record `produced.wal_seq + 1` already acknowledged (skipped on resume).
    skip: u64,
    events: Option<LogTail>,
    produced: Position,
    queue: VecDeque<(Option<Message>, Position)>,
    scratch: Vec<Message>,
    bridge: String,
}

/// WAL records read at a time, and event lines.
const RECORDS_PER_READ: usize = 4;
const LINES_PER_READ: usize = 256;

impl Producer {
    fn new(bridge: &Bridge, from: Position) -> Producer {
        Producer {
            wal: bridge
                .forwarder
                .wants_readings()
                .then(|| WalTail::new(&bridge.wal_dir, from.wal_seq)),
            skip: from.wal_done,
            events: bridge
                .forwarder
                .wants_events()
                .then(|| LogTail::new(bridge.events.clone(), from.events_offset)),
            produced: Position {
                wal_done: 0,
                ..from
            },
            queue: VecDeque::new(),
            scratch: Vec::new(),
            bridge: bridge.name.clone(),
        }
    }

    fn next(
        &mut self,
        forwarder: &Forwarder,
        committed: u64,
    ) -> Option<(Option<Message>, Position)> {
        if self.queue.is_empty() {
            self.refill(forwarder, committed);
        }
        self.queue.pop_front()
    }

    fn refill(&mut self, forwarder: &Forwarder, committed: u64) {
        if let Some(tail) = &mut self.events
            && let Some(chunk) = tail.read(LINES_PER_READ, |_| {})
        {
            for line in &chunk.lines {
                self.scratch.clear();
                forwarder.event(&line.text, line.end, &mut self.scratch);
                let count = self.scratch.len();
                let mut done = self.produced;
                for (i, m) in self.scratch.drain(..).enumerate() {
                    if i + 1 == count {
                        done.events_offset = line.end;
                    }
                    self.queue.push_back((Some(m), done));
                }
                if count == 0 {
                    done.events_offset = line.end;
                    self.queue.push_back((None, done));
                }
                self.produced = done;
            }
            if chunk.next > self.produced.events_offset {
                // Lines past the last one kept were not JSON.
                self.produced.events_offset = chunk.next;
                self.queue.push_back((None, self.produced));
            }
            tail.offset = chunk.next;
        }
        let Some(tail) = &mut self.wal else { return };
        let records = match tail.read(committed, RECORDS_PER_READ) {
            Ok(records) => records,
            Err(e) => {
                error!(bridge = %self.bridge, error = %e, "bridge cannot read the WAL; retrying");
                return;
            }
        };
        for record in records {
            self.scratch.clear();
            match samos_store::record::decode_batches(&record.payload) {
                Ok(batches) => {
                    for batch in &batches {
                        if let Err(e) = forwarder.readings(batch, &mut self.scratch) {
                            error!(bridge = %self.bridge, seq = record.seq, error = %e, "bridge skips a WAL batch it cannot read");
                        }
                    }
                }
                Err(e) => {
                    error!(bridge = %self.bridge, seq = record.seq, error = %e, "bridge skips an undecodable WAL record");
                }
            }
            let skip = std::mem::take(&mut self.skip).min(self.scratch.len() as u64) as usize;
            let count = self.scratch.len();
            for (i, m) in self.scratch.drain(..).enumerate().skip(skip) {
                let done = if i + 1 == count {
                    Position {
                        wal_seq: record.seq,
                        wal_done: 0,
                        ..self.produced
                    }
                } else {
                    Position {
                        wal_done: i as u64 + 1,
                        ..self.produced
                    }
                };
                self.queue.push_back((Some(m), done));
            }
            self.produced.wal_seq = record.seq;
            if skip == count {
                self.queue.push_back((None, self.produced));
            }
        }
    }
}

/// The declared range of a node's sensor, from the protocol's registry.
pub fn registry_ranges(protocol: Arc<crate::protocol::Protocol>) -> RangeLookup {
    Arc::new(move |network, node_id, sensor| {
        let node = protocol.registry.get(network, node_id)?;
        let record = node.record.lock().expect("node record");
        let spec = record
            .config
            .as_ref()?
            .sensors
            .iter()
            .find(|s| s.name == sensor)?
            .clone();
        Some((spec.min, spec.max))
    })
}
