//! SQL over the stored history against DuckDB, in one run on the same files: an hourly average
//! per node and sensor over 10 million readings (`SAMOS_SQL_BENCH_ROWS` to change).
//!
//! The store is written the way the engine writes it (`readings/date=…/part-….parquet`, the
//! engine's writer settings, 1,000,000-row files): 100 nodes × 4 sensors, one reading each
//! every 15 s, values replayed from the bundled UCI office trace (temperature, humidity, light,
//! CO2). Samos answers through `samos_analytics::History` (the `readings` table of `samos sql`
//! and the HTTP API, WAL check included); DuckDB (the Python package) reads the same files with
//! `read_parquet(…, hive_partitioning = true)`. Each side runs the query once to warm the page
//! cache, then `RUNS` times; medians are compared. Both answers are checked to agree.
//!
//! Where a Garage binary is installed (`scripts/setup.sh`), the same files are also uploaded to
//! a Garage S3 server on loopback and committed as the Delta table Samos keeps on object
//! storage (`samos_lake::LakeWriter`, as the server does: upload throughput is reported), and
//! the query runs again through `History` over that table: object store vs local vs DuckDB, in
//! one run.
//!
//! `cargo bench --bench sql` (`-- --quick`: 1 million readings); writes
//! `target/samos-bench/sql.json`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use samos_analytics::datafusion::arrow;
use samos_analytics::{Access, History};
use samos_lake::{Dataset, LakeWriter};

#[path = "../../samos/tests/common/garage.rs"]
mod garage;
#[path = "../../samos/tests/common/synthetic_store.rs"]
mod synthetic_store;
use synthetic_store::{NODES, SENSORS, START_MS, write_store};

const RUNS: usize = 5;
/// The target: Samos within this factor of DuckDB.
const TARGET_RATIO: f64 = 1.5;

const SAMOS_QUERY: &str = "SELECT node_id, sensor, date_bin(INTERVAL '1 hour', ingest_time) AS hour, \
     avg(value) AS avg_value, count(*) AS n FROM readings GROUP BY 1, 2, 3";
const DUCKDB_QUERY: &str = "SELECT node_id, sensor, time_bucket(INTERVAL '1 hour', ingest_time) AS hour, \
     avg(value) AS avg_value, count(*) AS n FROM read_parquet('{glob}', hive_partitioning = true) \
     GROUP BY ALL";

/// The query's median seconds over `RUNS` (after one warm-up run), its groups and the
/// readings it counted.
async fn time_query(history: &History) -> (f64, usize, u64) {
    let run = || async {
        let batches = history.query(SAMOS_QUERY).await.unwrap();
        let groups: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let n: i64 = batches
            .iter()
            .map(|b| {
                arrow::compute::sum(
                    b.column(4)
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .unwrap(),
                )
                .unwrap_or(0)
            })
            .sum();
        (groups, n as u64)
    };
    run().await;
    let mut times = Vec::new();
    let mut last = (0, 0);
    for _ in 0..RUNS {
        let t = Instant::now();
        last = run().await;
        times.push(t.elapsed().as_secs_f64());
    }
    (median(times), last.0, last.1)
}

/// Uploads the store's files to a Garage server as the server's object-store sink would
/// (one Delta commit per file) and times the query over that table. `None` without Garage.
async fn object_store(data: &Path, rows: usize) -> Option<serde_json::Value> {
    garage::find_garage()?;
    let server = garage::Garage::start();
    let mut options = std::collections::HashMap::new();
    for (k, v) in [
        ("endpoint", server.endpoint()),
        ("region", "garage".to_owned()),
        ("allow_http", "true".to_owned()),
        ("access_key_id", server.key_id.clone()),
        ("secret_access_key", server.secret.clone()),
    ] {
        options.insert(k.to_owned(), v);
    }
    let dataset = Dataset::new("s3://samos/bench", options).unwrap();
    let mut report = delta_table(dataset, "Delta on Garage", data, rows).await;
    // The same table on the local disk separates the object store's cost from Delta's.
    let local = tempfile::tempdir().unwrap();
    let url = format!("file://{}", local.path().display());
    let dataset = Dataset::new(&url, std::collections::HashMap::new()).unwrap();
    report["local_delta"] = delta_table(dataset, "Delta on the local disk", data, rows).await;
    drop(server);
    Some(report)
}

/// Commits the store's files to one instance's table of `dataset` (timing the uploads) and
/// times the query and two pruned ones over the dataset.
async fn delta_table(dataset: Dataset, label: &str, data: &Path, rows: usize) -> serde_json::Value {
    let location = dataset.readings("bench");
    let mut writer = LakeWriter::open(&location, "sql-bench", 100).await.unwrap();
    let mut files = Vec::new();
    for (day, dir) in samos_store::layout::date_partitions(&data.join("readings")) {
        for (range, path) in samos_store::layout::partition_files(&dir) {
            files.push((range, day, path));
        }
    }
    files.sort();
    let (mut bytes, started) = (0u64, Instant::now());
    for (range, day, path) in &files {
        let committed = writer.append(path, *range, *day).await.unwrap().unwrap();
        bytes += committed.bytes;
    }
    let upload_s = started.elapsed().as_secs_f64();
    let mb_per_s = bytes as f64 / 1e6 / upload_s;
    println!(
        "{label}: {} files, {:.1} MB uploaded and committed in {upload_s:.1} s: {mb_per_s:.1} MB/s",
        files.len(),
        bytes as f64 / 1e6
    );
    // A data directory with no WAL: every reading is in the table.
    let empty = tempfile::tempdir().unwrap();
    let history = History::open_with_lake(empty.path(), Access::Query, Some(dataset))
        .await
        .unwrap();
    let (median_s, groups, counted) = time_query(&history).await;
    assert_eq!(
        counted, rows as u64,
        "the object-store table holds every reading once"
    );
    println!("Samos over {label}: median {median_s:.3} s, {groups} groups");
    // Pruning: one day by `date` (partition values in the log) and one hour by `ingest_time`
    // (min/max in each file's add stats) read a fraction of the table.
    let day = chrono::DateTime::from_timestamp_millis(START_MS + 86_400_000)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let mut pruned = serde_json::Map::new();
    for (label, filter) in [
        ("one_date", format!("date = '{day}'")),
        (
            "one_hour",
            format!(
                "ingest_time >= to_timestamp_millis({from}) AND ingest_time < to_timestamp_millis({to})",
                from = START_MS + 86_400_000,
                to = START_MS + 86_400_000 + 3_600_000
            ),
        ),
    ] {
        let sql = format!("SELECT count(*) AS n, avg(value) FROM readings WHERE {filter}");
        history.query(&sql).await.unwrap();
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            history.query(&sql).await.unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        let m = median(times);
        println!(
            "  … WHERE {filter}: median {m:.3} s ({:.2} of the whole-table query)",
            m / median_s
        );
        pruned.insert(label.into(), m.into());
    }
    serde_json::json!({
        "files": files.len(),
        "upload_bytes": bytes,
        "upload_s": upload_s,
        "upload_mb_per_s": mb_per_s,
        "median_s": median_s,
        "groups": groups,
        "pruned_median_s": pruned,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// DuckDB's median seconds, groups and rows, from the Python package.
fn duckdb(data: &Path) -> Option<(f64, u64, u64, String)> {
    let glob = format!("{}/readings/*/*.parquet", data.display());
    let query = DUCKDB_QUERY.replace("{glob}", &glob);
    let script = format!(
        r#"
import json, statistics, time, duckdb
con = duckdb.connect()
q = {query:?}
rows = con.execute(q).fetchall()
times = []
for _ in range({RUNS}):
    t = time.perf_counter(); rows = con.execute(q).fetchall(); times.append(time.perf_counter() - t)
print(json.dumps({{"median": statistics.median(times), "groups": len(rows),
                  "rows": sum(r[4] for r in rows), "version": duckdb.__version__,
                  "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}}))
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "DuckDB baseline unavailable (bash scripts/setup.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["median"].as_f64()?,
        v["groups"].as_u64()?,
        v["rows"].as_u64()?,
        format!("{} ({} threads)", v["version"].as_str()?, v["threads"]),
    ))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harnesses for their benchmarks
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rows: usize = std::env::var("SAMOS_SQL_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1_000_000 } else { 10_000_000 });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t = Instant::now();
    write_store(&data, rows);
    println!(
        "store: {rows} readings ({NODES} nodes × {} sensors, one each every 15 s) written in {:.1} s",
        SENSORS.len(),
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (samos_s, groups, counted) = rt
        .block_on(async { time_query(&History::open(&data, Access::Query).await.unwrap()).await });
    assert_eq!(counted, rows as u64, "Samos counted every reading once");
    println!("Samos (DataFusion): median {samos_s:.3} s, {groups} groups");
    let mut report = serde_json::json!({
        "rows": rows,
        "query": SAMOS_QUERY,
        "samos_median_s": samos_s,
        "groups": groups,
        "runs": RUNS,
        "cores": std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1),
    });
    match duckdb(&data) {
        Some((duck_s, duck_groups, duck_rows, version)) => {
            assert_eq!(duck_groups as usize, groups, "DuckDB found the same groups");
            assert_eq!(duck_rows, rows as u64, "DuckDB counted the same rows");
            let ratio = samos_s / duck_s;
            println!("DuckDB {version}: median {duck_s:.3} s, {duck_groups} groups");
            println!(
                "Samos / DuckDB = {ratio:.2}× (target ≤ {TARGET_RATIO}×: {})",
                if ratio <= TARGET_RATIO {
                    "met"
                } else {
                    "MISSED"
                }
            );
            report["duckdb_median_s"] = duck_s.into();
            report["duckdb_version"] = version.into();
            report["ratio"] = ratio.into();
        }
        None => println!("DuckDB: not installed; no ratio"),
    }
    match rt.block_on(object_store(&data, rows)) {
        Some(lake) => {
            let lake_s = lake["median_s"].as_f64().unwrap();
            println!(
                "object store / local = {:.2}×{}",
                lake_s / samos_s,
                report["duckdb_median_s"]
                    .as_f64()
                    .map(|d| format!(", object store / DuckDB (local files) = {:.2}×", lake_s / d))
                    .unwrap_or_default()
            );
            report["object_store"] = lake;
        }
        None => println!("object store: no Garage binary (scripts/setup.sh builds one); skipped"),
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("sql.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}
