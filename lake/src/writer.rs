//! The one process that commits to the `readings` Delta table: uploads finished Parquet files,
//! adds them to the log, merges small ones, removes partitions past the retention, vacuums.
//!
//! Invariants:
//! - **Exactly once by WAL range.** A data file is named by the WAL sequences it holds
//!   (`date=YYYY-MM-DD/part-{first}-{last}.parquet`, as in the local store) and every append
//!   commits, in the same Delta version, an application transaction (`txn`) whose `appId` is
//!   the writer's identity (the WAL directory's store id) and whose `version` is the file's
//!   last WAL sequence. The table's `txn` version is therefore the last WAL sequence in the
//!   table: [`LakeWriter::append`] of a file at or below it is a no-op, so a restart may offer
//!   the same file again without doubling a row.
//! - **Upload, then commit.** A file is uploaded whole (one PUT, or a multipart upload that
//!   only becomes visible when completed) before the commit that references it; a crash in
//!   between leaves an object no snapshot references, overwritten by the retry (same name,
//!   same bytes) or removed by [`LakeWriter::vacuum`] after its grace period.
//! - **Compaction and retention are transactions.** A merge adds the merged file and removes
//!   its inputs in one commit (`dataChange = false`), so every snapshot holds each reading
//!   once; removed files stay on the store for readers of older snapshots until vacuumed.
//! - **One writer.** The table records its writer (`samos.writer` in the table's
//!   configuration); another identity is refused at [`LakeWriter::open`] and a commit that
//!   finds the table taken over fails instead of writing beside it.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, DataType, StructField, StructType, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures_util::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path as ObjectPath;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use samos_store::layout;
use tokio::io::AsyncWriteExt as _;
use tracing::info;

use crate::stats;
use crate::{DATE_COLUMN, LakeError, TableLocation, WRITER_PROPERTY};

/// A file the table now holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The Delta version that added it.
    pub version: u64,
    /// Its path under the table's root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// A file on the store that no snapshot references yet (see [`LakeWriter::upload`]).
#[derive(Debug)]
pub struct Uploaded {
    path: String,
    date: String,
    last_seq: u64,
    bytes: u64,
    stats: stats::FileStats,
}

/// Small files merged into one by a Delta transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub version: u64,
    pub path: String,
    pub files: usize,
    pub rows: u64,
}

/// A data file of the current snapshot, as the writer sees it.
struct TableFile {
    path: String,
    date: String,
    range: (u64, u64),
    rows: u64,
    view: deltalake::kernel::LogicalFileView,
}

/// The committing side of the `readings` table (see the module header).
pub struct LakeWriter {
    table: DeltaTable,
    writer_id: String,
    /// The last WAL sequence the table holds (its `txn` version for `writer_id`).
    committed: u64,
}

impl std::fmt::Debug for LakeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeWriter")
            .field("table", &self.table.table_url().as_str())
            .field("writer_id", &self.writer_id)
            .field("committed", &self.committed)
            .finish()
    }
}

/// How often a commit is tried again when another commit won the same version.
const COMMIT_RETRIES: usize = 3;

impl LakeWriter {
    /// Opens the table at `location` for `writer_id`, creating it if there is none. A table
    /// another writer commits to is refused ([`LakeError::OtherWriter`]).
    pub async fn open(
        location: &TableLocation,
        writer_id: &str,
        checkpoint_interval: u64,
    ) -> Result<LakeWriter, LakeError> {
        let mut table = crate::table_at(location)?;
        if !table.verify_deltatable_existence().await? {
            let schema: StructType = samos_schemas::readings::readings_schema()
                .as_ref()
                .try_into_kernel()
                .map_err(|e| LakeError::Schema(e.to_string()))?;
            let columns = schema.fields().cloned().chain([StructField::new(
                DATE_COLUMN,
                DataType::STRING,
                false,
            )]);
            table = CreateBuilder::new()
                .with_log_store(table.log_store())
                .with_table_name("readings")
                .with_comment("Samos readings: one row per acknowledged reading")
                .with_columns(columns)
                .with_partition_columns([DATE_COLUMN])
                .with_configuration([
                    (WRITER_PROPERTY, Some(writer_id.to_owned())),
                    (
                        "delta.checkpointInterval",
                        Some(checkpoint_interval.max(1).to_string()),
                    ),
                ])
                .with_raise_if_key_not_exists(false)
                .with_save_mode(SaveMode::Ignore)
                .await?;
            info!(table = %location.url(), "created the readings Delta table");
        } else {
            table.load().await?;
        }
        let mut writer = LakeWriter {
            table,
            writer_id: writer_id.to_owned(),
            committed: 0,
        };
        writer.check_writer()?;
        writer.committed = writer.read_committed().await?;
        Ok(writer)
    }

    /// The last WAL sequence the table holds for this writer (0: none yet).
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The table's current version.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    async fn read_committed(&self) -> Result<u64, LakeError> {
        let version = self
            .table
            .snapshot()?
            .transaction_version(self.table.log_store().as_ref(), &self.writer_id)
            .await?;
        Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    /// Refuses a table whose recorded writer is someone else.
    fn check_writer(&self) -> Result<(), LakeError> {
        let snapshot = self.table.snapshot()?;
        match snapshot.metadata().configuration().get(WRITER_PROPERTY) {
            Some(owner) if owner != &self.writer_id => Err(LakeError::OtherWriter {
                table: self.table.table_url().to_string(),
                owner: owner.clone(),
                me: self.writer_id.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Uploads the local Parquet file `file` (WAL sequences `range`, UTC day `day`) and
    /// commits it. `None`: the table already holds that range (a retry after a crash).
    pub async fn append(
        &mut self,
        file: &Path,
        range: (u64, u64),
        day: i64,
    ) -> Result<Option<Committed>, LakeError> {
        match self.upload(file, range, day).await? {
            Some(uploaded) => Ok(Some(self.commit_upload(uploaded).await?)),
            None => Ok(None),
        }
    }

    /// The first half of [`LakeWriter::append`]: the file is on the store, referenced by no
    /// snapshot yet. `None`: the table already holds that range.
    pub async fn upload(
        &mut self,
        file: &Path,
        range: (u64, u64),
        day: i64,
    ) -> Result<Option<Uploaded>, LakeError> {
        if range.1 <= self.committed {
            return Ok(None);
        }
        let date = layout::date_string(day);
        let path = data_path(&date, range);
        let bytes = self.put(file, &path).await?;
        let stats = file_stats(file).await?;
        Ok(Some(Uploaded {
            path,
            date,
            last_seq: range.1,
            bytes,
            stats,
        }))
    }

    /// The second half of [`LakeWriter::append`]: one commit adds the uploaded file and
    /// moves this writer's `txn` version to its last WAL sequence.
    pub async fn commit_upload(&mut self, uploaded: Uploaded) -> Result<Committed, LakeError> {
        let Uploaded {
            path,
            date,
            last_seq,
            bytes,
            stats,
        } = uploaded;
        let rows = stats.rows;
        let add = add_action(path.clone(), date, bytes, stats, true);
        let version = self
            .commit(
                vec![Action::Add(add)],
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: Some(vec![DATE_COLUMN.to_owned()]),
                    predicate: None,
                },
                Some(last_seq),
            )
            .await?;
        self.committed = last_seq;
        Ok(Committed {
            version,
            path,
            rows,
            bytes,
        })
    }

    /// Puts `file` at `path` under the table's root: one PUT when small, a multipart upload
    /// when large. Returns its size.
    async fn put(&self, file: &Path, path: &str) -> Result<u64, LakeError> {
        let io = |source| LakeError::Io {
            path: file.to_path_buf(),
            source,
        };
        let store = self.table.object_store();
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            store,
            ObjectPath::from(path),
            UPLOAD_PART_BYTES,
        );
        let copied = match tokio::io::copy(&mut reader, &mut writer).await {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(io(e));
            }
        };
        writer.shutdown().await.map_err(|e| LakeError::Upload {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        Ok(copied)
    }

    /// Commits `actions` (with this writer's `txn` at `wal_seq`, where given) against the
    /// current snapshot, then takes the new snapshot.
    async fn commit(
        &mut self,
        actions: Vec<Action>,
        operation: DeltaOperation,
        wal_seq: Option<u64>,
    ) -> Result<u64, LakeError> {
        let mut properties = CommitProperties::default()
            .with_max_retries(COMMIT_RETRIES)
            .with_metadata([(
                WRITER_PROPERTY.to_owned(),
                serde_json::Value::from(self.writer_id.clone()),
            )]);
        if let Some(seq) = wal_seq {
            properties =
                properties.with_application_transaction(Transaction::new_with_last_update(
                    &self.writer_id,
                    i64::try_from(seq).unwrap_or(i64::MAX),
                    Some(chrono::Utc::now().timestamp_millis()),
                ));
        }
        let result = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                self.table
                    .state
                    .as_ref()
                    .map(|state| state as &dyn TableReference),
                self.table.log_store(),
                operation,
            )
            .await;
        match result {
            Ok(finalized) => {
                let version = finalized.version();
                self.table.state = Some(finalized.snapshot());
                Ok(version)
            }
            Err(e) => {
                // Whoever won the version may have taken the table over: look before retrying.
                if self.table.update_state().await.is_ok() {
                    self.check_writer()?;
                    self.committed = self.read_committed().await?;
                }
                Err(e.into())
            }
        }
    }

    /// The data files of the current snapshot, with their WAL ranges.
    async fn files(&self) -> Result<Vec<TableFile>, LakeError> {
        let snapshot = self.table.snapshot()?;
        let views: Vec<_> = snapshot
            .snapshot()
            .file_views(self.table.log_store().as_ref(), None)
            .try_collect()
            .await?;
        Ok(views
            .into_iter()
            .filter_map(|view| {
                let path = view.path().into_owned();
                let range = layout::file_range(Path::new(&path))?;
                let date = view
                    .partition_values_map()
                    .get(DATE_COLUMN)
                    .cloned()
                    .flatten()?;
                Some(TableFile {
                    rows: view.num_records().unwrap_or(usize::MAX) as u64,
                    path,
                    date,
                    range,
                    view,
                })
            })
            .collect())
    }

    /// Merges the small files (under `small_below` rows) of the partition of UTC day `day`
    /// once `at_least` of them lie in a row of WAL ranges: downloaded, written as one file in
    /// `scratch`, uploaded, and committed as one transaction that adds it and removes them.
    pub async fn compact(
        &mut self,
        day: i64,
        small_below: u64,
        at_least: usize,
        scratch: &Path,
    ) -> Result<Option<Merged>, LakeError> {
        if at_least < 2 {
            return Ok(None);
        }
        let date = layout::date_string(day);
        let mut files: Vec<TableFile> = self
            .files()
            .await?
            .into_iter()
            .filter(|f| f.date == date)
            .collect();
        files.sort_by_key(|f| f.range);
        let rows: Vec<u64> = files.iter().map(|f| f.rows).collect();
        let Some(run) = longest_small_run(&rows, small_below, at_least) else {
            return Ok(None);
        };
        let run = &files[run];
        let (first, last) = (run[0].range.0, run[run.len() - 1].range.1);
        let local = scratch.join(layout::compaction_temporary_name(first));
        let store = self.table.object_store();
        let mut writer = samos_store::parquet::ReadingsWriter::create(&local)?;
        let mut rows = 0u64;
        for file in run {
            let bytes = store
                .get(&ObjectPath::from(file.path.as_str()))
                .await?
                .bytes()
                .await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(ParquetRecordBatchReaderBuilder::build)
                .map_err(|e| LakeError::Parquet {
                    path: file.path.clone(),
                    why: e.to_string(),
                })?;
            for batch in reader {
                let batch = batch.map_err(|e| LakeError::Parquet {
                    path: file.path.clone(),
                    why: e.to_string(),
                })?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(|e| LakeError::Parquet {
                    path: local.display().to_string(),
                    why: e.to_string(),
                })?;
            }
        }
        // Finished (footer written); the upload reads the file back.
        drop(writer.finish().map_err(|e| LakeError::Parquet {
            path: local.display().to_string(),
            why: e.to_string(),
        })?);
        let result = self.commit_merge(&local, run, (first, last), &date).await;
        let _ = std::fs::remove_file(&local);
        let (version, path) = result?;
        Ok(Some(Merged {
            version,
            path,
            files: run.len(),
            rows,
        }))
    }

    async fn commit_merge(
        &mut self,
        local: &Path,
        run: &[TableFile],
        (first, last): (u64, u64),
        date: &str,
    ) -> Result<(u64, String), LakeError> {
        let path = data_path(date, (first, last));
        let bytes = self.put(local, &path).await?;
        let merged_stats = file_stats(local).await?;
        let mut actions = vec![Action::Add(add_action(
            path.clone(),
            date.to_owned(),
            bytes,
            merged_stats,
            false,
        ))];
        actions.extend(
            run.iter()
                .map(|f| Action::Remove(f.view.remove_action(false))),
        );
        let version = self
            .commit(
                actions,
                DeltaOperation::Optimize {
                    predicate: Some(format!("{DATE_COLUMN} = '{date}'")),
                    target_size: i64::try_from(bytes).unwrap_or(i64::MAX),
                },
                None,
            )
            .await?;
        Ok((version, path))
    }

    /// Removes, in one commit, every file of the date partitions before UTC day
    /// `oldest_kept`. Returns how many files were removed.
    pub async fn expire(&mut self, oldest_kept: i64) -> Result<usize, LakeError> {
        let cutoff = layout::date_string(oldest_kept);
        let doomed: Vec<TableFile> = self
            .files()
            .await?
            .into_iter()
            .filter(|f| f.date < cutoff)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let actions = doomed
            .iter()
            .map(|f| Action::Remove(f.view.remove_action(true)))
            .collect();
        self.commit(
            actions,
            DeltaOperation::Delete {
                predicate: Some(format!("{DATE_COLUMN} < '{cutoff}'")),
            },
            None,
        )
        .await?;
        Ok(doomed.len())
    }

    /// Deletes the objects under the table no snapshot newer than `grace` references: files
    /// removed by compaction or retention, and uploads a crash left uncommitted. Returns how
    /// many were deleted.
    pub async fn vacuum(&mut self, grace: Duration) -> Result<usize, LakeError> {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
            .with_retention_period(grace)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .await?;
        self.table = table;
        Ok(metrics.files_deleted.len())
    }
}

/// Where the file of WAL range `range` in the partition of `date` lies under the table's root.
fn data_path(date: &str, range: (u64, u64)) -> String {
    format!(
        "{DATE_COLUMN}={date}/{}",
        layout::part_name(range.0, range.1)
    )
}

/// A local Parquet file's statistics, read off the runtime's threads.
async fn file_stats(file: &Path) -> Result<stats::FileStats, LakeError> {
    let owned = file.to_path_buf();
    tokio::task::spawn_blocking(move || stats::of_file(&owned))
        .await
        .map_err(|e| LakeError::Io {
            path: file.to_path_buf(),
            source: std::io::Error::other(e),
        })?
}

/// The `add` action of a data file: `data_change` false where it only rearranges rows that
/// are in the table already (compaction).
fn add_action(
    path: String,
    date: String,
    bytes: u64,
    stats: stats::FileStats,
    data_change: bool,
) -> Add {
    Add {
        path,
        partition_values: HashMap::from([(DATE_COLUMN.to_owned(), Some(date))]),
        size: i64::try_from(bytes).unwrap_or(i64::MAX),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change,
        stats: Some(stats.json),
        ..Add::default()
    }
}

/// Parts of a multipart upload; a file smaller than this goes up in one PUT.
const UPLOAD_PART_BYTES: usize = 16 * 1024 * 1024;

/// The longest run of adjacent small files (`rows` in WAL order; fewer than `small_below` rows, no other file of
/// the partition between them), if it has at least `at_least` files.
fn longest_small_run(
    rows: &[u64],
    small_below: u64,
    at_least: usize,
) -> Option<std::ops::Range<usize>> {
    let mut best: Option<std::ops::Range<usize>> = None;
    let mut start = 0;
    for i in 0..=rows.len() {
        let small = rows.get(i).is_some_and(|&n| n < small_below);
        if !small {
            if i - start >= at_least && best.as_ref().is_none_or(|b| i - start > b.len()) {
                best = Some(start..i);
            }
            start = i + 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_long_enough_run_of_adjacent_small_files_is_merged() {
        assert_eq!(longest_small_run(&[1, 1, 1], 10, 3), Some(0..3));
        assert_eq!(longest_small_run(&[1, 1, 1], 10, 4), None);
        assert_eq!(longest_small_run(&[1, 50, 1, 1], 10, 2), Some(2..4));
        assert_eq!(longest_small_run(&[1, 1, 50, 1, 1, 1], 10, 2), Some(3..6));
        assert_eq!(longest_small_run(&[], 10, 2), None);
    }
}

#[cfg(test)]
mod table_tests;
