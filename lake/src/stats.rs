//! A data file's Delta statistics (`add.stats`), read from its Parquet footer: the row count
//! and the range of `ingest_time` and `key`, so that engines skip files outside a query's time
//! range without opening them.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use serde_json::json;

use crate::LakeError;

/// What the Delta log says about one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStats {
    pub rows: u64,
    /// The `stats` JSON of the file's `add` action.
    pub json: String,
}

/// The statistics of the `readings` Parquet file at `path`.
pub fn of_file(path: &Path) -> Result<FileStats, LakeError> {
    let bad = |why: String| LakeError::Parquet {
        path: path.display().to_string(),
        why,
    };
    let file = File::open(path).map_err(|source| LakeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let metadata = reader.metadata();
    let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let schema = metadata.file_metadata().schema_descr();
    let column = |name: &str| (0..schema.num_columns()).find(|&i| schema.column(i).name() == name);
    let range = |index: Option<usize>| -> Option<(i64, i64)> {
        let index = index?;
        let mut range: Option<(i64, i64)> = None;
        for group in metadata.row_groups() {
            let Some(Statistics::Int64(s)) = group.column(index).statistics() else {
                return None;
            };
            let (&lo, &hi) = (s.min_opt()?, s.max_opt()?);
            range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
        range
    };
    let mut min = serde_json::Map::new();
    let mut max = serde_json::Map::new();
    if let Some((lo, hi)) = range(column("ingest_time")) {
        min.insert("ingest_time".into(), json!(timestamp(lo)));
        max.insert("ingest_time".into(), json!(timestamp(hi)));
    }
    if let Some((lo, hi)) = range(column("key")) {
        // `key` is an unsigned 64-bit column stored as INT64; Delta calls it `long`.
        min.insert("key".into(), json!(lo));
        max.insert("key".into(), json!(hi));
    }
    let stats = json!({
        "numRecords": rows,
        "minValues": min,
        "maxValues": max,
        "nullCount": { "ingest_time": 0, "key": 0 },
    });
    Ok(FileStats {
        rows,
        json: stats.to_string(),
    })
}

/// A Delta timestamp statistic: ISO 8601 in UTC with milliseconds.
fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_utc_with_milliseconds() {
        assert_eq!(timestamp(1_764_633_600_005), "2025-12-02T00:00:00.005Z");
    }
}
