//! The writer against real Delta tables on the local disk (`file://` datasets): exactly once by
//! WAL range, compaction, retention, vacuum, checkpoints, one writer per table.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt8Array, UInt64Array,
};
use arrow::datatypes::{DataType, Int32Type};
use samos_schemas::readings::readings_schema;

use super::*;
use crate::{Dataset, DatasetHandle, LakeReader};

/// 2026-12-05 00:00 UTC as a day number.
const DAY: i64 = 20_792;

/// A `readings` file at `dir/name` with keys `keys`, on UTC day `day`.
fn file(dir: &Path, name: &str, day: i64, keys: std::ops::Range<u64>) -> PathBuf {
    let schema = readings_schema();
    let n = (keys.end - keys.start) as usize;
    let t0 = day * 86_400_000;
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.data_type() {
                DataType::Timestamp(..) => Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        keys.clone().map(|k| t0 + k as i64),
                    )
                    .with_timezone("UTC"),
                ),
                DataType::Dictionary(..) => {
                    Arc::new(std::iter::repeat_n("x", n).collect::<DictionaryArray<Int32Type>>())
                }
                DataType::Float64 => Arc::new(Float64Array::from(vec![1.0; n])),
                DataType::Utf8 => Arc::new(StringArray::from(vec![Some("1.0"); n])),
                DataType::UInt8 => Arc::new(UInt8Array::from(vec![1; n])),
                DataType::UInt64 => Arc::new(UInt64Array::from_iter_values(keys.clone())),
                other => panic!("no test column for {other}"),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let path = dir.join(name);
    let mut w = samos_store::parquet::readings_writer(&path).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

fn dataset(dir: &Path) -> Dataset {
    Dataset::new(&format!("file://{}", dir.display()), HashMap::new()).unwrap()
}

/// Instance `a`'s table in a dataset at `dir`.
fn location(dir: &Path) -> TableLocation {
    dataset(dir).readings("a")
}

/// A scratch directory for local files and a dataset beside it, with `a`'s table.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf, TableLocation) {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let table_dir = tmp.path().join("lake");
    for dir in [&local, &table_dir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let location = location(&table_dir);
    (tmp, local, table_dir, location)
}

/// The WAL ranges of the one instance's table of the dataset `reader` reads, sorted.
async fn covered(reader: &LakeReader) -> Vec<(u64, u64)> {
    let snapshots = reader.snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 1);
    let mut covered = snapshots[0].1.covered().await.unwrap();
    covered.sort_unstable();
    covered
}

#[tokio::test]
async fn appends_are_exactly_once_by_wal_range_and_compaction_keeps_every_row() {
    let (_tmp, local, _, location) = scratch();

    let mut writer = LakeWriter::open(&location, "store-a", 10).await.unwrap();
    assert_eq!(writer.committed(), 0);
    for (i, range) in [(1, 2), (3, 5), (6, 6)].into_iter().enumerate() {
        let keys = (i as u64 * 10)..(i as u64 * 10 + 4);
        let f = file(&local, &format!("f{i}.parquet"), DAY, keys);
        let c = writer.append(&f, range, DAY).await.unwrap().unwrap();
        assert_eq!(c.rows, 4);
    }
    assert_eq!(writer.committed(), 6);
    // Offered again after a restart: already there, nothing added.
    let again = file(&local, "again.parquet", DAY, 0..4);
    assert!(writer.append(&again, (3, 5), DAY).await.unwrap().is_none());

    // A new writer object (a restart) reads the committed range from the table.
    let mut writer = LakeWriter::open(&location, "store-a", 10).await.unwrap();
    assert_eq!(writer.committed(), 6);

    let reader = LakeReader::new(Arc::new(DatasetHandle::new(dataset(
        &_tmp.path().join("lake"),
    ))));
    assert_eq!(covered(&reader).await, [(1, 2), (3, 5), (6, 6)]);

    let merged = writer
        .compact(DAY, 100, 3, &local)
        .await
        .unwrap()
        .expect("three small files in a row");
    assert_eq!((merged.files, merged.rows), (3, 12));
    assert_eq!(covered(&reader).await, [(1, 6)]);
    assert!(writer.compact(DAY, 100, 3, &local).await.unwrap().is_none());

    // Another day's file, then retention removes the older day in one commit.
    let next = file(&local, "next.parquet", DAY + 1, 100..102);
    writer
        .append(&next, (7, 7), DAY + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(writer.expire(DAY + 1).await.unwrap(), 1);
    assert_eq!(covered(&reader).await, [(7, 7)]);
    // Nothing is vacuumed inside the grace period; everything unreferenced after it.
    assert_eq!(writer.vacuum(Duration::from_secs(3600)).await.unwrap(), 0);
    assert!(writer.vacuum(Duration::ZERO).await.unwrap() >= 4);
}

#[tokio::test]
async fn the_log_is_checkpointed_every_interval() {
    let (_tmp, local, table_dir, location) = scratch();
    let mut writer = LakeWriter::open(&location, "store-a", 2).await.unwrap();
    for seq in 1..=4u64 {
        let f = file(
            &local,
            &format!("f{seq}.parquet"),
            DAY,
            seq * 10..seq * 10 + 2,
        );
        writer.append(&f, (seq, seq), DAY).await.unwrap().unwrap();
    }
    let log = table_dir.join("readings/a/_delta_log");
    let checkpoints: Vec<String> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".checkpoint."))
        .collect();
    assert!(!checkpoints.is_empty(), "no checkpoint in {log:?}");
    // A reader starting from the checkpoint sees every file.
    let reader = LakeReader::new(Arc::new(DatasetHandle::new(dataset(&table_dir))));
    assert_eq!(covered(&reader).await.len(), 4);
}

#[tokio::test]
async fn a_table_another_instance_writes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let location = location(tmp.path());
    LakeWriter::open(&location, "store-a", 10).await.unwrap();
    let e = LakeWriter::open(&location, "store-b", 10)
        .await
        .unwrap_err();
    assert!(matches!(e, LakeError::OtherWriter { .. }), "{e}");
    assert!(e.to_string().contains("store-a"), "{e}");
}

#[tokio::test]
async fn a_missing_table_reads_as_none() {
    let tmp = tempfile::tempdir().unwrap();
    let reader = LakeReader::new(Arc::new(DatasetHandle::new(dataset(tmp.path()))));
    assert!(reader.snapshots().await.unwrap().is_empty());
}

#[tokio::test]
async fn each_instance_commits_to_its_own_table_and_readers_see_them_all() {
    let (tmp, local, table_dir, _) = scratch();
    let dataset = dataset(&table_dir);
    let mut a = LakeWriter::open(&dataset.readings("a"), "store-a", 10)
        .await
        .unwrap();
    let mut b = LakeWriter::open(&dataset.readings("b"), "store-b", 10)
        .await
        .unwrap();
    // The same WAL range (each store counts its own) from both, committed at once.
    let fa = file(&local, "a.parquet", DAY, 0..3);
    let fb = file(&local, "b.parquet", DAY, 0..5);
    let (ra, rb) = tokio::join!(a.append(&fa, (1, 1), DAY), b.append(&fb, (1, 1), DAY));
    assert_eq!(ra.unwrap().unwrap().rows, 3);
    assert_eq!(rb.unwrap().unwrap().rows, 5);
    let snapshots = LakeReader::new(Arc::new(DatasetHandle::new(dataset.clone())))
        .snapshots()
        .await
        .unwrap();
    let names: Vec<&str> = snapshots.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // A store's table is its own: another store under the same instance id is refused.
    let e = LakeWriter::open(&dataset.readings("a"), "store-b", 10)
        .await
        .unwrap_err();
    assert!(matches!(e, LakeError::OtherWriter { .. }), "{e}");
    drop(tmp);
}

#[tokio::test]
async fn a_single_table_of_the_older_layout_is_named_not_misread() {
    let (_tmp, local, table_dir, _) = scratch();
    let dataset = dataset(&table_dir);
    let mut old = LakeWriter::open(&dataset.single_table(), "store-a", 10)
        .await
        .unwrap();
    let f = file(&local, "f.parquet", DAY, 0..2);
    old.append(&f, (1, 1), DAY).await.unwrap().unwrap();
    let e = LakeReader::new(Arc::new(DatasetHandle::new(dataset)))
        .snapshots()
        .await
        .unwrap_err();
    assert!(matches!(e, LakeError::OldLayout { .. }), "{e}");
}
