//! Where the Parquet store keeps its files: `readings/date=YYYY-MM-DD/part-{first}-{last}.parquet`,
//! named by the WAL sequences they hold. A file is written as `.tmp-*.parquet.partial`, fsync'd
//! and renamed, so a file with a final name is whole. Compaction merges files into one named by
//! the union of their ranges, renamed into place before the inputs are deleted: for a moment
//! (or after a crash, until the next start) a file's range may lie inside another's.

use std::path::{Path, PathBuf};

/// The Parquet store under a data directory.
pub const READINGS_DIR: &str = "readings";
/// The write-ahead log under a data directory.
pub const WAL_DIR: &str = "wal";
/// The node registry under a data directory.
pub const NODES_FILE: &str = "nodes.json";
/// The event log under a data directory.
pub const EVENTS_FILE: &str = "events.jsonl";
/// The quarantine under a data directory.
pub const REJECTED_FILE: &str = "rejected.jsonl";

/// A Parquet file's WAL sequence range, from its name `part-{first}-{last}.parquet`.
pub fn file_range(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?;
    let (first, last) = name
        .strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// The finished Parquet files of one partition directory, by sequence range.
pub fn partition_files(dir: &Path) -> Vec<((u64, u64), PathBuf)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| file_range(&e.path()).map(|r| (r, e.path())))
        .collect();
    files.sort();
    files
}

/// Whether `range` lies inside another of `ranges`: a compaction input already merged.
pub fn merged_into_another(range: (u64, u64), ranges: &[(u64, u64)]) -> bool {
    ranges
        .iter()
        .any(|&(f, l)| (f, l) != range && f <= range.0 && range.1 <= l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_ranges() {
        assert_eq!(
            file_range(Path::new(
                "x/part-00000000000000000003-00000000000000000009.parquet"
            )),
            Some((3, 9))
        );
        assert_eq!(file_range(Path::new(".tmp-3.parquet.partial")), None);
        assert_eq!(file_range(Path::new("part-3-9.parquet.partial")), None);
        assert!(merged_into_another((3, 5), &[(3, 5), (1, 9)]));
        assert!(!merged_into_another((3, 5), &[(3, 5), (6, 9)]));
    }
}
