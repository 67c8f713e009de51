//! Readings files whose row groups are sorted by node, sensor and time.
//!
//! Readings arrive in time order from every node at once, so a row group of arrival order holds
//! every series and its statistics (min/max per page and row group) say nothing about any one
//! node: a query for one node's day reads the whole day. [`ReadingsWriter`] holds the rows of
//! a row group until it is full, sorts them by (`node_id`, `sensor`, `ingest_time`) and then
//! writes them, so each page holds a few series and the page index lets a reader skip the rest.
//!
//! Invariants: a row group is exactly [`ROW_GROUP_ROWS`] rows, except a file's last; the rows
//! of a file are exactly the rows written to it, each once (only their order within a row
//! group changes); nothing reaches the file before the row group it belongs to is complete,
//! which costs nothing in durability — rows are in the WAL until their file is published.
//! The store's own columns are sorted as packed integers (names ranked, times offset, the row
//! last, so equal keys keep their order); any other schema by arrow's row format.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Int32Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use parquet::arrow::ArrowWriter;

use parquet::file::metadata::KeyValue;

use super::series_index::{SERIES_INDEX_KEY, SeriesIndexBuilder};
use super::{ParquetError, ROW_GROUP_ROWS, format_error, readings_writer, writer_error};

/// The columns a row group is sorted by, in order.
pub const SORT_COLUMNS: [&str; 3] = ["node_id", "sensor", "ingest_time"];

/// Small batches are copied together once this many wait, or this many rows: a batch of one
/// reading carries builders' spare capacity (kilobytes for a few bytes of data), and a row
/// group can take 128k of them.
const TAIL_BATCHES: usize = 64;
const TAIL_ROWS: usize = 8192;

/// A `readings` file being written, one sorted row group at a time.
pub struct ReadingsWriter {
    writer: ArrowWriter<File>,
    path: PathBuf,
    /// Rows waiting for their row group to fill, in arrival order: copied chunks, then the
    /// latest batches as they came.
    pending: Vec<RecordBatch>,
    tail: Vec<RecordBatch>,
    tail_rows: usize,
    pending_rows: usize,
    pending_bytes: usize,
    /// Where each series lies in the row groups written so far (the footer's series index).
    series: SeriesIndexBuilder,
}

impl ReadingsWriter {
    /// Creates the file at `path` with the store's writer settings.
    pub fn create(path: &Path) -> Result<ReadingsWriter, ParquetError> {
        Ok(ReadingsWriter {
            writer: readings_writer(path)?,
            path: path.to_path_buf(),
            pending: Vec::new(),
            tail: Vec::new(),
            tail_rows: 0,
            pending_rows: 0,
            pending_bytes: 0,
            series: SeriesIndexBuilder::default(),
        })
    }

    /// Adds rows; every row group they complete is sorted and written.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.pending_rows += batch.num_rows();
        self.pending_bytes += batch.get_array_memory_size();
        self.tail_rows += batch.num_rows();
        self.tail.push(batch.clone());
        if self.tail.len() >= TAIL_BATCHES || self.tail_rows >= TAIL_ROWS {
            self.compact_tail()?;
        }
        while self.pending_rows >= ROW_GROUP_ROWS {
            self.flush(ROW_GROUP_ROWS)?;
        }
        Ok(())
    }

    /// Copies the latest batches into one right-sized chunk.
    fn compact_tail(&mut self) -> Result<(), ParquetError> {
        match self.tail.len() {
            0 => return Ok(()),
            1 => self.pending.append(&mut self.tail),
            _ => {
                let schema = self.tail[0].schema();
                let chunk =
                    concat_batches(&schema, &self.tail).map_err(|e| format_error(&self.path, e))?;
                let copied: usize = self
                    .tail
                    .iter()
                    .map(RecordBatch::get_array_memory_size)
                    .sum();
                self.pending_bytes = self.pending_bytes - copied + chunk.get_array_memory_size();
                self.tail.clear();
                self.pending.push(chunk);
            }
        }
        self.tail_rows = 0;
        Ok(())
    }

    /// Bytes the file will hold so far: written, buffered by the Parquet writer, and waiting
    /// here (in memory, uncompressed: an overestimate).
    pub fn bytes(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size() + self.pending_bytes
    }

    /// Writes what is left as the last row group and finishes the file (footer with the
    /// series index), returning it for the caller to fsync and publish.
    pub fn finish(mut self) -> Result<File, ParquetError> {
        if self.pending_rows > 0 {
            self.flush(self.pending_rows)?;
        }
        let path = self.path;
        self.writer.append_key_value_metadata(KeyValue::new(
            SERIES_INDEX_KEY.to_owned(),
            self.series.finish(),
        ));
        self.writer.into_inner().map_err(|e| writer_error(&path, e))
    }

    /// Sorts the first `rows` pending rows and writes them as one row group.
    fn flush(&mut self, rows: usize) -> Result<(), ParquetError> {
        self.compact_tail()?;
        let schema = self.pending[0].schema();
        let all =
            concat_batches(&schema, &self.pending).map_err(|e| format_error(&self.path, e))?;
        let (group, rest) = (all.slice(0, rows), all.slice(rows, all.num_rows() - rows));
        let sorted = sort(&group).map_err(|e| format_error(&self.path, e))?;
        self.series.add_row_group(&sorted);
        self.writer
            .write(&sorted)
            .map_err(|e| writer_error(&self.path, e))?;
        self.writer
            .flush()
            .map_err(|e| writer_error(&self.path, e))?;
        self.pending_rows = rest.num_rows();
        self.pending_bytes = rest.get_array_memory_size();
        self.pending = if rest.num_rows() > 0 {
            vec![rest]
        } else {
            Vec::new()
        };
        Ok(())
    }
}

/// `batch` ordered by [`SORT_COLUMNS`] (those it has); rows equal in all of them keep their
/// order.
pub fn sort(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let order = match packed_order(batch) {
        Some(order) => order,
        None => row_order(batch)?,
    };
    take_record_batch(batch, &UInt32Array::from(order))
}

/// The order by arrow's row format (any column types).
fn row_order(batch: &RecordBatch) -> Result<Vec<u32>, arrow::error::ArrowError> {
    let keys: Vec<ArrayRef> = SORT_COLUMNS
        .iter()
        .filter_map(|name| batch.column_by_name(name).cloned())
        .collect();
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    if keys.is_empty() {
        return Ok(order);
    }
    let converter = RowConverter::new(
        keys.iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&keys)?;
    order.sort_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    Ok(order)
}

/// The order for the store's own columns — two string dictionaries and a millisecond time,
/// none null, the times within 2^48 ms of each other — as one `u128` per row: the node's and
/// the sensor's rank among the batch's distinct names (24 bits each), the time since the
/// batch's earliest (48 bits) and the row (32 bits), sorted as integers. A tenth of the row
/// format's cost; `None` where the columns are not of that kind.
fn packed_order(batch: &RecordBatch) -> Option<Vec<u32>> {
    let ranks = |name: &str| -> Option<Vec<u32>> {
        let column = batch.column_by_name(name)?;
        let dict = column.as_dictionary_opt::<Int32Type>()?;
        let values = dict.values().as_string_opt::<i32>()?;
        if column.null_count() > 0 || values.null_count() > 0 || values.len() >= 1 << 24 {
            return None;
        }
        // Each dictionary entry's rank among the distinct strings (duplicates share one).
        let mut by_text: Vec<u32> = (0..values.len() as u32).collect();
        by_text.sort_unstable_by(|a, b| values.value(*a as usize).cmp(values.value(*b as usize)));
        let mut rank = vec![0u32; values.len()];
        let mut r = 0;
        for (n, pair) in by_text.iter().enumerate() {
            if n > 0 && values.value(by_text[n - 1] as usize) != values.value(*pair as usize) {
                r += 1;
            }
            rank[*pair as usize] = r;
        }
        dict.keys()
            .values()
            .iter()
            .map(|k| rank.get(usize::try_from(*k).ok()?).copied())
            .collect()
    };
    let (nodes, sensors) = (ranks(SORT_COLUMNS[0])?, ranks(SORT_COLUMNS[1])?);
    let time = batch
        .column_by_name(SORT_COLUMNS[2])?
        .as_primitive_opt::<TimestampMillisecondType>()?;
    if time.null_count() > 0 {
        return None;
    }
    let earliest = *time.values().iter().min()?;
    let mut keys = Vec::with_capacity(batch.num_rows());
    for (row, ((node, sensor), t)) in nodes.iter().zip(&sensors).zip(time.values()).enumerate() {
        let since = u128::try_from(t.checked_sub(earliest)?).ok()?;
        if since >= 1 << 48 {
            return None;
        }
        keys.push(
            (u128::from(*node) << 104) | (u128::from(*sensor) << 80) | (since << 32) | row as u128,
        );
    }
    keys.sort_unstable();
    Some(keys.iter().map(|k| *k as u32).collect())
}

#[cfg(test)]
mod tests;
