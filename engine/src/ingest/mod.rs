//! The durable ingest path: accepted readings → a bounded queue → one batcher that owns the
//! Arrow column builders → WAL append + fsync (group commit) → acknowledgements released →
//! Parquet.
//!
//! Acknowledge after durable: a connection holds the PUBACK/PUBREC of a reading until the
//! batch holding it is fsync'd; each connection has an [`AckCursor`] the batcher advances.
//! Group commit is adaptive: the batcher takes whatever is queued when it is free, so a lone
//! client's reading commits at once, and under load batches grow while the previous fsync runs.
//! A batch never spans two UTC dates, so each lands whole in one Parquet partition.
//!
//! The Parquet sink writes `readings/date=YYYY-MM-DD/part-{first}-{last}.parquet` (ZSTD,
//! statistics) under a temporary name, fsyncs it, renames it, then advances the WAL
//! checkpoint and frees WAL segments. Recovery replays what the WAL holds past the checkpoint;
//! temporary files of a crashed run are removed first, so every row reaches Parquet once.

pub mod postgres;
pub mod sessions;

pub use samos_store::wal;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Float64Builder, StringBuilder, StringDictionaryBuilder, TimestampMillisecondBuilder,
    UInt8Builder, UInt64Builder,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use samos_schemas::payload::{Severity, Value};
use samos_schemas::readings::{ROWS_PER_BATCH, readings_schema};
use samos_store::layout::{merged_into_another, partition_files};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::config::{Durability, StorageConfig};
use crate::metrics::Metrics;
use crate::protocol::validate::NodeConfig;
use sessions::{DurableSession, SessionOp, SessionTable};
use wal::{Wal, WalError};

/// How far a connection's readings are durable: the batcher stores the highest per-connection
/// sequence number it has committed and wakes the connection.
#[derive(Debug, Default)]
pub struct AckCursor {
    pub durable: AtomicU64,
    pub notify: Notify,
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
    /// The connection's cursor and this reading's sequence on it, when its acknowledgement waits.
    pub ack: Option<(Arc<AckCursor>, u64)>,
    /// The QoS 2 packet id to store with the reading, for a persistent session.
    pub qos2_pkid: Option<u16>,
}

/// Why storage could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("cannot replay WAL record {seq}: {message}")]
    Replay { seq: u64, message: String },
    #[error("Parquet file {path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The handle connections push readings into.
#[derive(Debug)]
pub struct Ingest {
    tx: Sender<Work>,
    pub durability: Durability,
    committed: Arc<AtomicU64>,
    pg: Option<Arc<postgres::PostgresState>>,
    /// Client ids with a durable session, kept current by the batcher.
    durable_clients: Arc<Mutex<HashSet<Arc<str>>>>,
    /// The sessions recovered at start, until the router takes them.
    restored: Mutex<Vec<(Arc<str>, DurableSession)>>,
}

/// What the batcher is handed: readings, session changes and flush requests, in the order
/// their connections sent them.
#[derive(Debug)]
enum Work {
    Reading(Reading),
    Session {
        op: SessionOp,
        ack: Option<(Arc<AckCursor>, u64)>,
    },
    Flush(channel::Sender<()>),
}

/// What the Parquet sink is handed, in commit order.
enum SinkMsg {
    Batch(u64, RecordBatch),
    Flush(channel::Sender<()>),
}

impl Ingest {
    /// Recovers the WAL into Parquet, then starts the batcher and the Parquet sink threads.
    pub fn start(
        config: &StorageConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Ingest>, IngestError> {
        let wal_dir = data_dir.join("wal");
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
        sessions.restart(crate::protocol::registry::now_ms());
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
        let readings_dir = data_dir.join("readings");
        remove_temporary_files(&readings_dir)?;
        remove_expired_leftovers(&readings_dir)?;
        remove_compacted_inputs(&readings_dir)?;
        let committed = Arc::new(AtomicU64::new(wal.next_seq() - 1));
        let pg_state = config.postgres.as_ref().map(|_| {
            Arc::new(postgres::PostgresState {
                // Until the sink has connected and read its checkpoint, keep every segment.
                checkpoint: AtomicU64::new(0),
                connected: std::sync::atomic::AtomicBool::new(false),
            })
        });
        let mut sink = ParquetSink {
            pg: pg_state.clone(),
            root: readings_dir,
            wal_dir: wal_dir.clone(),
            open: None,
            max_rows: config.parquet_max_rows,
            max_bytes: config.parquet_max_bytes.max(1),
            max_age: Duration::from_secs(config.parquet_rotate_secs.max(1)),
            retention_days: config.retention_days,
            retention_checked: None,
            compact_at: config.parquet_compact_files,
            metrics: metrics.clone(),
        };
        let replayed = recovery.pending.len();
        let mut rows = 0;
        for record in &recovery.pending {
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

        let (tx, rx) = channel::bounded(config.queue_capacity);
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
            pg: pg_state.clone(),
            max_backlog: config.max_wal_backlog_batches.max(1),
            rx,
            wal,
            max_rows: config.max_batch_rows.min(ROWS_PER_BATCH as usize - 1),
            sink: sink_tx,
            metrics: metrics.clone(),
        };
        spawn("samos-batcher", &wal_dir, move || batcher.run())?;
        spawn("samos-parquet", &wal_dir, move || sink.run(sink_rx))?;
        Ok(Arc::new(Ingest {
            tx,
            durability: config.durability,
            committed,
            pg: pg_state,
            durable_clients,
            restored: Mutex::new(restored),
        }))
    }

    /// Queues a session change behind this connection's readings; `ack` is released once it
    /// is durable.
    pub async fn record_session(
        &self,
        op: SessionOp,
        ack: Option<(Arc<AckCursor>, u64)>,
        metrics: &Metrics,
    ) -> Result<(), ()> {
        self.send(Work::Session { op, ack }, metrics).await
    }

    /// Whether `client` has a durable session (one a non-persistent connect must end).
    pub fn has_durable_session(&self, client: &str) -> bool {
        self.durable_clients
            .lock()
            .expect("durable clients")
            .contains(client)
    }

    /// The persistent sessions recovered at start (once: for the router to recreate).
    pub fn take_restored_sessions(&self) -> Vec<(Arc<str>, DurableSession)> {
        std::mem::take(&mut *self.restored.lock().expect("restored sessions"))
    }

    /// Queues a reading; while the queue is full the caller waits (and so stops reading its
    /// socket): backpressure, never a drop.
    pub async fn push(&self, reading: Reading, metrics: &Metrics) -> Result<(), ()> {
        self.send(Work::Reading(reading), metrics).await
    }

    async fn send(&self, mut work: Work, metrics: &Metrics) -> Result<(), ()> {
        loop {
            match self.tx.try_send(work) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(w)) => {
                    work = w;
                    metrics.ingest_backpressure.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(()),
            }
        }
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
            let target = self.committed.load(Relaxed);
            let deadline = Instant::now() + Duration::from_secs(10);
            while pg.checkpoint.load(Relaxed) < target && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let behind = target.saturating_sub(pg.checkpoint.load(Relaxed));
            if behind > 0 {
                warn!(
                    batches = behind,
                    "PostgreSQL is behind at shutdown; it catches up from the WAL at the next start"
                );
            }
        }
    }
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

/// Owns the column builders, the WAL and the durable session table.
struct Batcher {
    /// The sessions as the committed records leave them.
    sessions: SessionTable,
    durable_clients: Arc<Mutex<HashSet<Arc<str>>>>,
    /// Last committed sequence, for sinks that follow the WAL.
    committed: Arc<AtomicU64>,
    /// The PostgreSQL sink's progress, when there is one.
    pg: Option<Arc<postgres::PostgresState>>,
    /// Committed batches PostgreSQL may fall behind before commits (and so publishers) wait.
    max_backlog: u64,
    rx: Receiver<Work>,
    wal: Wal,
    max_rows: usize,
    sink: Sender<SinkMsg>,
    metrics: Arc<Metrics>,
}

fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// What one WAL record gathers: readings of one UTC day and session changes, in queue order.
#[derive(Default)]
struct Group {
    readings: Vec<Reading>,
    ops: Vec<SessionOp>,
    /// Acknowledgements to release once the record is durable, in queue order.
    acks: Vec<(Arc<AckCursor>, u64)>,
    day: Option<i64>,
}

impl Group {
    /// Adds `work` unless it must go into the next record (a reading of another day, a flush).
    fn add(&mut self, work: Work) -> Option<Work> {
        match work {
            Work::Reading(r) => {
                let day = utc_day(r.ingest_time_ms);
                if self.day.is_some_and(|d| d != day) {
                    return Some(Work::Reading(r));
                }
                self.day = Some(day);
                if let Some(pkid) = r.qos2_pkid {
                    self.ops.push(SessionOp::Received {
                        client: r.client_id.clone(),
                        pkid,
                    });
                }
                if let Some(ack) = &r.ack {
                    self.acks.push(ack.clone());
                }
                self.readings.push(r);
            }
            Work::Session { op, ack } => {
                self.ops.push(op);
                self.acks.extend(ack);
            }
            flush @ Work::Flush(_) => return Some(flush),
        }
        None
    }

    fn len(&self) -> usize {
        self.readings.len() + self.ops.len()
    }
}

impl Batcher {
    fn run(mut self) {
        let mut carry: Option<Work> = None;
        loop {
            let work = match carry.take() {
                Some(w) => w,
                None => match self.rx.recv() {
                    Ok(w) => w,
                    Err(_) => return,
                },
            };
            if let Work::Flush(done) = work {
                let _ = self.sink.send(SinkMsg::Flush(done));
                continue;
            }
            let mut group = Group::default();
            carry = group.add(work);
            while carry.is_none() && group.len() < self.max_rows {
                match self.rx.try_recv() {
                    Ok(w) => carry = group.add(w),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.commit(group) {
                // Nothing of this batch is acknowledged: clients resend after reconnecting.
                error!(error = %e, "WAL commit failed; stopping ingest (readings stay unacknowledged)");
                return;
            }
        }
    }

    /// Waits while PostgreSQL is more than `max_backlog` batches behind: the WAL backlog on
    /// disk stays bounded, the queue fills, and publishers are paused instead.
    fn wait_for_backlog(&self) {
        let Some(pg) = &self.pg else { return };
        let mut warned = false;
        while self
            .wal
            .next_seq()
            .saturating_sub(pg.checkpoint.load(Relaxed) + 1)
            >= self.max_backlog
        {
            if !warned {
                warned = true;
                warn!(
                    backlog = self.max_backlog,
                    "PostgreSQL is too far behind: holding commits (publishers are paused, nothing is dropped)"
                );
            }
            self.metrics.ingest_backpressure.fetch_add(1, Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn commit(&mut self, group: Group) -> Result<(), WalError> {
        self.wait_for_backlog();
        let started = Instant::now();
        let seq = self.wal.next_seq();
        let batch = (!group.readings.is_empty()).then(|| build_batch(&group.readings, seq));
        let payload = if self.wal.next_append_starts_segment() {
            // Every segment opens with the whole session table, so freeing older segments
            // never loses a session; sessions expired by now are left out.
            let gone = self
                .sessions
                .drop_expired(crate::protocol::registry::now_ms());
            if !gone.is_empty() {
                let mut clients = self.durable_clients.lock().expect("durable clients");
                for c in &gone {
                    clients.remove(c);
                }
                self.metrics
                    .durable_sessions
                    .store(self.sessions.len() as u64, Relaxed);
            }
            let mut ops = self.sessions.snapshot();
            ops.extend(group.ops.iter().cloned());
            encode_record(&ops, batch.as_ref())
        } else {
            encode_record(&group.ops, batch.as_ref())
        };
        self.wal.append(&payload)?;
        self.wal.commit()?;
        self.committed.store(seq, Relaxed);
        if !group.ops.is_empty() {
            self.apply_sessions(&group.ops);
        }
        if let Some(pg) = &self.pg {
            // Kept current here too, so an outage (no sink loop running) still shows its lag.
            let lag = seq.saturating_sub(pg.checkpoint.load(Relaxed));
            self.metrics.postgres_lag.store(lag, Relaxed);
        }
        let m = &self.metrics;
        m.wal_commit_latency.observe(started.elapsed());
        m.wal_bytes.fetch_add(payload.len() as u64 + 16, Relaxed);
        m.readings_committed
            .fetch_add(group.readings.len() as u64, Relaxed);
        m.wal_batches.fetch_add(1, Relaxed);
        // Release acknowledgements: each connection's sequence numbers arrive in its order.
        let mut last: Option<(&Arc<AckCursor>, u64)> = None;
        for (cursor, n) in &group.acks {
            match last {
                Some((c, _)) if Arc::ptr_eq(c, cursor) => last = Some((c, *n)),
                Some((c, v)) => {
                    release(c, v);
                    last = Some((cursor, *n));
                }
                None => last = Some((cursor, *n)),
            }
        }
        if let Some((c, v)) = last {
            release(c, v);
        }
        drop(group);
        // A slow sink blocks here, which stops commits, which fills the queue, which pauses
        // publishers: the WAL backlog stays bounded.
        if let Some(batch) = batch {
            let _ = self.sink.send(SinkMsg::Batch(seq, batch));
        }
        Ok(())
    }

    fn apply_sessions(&mut self, ops: &[SessionOp]) {
        let mut clients = self.durable_clients.lock().expect("durable clients");
        for op in ops {
            self.sessions.apply(op);
            if let Some(client) = op.client() {
                if self.sessions.contains(client) {
                    clients.insert(client.clone());
                } else {
                    clients.remove(client);
                }
            }
        }
        self.metrics
            .durable_sessions
            .store(self.sessions.len() as u64, Relaxed);
    }
}

fn release(cursor: &AckCursor, seq: u64) {
    cursor.durable.fetch_max(seq, Relaxed);
    cursor.notify.notify_one();
}

/// Builds the Arrow batch of `readings` for WAL sequence `seq` (public for benchmarks).
pub fn build_batch(readings: &[Reading], seq: u64) -> RecordBatch {
    let n = readings.len();
    let mut time = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut dicts: Vec<StringDictionaryBuilder<Int32Type>> =
        (0..12).map(|_| StringDictionaryBuilder::new()).collect();
    let mut value = Float64Builder::with_capacity(n);
    let mut raw = StringBuilder::new();
    let mut severity = StringDictionaryBuilder::<Int32Type>::new();
    let mut qos = UInt8Builder::with_capacity(n);
    let mut client = StringDictionaryBuilder::<Int32Type>::new();
    let mut key = UInt64Builder::with_capacity(n);
    for (row, r) in readings.iter().enumerate() {
        let c = &r.config;
        let spec = &c.sensors[r.sensor];
        time.append_value(r.ingest_time_ms);
        let loc = c.location.levels();
        let texts: [&str; 12] = [
            &c.network,
            &c.node_id,
            loc[0],
            loc[1],
            loc[2],
            loc[3],
            loc[4],
            loc[5],
            loc[6],
            &spec.name,
            &spec.data_type,
            &spec.units,
        ];
        for (b, t) in dicts.iter_mut().zip(texts) {
            b.append_value(t);
        }
        match &r.value {
            Value::Text(t) => {
                value.append_null();
                raw.append_value(t);
            }
            v => {
                value.append_option(v.as_f64());
                raw.append_null();
            }
        }
        severity.append_value(r.severity.as_str());
        qos.append_value(r.qos);
        client.append_value(&r.client_id);
        key.append_value(seq * ROWS_PER_BATCH + row as u64);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish())];
    columns.extend(dicts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(value.finish()));
    columns.push(Arc::new(raw.finish()));
    columns.push(Arc::new(severity.finish()));
    columns.push(Arc::new(qos.finish()));
    columns.push(Arc::new(client.finish()));
    columns.push(Arc::new(key.finish()));
    RecordBatch::try_new(readings_schema(), columns).expect("columns follow readings_schema")
}

/// A WAL record's payload: the session operations ([`sessions`]) and the readings (see
/// [`samos_store::record`]).
pub fn encode_record(ops: &[SessionOp], batch: Option<&RecordBatch>) -> Vec<u8> {
    samos_store::record::encode(
        |buf| {
            for op in ops {
                op.encode(buf);
            }
        },
        batch,
    )
}

/// The session changes of a WAL record.
pub fn decode_record_sessions(payload: &[u8]) -> Result<Vec<SessionOp>, String> {
    SessionOp::decode_all(samos_store::record::sections(payload)?.0)
}

/// The `date=YYYY-MM-DD` partitions under `root`, as (UTC day number, directory).
fn date_partitions(root: &Path) -> Vec<(i64, PathBuf)> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let date = name.to_str()?.strip_prefix("date=")?;
            let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
            let day = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
            Some((utc_day(day), e.path()))
        })
        .collect()
}

/// Completes a compaction a crash interrupted: a compacted file's range covers its inputs,
/// so any file inside another file's range is an input already merged, and is removed.
fn remove_compacted_inputs(root: &Path) -> Result<(), IngestError> {
    let Ok(days) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for day in days.flatten() {
        let files = partition_files(&day.path());
        let ranges: Vec<(u64, u64)> = files.iter().map(|(r, _)| *r).collect();
        for (range, path) in &files {
            if merged_into_another(*range, &ranges) {
                info!(file = %path.display(), "removing a Parquet file already merged by compaction");
                std::fs::remove_file(path).map_err(|source| IngestError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
        }
    }
    Ok(())
}

/// Finishes deleting partitions a crash interrupted (renamed to `.expired-*`).
fn remove_expired_leftovers(root: &Path) -> Result<(), IngestError> {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".expired-") {
            std::fs::remove_dir_all(e.path()).map_err(|source| IngestError::Io {
                path: e.path(),
                source,
            })?;
        }
    }
    Ok(())
}

fn remove_temporary_files(root: &Path) -> Result<(), IngestError> {
    let Ok(days) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for day in days.flatten() {
        let Ok(files) = std::fs::read_dir(day.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            if name.to_string_lossy().starts_with(".tmp-") {
                std::fs::remove_file(f.path()).map_err(|source| IngestError::Io {
                    path: f.path(),
                    source,
                })?;
            }
        }
    }
    Ok(())
}

/// Opens a Parquet writer for `readings` at `path` (ZSTD, page statistics, 128k-row groups).
pub fn parquet_writer(
    path: &Path,
) -> Result<parquet::arrow::ArrowWriter<std::fs::File>, IngestError> {
    let file = std::fs::File::create(path).map_err(ParquetSink::io(path))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    parquet::arrow::ArrowWriter::try_new(file, readings_schema(), Some(props))
        .map_err(|e| parquet_error(path, e))
}

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> IngestError {
    IngestError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Finishes a file written under `tmp` and makes it visible as `dest`: footer, fsync, rename,
/// directory fsync. A reader never sees it partial.
fn publish_parquet(
    writer: parquet::arrow::ArrowWriter<std::fs::File>,
    tmp: &Path,
    dest: &Path,
) -> Result<(), IngestError> {
    let file = writer.into_inner().map_err(|e| parquet_error(tmp, e))?;
    file.sync_all().map_err(ParquetSink::io(tmp))?;
    std::fs::rename(tmp, dest).map_err(ParquetSink::io(dest))?;
    let dir = dest.parent().expect("files live in a partition directory");
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ParquetSink::io(dir))
}

/// Rows in a Parquet file, from its footer.
fn parquet_rows(path: &Path) -> Option<u64> {
    let f = std::fs::File::open(path).ok()?;
    let reader = parquet::file::reader::SerializedFileReader::new(f).ok()?;
    use parquet::file::reader::FileReader;
    Some(reader.metadata().file_metadata().num_rows() as u64)
}

struct OpenFile {
    day: i64,
    dir: PathBuf,
    tmp: PathBuf,
    writer: parquet::arrow::ArrowWriter<std::fs::File>,
    rows: usize,
    first_seq: u64,
    last_seq: u64,
    opened: Instant,
}

/// Writes committed batches into Parquet files and advances the WAL checkpoint.
struct ParquetSink {
    /// The PostgreSQL sink's progress: WAL segments it still needs are kept.
    pg: Option<Arc<postgres::PostgresState>>,
    root: PathBuf,
    wal_dir: PathBuf,
    open: Option<OpenFile>,
    max_rows: usize,
    max_bytes: u64,
    max_age: Duration,
    /// Date partitions older than this many days are deleted (0: never).
    retention_days: u32,
    retention_checked: Option<Instant>,
    /// Small files in a partition that trigger a merge (0: never).
    compact_at: usize,
    metrics: Arc<Metrics>,
}

impl ParquetSink {
    fn run(mut self, rx: Receiver<SinkMsg>) {
        loop {
            self.apply_retention();
            let wait = self.open.as_ref().map_or(Duration::from_secs(60), |o| {
                self.max_age.saturating_sub(o.opened.elapsed())
            });
            match rx.recv_timeout(wait) {
                Ok(SinkMsg::Batch(seq, batch)) => {
                    if let Err(e) = self.write(seq, &batch) {
                        error!(error = %e, "Parquet write failed; the rows stay in the WAL and are retried at restart");
                        return;
                    }
                }
                Ok(SinkMsg::Flush(done)) => {
                    if let Err(e) = self.close() {
                        error!(error = %e, "Parquet close failed");
                    }
                    let _ = done.send(());
                }
                Err(channel::RecvTimeoutError::Timeout) => {}
                Err(channel::RecvTimeoutError::Disconnected) => {
                    let _ = self.close();
                    return;
                }
            }
            if self
                .open
                .as_ref()
                .is_some_and(|o| o.opened.elapsed() >= self.max_age)
                && let Err(e) = self.close()
            {
                error!(error = %e, "Parquet close failed");
                return;
            }
        }
    }

    fn io<'a>(path: &'a Path) -> impl Fn(std::io::Error) -> IngestError + 'a {
        move |source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn write(&mut self, seq: u64, batch: &RecordBatch) -> Result<(), IngestError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .expect("ingest_time column");
        let day = utc_day(times.value(0));
        if self.open.as_ref().is_some_and(|o| o.day != day) {
            self.close()?;
        }
        if self.open.is_none() {
            let date = chrono::DateTime::from_timestamp_millis(day * 86_400_000)
                .expect("valid day")
                .format("%Y-%m-%d")
                .to_string();
            let dir = self.root.join(format!("date={date}"));
            std::fs::create_dir_all(&dir).map_err(Self::io(&dir))?;
            let tmp = dir.join(format!(".tmp-{seq:020}.parquet.partial"));
            let writer = parquet_writer(&tmp)?;
            self.open = Some(OpenFile {
                day,
                dir,
                tmp,
                writer,
                rows: 0,
                first_seq: seq,
                last_seq: seq,
                opened: Instant::now(),
            });
        }
        let open = self.open.as_mut().expect("opened above");
        open.writer
            .write(batch)
            .map_err(|e| parquet_error(&open.tmp, e))?;
        open.rows += batch.num_rows();
        open.last_seq = seq;
        let bytes = open.writer.bytes_written() + open.writer.in_progress_size();
        if open.rows >= self.max_rows || bytes as u64 >= self.max_bytes {
            self.close()?;
        }
        Ok(())
    }

    /// Deletes date partitions older than the retention, at most once an hour. A partition is
    /// renamed away first, so readers never see it half deleted.
    fn apply_retention(&mut self) {
        if self.retention_days == 0
            || self
                .retention_checked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
        {
            return;
        }
        self.retention_checked = Some(Instant::now());
        let today = utc_day(crate::protocol::registry::now_ms());
        let oldest_kept = today - i64::from(self.retention_days);
        for (day, dir) in date_partitions(&self.root) {
            if day >= oldest_kept || self.open.as_ref().is_some_and(|o| o.day == day) {
                continue;
            }
            let doomed = self.root.join(format!(".expired-{day}"));
            let removed =
                std::fs::rename(&dir, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed));
            match removed {
                Ok(()) => {
                    self.metrics
                        .parquet_partitions_expired
                        .fetch_add(1, Relaxed);
                    info!(partition = %dir.display(), retention_days = self.retention_days, "deleted a date partition past the retention");
                }
                Err(e) => {
                    warn!(partition = %dir.display(), error = %e, "cannot delete an expired partition")
                }
            }
        }
    }

    /// Merges a partition's small files (under a quarter of `max_rows`) once there are
    /// `compact_at` of them: written as one file named by the union of their sequence ranges,
    /// under a temporary name, fsync'd and renamed, and only then are the inputs deleted. A
    /// crash in between leaves inputs inside the merged file's range, removed at the next start.
    fn compact(&mut self, dir: &Path) -> Result<(), IngestError> {
        let small: Vec<((u64, u64), PathBuf)> = partition_files(dir)
            .into_iter()
            .filter(|(_, p)| parquet_rows(p).is_some_and(|n| n < (self.max_rows / 4).max(1) as u64))
            .collect();
        if self.compact_at < 2 || small.len() < self.compact_at {
            return Ok(());
        }
        // Only a contiguous run of ranges may be merged (no other file between them).
        let all = partition_files(dir);
        let start = all
            .iter()
            .position(|(r, _)| *r == small[0].0)
            .expect("listed");
        let run: Vec<&((u64, u64), PathBuf)> = all[start..]
            .iter()
            .take_while(|f| small.iter().any(|s| s.0 == f.0))
            .collect();
        if run.len() < self.compact_at {
            return Ok(());
        }
        let (first, last) = (run[0].0.0, run.last().expect("non-empty").0.1);
        let tmp = dir.join(format!(".tmp-compact-{first:020}.parquet.partial"));
        let mut writer = parquet_writer(&tmp)?;
        let mut rows = 0u64;
        for (_, path) in &run {
            let f = std::fs::File::open(path).map_err(Self::io(path))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .and_then(|b| b.build())
                .map_err(|e| parquet_error(path, e))?;
            for batch in reader {
                let batch = batch.map_err(|e| parquet_error(path, e))?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(|e| parquet_error(&tmp, e))?;
            }
        }
        let merged = dir.join(format!("part-{first:020}-{last:020}.parquet"));
        publish_parquet(writer, &tmp, &merged)?;
        for (_, path) in &run {
            std::fs::remove_file(path).map_err(Self::io(path))?;
        }
        self.metrics.parquet_compactions.fetch_add(1, Relaxed);
        info!(files = run.len(), rows, merged = %merged.display(), "compacted small Parquet files");
        Ok(())
    }

    /// Finishes the open file: fsync, rename into place, then checkpoint and free the WAL.
    fn close(&mut self) -> Result<(), IngestError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let name = format!("part-{:020}-{:020}.parquet", open.first_seq, open.last_seq);
        publish_parquet(open.writer, &open.tmp, &open.dir.join(name))?;
        wal::write_checkpoint(&self.wal_dir, open.last_seq)?;
        let keep_from = match &self.pg {
            Some(pg) => open.last_seq.min(pg.checkpoint.load(Relaxed)),
            None => open.last_seq,
        };
        wal::remove_segments_through(&self.wal_dir, keep_from)?;
        self.metrics.parquet_files.fetch_add(1, Relaxed);
        if let Err(e) = self.compact(&open.dir) {
            // Compaction is an optimisation: the small files stay readable as they are.
            warn!(error = %e, dir = %open.dir.display(), "Parquet compaction failed");
        }
        self.metrics
            .parquet_rows
            .fetch_add(open.rows as u64, Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use proptest::prelude::*;
    use samos_schemas::payload::SensorSpec;
    use samos_schemas::topic::Location;

    fn config(node: &str) -> Arc<NodeConfig> {
        let spec = |name: &str, ty: &str| SensorSpec {
            name: name.into(),
            part: "p".into(),
            data_type: ty.into(),
            units: "u".into(),
            min: "0".into(),
            max: "100".into(),
        };
        Arc::new(NodeConfig {
            node_id: node.into(),
            network: "net".into(),
            server_id: "SN".into(),
            location: Location::from_levels(["c", "d", "ci", "a", "indoor", "b", "r"]),
            sensors: vec![spec("t", "float"), spec("s", "string"), spec("b", "bool")],
            ip_address: String::new(),
            mac_address: String::new(),
            platform: String::new(),
            document: serde_json::Value::Null,
        })
    }

    fn value() -> impl Strategy<Value = (usize, Value)> {
        prop_oneof![
            (-1e6f64..1e6).prop_map(|v| (0, Value::Float(v))),
            "[a-z ]{0,12}".prop_map(|v| (1, Value::Text(v))),
            any::<bool>().prop_map(|v| (2, Value::Bool(v))),
        ]
    }

    proptest! {
        /// Every reading becomes one row holding exactly its fields, and the WAL encoding
        /// decodes back to the same batch.
        #[test]
        fn batches_hold_exactly_their_readings(
            rows in proptest::collection::vec((0usize..3, value(), any::<i64>().prop_map(|t| t.rem_euclid(4_000_000_000_000)), 0u8..3), 1..50),
            seq in 1u64..1_000_000,
        ) {
            let configs = [config("n0"), config("n1"), config("n2")];
            let readings: Vec<Reading> = rows
                .iter()
                .map(|(node, (sensor, v), t, qos)| Reading {
                    ingest_time_ms: *t,
                    config: configs[*node].clone(),
                    sensor: *sensor,
                    value: v.clone(),
                    severity: Severity::Warning,
                    qos: *qos,
                    client_id: Arc::from(format!("n{node}").as_str()),
                    ack: None,
                    qos2_pkid: None,
                })
                .collect();
            let batch = build_batch(&readings, seq);
            prop_assert_eq!(batch.num_rows(), readings.len());
            let ops = [SessionOp::Received { client: "n0".into(), pkid: 9 }];
            let payload = encode_record(&ops, Some(&batch));
            prop_assert_eq!(decode_record_sessions(&payload).unwrap(), ops);
            let decoded = samos_store::record::decode_batches(&payload).unwrap();
            prop_assert_eq!(decoded.len(), 1);
            prop_assert_eq!(&decoded[0], &batch);
            let node = batch.column(2).as_dictionary::<Int32Type>();
            let nodes = node.values().as_string::<i32>();
            let values = batch.column(13).as_primitive::<arrow::datatypes::Float64Type>();
            let raw = batch.column(14).as_string::<i32>();
            let keys = batch.column(18).as_primitive::<arrow::datatypes::UInt64Type>();
            let times = batch.column(0).as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            for (i, r) in readings.iter().enumerate() {
                prop_assert_eq!(nodes.value(node.keys().value(i) as usize), r.config.node_id.as_str());
                prop_assert_eq!(times.value(i), r.ingest_time_ms);
                prop_assert_eq!(keys.value(i), seq * ROWS_PER_BATCH + i as u64);
                match &r.value {
                    Value::Text(t) => {
                        prop_assert!(values.is_null(i));
                        prop_assert_eq!(raw.value(i), t.as_str());
                    }
                    v => {
                        prop_assert_eq!(Some(values.value(i)), v.as_f64());
                        prop_assert!(raw.is_null(i));
                    }
                }
            }
        }
    }
}
