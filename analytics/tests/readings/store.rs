//! `readings` over a store laid out as the engine lays it out: Parquet files named by WAL
//! ranges in date partitions, and WAL records past the checkpoint. Every row is seen once,
//! whether in Parquet, only in the WAL, or (mid-compaction) in two files; a date filter prunes.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, StringArray, StringDictionaryBuilder,
    TimestampMillisecondArray, UInt8Array, UInt64Array,
};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use samos_analytics::{Access, History};
use samos_schemas::readings::{ROWS_PER_BATCH, readings_schema};
use samos_store::wal::Wal;

const DAY1: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY2: i64 = DAY1 + 86_400_000;

/// One WAL batch: `rows` readings of node `node` at `time_ms` + row seconds, value = row.
fn batch(seq: u64, time_ms: i64, node: &str, rows: usize) -> RecordBatch {
    let schema = readings_schema();
    let dict = |v: &str| -> ArrayRef {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        (0..rows).for_each(|_| {
            b.append_value(v);
        });
        Arc::new(b.finish())
    };
    let mut columns: Vec<ArrayRef> = vec![Arc::new(
        TimestampMillisecondArray::from(
            (0..rows)
                .map(|r| time_ms + r as i64 * 1000)
                .collect::<Vec<_>>(),
        )
        .with_timezone("UTC"),
    )];
    for field in schema.fields().iter().skip(1) {
        let column: ArrayRef = match field.name().as_str() {
            "node_id" => dict(node),
            "sensor" => dict("temperature"),
            "value" => Arc::new(Float64Array::from(
                (0..rows).map(|r| r as f64).collect::<Vec<_>>(),
            )),
            "raw" => Arc::new(StringArray::from(vec![None::<&str>; rows])),
            "qos" => Arc::new(UInt8Array::from(vec![1u8; rows])),
            "key" => Arc::new(UInt64Array::from(
                (0..rows as u64)
                    .map(|r| seq * ROWS_PER_BATCH + r)
                    .collect::<Vec<_>>(),
            )),
            _ => dict("x"),
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema, columns).unwrap()
}

fn write_parquet(data: &Path, date: &str, first: u64, last: u64, batches: &[RecordBatch]) {
    let dir = data.join(format!("readings/date={date}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("part-{first:020}-{last:020}.parquet"));
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        readings_schema(),
        None,
    )
    .unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn scalar_i64(batches: &[RecordBatch]) -> i64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

async fn count(h: &History, sql: &str) -> i64 {
    scalar_i64(&h.query(sql).await.unwrap())
}

#[tokio::test]
async fn every_reading_once_from_parquet_and_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let empty = History::open(data, Access::Query).await.unwrap();
    assert_eq!(count(&empty, "SELECT count(*) FROM readings").await, 0);

    // Batches 1–6: 1–2 on day 1, 3–6 on day 2. The WAL holds 3–6 (checkpoint 2); batch 3 and 4
    // are also in a published file (the checkpoint not yet advanced); 5–6 only in the WAL.
    let b: Vec<RecordBatch> = (1..=6u64)
        .map(|seq| {
            let day = if seq <= 2 { DAY1 } else { DAY2 };
            batch(seq, day + seq as i64 * 60_000, &format!("N{}", seq % 2), 10)
        })
        .collect();
    write_parquet(data, "2026-01-01", 1, 2, &b[0..2]);
    write_parquet(data, "2026-01-02", 3, 4, &b[2..4]);
    let wal_dir = data.join("wal");
    let (mut wal, _) = Wal::open(&wal_dir, 1 << 20, |_| {}).unwrap();
    for (i, batch) in b.iter().enumerate() {
        let seq = wal
            .append(&samos_store::record::encode(|_| {}, Some(batch)))
            .unwrap();
        assert_eq!(seq, i as u64 + 1);
    }
    wal.commit().unwrap();
    samos_store::wal::write_checkpoint(&wal_dir, 2).unwrap();

    let h = History::open(data, Access::Query).await.unwrap();
    assert_eq!(count(&h, "SELECT count(*) FROM readings").await, 60);
    assert_eq!(
        count(&h, "SELECT count(DISTINCT key) FROM readings").await,
        60
    );
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM readings WHERE date = '2026-01-02'"
        )
        .await,
        40
    );
    assert_eq!(
        count(&h, "SELECT count(*) FROM readings WHERE node_id = 'N1'").await,
        30
    );
    // The limit is applied above both parts.
    let rows: usize = h
        .query("SELECT key FROM readings LIMIT 7")
        .await
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, 7);

    // A compaction caught halfway: files 3–4 merged into one 3–4… plus 5–6 as one file, with
    // the inputs 5 and 6 still there. Only the merged file is read once the inputs are gone;
    // while they are there the query waits for the compaction to finish or says so.
    write_parquet(data, "2026-01-02", 5, 5, &b[4..5]);
    write_parquet(data, "2026-01-02", 5, 6, &b[4..6]);
    let err = h.query("SELECT count(*) FROM readings").await.unwrap_err();
    assert!(err.to_string().contains("compacted"), "{err}");
    std::fs::remove_file(
        data.join(
            "readings/date=2026-01-02/part-00000000000000000005-00000000000000000005.parquet",
        ),
    )
    .unwrap();
    assert_eq!(count(&h, "SELECT count(*) FROM readings").await, 60);

    // The views.
    let latest = h
        .query("SELECT node_id, value, readings FROM latest_readings ORDER BY node_id")
        .await
        .unwrap();
    assert_eq!(latest[0].num_rows(), 2);
    let hourly = h
        .query("SELECT sum(readings) FROM hourly_readings")
        .await
        .unwrap();
    assert_eq!(scalar_i64(&hourly), 60);

    // EXPLAIN: a date filter reads only that partition's files.
    let plan = h
        .query("EXPLAIN SELECT avg(value) FROM readings WHERE date = '2026-01-01'")
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(text.contains("date=2026-01-01"), "{text}");
    assert!(!text.contains("date=2026-01-02"), "{text}");
    // A filter on `date` alone is exact: no filter above the scan compares each row's date
    // again, and the scan itself keeps the WAL tail's rows of other dates out (batches 5–6
    // are day 2's and only in the WAL).
    assert!(!text.contains("FilterExec"), "{text}");
    for (filter, rows) in [
        ("date = '2026-01-01'", 20),
        ("date <> '2026-01-01'", 40),
        ("date IN ('2026-01-02', '2026-01-03')", 40),
        ("date = '2026-01-02' AND value < 3", 12),
        ("date = '2026-01-01' OR value < 3", 32),
    ] {
        let sql = format!("SELECT count(*) FROM readings WHERE {filter}");
        assert_eq!(count(&h, &sql).await, rows, "{filter}");
    }
}

/// One session (as the HTTP API keeps) while the WAL grows and its records move into a file:
/// each query sees every reading once (the session decodes each WAL record once and keeps it).
#[tokio::test]
async fn a_long_lived_session_follows_the_wal_tail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let b: Vec<RecordBatch> = (1..=3u64)
        .map(|seq| batch(seq, DAY1 + seq as i64 * 60_000, "N1", 10))
        .collect();
    let wal_dir = data.join("wal");
    let (mut wal, _) = Wal::open(&wal_dir, 1 << 20, |_| {}).unwrap();
    for batch in &b[..2] {
        wal.append(&samos_store::record::encode(|_| {}, Some(batch)))
            .unwrap();
    }
    wal.commit().unwrap();
    let h = History::open(data, Access::Query).await.unwrap();
    let sum = "SELECT CAST(sum(key) AS BIGINT) FROM readings";
    let keys = |n: u64| (1..=n).flat_map(|s| (0..10).map(move |r| s * ROWS_PER_BATCH + r));
    assert_eq!(count(&h, "SELECT count(*) FROM readings").await, 20);
    assert_eq!(count(&h, sum).await, keys(2).sum::<u64>() as i64);
    wal.append(&samos_store::record::encode(|_| {}, Some(&b[2])))
        .unwrap();
    wal.commit().unwrap();
    assert_eq!(count(&h, "SELECT count(*) FROM readings").await, 30);
    assert_eq!(count(&h, sum).await, keys(3).sum::<u64>() as i64);
    // Records 1–2 reach a file, then the checkpoint moves past them.
    write_parquet(data, "2026-01-01", 1, 2, &b[..2]);
    assert_eq!(count(&h, sum).await, keys(3).sum::<u64>() as i64);
    samos_store::wal::write_checkpoint(&wal_dir, 2).unwrap();
    assert_eq!(count(&h, "SELECT count(*) FROM readings").await, 30);
    assert_eq!(count(&h, sum).await, keys(3).sum::<u64>() as i64);
    assert_eq!(
        count(&h, "SELECT count(*) FROM readings WHERE node_id = 'N1'").await,
        30
    );
}
