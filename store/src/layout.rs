//! Where the Parquet store keeps its files: `readings/date=YYYY-MM-DD/part-{first}-{last}.parquet`,
//! named by the WAL sequences they hold. A file is written as `.tmp-*.parquet.partial`, fsync'd
//! and renamed, so a file with a final name is whole. Compaction merges files into one named by
//! the union of their ranges, renamed into place before the inputs are deleted: for a moment
//! (or after a crash, until the next start) a file's range may lie inside another's.

use std::path::{Path, PathBuf};

/// The Parquet store under a data directory.
pub const READINGS_DIR: &str = "readings";
/// Finished Parquet files waiting for upload, when the history lives on an object store.
pub const OUTBOX_DIR: &str = "outbox";
/// The write-ahead log under a data directory.
pub const WAL_DIR: &str = "wal";
/// The node registry under a data directory.
pub const NODES_FILE: &str = "nodes.json";
/// The event log under a data directory.
pub const EVENTS_FILE: &str = "events.jsonl";
/// The quarantine under a data directory.
pub const REJECTED_FILE: &str = "rejected.jsonl";
/// The instance id the server last ran as (one line), for readers of the data directory.
pub const INSTANCE_FILE: &str = "instance-id";
/// `samos mine` results under a data directory: `mining/{table}/run-{id}.parquet`.
pub const MINING_DIR: &str = "mining";
/// The server's live matrix profiles (`[[stream_profile]]`), in the mining directory: JSON
/// lines, replaced whole.
pub const STREAM_PROFILES_FILE: &str = "stream_profiles.jsonl";
/// What a graceful shutdown keeps of the live profiles (each series' latest values), in the
/// mining directory; read and removed at the next start.
pub const STREAM_STATE_FILE: &str = "stream_state.json";

/// The instance id a server takes when none is configured: its store id's first 12 characters.
pub fn default_instance_id(store_id: &str) -> String {
    store_id.chars().take(12).collect()
}

/// The instance id a server recorded in `data_dir`, if one ever ran there.
pub fn recorded_instance(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(INSTANCE_FILE)).ok()?;
    let id = text.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The file of one mining run in its table's directory.
pub fn mining_run_name(run_id: &str) -> String {
    format!("run-{run_id}.parquet")
}

/// The name a mining run's file is written under before it is published.
pub fn mining_run_temporary_name(run_id: &str) -> String {
    format!("{TEMPORARY_PREFIX}run-{run_id}.parquet.partial")
}

/// Milliseconds in a UTC day.
const DAY_MS: i64 = 86_400_000;

/// The UTC day number (days since 1970-01-01) of a time in milliseconds.
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The civil date of a UTC day number: `YYYY-MM-DD`.
pub fn date_string(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day.saturating_mul(DAY_MS))
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// The partition directory of a UTC day: `date=YYYY-MM-DD`.
pub fn partition_dir(root: &Path, day: i64) -> PathBuf {
    root.join(format!("date={}", date_string(day)))
}

/// The `date=YYYY-MM-DD` partitions under `root`, as (UTC day number, directory).
pub fn date_partitions(root: &Path) -> Vec<(i64, PathBuf)> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let date = name.to_str()?.strip_prefix("date=")?;
            let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
            let ms = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
            Some((utc_day(ms), e.path()))
        })
        .collect()
}

/// The final name of a file holding WAL sequences `first..=last`.
pub fn part_name(first: u64, last: u64) -> String {
    format!("part-{first:020}-{last:020}.parquet")
}

/// Prefix of every file not yet published: removed at the next start if a crash left it.
const TEMPORARY_PREFIX: &str = ".tmp-";

/// The name a file starting at WAL sequence `first` is written under before it is published.
pub fn temporary_name(first: u64) -> String {
    format!("{TEMPORARY_PREFIX}{first:020}.parquet.partial")
}

/// The name a compaction starting at `first` writes its merged file under.
pub fn compaction_temporary_name(first: u64) -> String {
    format!("{TEMPORARY_PREFIX}compact-{first:020}.parquet.partial")
}

/// Whether a file name is a not-yet-published file.
pub fn is_temporary_name(name: &str) -> bool {
    name.starts_with(TEMPORARY_PREFIX)
}

/// Prefix of a partition being deleted past the retention.
const EXPIRED_PREFIX: &str = ".expired-";

/// The name a partition of UTC day `day` is renamed to before it is deleted.
pub fn expired_name(day: i64) -> String {
    format!("{EXPIRED_PREFIX}{day}")
}

/// Whether a directory name is a partition whose deletion a crash interrupted.
pub fn is_expired_name(name: &str) -> bool {
    name.starts_with(EXPIRED_PREFIX)
}

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
    fn names_round_trip() {
        let name = part_name(3, 9);
        assert_eq!(file_range(Path::new(&name)), Some((3, 9)));
        assert!(is_temporary_name(&temporary_name(3)));
        assert!(is_temporary_name(&compaction_temporary_name(3)));
        assert!(file_range(Path::new(&temporary_name(3))).is_none());
        assert!(is_expired_name(&expired_name(20_000)));
        let day = utc_day(1_764_633_600_000 + 5_000);
        assert_eq!(
            partition_dir(Path::new("r"), day),
            Path::new("r/date=2025-12-02")
        );
        assert_eq!(utc_day(-1), -1);
    }

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
