//! The Parquet sink thread: takes committed batches in WAL order, writes them into the store
//! ([`samos_store::parquet::ParquetStore`]), and after each published file advances the WAL
//! checkpoint and frees the WAL segments nothing else needs (PostgreSQL keeps its own).
//!
//! Order per file: publish (fsync, rename) → checkpoint → free segments → compaction. A
//! crash anywhere leaves every row either in the WAL past the checkpoint or in a published
//! file, never both and never neither.
//!
//! A full disk is waited out in place: the unfinished file is deleted, and once space is
//! freed its batches are written again from the WAL (which keeps every record past the last
//! published file) before the batch that failed. Meanwhile commits wait on this sink's
//! bounded queue, so publishers pause. Any other failure exits the process (as a WAL fsync
//! error does); the restart writes the rows from the WAL.
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

use super::batcher::EXIT_WAL_FAILED;
use super::lake_sink::LakeMsg;
use super::wal::WalTail;
use super::watermark::{Follower, needed_from};
use super::{IngestError, wal};
use crate::clock;
use crate::disk_space::{Writer, retry_delay};
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
    /// The last WAL sequence in a published file (or replayed before the start).
    pub(super) published_through: u64,
    /// The last WAL sequence handed to the store; those after `published_through` are in
    /// the open file.
    pub(super) written_through: u64,
}

impl ParquetSink {
    pub(super) fn run(mut self, rx: Receiver<SinkMsg>) {
        loop {
            self.apply_retention();
            let wait = self
                .store
                .time_to_rotate()
                .unwrap_or(Duration::from_secs(60));
            let done = match rx.recv_timeout(wait) {
                Ok(SinkMsg::Batch(seq, batch)) => self.write(seq, &batch).err(),
                Ok(SinkMsg::Flush(done)) => {
                    let failed = self.close().err();
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
                    failed
                }
                Err(channel::RecvTimeoutError::Timeout) => None,
                Err(channel::RecvTimeoutError::Disconnected) => {
                    if let Err(e) = self.close() {
                        error!(error = %e, "Parquet close failed at shutdown; the rows stay in the WAL and are written at the next start");
                    }
                    return;
                }
            };
            if let Some(e) = done.or_else(|| self.rotate_if_old().err()) {
                // Not a full disk (that is waited out): a failed write or fsync of a file the
                // checkpoint does not cover yet. Its rows are in the WAL; as for a WAL fsync
                // error, the process exits and the restart writes them again.
                error!(error = %e, exit_status = EXIT_WAL_FAILED, "Parquet write failed: exiting; the rows stay in the WAL and are written at the restart");
                std::process::exit(EXIT_WAL_FAILED);
            }
        }
    }

    /// Appends a committed batch (WAL record `seq`), waiting out a full disk.
    pub(super) fn write(&mut self, seq: u64, batch: &RecordBatch) -> Result<(), IngestError> {
        self.waiting_for_space(|sink| sink.write_batch(seq, batch))?;
        self.written_through = self.written_through.max(seq);
        Ok(())
    }

    /// Publishes the open file, if any, waiting out a full disk.
    pub(super) fn close(&mut self) -> Result<(), IngestError> {
        self.waiting_for_space(Self::close_now)
    }

    /// Publishes the open file if it has reached its maximum age.
    fn rotate_if_old(&mut self) -> Result<(), IngestError> {
        self.waiting_for_space(|sink| match sink.store.rotate_if_old()? {
            Some(p) => sink.published(&p),
            None => Ok(()),
        })
    }

    /// Runs `step` until it succeeds or fails for another reason than a full disk. After a
    /// full disk the unfinished file is dropped (freeing its space) and, once a write
    /// succeeds again, rebuilt from the WAL records it held before `step` is tried again: the
    /// WAL keeps every record past the last published file, so nothing is lost or doubled.
    fn waiting_for_space(
        &mut self,
        mut step: impl FnMut(&mut Self) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let mut attempt = 0;
        loop {
            let result = if attempt == 0 {
                step(self)
            } else {
                self.rewrite_from_wal().and_then(|()| step(self))
            };
            match result {
                Err(e) if e.is_no_space() => {
                    self.metrics.disk.full(Writer::Parquet, &e);
                    self.store.abandon();
                    std::thread::sleep(retry_delay(attempt));
                    attempt += 1;
                }
                // The episode ends with the next file published (`published`): a batch
                // written into the open file may sit in memory without touching the disk.
                other => return other,
            }
        }
    }

    /// Writes again, from the WAL, the batches after the last published file that had been
    /// handed to the store (those of an abandoned file).
    fn rewrite_from_wal(&mut self) -> Result<(), IngestError> {
        let mut tail = WalTail::new(&self.wal_dir, self.published_through);
        while tail.position < self.written_through {
            let records = tail.read(self.written_through, 64)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                let batches =
                    samos_store::record::decode_batches(&record.payload).map_err(|message| {
                        IngestError::Replay {
                            seq: record.seq,
                            message,
                        }
                    })?;
                for batch in batches {
                    self.write_batch(record.seq, &batch)?;
                }
            }
        }
        Ok(())
    }

    fn write_batch(&mut self, seq: u64, batch: &RecordBatch) -> Result<(), IngestError> {
        if self.store.starts_another_day(batch) {
            // Publish and checkpoint yesterday's file before today's is started.
            self.close_now()?;
        }
        for p in self.store.write(seq, batch)? {
            self.published(&p)?;
        }
        Ok(())
    }

    fn close_now(&mut self) -> Result<(), IngestError> {
        match self.store.close()? {
            Some(p) => self.published(&p),
            None => Ok(()),
        }
    }

    /// A file is whole on disk: checkpoint, free the WAL, then merge small files.
    fn published(&mut self, file: &Published) -> Result<(), IngestError> {
        self.published_through = file.last_seq;
        self.metrics.parquet_files.fetch_add(1, Relaxed);
        self.metrics.parquet_rows.fetch_add(file.rows, Relaxed);
        if let Some(lake) = &self.lake {
            self.metrics.disk.freed(Writer::Parquet);
            // The object-store sink lives as long as this one; if it stopped, the file
            // stays in the outbox and is offered again at the next start.
            let _ = lake.send(LakeMsg::File(file.clone()));
            return Ok(());
        }
        match wal::write_checkpoint(&self.wal_dir, file.last_seq) {
            Ok(()) => self.metrics.disk.freed(Writer::Parquet),
            // The file is published: a restart replays only what comes after the last
            // published file, so the checkpoint may wait for the next file (and the WAL
            // segments for it).
            Err(e) if e.is_no_space() => {
                self.metrics.disk.full(Writer::Parquet, &e);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
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
