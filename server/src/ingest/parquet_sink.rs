//! The Parquet sink thread: takes committed batches in WAL order, writes them into the store
//! ([`samos_store::parquet::ParquetStore`]), and after each published file advances the WAL
//! checkpoint and frees the WAL segments nothing else needs (PostgreSQL keeps its own).
//!
//! Order per file: publish (fsync, rename) → checkpoint → free segments → compaction. A
//! crash anywhere leaves every row either in the WAL past the checkpoint or in a published
//! file, never both and never neither.
//!
//! With an object store configured the store is the outbox (`data/outbox/`): a published file
//! is handed to the object-store sink (`lake_sink`), which checkpoints once the table holds
//! it; this sink then neither checkpoints, compacts nor expires anything itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use crossbeam::channel::{self, Receiver};
use samos_store::layout::utc_day;
use samos_store::parquet::{ParquetStore, Published};
use tracing::{debug, error, info, warn};

use super::lake_sink::LakeMsg;
use super::watermark::{Follower, needed_from};
use super::{IngestError, wal};
use crate::clock;
use crate::metrics::Metrics;

/// What the Parquet sink is handed, in commit order.
pub(super) enum SinkMsg {
    Batch(u64, RecordBatch),
    Flush(channel::Sender<()>),
}

/// Writes committed batches into Parquet files and advances the WAL checkpoint.
pub(super) struct ParquetSink {
    pub(super) store: ParquetStore,
    /// The PostgreSQL sink's progress: WAL segments it still needs are kept.
    /// PostgreSQL and the bridges: WAL segments they still need are kept.
    pub(super) followers: Arc<[Follower]>,
    pub(super) wal_dir: PathBuf,
    /// Date partitions older than this many days are deleted (0: never).
    pub(super) retention_days: u32,
    pub(super) retention_checked: Option<Instant>,
    pub(super) metrics: Arc<Metrics>,
    /// The object-store sink, when the history lives there: published files go to it.
    pub(super) lake: Option<channel::Sender<LakeMsg>>,
}

impl ParquetSink {
    pub(super) fn run(mut self, rx: Receiver<SinkMsg>) {
        loop {
            self.apply_retention();
            let wait = self
                .store
                .time_to_rotate()
                .unwrap_or(Duration::from_secs(60));
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
                    match &self.lake {
                        // Answered once the object store holds every file published so far.
                        Some(lake) => {
                            debug!("flush handed to the object-store sink");
                            let _ = lake.send(LakeMsg::Flush(done));
                        }
                        None => {
                            let _ = done.send(());
                        }
                    }
                }
                Err(channel::RecvTimeoutError::Timeout) => {}
                Err(channel::RecvTimeoutError::Disconnected) => {
                    let _ = self.close();
                    return;
                }
            }
            if let Err(e) = self.rotate_if_old() {
                error!(error = %e, "Parquet close failed");
                return;
            }
        }
    }

    /// Appends a committed batch (WAL record `seq`).
    pub(super) fn write(&mut self, seq: u64, batch: &RecordBatch) -> Result<(), IngestError> {
        if self.store.starts_another_day(batch) {
            // Publish and checkpoint yesterday's file before today's is started.
            self.close()?;
        }
        for p in self.store.write(seq, batch)? {
            self.published(&p)?;
        }
        Ok(())
    }

    /// Publishes the open file if it has reached its maximum age.
    fn rotate_if_old(&mut self) -> Result<(), IngestError> {
        match self.store.rotate_if_old()? {
            Some(p) => self.published(&p),
            None => Ok(()),
        }
    }

    /// Publishes the open file, if any.
    pub(super) fn close(&mut self) -> Result<(), IngestError> {
        match self.store.close()? {
            Some(p) => self.published(&p),
            None => Ok(()),
        }
    }

    /// A file is whole on disk: checkpoint, free the WAL, then merge small files.
    fn published(&mut self, file: &Published) -> Result<(), IngestError> {
        self.metrics.parquet_files.fetch_add(1, Relaxed);
        self.metrics.parquet_rows.fetch_add(file.rows, Relaxed);
        if let Some(lake) = &self.lake {
            // The object-store sink lives as long as this one; if it stopped, the file
            // stays in the outbox and is offered again at the next start.
            let _ = lake.send(LakeMsg::File(file.clone()));
            return Ok(());
        }
        wal::write_checkpoint(&self.wal_dir, file.last_seq)?;
        let keep_from = needed_from(file.last_seq, &self.followers);
        wal::remove_segments_through(&self.wal_dir, keep_from)?;
        match self.store.compact(&file.partition) {
            Ok(Some(c)) => {
                self.metrics.parquet_compactions.fetch_add(1, Relaxed);
                info!(files = c.files, rows = c.rows, merged = %c.merged.display(), "compacted small Parquet files");
            }
            Ok(None) => {}
            // Compaction is an optimisation: the small files stay readable as they are.
            Err(e) => {
                warn!(error = %e, dir = %file.partition.display(), "Parquet compaction failed");
            }
        }
        Ok(())
    }

    /// Deletes date partitions older than the retention, at most once an hour.
    fn apply_retention(&mut self) {
        if self.retention_days == 0
            || self.lake.is_some()
            || self
                .retention_checked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
        {
            return;
        }
        self.retention_checked = Some(Instant::now());
        let today = utc_day(clock::now_ms());
        for expired in self.store.expire(today, self.retention_days) {
            let partition = expired.partition.display();
            match expired.result {
                Ok(()) => {
                    self.metrics
                        .parquet_partitions_expired
                        .fetch_add(1, Relaxed);
                    info!(%partition, retention_days = self.retention_days, "deleted a date partition past the retention");
                }
                Err(e) => warn!(%partition, error = %e, "cannot delete an expired partition"),
            }
        }
    }
}
