//! The Parquet store: readings written into date partitions, files rotated by rows, bytes and
//! age, published atomically, merged when small, deleted past the retention, and a crash's
//! leftovers cleaned up at open.
//!
//! Invariants:
//! - A reader never sees a partial file. Every file is written under a `.tmp-*` name, its
//!   footer written and fsync'd, renamed to its final name, then its directory fsync'd
//!   ([`publish`]); `samos mine` writes its result tables the same way.
//! - A file's name is the WAL sequence range it holds ([`layout`]); a range inside another
//!   file's range is a compaction input already merged (removed at the next [`ParquetStore::open`]).
//! - Only the caller advances the WAL checkpoint, and only after [`ParquetStore::write`] or
//!   [`ParquetStore::close`] has reported the file published: rows are in the WAL until they
//!   are in a published file. Compaction ([`ParquetStore::compact`]) runs after the
//!   checkpoint covers its inputs.
//! - A partition is deleted by renaming it to `.expired-*` first, so readers see it whole or
//!   not at all.
//! - Every row group of a readings file the store writes (and every compaction) is sorted by
//!   node, sensor and time ([`ReadingsWriter`]): page statistics then narrow a query for one
//!   node to a few pages. Within a file, rows are not in arrival order; `key` (the WAL
//!   sequence) still orders them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;
use samos_schemas::readings::readings_schema;

use crate::layout::{self, merged_into_another, partition_files};

mod row_groups;
pub mod series_index;
pub use row_groups::ReadingsWriter;

/// Why a Parquet file could not be written, published or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("Parquet file {path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ParquetError + '_ {
    move |source| ParquetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ParquetError {
    /// Whether the write failed for lack of space (it may succeed once space is freed).
    pub fn is_no_space(&self) -> bool {
        matches!(self, ParquetError::Io { source, .. } if crate::file::is_no_space(source))
    }
}

/// A Parquet writer's error: the I/O error it carries, if that is what it is.
fn writer_error(path: &Path, e: parquet::errors::ParquetError) -> ParquetError {
    match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(source) => ParquetError::Io {
                    path: path.to_path_buf(),
                    source: *source,
                },
                Err(other) => format_error(path, other),
            }
        }
        other => format_error(path, other),
    }
}

fn format_error(path: &Path, e: impl std::fmt::Display) -> ParquetError {
    ParquetError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Rows per row group: large enough for ZSTD and page statistics to pay off.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per data page at most: with row groups sorted by series, a page holds a few of them,
/// and the page index lets a reader of one series skip the rest.
pub const PAGE_ROWS: usize = 4096;

/// How a column of `data_type` is compressed. Text columns hold names that repeat (nodes,
/// sensors, places, units): dictionary encoding already makes their pages small, ZSTD made
/// them no smaller (a readings file: 988 bytes compressed against 691 raw for most of them),
/// and every ZSTD column chunk a reader opens costs two zstd contexts (parquet-rs creates a
/// compressor and a decompressor per column chunk, and each creation asks the CPU for its
/// features: under a hypervisor that traps, 21 % of a chart query's CPU here). They are
/// LZ4_RAW, which has no context; numbers (times, values, keys) stay ZSTD, which halves them.
fn column_compression(data_type: &DataType) -> Compression {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Compression::LZ4_RAW,
        DataType::Dictionary(_, values) => column_compression(values),
        _ => Compression::ZSTD(ZstdLevel::default()),
    }
}

/// Opens a Parquet writer for `schema` at `path`: ZSTD for numbers and LZ4_RAW for text (see
/// `column_compression`), page statistics, 128k-row groups.
pub fn writer(path: &Path, schema: Arc<Schema>) -> Result<ArrowWriter<File>, ParquetError> {
    let file = File::create(path).map_err(io(path))?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS);
    for field in schema.fields() {
        props = props.set_column_compression(
            ColumnPath::from(field.name().as_str()),
            column_compression(field.data_type()),
        );
    }
    ArrowWriter::try_new(file, schema, Some(props.build())).map_err(|e| writer_error(path, e))
}

/// Opens a plain Parquet writer for the `readings` table at `path` (rows in the order given;
/// the store writes through [`ReadingsWriter`], which sorts each row group).
pub fn readings_writer(path: &Path) -> Result<ArrowWriter<File>, ParquetError> {
    writer(path, readings_schema())
}

/// Finishes a file written under `tmp` and makes it visible as `dest`: footer, fsync, rename,
/// directory fsync. A reader never sees it partial.
pub fn publish(writer: ArrowWriter<File>, tmp: &Path, dest: &Path) -> Result<(), ParquetError> {
    let file = writer.into_inner().map_err(|e| writer_error(tmp, e))?;
    publish_file(&file, tmp, dest)
}

/// [`publish`] for a readings file: its last row group sorted and written, then the same.
pub fn publish_readings(
    writer: ReadingsWriter,
    tmp: &Path,
    dest: &Path,
) -> Result<(), ParquetError> {
    let file = writer.finish()?;
    publish_file(&file, tmp, dest)
}

/// fsync, rename, directory fsync of a finished file.
fn publish_file(file: &File, tmp: &Path, dest: &Path) -> Result<(), ParquetError> {
    crate::file::fsync(file, tmp).map_err(io(tmp))?;
    std::fs::rename(tmp, dest).map_err(io(dest))?;
    crate::file::sync_parent(dest).map_err(io(dest))
}

/// Rows in a Parquet file, from its footer.
fn rows_in(path: &Path) -> Option<u64> {
    let reader = SerializedFileReader::new(File::open(path).ok()?).ok()?;
    u64::try_from(reader.metadata().file_metadata().num_rows()).ok()
}

/// When the open file is closed and a new one started.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    pub max_rows: usize,
    pub max_bytes: u64,
    pub max_age: Duration,
}

/// A file made visible by [`ParquetStore::write`] or [`ParquetStore::close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub path: PathBuf,
    /// The partition directory it is in (for [`ParquetStore::compact`]).
    pub partition: PathBuf,
    /// The UTC day (days since 1970-01-01) of its rows.
    pub day: i64,
    /// The last WAL sequence it holds: the checkpoint may advance to it.
    pub last_seq: u64,
    pub rows: u64,
}

/// Small files merged into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub merged: PathBuf,
    pub files: usize,
    pub rows: u64,
}

/// A date partition deleted past the retention, or the error that kept it.
#[derive(Debug)]
pub struct Expired {
    pub partition: PathBuf,
    pub result: std::io::Result<()>,
}

struct OpenFile {
    day: i64,
    dir: PathBuf,
    tmp: PathBuf,
    writer: ReadingsWriter,
    rows: usize,
    first_seq: u64,
    last_seq: u64,
    opened: Instant,
}

/// The `readings` directory of a data directory, written in WAL sequence order.
pub struct ParquetStore {
    root: PathBuf,
    open: Option<OpenFile>,
    rotation: Rotation,
    /// Small files in a partition that trigger a merge (0: never).
    compact_at: usize,
}

impl std::fmt::Debug for ParquetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetStore")
            .field("root", &self.root)
            .field("open", &self.open.as_ref().map(|o| &o.tmp))
            .field("rotation", &self.rotation)
            .field("compact_at", &self.compact_at)
            .finish()
    }
}

impl ParquetStore {
    /// Opens the store at `root` (the data directory's `readings/`) and finishes what a crash
    /// interrupted: temporary files are removed, expired partitions' deletion completed, and
    /// compaction inputs already merged removed.
    pub fn open(
        root: PathBuf,
        rotation: Rotation,
        compact_at: usize,
    ) -> Result<ParquetStore, ParquetError> {
        remove_temporary_files(&root)?;
        remove_expired_leftovers(&root)?;
        remove_compacted_inputs(&root)?;
        Ok(ParquetStore {
            root,
            open: None,
            rotation,
            compact_at,
        })
    }

    /// How long until the open file reaches its maximum age (`None`: no file is open).
    pub fn time_to_rotate(&self) -> Option<Duration> {
        self.open
            .as_ref()
            .map(|o| self.rotation.max_age.saturating_sub(o.opened.elapsed()))
    }

    /// Whether `batch` belongs to another UTC day than the open file: the caller closes the
    /// open file first (and advances its checkpoint) before writing it.
    pub fn starts_another_day(&self, batch: &RecordBatch) -> bool {
        let Some(open) = &self.open else {
            return false;
        };
        batch_day(batch).is_some_and(|day| day != open.day)
    }

    /// Appends the batch committed as WAL record `seq` (rows of one UTC day, the first column
    /// the ingest time). Returns the files it published: the open one if the batch is of
    /// another day (callers that checkpoint close it first, see
    /// [`ParquetStore::starts_another_day`]), and the new one when the batch filled it.
    pub fn write(&mut self, seq: u64, batch: &RecordBatch) -> Result<Vec<Published>, ParquetError> {
        let mut published = Vec::new();
        if batch.num_rows() == 0 {
            return Ok(published);
        }
        let day = batch_day(batch)
            .ok_or_else(|| format_error(&self.root, "batch without an ingest_time column"))?;
        if self.open.as_ref().is_some_and(|o| o.day != day) {
            published.extend(self.close()?);
        }
        let open = match &mut self.open {
            Some(open) => open,
            None => {
                let dir = layout::partition_dir(&self.root, day);
                crate::file::create_dir_durably(&dir).map_err(io(&dir))?;
                let tmp = dir.join(layout::temporary_name(seq));
                let writer = ReadingsWriter::create(&tmp)?;
                self.open.insert(OpenFile {
                    day,
                    dir,
                    tmp,
                    writer,
                    rows: 0,
                    first_seq: seq,
                    last_seq: seq,
                    opened: Instant::now(),
                })
            }
        };
        open.writer.write(batch)?;
        open.rows += batch.num_rows();
        open.last_seq = seq;
        let bytes = open.writer.bytes();
        if open.rows >= self.rotation.max_rows || bytes as u64 >= self.rotation.max_bytes {
            published.extend(self.close()?);
        }
        Ok(published)
    }

    /// Closes the open file if it has reached its maximum age.
    pub fn rotate_if_old(&mut self) -> Result<Option<Published>, ParquetError> {
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.opened.elapsed() >= self.rotation.max_age)
        {
            return self.close();
        }
        Ok(None)
    }

    /// Gives up the open file, unpublished: its temporary file is deleted (after a write
    /// that failed, typically for lack of space). The caller writes its batches again.
    pub fn abandon(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        drop(open.writer);
        if let Err(e) = std::fs::remove_file(&open.tmp) {
            tracing::warn!(path = %open.tmp.display(), error = %e, "cannot delete an abandoned Parquet file; it is removed at the next start");
        }
    }

    /// Finishes the open file: footer, fsync, rename into place.
    pub fn close(&mut self) -> Result<Option<Published>, ParquetError> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        let path = open
            .dir
            .join(layout::part_name(open.first_seq, open.last_seq));
        if let Err(e) = publish_readings(open.writer, &open.tmp, &path) {
            // Nothing was published; the space the file held is given back now.
            let _ = std::fs::remove_file(&open.tmp);
            return Err(e);
        }
        Ok(Some(Published {
            path,
            partition: open.dir,
            day: open.day,
            last_seq: open.last_seq,
            rows: open.rows as u64,
        }))
    }

    /// The finished files in the store, in WAL order: after a restart, those a sink that
    /// moves files elsewhere (the object-store outbox) has not moved yet.
    pub fn published_files(&self) -> Vec<Published> {
        let mut files: Vec<Published> = layout::date_partitions(&self.root)
            .into_iter()
            .flat_map(|(day, dir)| {
                partition_files(&dir)
                    .into_iter()
                    .map(move |((_, last), path)| Published {
                        rows: rows_in(&path).unwrap_or(0),
                        path,
                        partition: dir.clone(),
                        day,
                        last_seq: last,
                    })
            })
            .collect();
        files.sort_by_key(|f| f.last_seq);
        files
    }

    /// The last WAL sequence in any finished file, from the file names alone: everything up
    /// to it is stored (files are published in WAL order), even where a crash came before
    /// the WAL checkpoint recorded it.
    pub fn last_published_seq(&self) -> Option<u64> {
        layout::date_partitions(&self.root)
            .into_iter()
            .flat_map(|(_, dir)| partition_files(&dir))
            .map(|((_, last), _)| last)
            .max()
    }

    /// Deletes the date partitions older than `retention_days` before `today` (a UTC day
    /// number), except the one being written. Each is renamed away first.
    pub fn expire(&mut self, today: i64, retention_days: u32) -> Vec<Expired> {
        let oldest_kept = today - i64::from(retention_days);
        let mut expired = Vec::new();
        for (day, dir) in layout::date_partitions(&self.root) {
            if day >= oldest_kept || self.open.as_ref().is_some_and(|o| o.day == day) {
                continue;
            }
            let doomed = self.root.join(layout::expired_name(day));
            let result =
                std::fs::rename(&dir, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed));
            expired.push(Expired {
                partition: dir,
                result,
            });
        }
        expired
    }

    /// Merges a partition's small files (under a quarter of `max_rows`) once there are
    /// `compact_at` of them: written as one file named by the union of their sequence ranges,
    /// under a temporary name, fsync'd and renamed, and only then are the inputs deleted. A
    /// crash in between leaves inputs inside the merged file's range, removed at the next open.
    ///
    /// Call it only once the WAL checkpoint covers every file of the partition: a merged file
    /// replaces its inputs' names, so a replay after a crash could not tell its rows were
    /// already stored. Compaction is an optimisation: on error the small files stay readable.
    pub fn compact(&self, dir: &Path) -> Result<Option<Compaction>, ParquetError> {
        let small_below = (self.rotation.max_rows / 4).max(1) as u64;
        let small: Vec<((u64, u64), PathBuf)> = partition_files(dir)
            .into_iter()
            .filter(|(_, p)| rows_in(p).is_some_and(|n| n < small_below))
            .collect();
        if self.compact_at < 2 || small.len() < self.compact_at {
            return Ok(None);
        }
        // Only a contiguous run of ranges may be merged (no other file between them).
        let all = partition_files(dir);
        let Some(start) = all.iter().position(|(r, _)| *r == small[0].0) else {
            return Ok(None);
        };
        let run: Vec<&((u64, u64), PathBuf)> = all[start..]
            .iter()
            .take_while(|f| small.iter().any(|s| s.0 == f.0))
            .collect();
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(None);
        };
        if run.len() < self.compact_at {
            return Ok(None);
        }
        let (first, last) = (first.0.0, last.0.1);
        let tmp = dir.join(layout::compaction_temporary_name(first));
        let merged = dir.join(layout::part_name(first, last));
        let rows = merge(&run, &tmp, &merged).inspect_err(|_| {
            // Give the space back now (a full disk is the likely cause), not at the restart.
            let _ = std::fs::remove_file(&tmp);
        })?;
        for (_, path) in &run {
            std::fs::remove_file(path).map_err(io(path))?;
        }
        Ok(Some(Compaction {
            merged,
            files: run.len(),
            rows,
        }))
    }
}

/// Writes the rows of `run` into one file under `tmp` and publishes it as `merged`.
fn merge(run: &[&((u64, u64), PathBuf)], tmp: &Path, merged: &Path) -> Result<u64, ParquetError> {
    let mut writer = ReadingsWriter::create(tmp)?;
    let mut rows = 0u64;
    for (_, path) in run {
        let f = File::open(path).map_err(io(path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(ParquetRecordBatchReaderBuilder::build)
            .map_err(|e| format_error(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| format_error(path, e))?;
            rows += batch.num_rows() as u64;
            writer.write(&batch)?;
        }
    }
    publish_readings(writer, tmp, merged)?;
    Ok(rows)
}

/// The UTC day of a `readings` batch, from its first ingest time.
fn batch_day(batch: &RecordBatch) -> Option<i64> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .filter(|t| !t.is_empty() && !t.is_null(0))
        .map(|t| layout::utc_day(t.value(0)))
}

/// Completes a compaction a crash interrupted: a compacted file's range covers its inputs,
/// so any file inside another file's range is an input already merged, and is removed.
fn remove_compacted_inputs(root: &Path) -> Result<(), ParquetError> {
    for (_, day) in layout::date_partitions(root) {
        let files = partition_files(&day);
        let ranges: Vec<(u64, u64)> = files.iter().map(|(r, _)| *r).collect();
        for (range, path) in &files {
            if merged_into_another(*range, &ranges) {
                tracing::info!(file = %path.display(), "removing a Parquet file already merged by compaction");
                std::fs::remove_file(path).map_err(io(path))?;
            }
        }
    }
    Ok(())
}

/// Finishes deleting partitions a crash interrupted (renamed to `.expired-*`).
fn remove_expired_leftovers(root: &Path) -> Result<(), ParquetError> {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if layout::is_expired_name(&e.file_name().to_string_lossy()) {
            std::fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
        }
    }
    Ok(())
}

/// Removes files a crash left half written (`.tmp-*`) in any partition.
fn remove_temporary_files(root: &Path) -> Result<(), ParquetError> {
    let Ok(days) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for day in days.flatten() {
        let Ok(files) = std::fs::read_dir(day.path()) else {
            continue;
        };
        for f in files.flatten() {
            if layout::is_temporary_name(&f.file_name().to_string_lossy()) {
                std::fs::remove_file(f.path()).map_err(io(&f.path()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        ArrayRef, DictionaryArray, Float64Array, StringArray, UInt8Array, UInt64Array,
    };
    use arrow::datatypes::{DataType, Int32Type};

    use super::*;

    const DAY: i64 = 86_400_000;
    /// 2026-12-05 00:00 UTC.
    const D: i64 = 20_792 * DAY;

    /// A `readings` batch with one row per time.
    fn batch(times: &[i64]) -> RecordBatch {
        let schema = readings_schema();
        let n = times.len();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.data_type() {
                    DataType::Timestamp(..) => Arc::new(
                        TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC"),
                    ),
                    DataType::Dictionary(..) => Arc::new(
                        std::iter::repeat_n("x", n).collect::<DictionaryArray<Int32Type>>(),
                    ),
                    DataType::Float64 => Arc::new(Float64Array::from(vec![1.0; n])),
                    DataType::Utf8 => Arc::new(StringArray::from(vec!["1.0"; n])),
                    DataType::UInt8 => Arc::new(UInt8Array::from(vec![1; n])),
                    DataType::UInt64 => Arc::new(UInt64Array::from_iter_values(0..n as u64)),
                    other => panic!("no test column for {other}"),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn rotation(max_rows: usize) -> Rotation {
        Rotation {
            max_rows,
            max_bytes: u64::MAX,
            max_age: Duration::from_secs(3600),
        }
    }

    /// Text columns are written LZ4_RAW, numbers ZSTD, and both read back.
    #[test]
    fn text_is_lz4_and_numbers_zstd() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.parquet");
        let mut w = readings_writer(&path).unwrap();
        let written = batch(&[D, D + 1, D + 2]);
        w.write(&written).unwrap();
        w.close().unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        for (column, field) in group.columns().iter().zip(readings_schema().fields()) {
            let text = matches!(field.data_type(), DataType::Utf8 | DataType::Dictionary(..));
            let expected = if text {
                Compression::LZ4_RAW
            } else {
                Compression::ZSTD(ZstdLevel::default())
            };
            assert_eq!(column.compression(), expected, "{}", field.name());
        }
        let back: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(back.iter().map(RecordBatch::num_rows).sum::<usize>(), 3);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_rotate_by_rows_and_by_day_and_are_named_by_sequence() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("readings");
        let mut store = ParquetStore::open(root.clone(), rotation(3), 0).unwrap();
        assert!(store.write(1, &batch(&[D, D + 1])).unwrap().is_empty());
        let full = store.write(2, &batch(&[D + 2, D + 3])).unwrap();
        assert_eq!(full.len(), 1, "4 rows ≥ 3: the file is published");
        assert_eq!((full[0].last_seq, full[0].rows), (2, 4));
        assert!(store.write(3, &batch(&[D + DAY])).unwrap().is_empty());
        let next_day = batch(&[D + 2 * DAY]);
        assert!(store.starts_another_day(&next_day));
        let closed = store.close().unwrap().unwrap();
        assert_eq!(closed.last_seq, 3);
        assert!(store.close().unwrap().is_none(), "nothing open any more");
        store.write(4, &next_day).unwrap();
        store.close().unwrap();

        assert_eq!(
            names(&root),
            ["date=2026-12-05", "date=2026-12-06", "date=2026-12-07"]
        );
        assert_eq!(
            names(&root.join("date=2026-12-05")),
            [layout::part_name(1, 2)]
        );
        assert_eq!(
            names(&root.join("date=2026-12-06")),
            [layout::part_name(3, 3)]
        );
        assert_eq!(rows_in(&full[0].path), Some(4));
    }

    #[test]
    fn small_files_merge_and_open_finishes_what_a_crash_left() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("readings");
        let mut store = ParquetStore::open(root.clone(), rotation(100), 3).unwrap();
        let mut last = None;
        for seq in 1..=3 {
            store.write(seq, &batch(&[D + seq as i64])).unwrap();
            last = store.close().unwrap();
        }
        let partition = last.unwrap().partition;
        assert_eq!(names(&partition).len(), 3);
        let merged = store
            .compact(&partition)
            .unwrap()
            .expect("three small files");
        assert_eq!((merged.files, merged.rows), (3, 3));
        assert_eq!(names(&partition), [layout::part_name(1, 3)]);
        assert!(
            store.compact(&partition).unwrap().is_none(),
            "one file left"
        );

        // A crash's leftovers: a half-written file and an input the merge had not deleted.
        std::fs::write(partition.join(layout::temporary_name(9)), b"partial").unwrap();
        let mut w = readings_writer(&partition.join(layout::part_name(2, 2))).unwrap();
        w.write(&batch(&[D + 2])).unwrap();
        w.close().unwrap();
        let expired = root.join(layout::expired_name(20_000));
        std::fs::create_dir_all(&expired).unwrap();
        drop(ParquetStore::open(root.clone(), rotation(100), 3).unwrap());
        assert_eq!(names(&partition), [layout::part_name(1, 3)]);
        assert!(!expired.exists());
    }

    #[test]
    fn partitions_past_the_retention_are_deleted_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("readings");
        let mut store = ParquetStore::open(root.clone(), rotation(100), 0).unwrap();
        for (seq, day) in [(1, -10), (2, -5), (3, 0)] {
            store.write(seq, &batch(&[D + day * DAY])).unwrap();
            store.close().unwrap();
        }
        let today = layout::utc_day(D);
        let expired = store.expire(today, 5);
        assert_eq!(expired.len(), 1);
        assert!(expired[0].result.is_ok());
        assert_eq!(names(&root), ["date=2026-11-30", "date=2026-12-05"]);
    }
}
