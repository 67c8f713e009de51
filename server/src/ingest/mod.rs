//! The durable ingest path: accepted readings → a bounded queue → one batcher that owns the
//! Arrow column builders → WAL append + fsync (group commit) → acknowledgements released →
//! Parquet (and PostgreSQL, following the WAL).
//!
//! Acknowledge after durable: a connection holds the PUBACK/PUBREC of a reading until the
//! record holding it is fsync'd. It hands each such reading over with a [`Ticket`] (its
//! connection's [`AckCursor`] and a sequence number on it); the batcher advances the cursor
//! once the record is durable. Group commit is adaptive: the batcher takes whatever is queued
//! when it is free, so a lone client's reading commits at once, and under load records grow
//! while the previous fsync runs. A record never spans two UTC dates, so each lands whole in
//! one Parquet partition.
//!
//! Backpressure, never a drop: the queue has a fixed number of slots; a connection that finds
//! none waits (asynchronously, so it stops reading its socket) until the batcher takes work
//! off the queue and gives slots back.
//!
//! Files: [`batcher`] (group commit and ticket release), [`columns`] (the Arrow batch and the
//! WAL record), `parquet_sink` (published files, checkpoint, retention), [`postgres`],
//! [`watermark`] (the committed sequence and the followers' checkpoints, waited on, not
//! polled), [`log_tail`] (the event log followed by offset). The WAL's followers — PostgreSQL
//! and the bridges (`crate::bridge`) — each keep their own checkpoint: segments stay until all
//! are past them, and commits wait while one is `max_wal_backlog_batches` behind.
//! Recovery at start replays what the WAL holds past the checkpoint into Parquet; the store
//! removes a crashed run's temporary files first, so every row reaches Parquet once.
//!
//! With `storage.object_store` set, the Parquet store is a local outbox and `lake_sink`
//! uploads and commits its files to a Delta table, advancing the checkpoint after each commit.
//! At start the outbox's finished files are offered to it again (the table's `txn` version
//! says which it already holds), and only WAL records past both the checkpoint and the last
//! outbox file are replayed: file boundaries never move, so a file is in the table whole or
//! not at all.

mod batcher;
pub mod columns;
mod lake_sink;
pub mod log_tail;
pub use lake_sink::{PEER_FIELDS, PeerRegistries};
mod parquet_sink;
pub mod postgres;
#[cfg(test)]
mod power_cut;
#[cfg(test)]
mod tests;
pub mod watermark;

pub use samos_store::wal;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{self, Sender};
use samos_schemas::node_config::NodeConfig;
use samos_schemas::payload::{Severity, Value};
use samos_schemas::readings::ROWS_PER_BATCH;
use samos_store::layout;
use samos_store::parquet::{ParquetError, ParquetStore, Rotation};
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tracing::{info, warn};

use crate::broker::durable::{DurableSession, SessionOp, SessionTable};
use crate::config::{Durability, StorageConfig};
use crate::metrics::Metrics;
use batcher::Batcher;
pub use columns::{build_batch, decode_record_sessions, encode_record};
use parquet_sink::ParquetSink;
use wal::{Wal, WalError};
use watermark::{Follower, Watermark};

/// How far a connection's readings are durable: the batcher stores the highest per-connection
/// sequence number it has committed and wakes the connection.
#[derive(Debug, Default)]
pub struct AckCursor {
    pub durable: AtomicU64,
    pub notify: Notify,
}

/// A place in one connection's acknowledgement order: once the record holding the work it
/// travels with is durable, the batcher raises `cursor` to `seq`.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub cursor: Arc<AckCursor>,
    pub seq: u64,
}

/// What the protocol accepted: a value of one declared sensor of an active node.
#[derive(Debug)]
pub struct AcceptedReading {
    pub config: Arc<NodeConfig>,
    /// Index into `config.sensors`.
    pub sensor: usize,
    pub value: Value,
    /// The node's reported severity when the reading arrived.
    pub severity: Severity,
}

/// How the reading arrived, as its connection knows it: stored beside it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub client_id: Arc<str>,
    pub qos: u8,
    /// The QoS 2 packet id to store with the reading, for a persistent session.
    pub qos2_pkid: Option<u16>,
}

/// One accepted reading on its way to storage.
#[derive(Debug)]
pub struct Reading {
    pub ingest_time_ms: i64,
    pub config: Arc<NodeConfig>,
    /// Index into `config.sensors`.
    pub sensor: usize,
    pub value: Value,
    pub severity: Severity,
    pub qos: u8,
    pub client_id: Arc<str>,
    /// Released once the reading is durable, when its acknowledgement waits for that.
    pub ack: Option<Ticket>,
    /// The QoS 2 packet id to store with the reading, for a persistent session.
    pub qos2_pkid: Option<u16>,
}

impl Reading {
    /// Stamps an accepted reading with its arrival (ingest time: now).
    pub fn new(accepted: AcceptedReading, origin: Origin, ack: Option<Ticket>) -> Reading {
        Reading {
            ingest_time_ms: crate::clock::now_ms(),
            config: accepted.config,
            sensor: accepted.sensor,
            value: accepted.value,
            severity: accepted.severity,
            qos: origin.qos,
            client_id: origin.client_id,
            ack,
            qos2_pkid: origin.qos2_pkid,
        }
    }
}

/// The batcher has stopped (a WAL write failed): nothing more can be made durable.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("storage stopped")]
pub struct StorageStopped;

/// Why storage could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot replay WAL record {seq}: {message}")]
    Replay { seq: u64, message: String },
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lake(#[from] samos_lake::LakeError),
}

impl IngestError {
    /// Whether a write failed for lack of space (and may succeed once space is freed).
    pub fn is_no_space(&self) -> bool {
        match self {
            IngestError::Wal(e) => e.is_no_space(),
            IngestError::Io { source, .. } => crate::disk_space::is_no_space(source),
            IngestError::Parquet(e) => e.is_no_space(),
            _ => false,
        }
    }
}

/// The handle connections push readings into.
#[derive(Debug)]
pub struct Ingest {
    tx: Sender<Work>,
    /// Free places in the queue (see the module header).
    slots: Arc<Semaphore>,
    pub durability: Durability,
    committed: Arc<Watermark>,
    pg: Option<Arc<postgres::PostgresState>>,
    /// Client ids with a durable session, kept current by the batcher.
    durable_clients: Arc<Mutex<HashSet<Arc<str>>>>,
    /// The sessions recovered at start, until the router takes them.
    restored: Mutex<Vec<(Arc<str>, DurableSession)>>,
    /// The other instances' registries, where the history is a shared object-store dataset.
    peers: Option<tokio::sync::watch::Receiver<PeerRegistries>>,
    /// PostgreSQL and the bridges.
    followers: Arc<[Follower]>,
    wal_dir: PathBuf,
    /// The batcher, for committing a lone reading on its connection's thread (with
    /// `durability = "ack-after-commit"`; see `batcher`).
    inline: Option<Arc<Mutex<Batcher>>>,
    /// Work sent to the queue and not yet committed.
    pending: Arc<AtomicUsize>,
    /// Inline commits are paused until this many milliseconds after `epoch`: set whenever one
    /// could not be made (another publisher is about).
    inline_resume_ms: AtomicU64,
    epoch: std::time::Instant,
}

/// How long inline commits stay paused once a second publisher showed itself: then group
/// commit on the batcher thread shares each fsync, and a worker blocked in one costs more than
/// the hand-off saves (10 nodes one exchange at a time: 0.89× with a pause after a group of
/// several readings only).
const INLINE_PAUSE_MS: u64 = 100;

/// What the batcher is handed: readings, session changes and flush requests, in the order
/// their connections sent them.
#[derive(Debug)]
enum Work {
    Reading(Reading),
    Session {
        op: SessionOp,
        ack: Option<Ticket>,
    },
    Flush(Sender<()>),
    /// Wakes the batcher thread: an inline commit left batches held for the Parquet sink.
    Nudge,
}

impl Ingest {
    /// Recovers the WAL into Parquet, then starts the batcher and the Parquet sink threads.
    /// `instance_id` names this instance's table in a shared object-store dataset.
    ///
    /// `followers` are the other readers of the WAL that keep their own checkpoint (the
    /// bridges): each name with its checkpoint, or `None` to start at the end of the WAL (a
    /// new follower); their watermarks are [`Ingest::follower`].
    pub fn start(
        config: &StorageConfig,
        data_dir: &Path,
        instance_id: &str,
        followers: &[(String, Option<u64>)],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Ingest>, IngestError> {
        let wal_dir = data_dir.join(layout::WAL_DIR);
        let mut sessions = SessionTable::default();
        let mut session_error = None;
        let (mut wal, recovery) =
            Wal::open(
                &wal_dir,
                config.wal_segment_bytes,
                |record| match decode_record_sessions(&record.payload) {
                    Ok(ops) => ops.iter().for_each(|op| sessions.apply(op)),
                    Err(message) => {
                        session_error.get_or_insert(IngestError::Replay {
                            seq: record.seq,
                            message,
                        });
                    }
                },
            )?;
        if let Some(e) = session_error {
            return Err(e);
        }
        sessions.restart(crate::clock::now_ms());
        metrics
            .durable_sessions
            .store(sessions.len() as u64, Relaxed);
        if !sessions.is_empty() {
            // The new segment starts with the sessions, before older segments may be freed.
            wal.append(&encode_record(&sessions.snapshot(), None))?;
            wal.commit()?;
            info!(
                sessions = sessions.len(),
                "persistent sessions recovered from the WAL"
            );
        }
        if let Some(cut) = &recovery.cut {
            warn!(
                segment = %cut.segment.display(),
                offset = cut.offset,
                bytes = cut.bytes,
                "WAL recovery cut a torn tail (a write interrupted by a crash; never acknowledged)"
            );
        }
        let rotation = Rotation {
            max_rows: config.parquet_max_rows,
            max_bytes: config.parquet_max_bytes.max(1),
            max_age: Duration::from_secs(config.parquet_rotate_secs.max(1)),
        };
        let lake = match config.lake_dataset()? {
            Some(dataset) => Some(lake_settings(config, dataset, instance_id, data_dir)?),
            None => None,
        };
        let store = ParquetStore::open(
            data_dir.join(match lake {
                Some(_) => layout::OUTBOX_DIR,
                None => layout::READINGS_DIR,
            }),
            rotation,
            // In the object store, small files are merged by Delta transactions instead.
            if lake.is_some() {
                0
            } else {
                config.parquet_compact_files
            },
        )?;
        match &lake {
            Some(lake) => lake.dataset.write_marker(data_dir)?,
            None => {
                samos_lake::Dataset::remove_marker(data_dir).map_err(|source| IngestError::Io {
                    path: data_dir.to_path_buf(),
                    source,
                })?;
            }
        }
        let committed = Arc::new(Watermark::new(wal.next_seq() - 1));
        let pg_state = config.postgres.as_ref().map(|_| {
            Arc::new(postgres::PostgresState {
                // Until the sink has connected and read its checkpoint, keep every segment.
                checkpoint: Arc::new(Watermark::new(0)),
                connected: std::sync::atomic::AtomicBool::new(false),
            })
        });
        let followers: Arc<[Follower]> = pg_state
            .iter()
            .map(|pg| Follower {
                name: "PostgreSQL".into(),
                checkpoint: pg.checkpoint.clone(),
            })
            .chain(followers.iter().map(|(name, from)| Follower {
                name: name.clone(),
                checkpoint: Arc::new(Watermark::new(from.unwrap_or(committed.get()))),
            }))
            .collect();
        // The outbox's finished files go to the object store first, in WAL order; the replay
        // starts after the last of them. Before them, a local Parquet store left from before
        // the object store was configured is moved into the table (its files are whole and
        // named by WAL range too, and older than anything in the outbox).
        let (migrate, outbox) = if lake.is_some() {
            let local = ParquetStore::open(data_dir.join(layout::READINGS_DIR), rotation, 0)?;
            (local.published_files(), store.published_files())
        } else {
            (Vec::new(), Vec::new())
        };
        if !migrate.is_empty() {
            info!(
                files = migrate.len(),
                rows = migrate.iter().map(|f| f.rows).sum::<u64>(),
                "moving the local Parquet store into the object-store table"
            );
        }
        // Files are published in WAL order before the checkpoint is written: a crash between
        // the two leaves a file past the checkpoint, whose records must not be written again.
        let replay_after = match lake {
            Some(_) => outbox.last().map_or(0, |f| f.last_seq),
            None => store.last_published_seq().unwrap_or(0),
        };
        if lake.is_none() && replay_after > recovery.checkpoint {
            info!(
                checkpoint = recovery.checkpoint,
                last_published = replay_after,
                "Parquet files past the WAL checkpoint (published just before a crash): the replay starts after them"
            );
        }
        let lake_checkpoint = lake
            .as_ref()
            .map(|_| Arc::new(Watermark::new(recovery.checkpoint)));
        let (lake_tx, lake_rx) = channel::unbounded();
        let mut sink = ParquetSink {
            store,
            followers: followers.clone(),
            wal_dir: wal_dir.clone(),
            retention_days: config.retention_days,
            retention_checked: None,
            metrics: metrics.clone(),
            lake: lake.as_ref().map(|_| lake_tx.clone()),
            published_through: recovery.checkpoint.max(replay_after),
            written_through: recovery.checkpoint.max(replay_after),
        };
        for file in migrate.iter().chain(&outbox) {
            let _ = lake_tx.send(lake_sink::LakeMsg::File(file.clone()));
        }
        drop(lake_tx);
        let mut peers = None;
        if let (Some(settings), Some(checkpoint)) = (lake, &lake_checkpoint) {
            let (peers_tx, peers_rx) = tokio::sync::watch::channel(Arc::default());
            peers = Some(peers_rx);
            let sink = lake_sink::LakeSink {
                peers: peers_tx,
                settings,
                wal_dir: wal_dir.clone(),
                outbox: data_dir.join(layout::OUTBOX_DIR),
                checkpoint: checkpoint.clone(),
                committed: committed.clone(),
                followers: followers.clone(),
                metrics: metrics.clone(),
            };
            start_lake_sink(sink, lake_rx, &wal_dir)?;
        }
        let replayed = recovery.pending.len();
        let mut rows = 0;
        for record in recovery.pending.iter().filter(|r| r.seq > replay_after) {
            for batch in
                samos_store::record::decode_batches(&record.payload).map_err(|message| {
                    IngestError::Replay {
                        seq: record.seq,
                        message,
                    }
                })?
            {
                rows += batch.num_rows();
                sink.write(record.seq, &batch)?;
            }
        }
        sink.close()?;
        info!(
            checkpoint = recovery.checkpoint,
            batches = replayed,
            rows,
            torn_tail_bytes = recovery.cut.as_ref().map_or(0, |c| c.bytes),
            "WAL recovered into Parquet"
        );

        // The queue's bound is `slots`, awaited by the senders; the channel itself never fills.
        let (tx, rx) = channel::unbounded();
        let slots = Arc::new(Semaphore::new(config.queue_capacity.max(1)));
        let pending = Arc::new(AtomicUsize::new(0));
        let (sink_tx, sink_rx) = channel::bounded(config.sink_queue_batches);
        if let (Some(url), Some(state)) = (&config.postgres, &pg_state) {
            let pg = postgres::PostgresSink {
                url: url.clone(),
                wal_dir: wal_dir.clone(),
                data_dir: data_dir.to_path_buf(),
                committed: committed.clone(),
                state: state.clone(),
                metrics: metrics.clone(),
                batch_records: config.postgres_batch_records.max(1),
                retention_days: config.retention_days,
                store_id: wal::store_id(&wal_dir)?,
                instance: instance_id.to_owned(),
            };
            spawn("samos-postgres", &wal_dir, move || pg.run())?;
        }
        let durable_clients = Arc::new(Mutex::new(
            sessions.sessions().map(|(c, _)| c.clone()).collect(),
        ));
        let restored = sessions
            .sessions()
            .map(|(c, s)| (c.clone(), s.clone()))
            .collect();
        let batcher = Batcher {
            sessions,
            durable_clients: durable_clients.clone(),
            committed: committed.clone(),
            followers: followers.clone(),
            pg: pg_state.as_ref().map(|pg| pg.checkpoint.clone()),
            lake: lake_checkpoint,
            max_backlog: config.max_wal_backlog_batches.max(1),
            pending: pending.clone(),
            slots: slots.clone(),
            wal,
            max_rows: config.max_batch_rows.min(ROWS_PER_BATCH as usize - 1),
            sink: sink_tx,
            metrics: metrics.clone(),
            fail_fsync_after: std::env::var("SAMOS_FAILPOINT")
                .ok()
                .and_then(|f| f.strip_prefix("wal-fsync-eio:")?.parse().ok()),
            held: batcher::SinkHold::new(config.sink_queue_batches),
            nudged: false,
            last_record_readings: 0,
        };
        let batcher = Arc::new(Mutex::new(batcher));
        let thread_batcher = batcher.clone();
        spawn("samos-batcher", &wal_dir, move || {
            batcher::run(&thread_batcher, &rx);
        })?;
        spawn("samos-parquet", &wal_dir, move || sink.run(sink_rx))?;
        Ok(Arc::new(Ingest {
            tx,
            slots,
            durability: config.durability,
            committed,
            pg: pg_state,
            durable_clients,
            restored: Mutex::new(restored),
            peers,
            followers,
            wal_dir,
            inline: (config.durability == Durability::AckAfterCommit).then_some(batcher),
            pending,
            inline_resume_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }))
    }

    /// Queues a session change behind this connection's readings; `ack` is released once it
    /// is durable.
    pub async fn record_session(
        &self,
        op: SessionOp,
        ack: Option<Ticket>,
        metrics: &Metrics,
    ) -> Result<(), StorageStopped> {
        self.send(Work::Session { op, ack }, metrics).await
    }

    /// Whether `client` has a durable session (one a non-persistent connect must end).
    pub fn has_durable_session(&self, client: &str) -> bool {
        self.durable_clients
            .lock()
            .expect("durable clients")
            .contains(client)
    }

    /// The other instances' registry files, kept current (every second) while the history is
    /// a shared object-store dataset; `None` otherwise.
    pub fn peer_registries(&self) -> Option<tokio::sync::watch::Receiver<PeerRegistries>> {
        self.peers.clone()
    }

    /// The checkpoint of the follower `name` passed to [`Ingest::start`].
    pub fn follower(&self, name: &str) -> Option<Arc<Watermark>> {
        self.followers
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.checkpoint.clone())
    }

    /// The last committed WAL sequence, for followers to wait on.
    pub fn committed(&self) -> Arc<Watermark> {
        self.committed.clone()
    }

    /// The WAL's directory, for followers to read.
    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// The persistent sessions recovered at start (once: for the router to recreate).
    pub fn take_restored_sessions(&self) -> Vec<(Arc<str>, DurableSession)> {
        std::mem::take(&mut *self.restored.lock().expect("restored sessions"))
    }

    /// Queues a reading; while the queue is full the caller waits (and so stops reading its
    /// socket): backpressure, never a drop.
    pub async fn push(
        &self,
        reading: AcceptedReading,
        origin: Origin,
        ack: Option<Ticket>,
        metrics: &Metrics,
    ) -> Result<(), StorageStopped> {
        let reading = Reading::new(reading, origin, ack);
        match self.commit_inline(reading) {
            Ok(()) => Ok(()),
            Err(reading) => self.send(Work::Reading(reading), metrics).await,
        }
    }

    /// Commits a reading whose acknowledgement waits for it on this thread, when the batcher
    /// is idle and has been for a while (see `batcher`); hands it back for the queue
    /// otherwise. Any sign of another publisher (work queued, the batcher busy, a record of
    /// several readings) pauses inline commits for [`INLINE_PAUSE_MS`].
    fn commit_inline(&self, reading: Reading) -> Result<(), Reading> {
        let Some(batcher) = &self.inline else {
            return Err(reading);
        };
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if reading.ack.is_none() || now < self.inline_resume_ms.load(Relaxed) {
            return Err(reading);
        }
        let pause = || {
            self.inline_resume_ms
                .store(now.saturating_add(INLINE_PAUSE_MS), Relaxed);
        };
        let Ok(mut batcher) = batcher.try_lock() else {
            pause();
            return Err(reading);
        };
        let nudge = batcher.commit_inline(reading).inspect_err(|_| pause())?;
        drop(batcher);
        if nudge {
            let _ = self.tx.send(Work::Nudge);
        }
        Ok(())
    }

    async fn send(&self, work: Work, metrics: &Metrics) -> Result<(), StorageStopped> {
        let slot = match self.slots.try_acquire() {
            Ok(slot) => slot,
            Err(TryAcquireError::NoPermits) => {
                metrics.ingest_backpressure.fetch_add(1, Relaxed);
                self.slots.acquire().await.map_err(|_| StorageStopped)?
            }
            Err(TryAcquireError::Closed) => return Err(StorageStopped),
        };
        // The batcher gives the slot back when it takes the work off the queue, and counts it
        // off `pending` once committed.
        slot.forget();
        self.pending.fetch_add(1, Ordering::Release);
        self.tx.send(work).map_err(|_| StorageStopped)
    }

    /// Everything queued so far is committed and written to a closed Parquet file, and the
    /// checkpoint advanced; PostgreSQL is given up to 10 s to catch up.
    /// For an orderly shutdown. Blocking.
    pub fn flush_parquet(&self) {
        let (done_tx, done_rx) = channel::bounded(1);
        if self.tx.send(Work::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        }
        if let Some(pg) = &self.pg {
            let target = self.committed.get();
            let reached = pg
                .checkpoint
                .wait_blocking(|c| c >= target, Duration::from_secs(10));
            let behind = target.saturating_sub(reached);
            if behind > 0 {
                warn!(
                    batches = behind,
                    "PostgreSQL is behind at shutdown; it catches up from the WAL at the next start"
                );
            }
        }
    }
}

/// Starts the object-store sink's thread and waits (at most 10 s) for its first attempt to
/// open the table: another instance's table is a configuration error and refuses the start;
/// an unreachable store is not (readings wait in the WAL while the sink retries).
fn start_lake_sink(
    sink: lake_sink::LakeSink,
    files: channel::Receiver<lake_sink::LakeMsg>,
    wal_dir: &Path,
) -> Result<(), IngestError> {
    let (opened_tx, opened) = channel::bounded(1);
    spawn("samos-lake", wal_dir, move || sink.run(files, opened_tx))?;
    match opened.recv_timeout(Duration::from_secs(10)) {
        Ok(lake_sink::Opened::Open) => {}
        Ok(lake_sink::Opened::Refused(e)) => return Err(e.into()),
        Ok(lake_sink::Opened::Retrying(e)) => {
            warn!(error = %e, "the object store is unreachable at start; readings wait in the WAL until it answers");
        }
        Err(_) => {
            warn!(
                "the object store has not answered within 10 s; readings wait in the WAL until it does"
            );
        }
    }
    Ok(())
}

/// The object-store sink's settings from the configuration.
fn lake_settings(
    config: &StorageConfig,
    dataset: samos_lake::Dataset,
    instance_id: &str,
    data_dir: &Path,
) -> Result<lake_sink::LakeSettings, IngestError> {
    Ok(lake_sink::LakeSettings {
        location: dataset.readings(instance_id),
        dataset,
        instance_id: instance_id.to_owned(),
        data_dir: data_dir.to_path_buf(),
        writer_id: wal::store_id(&data_dir.join(layout::WAL_DIR))?,
        checkpoint_interval: config.lake_checkpoint_interval,
        compact_at: config.parquet_compact_files,
        small_below: (config.parquet_max_rows / 4).max(1) as u64,
        retention_days: config.retention_days,
        vacuum_grace: Duration::from_secs(config.lake_vacuum_grace_hours.saturating_mul(3600)),
        crash_after_upload: std::env::var("SAMOS_FAILPOINT").as_deref() == Ok("lake-after-upload"),
    })
}

fn spawn(name: &str, dir: &Path, f: impl FnOnce() + Send + 'static) -> Result<(), IngestError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|source| IngestError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
