//! The object-store sink thread: takes the Parquet files the Parquet sink finished in the
//! local outbox (`data/outbox/`), uploads and commits each to the Delta table, and only then
//! advances the WAL checkpoint, frees WAL segments and deletes the local file. At start it is
//! also handed the files of a local Parquet store left from before the object store was
//! configured (`data/readings/`), oldest first, and moves them into the table the same way.
//!
//! Order per file: upload → Delta commit (with the file's last WAL sequence as the writer's
//! `txn` version) → WAL checkpoint → free segments → delete the outbox file. A crash anywhere
//! leaves the file's rows in the WAL past the checkpoint and the file in the outbox; at the
//! next start the outbox is offered again, and the table's `txn` version says which files it
//! already holds (see `samos_lake::writer`). Nothing is ever in neither place.
//!
//! An unreachable store is retried with backoff (1 s doubling to 60 s); files wait in the
//! outbox, `samos_lake_lag_batches` grows, and once the WAL backlog limit is reached the
//! batcher holds commits and publishers are paused, as in a PostgreSQL outage. Compaction,
//! retention and vacuum are Delta transactions run by this thread between uploads.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{self, Receiver, RecvTimeoutError};
use samos_lake::protocol::ProtocolMirror;
use samos_lake::{Dataset, LakeError, LakeWriter, TableLocation};
use samos_store::layout::{self, utc_day};
use samos_store::parquet::Published;
use tracing::{debug, error, info, warn};

use super::wal;
use super::watermark::{Follower, Watermark, needed_from};
use crate::clock;
use crate::metrics::Metrics;

/// What the object-store sink is handed, in WAL order.
pub(super) enum LakeMsg {
    File(Published),
    /// Answered once every file handed over before it is committed.
    Flush(channel::Sender<()>),
}

/// How the first attempt to open the table went.
pub(super) enum Opened {
    Open,
    /// Never writable by this instance: another one owns the table.
    Refused(LakeError),
    /// Unreachable or failing for now; the sink keeps trying.
    Retrying(String),
}

/// How the sink reaches and maintains the table.
#[derive(Debug, Clone)]
pub(super) struct LakeSettings {
    /// The dataset every instance shares…
    pub(super) dataset: Dataset,
    /// …this instance's name in it…
    pub(super) instance_id: String,
    /// …and its own table there.
    pub(super) location: TableLocation,
    /// Where the protocol's files are mirrored from.
    pub(super) data_dir: PathBuf,
    /// This data directory's store id: the table's one writer.
    pub(super) writer_id: String,
    pub(super) checkpoint_interval: u64,
    /// Merge a partition's small files once there are this many (0: never)…
    pub(super) compact_at: usize,
    /// …small meaning fewer rows than this.
    pub(super) small_below: u64,
    /// Files older than this many days are removed from the table (0: never).
    pub(super) retention_days: u32,
    /// Unreferenced objects are deleted this long after they stopped being referenced.
    pub(super) vacuum_grace: Duration,
    /// Test hook (`SAMOS_FAILPOINT=lake-after-upload`): abort the process after the first
    /// upload, before its commit, as a crash there would.
    pub(super) crash_after_upload: bool,
}

/// Uploads and commits finished files, then advances the WAL checkpoint.
pub(super) struct LakeSink {
    pub(super) settings: LakeSettings,
    pub(super) wal_dir: PathBuf,
    /// Where compaction writes its merged file before uploading it.
    pub(super) outbox: PathBuf,
    /// The last WAL sequence in the table (the WAL checkpoint in this mode).
    pub(super) checkpoint: Arc<Watermark>,
    /// The last WAL sequence committed (for the lag gauge).
    pub(super) committed: Arc<Watermark>,
    /// The PostgreSQL sink's progress: WAL segments it still needs are kept.
    /// PostgreSQL and the bridges: WAL segments they still need are kept.
    pub(super) followers: Arc<[Follower]>,
    pub(super) metrics: Arc<Metrics>,
    /// The other instances' registries as last read from the store.
    pub(super) peers: tokio::sync::watch::Sender<PeerRegistries>,
}

/// The fields of a registry record (`nodes.json`) the other instances read: who the node is,
/// when it was last heard from, and what a move carries over (`protocol::peers`).
pub const PEER_FIELDS: [&str; 9] = [
    "network",
    "node_id",
    "severity",
    "assessed_severity",
    "blocked_by",
    "pushed_config",
    "bound_client",
    "joined_at_ms",
    "last_seen_ms",
];

/// What the other instances of the dataset publish of their registries: (instance, its
/// `peers.json`, the records cut to [`PEER_FIELDS`]).
pub type PeerRegistries = Arc<Vec<(String, Bytes)>>;

/// How often the protocol's files are mirrored and the other instances' registries read.
const PROTOCOL_SYNC_EVERY: Duration = Duration::from_secs(1);

/// First and longest wait between two tries of a failed upload, commit or open.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How often retention and vacuum run.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);

impl LakeSink {
    /// Runs the sink on this thread until the channel closes; `opened` is told how the first
    /// attempt to open the table went.
    pub(super) fn run(self, rx: Receiver<LakeMsg>, opened: channel::Sender<Opened>) {
        // Two workers: the Delta kernel blocks on some of its own futures, which must not wait
        // for the thread that blocks.
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("samos-lake-io")
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = opened.send(Opened::Retrying(format!(
                    "cannot start the object-store runtime: {e}"
                )));
                return;
            }
        };
        runtime.block_on(self.serve(rx, opened));
    }

    async fn serve(self, rx: Receiver<LakeMsg>, opened: channel::Sender<Opened>) {
        let mut pending = VecDeque::<Published>::new();
        let Some(mut writer) = self.open(&opened).await else {
            return;
        };
        tokio::spawn(protocol_sync(
            self.settings.clone(),
            self.metrics.clone(),
            self.peers.clone(),
        ));
        let mut flushes = Vec::new();
        let mut maintained: Option<Instant> = None;
        loop {
            self.metrics
                .lake_pending_files
                .store(pending.len() as u64, Relaxed);
            if let Some(file) = pending.front() {
                match self.commit(&mut writer, file).await {
                    Ok(()) => {
                        pending.pop_front();
                    }
                    Err(Stop) => return,
                }
                // Take whatever else arrived meanwhile without waiting.
                loop {
                    match rx.try_recv() {
                        Ok(LakeMsg::File(f)) => pending.push_back(f),
                        Ok(LakeMsg::Flush(done)) => flushes.push(done),
                        Err(_) => break,
                    }
                }
                continue;
            }
            for done in flushes.drain(..) {
                debug!("object-store sink flushed");
                let _ = done.send(());
            }
            if maintained.is_none_or(|t| t.elapsed() >= MAINTENANCE_EVERY) {
                maintained = Some(Instant::now());
                self.maintain(&mut writer).await;
            }
            // Idle: this thread only drives `serve` (the runtime's workers run the rest), so a
            // blocking wait is fine.
            match rx.recv_timeout(MAINTENANCE_EVERY) {
                Ok(LakeMsg::File(f)) => pending.push_back(f),
                Ok(LakeMsg::Flush(done)) => flushes.push(done),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Opens the table, retrying while the store is unreachable. `None`: it can never be
    /// written by this instance (another writer), and the sink stops.
    async fn open(&self, opened: &channel::Sender<Opened>) -> Option<LakeWriter> {
        let s = &self.settings;
        let mut backoff = BACKOFF_FIRST;
        let mut told = false;
        loop {
            let attempt = async {
                s.dataset.refuse_old_layout().await?;
                LakeWriter::open(&s.location, &s.writer_id, s.checkpoint_interval).await
            };
            match attempt.await {
                Ok(writer) => {
                    if !told {
                        let _ = opened.send(Opened::Open);
                    }
                    info!(
                        table = %s.location.url(),
                        version = writer.version(),
                        committed_wal_seq = writer.committed(),
                        "object-store table open"
                    );
                    if writer.committed() > self.checkpoint.get() {
                        // Committed before a crash, checkpointed only now.
                        self.checkpointed(writer.committed());
                    }
                    return Some(writer);
                }
                Err(e @ (LakeError::OtherWriter { .. } | LakeError::OldLayout { .. })) => {
                    error!(error = %e, "object-store sink stopped");
                    if !told {
                        let _ = opened.send(Opened::Refused(e));
                    }
                    return None;
                }
                Err(e) => {
                    self.metrics.lake_errors.fetch_add(1, Relaxed);
                    warn!(error = %e, table = %s.location.url(), retry_in = ?backoff,
                        "cannot open the object-store table; retrying (readings wait in the WAL)");
                    if !told {
                        told = true;
                        let _ = opened.send(Opened::Retrying(e.to_string()));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Uploads and commits one file, retrying until it is in the table; then checkpoints,
    /// deletes the local copy and merges small files of its partition.
    async fn commit(&self, writer: &mut LakeWriter, file: &Published) -> Result<(), Stop> {
        let Some(range) = layout::file_range(&file.path) else {
            error!(file = %file.path.display(), "an outbox file without a WAL range in its name");
            return Err(Stop);
        };
        let day = file.day;
        let mut backoff = BACKOFF_FIRST;
        let committed = loop {
            match self.upload_and_commit(writer, file, range, day).await {
                Ok(committed) => break committed,
                Err(e @ LakeError::OtherWriter { .. }) => {
                    error!(error = %e, "object-store sink stopped");
                    return Err(Stop);
                }
                Err(e) => {
                    self.metrics.lake_errors.fetch_add(1, Relaxed);
                    warn!(error = %e, file = %file.path.display(), retry_in = ?backoff,
                        "upload to the object store failed; retrying (nothing is lost: the rows stay in the WAL)");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        self.checkpointed(range.1);
        if let Err(e) = std::fs::remove_file(&file.path) {
            warn!(error = %e, file = %file.path.display(), "cannot delete an uploaded outbox file");
        }
        match committed {
            Some(c) => {
                let m = &self.metrics;
                m.lake_files.fetch_add(1, Relaxed);
                m.lake_rows.fetch_add(c.rows, Relaxed);
                m.lake_bytes.fetch_add(c.bytes, Relaxed);
            }
            None => {
                info!(file = %file.path.display(), "the table already held this file (committed before a restart)");
            }
        }
        let s = &self.settings;
        match writer
            .compact(day, s.small_below, s.compact_at, &self.outbox)
            .await
        {
            Ok(Some(merged)) => {
                self.metrics.lake_compactions.fetch_add(1, Relaxed);
                info!(files = merged.files, rows = merged.rows, merged = %merged.path,
                    version = merged.version, "compacted small files in the object-store table");
            }
            Ok(None) => {}
            // An optimisation: the small files stay readable as they are.
            Err(e) => warn!(error = %e, "compaction in the object-store table failed"),
        }
        Ok(())
    }

    /// One try at putting a file in the table.
    async fn upload_and_commit(
        &self,
        writer: &mut LakeWriter,
        file: &Published,
        range: (u64, u64),
        day: i64,
    ) -> Result<Option<samos_lake::writer::Committed>, LakeError> {
        let Some(uploaded) = writer.upload(&file.path, range, day).await? else {
            return Ok(None);
        };
        if self.settings.crash_after_upload {
            error!(file = %file.path.display(), "failpoint lake-after-upload: aborting between upload and commit");
            std::process::abort();
        }
        writer.commit_upload(uploaded).await.map(Some)
    }

    /// The table holds everything through WAL sequence `seq`: checkpoint and free the WAL.
    /// Never backwards: a file moved over from the local store is older than the checkpoint.
    fn checkpointed(&self, seq: u64) {
        if seq <= self.checkpoint.get() {
            return;
        }
        if let Err(e) = wal::write_checkpoint(&self.wal_dir, seq) {
            // The table is ahead of the local checkpoint; the next start reads it from there.
            warn!(error = %e, "cannot write the WAL checkpoint");
            return;
        }
        self.checkpoint.set(seq);
        self.metrics
            .lake_lag
            .store(self.committed.get().saturating_sub(seq), Relaxed);
        let keep_from = needed_from(seq, &self.followers);
        if let Err(e) = wal::remove_segments_through(&self.wal_dir, keep_from) {
            warn!(error = %e, "cannot free WAL segments");
        }
    }

    /// Retention (files of partitions past `retention_days` removed in one commit) and vacuum.
    async fn maintain(&self, writer: &mut LakeWriter) {
        let s = &self.settings;
        if s.retention_days > 0 {
            let oldest_kept = utc_day(clock::now_ms()) - i64::from(s.retention_days);
            match writer.expire(oldest_kept).await {
                Ok(0) => {}
                Ok(n) => {
                    self.metrics.lake_files_expired.fetch_add(n as u64, Relaxed);
                    info!(
                        files = n,
                        retention_days = s.retention_days,
                        "removed files past the retention from the object-store table"
                    );
                }
                Err(e) => warn!(error = %e, "retention in the object-store table failed"),
            }
        }
        match writer.vacuum(s.vacuum_grace).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics
                    .lake_files_vacuumed
                    .fetch_add(n as u64, Relaxed);
                info!(
                    files = n,
                    "vacuumed unreferenced objects from the object-store table"
                );
            }
            Err(e) => warn!(error = %e, "vacuum of the object-store table failed"),
        }
    }
}

/// The sink cannot go on (another writer owns the table, or an outbox file is malformed).
struct Stop;

/// Every second: mirrors this instance's protocol files to its folder of the dataset, and
/// reads the other instances' registries (only those that changed are fetched again).
async fn protocol_sync(
    settings: LakeSettings,
    metrics: Arc<Metrics>,
    peers: tokio::sync::watch::Sender<PeerRegistries>,
) {
    let me = settings.instance_id.as_str();
    let mut mirror = None;
    let mut follower = samos_lake::protocol::RegistryFollower::peers();
    let mut store = None;
    let mut failing = false;
    loop {
        let round = async {
            let store = match &store {
                Some(store) => Arc::clone(store),
                None => Arc::clone(store.insert(settings.dataset.store()?)),
            };
            let mirror = match &mut mirror {
                Some(m) => m,
                None => mirror.insert(ProtocolMirror::new(
                    store.clone(),
                    me,
                    &settings.data_dir,
                    &PEER_FIELDS,
                )?),
            };
            mirror.sync().await?;
            let others = follower.read(store.as_ref(), Some(me)).await?;
            peers.send_if_modified(|current| {
                let changed = **current != others;
                if changed {
                    *current = Arc::new(others);
                }
                changed
            });
            Ok::<_, LakeError>(())
        };
        match round.await {
            Ok(()) if failing => {
                failing = false;
                info!("protocol files mirrored to the object store again");
            }
            Ok(()) => {}
            Err(e) => {
                metrics.lake_errors.fetch_add(1, Relaxed);
                if !failing {
                    warn!(error = %e, "cannot mirror the protocol files to the object store; retrying every second");
                }
                failing = true;
            }
        }
        tokio::time::sleep(PROTOCOL_SYNC_EVERY).await;
    }
}
