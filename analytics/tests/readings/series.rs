//! Queries that name nodes and sensors read only those series' rows (the files' series
//! index), and answer exactly as a scan of every row does: across row groups, files with
//! and without an index, and the WAL tail.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, StringArray, StringDictionaryBuilder, TimestampMillisecondArray,
    UInt8Array, UInt64Array,
};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use datafusion::physical_plan::{ExecutionPlan, collect};
use samos_analytics::{Access, History};
use samos_schemas::readings::readings_schema;
use samos_store::parquet::ReadingsWriter;
use samos_store::wal::Wal;

const DAY1: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const DAY2: i64 = DAY1 + 86_400_000;
const NODES: usize = 40;
const SENSORS: [&str; 3] = ["co2", "humidity", "temperature"];

/// Readings `first..first + rows` as they arrive: every node's every sensor in turn, one
/// second apart per round; value and key the reading's number.
fn arrivals(day: i64, first: usize, rows: usize) -> RecordBatch {
    let schema = readings_schema();
    let n = first..first + rows;
    let dict = |name: &dyn Fn(usize) -> String| -> ArrayRef {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        n.clone().for_each(|i| {
            b.append_value(name(i));
        });
        Arc::new(b.finish())
    };
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            match field.name().as_str() {
                "ingest_time" => Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        n.clone()
                            .map(|i| day + (i / (NODES * SENSORS.len())) as i64 * 1000),
                    )
                    .with_timezone("UTC"),
                ),
                "node_id" => dict(&|i| format!("N{:02}", (i / SENSORS.len()) % NODES)),
                "sensor" => dict(&|i| SENSORS[i % SENSORS.len()].to_owned()),
                "value" => Arc::new(Float64Array::from_iter_values(n.clone().map(|i| i as f64))),
                "raw" => Arc::new(StringArray::from(vec![None::<&str>; rows])),
                "qos" => Arc::new(UInt8Array::from(vec![1u8; rows])),
                "key" => Arc::new(UInt64Array::from_iter_values(n.clone().map(|i| i as u64))),
                _ => dict(&|_| "x".to_owned()),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

/// A file of the store holding readings `first..first + rows` (WAL sequences `seqs`):
/// written by the store's writer (sorted row groups, series index) or, for a file of an
/// older Samos, by a plain Arrow writer (arrival order, no index).
fn write_file(
    data: &Path,
    date: &str,
    seqs: (u64, u64),
    day: i64,
    first: usize,
    rows: usize,
    indexed: bool,
) {
    let dir = data.join(format!("readings/date={date}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("part-{:020}-{:020}.parquet", seqs.0, seqs.1));
    let mut at = first;
    if indexed {
        let mut w = ReadingsWriter::create(&path).unwrap();
        while at < first + rows {
            let n = 7_000.min(first + rows - at);
            w.write(&arrivals(day, at, n)).unwrap();
            at += n;
        }
        w.finish().unwrap().sync_all().unwrap();
    } else {
        let file = std::fs::File::create(path).unwrap();
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, readings_schema(), None)
            .unwrap();
        w.write(&arrivals(day, first, rows)).unwrap();
        w.close().unwrap();
    }
}

/// A WAL of 13 records whose first 12 the files hold (the checkpoint at 12) and whose last
/// holds `tail`, not yet in any file.
fn wal_tail(data: &Path, tail: &RecordBatch) {
    let wal_dir = data.join("wal");
    let (mut wal, _) = Wal::open(&wal_dir, 1 << 20, |_| {}).unwrap();
    for seq in 1..=13u64 {
        let batch = (seq == 13).then_some(tail);
        let record = samos_store::record::encode(|_| {}, batch);
        assert_eq!(wal.append(&record).unwrap(), seq);
    }
    wal.commit().unwrap();
    samos_store::wal::write_checkpoint(&wal_dir, 12).unwrap();
}

/// Rows every Parquet scan of `plan` produced.
fn scanned_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mine = if plan.name() == "DataSourceExec" {
        plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0)
    } else {
        0
    };
    mine + plan.children().into_iter().map(scanned_rows).sum::<usize>()
}

#[tokio::test]
async fn a_query_for_some_series_reads_their_rows_and_answers_as_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Day 1: one indexed file of two row groups (150,000 readings). Day 2: a file without
    // an index, then WAL records past the checkpoint.
    write_file(data, "2026-01-01", (1, 10), DAY1, 0, 150_000, true);
    write_file(data, "2026-01-02", (11, 12), DAY2, 150_000, 6_000, false);
    wal_tail(data, &arrivals(DAY2, 156_000, 600));
    let h = History::open(data, Access::Query).await.unwrap();

    let cases = [
        // (filter the index narrows, the same filter in a form it does not recognise)
        ("node_id = 'N07'", "concat(node_id, '') = 'N07'"),
        (
            "node_id = 'N07' AND sensor = 'humidity'",
            "concat(node_id, '') = 'N07' AND concat(sensor, '') = 'humidity'",
        ),
        (
            "node_id IN ('N01', 'N39') AND sensor = 'co2' AND ingest_time >= to_timestamp_millis(400000 + 1767225600000)",
            "concat(node_id, '') IN ('N01', 'N39') AND concat(sensor, '') = 'co2' AND ingest_time >= to_timestamp_millis(400000 + 1767225600000)",
        ),
        (
            "sensor = 'temperature'",
            "concat(sensor, '') = 'temperature'",
        ),
        ("node_id = 'N07' AND node_id = 'N08'", "false"),
        ("node_id = 'nobody'", "false"),
        (
            "CAST(node_id AS VARCHAR) = 'N12' OR false",
            "concat(node_id, '') = 'N12'",
        ),
    ];
    for (narrowed, full) in cases {
        let answer = |filter: &str| {
            format!(
                "SELECT count(*), sum(key), min(value), max(value), \
                 CAST(max(ingest_time) AS BIGINT) FROM readings WHERE {filter}"
            )
        };
        let a = h.query(&answer(narrowed)).await.unwrap();
        let b = h.query(&answer(full)).await.unwrap();
        let (a, b) = (
            pretty_format_batches(&a).unwrap().to_string(),
            pretty_format_batches(&b).unwrap().to_string(),
        );
        assert_eq!(a, b, "{narrowed}");
    }

    // One node's sensor on day 1: exactly its 1,250 rows are read, and the page index,
    // which could only drop whole runs, is not evaluated.
    let (rows, scanned, shown) = run_on_day1(&h, "node_id = 'N07' AND sensor = 'humidity'").await;
    assert_eq!(rows, 150_000 / (NODES * SENSORS.len()));
    assert_eq!(scanned, rows, "{shown}");
    assert!(shown.contains("page_index_pages_pruned=0 total"), "{shown}");
    // Every file read is indexed: nothing compares nodes or sensors again.
    assert!(!shown.contains("FilterExec"), "{shown}");
    // A third of each row group (more than a page): the page index still prunes by time.
    let (rows, scanned, shown) = run_on_day1(
        &h,
        "sensor = 'co2' AND ingest_time < to_timestamp_millis(1767225600000 + 300000)",
    )
    .await;
    assert_eq!(rows, 300 * NODES);
    assert!(scanned < 150_000 / 3, "{shown}");
    assert!(
        !shown.contains("page_index_pages_pruned=0 total"),
        "{shown}"
    );
}

/// Rows of `SELECT value … WHERE filter` on day 1, rows the scan produced, and the plan with
/// its metrics.
async fn run_on_day1(h: &History, filter: &str) -> (usize, usize, String) {
    let sql = format!("SELECT value FROM readings WHERE {filter} AND date = '2026-01-01'");
    let plan = h
        .plan(&sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let rows: usize = collect(Arc::clone(&plan), h.context().task_ctx())
        .await
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    let shown = DisplayableExecutionPlan::with_metrics(plan.as_ref())
        .indent(true)
        .to_string();
    (rows, scanned_rows(&plan), shown)
}

#[tokio::test]
async fn the_latest_reading_per_series_reads_the_last_row_of_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // Day 1: two indexed files (the second with two row groups); day 2: a file without an
    // index; then the WAL tail. Each series' latest reading is in the WAL tail for some
    // nodes only (the tail holds the first 200 arrivals of a round).
    write_file(data, "2026-01-01", (1, 4), DAY1, 0, 30_000, true);
    write_file(data, "2026-01-01", (5, 10), DAY1, 30_000, 150_000, true);
    write_file(data, "2026-01-02", (11, 12), DAY2, 180_000, 6_000, false);
    wal_tail(data, &arrivals(DAY2, 186_000, 200));
    let h = History::open(data, Access::Query).await.unwrap();

    let total = 186_200;
    for (latest, everything) in [
        (
            "SELECT node_id, sensor, CAST(max(ingest_time) AS BIGINT), \
             last_value(value ORDER BY ingest_time) FROM readings GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT node_id, sensor, CAST(max(ingest_time) AS BIGINT), \
             last_value(value ORDER BY ingest_time) FROM readings WHERE key >= 0 \
             GROUP BY 1, 2 ORDER BY 1, 2",
        ),
        (
            "SELECT node_id, first_value(key ORDER BY ingest_time DESC) FROM readings \
             WHERE date = '2026-01-01' GROUP BY 1 ORDER BY 1",
            "SELECT node_id, first_value(key ORDER BY ingest_time DESC) FROM readings \
             WHERE date = '2026-01-01' AND key >= 0 GROUP BY 1 ORDER BY 1",
        ),
        (
            "SELECT sensor, max(ingest_time) FROM readings GROUP BY sensor ORDER BY 1",
            "SELECT sensor, max(ingest_time) FROM readings WHERE key >= 0 GROUP BY sensor \
             ORDER BY 1",
        ),
    ] {
        let (rows, scanned, shown) = run(&h, latest).await;
        let (full, full_scanned, _) = run(&h, everything).await;
        assert_eq!(rows, full, "{latest}");
        assert!(
            scanned < total / 20,
            "{latest}: {scanned} rows read\n{shown}"
        );
        assert!(full_scanned >= 180_000, "{everything}: {full_scanned}");
    }
    // Anything that needs more than the latest rows reads them all.
    for other in [
        "SELECT node_id, sensor, count(*) , max(ingest_time) FROM readings GROUP BY 1, 2",
        "SELECT node_id, sensor, last_value(value ORDER BY key) FROM readings GROUP BY 1, 2",
        "SELECT node_id, sensor, max(value) FROM readings GROUP BY 1, 2",
        "SELECT network, max(ingest_time) FROM readings GROUP BY 1",
        "SELECT node_id, max(ingest_time) FROM readings WHERE ingest_time < \
         to_timestamp_millis(1767225600000 + 600000) GROUP BY 1",
        "SELECT node_id, last_value(value ORDER BY ingest_time) IGNORE NULLS FROM readings \
         GROUP BY 1",
    ] {
        let (_, scanned, shown) = run(&h, other).await;
        assert!(
            scanned > total / 20,
            "{other}: only {scanned} rows read\n{shown}"
        );
    }
}

/// The answer of `sql` as text, the rows its scans produced, and the plan with its metrics.
async fn run(h: &History, sql: &str) -> (String, usize, String) {
    let plan = h
        .plan(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let batches = collect(Arc::clone(&plan), h.context().task_ctx())
        .await
        .unwrap();
    let shown = DisplayableExecutionPlan::with_metrics(plan.as_ref())
        .indent(true)
        .to_string();
    (
        pretty_format_batches(&batches).unwrap().to_string(),
        scanned_rows(&plan),
        shown,
    )
}
