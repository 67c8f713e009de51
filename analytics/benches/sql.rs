//! SQL over the stored history against DuckDB, in one run on the same files: a suite of the
//! queries operators run (`sql/suite.rs`: hourly aggregates, the latest reading, one node-day,
//! a chart's down-sampling, percentiles, refusals by reason joined with `nodes`, a date-pruned
//! scan) at several scales, each answer compared row by row between the engines.
//!
//! The store is written the way the engine writes it (`readings/date=…/part-….parquet`, the
//! engine's writer settings, 1,000,000-row files): 100 nodes × 4 sensors, one reading each
//! every 15 s, values replayed from the bundled UCI office trace (temperature, humidity, light,
//! CO2), with the `nodes.json` and `rejected.jsonl` a server keeps beside it. Samos answers
//! through `samos_analytics::History` (the session of `samos sql` and the HTTP API, WAL check
//! included), in process; DuckDB (the Python package) reads the same files, in its process.
//! Where a release `samos` binary is built, each query is also timed as a whole `samos sql`
//! process (start, session and catalog setup, query, output).
//!
//! Scales: `SAMOS_SQL_BENCH_SCALES` (default `1M,10M`; `-- --quick`: `1M`; `100M` needs about
//! 1.1 GB of disk and 2–3 minutes to write). `SAMOS_SQL_BENCH_DIR` keeps the stores there and
//! reuses them in later runs (one folder per scale), instead of a temporary directory.
//!
//! Where a Garage binary is installed (`scripts/setup.sh`), the 10M store (or the largest
//! below it) is also uploaded to a Garage S3 server on loopback and committed as the Delta
//! table Samos keeps on object storage (`samos_lake::LakeWriter`, as the server does: upload
//! throughput is reported), and the hourly average runs again through `History` over that
//! table: object store vs local vs DuckDB, in one run.
//!
//! `cargo bench --bench sql`; writes `target/samos-bench/sql.json` and `sql.md`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use samos_analytics::datafusion::arrow;
use samos_analytics::{Access, History};
use samos_lake::{Dataset, LakeWriter};

#[path = "../../samos/tests/e2e/common/garage.rs"]
mod garage;
#[path = "sql/suite.rs"]
mod suite;
#[path = "../../samos/tests/e2e/common/synthetic_store.rs"]
mod synthetic_store;
use synthetic_store::{NODES, SENSORS, START_MS, write_store};

use suite::{RUNS, median};
/// The target: Samos at most DuckDB's time on every query at 10M readings.
const TARGET_RATIO: f64 = 1.0;
/// The target for one node-day at 100M readings, in seconds.
const POINT_LOOKUP_TARGET_S: f64 = 0.05;

/// The query the object-store comparison times.
const SAMOS_QUERY: &str = "SELECT node_id, sensor, date_bin(INTERVAL '1 hour', ingest_time) AS hour, \
     avg(value) AS avg_value, count(*) AS n FROM readings GROUP BY 1, 2, 3";

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

/// "1M", "10M", "100M", or a plain number of readings.
fn parse_scale(s: &str) -> usize {
    let s = s.trim();
    match s.strip_suffix(['M', 'm']) {
        Some(millions) => millions.parse::<usize>().unwrap() * 1_000_000,
        None => s.parse().unwrap(),
    }
}

/// A store of `rows` readings under `root` (written unless an earlier run left it complete).
fn store(root: &Path, rows: usize) -> std::path::PathBuf {
    let data = root.join(format!("readings-{rows}"));
    let done = data.join(".complete");
    if done.exists() {
        println!("store: {rows} readings reused from {}", data.display());
    } else {
        let _ = std::fs::remove_dir_all(&data);
        let t = Instant::now();
        write_store(&data, rows);
        suite::write_protocol_files(&data, rows);
        std::fs::write(&done, b"").unwrap();
        println!(
            "store: {rows} readings ({NODES} nodes × {} sensors, one each every 15 s) written in {:.1} s, {:.0} MB",
            SENSORS.len(),
            t.elapsed().as_secs_f64(),
            dir_bytes(&data) as f64 / 1e6
        );
    }
    data
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The release `samos` binary, when one is built.
/// `cargo bench --bench sql` does not build it (it belongs to another package): the bench
/// prints which one it times and when it was built, so a stale one shows.
fn samos_binary() -> Option<std::path::PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    let binary = target.join("release/samos");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok()?;
    let built: chrono::DateTime<chrono::Utc> = built.into();
    println!(
        "`samos sql` process times: {} built {} UTC (cargo bench --bench table1 --no-run rebuilds it)",
        binary.display(),
        built.format("%Y-%m-%d %H:%M:%S")
    );
    Some(binary)
}

/// Median seconds of `samos sql` as a whole process answering `sql` (output discarded).
fn whole_process(samos: &Path, data: &Path, sql: &str) -> f64 {
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(samos)
            .args(["sql", "--format", "csv", "--data-dir"])
            .arg(data)
            .arg(sql)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(out.success(), "samos sql failed on {sql}");
        times.push(t.elapsed().as_secs_f64());
    }
    median(times)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harnesses for their benchmarks
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let scales: Vec<usize> = std::env::var("SAMOS_SQL_BENCH_SCALES")
        .unwrap_or_else(|_| if quick { "1M" } else { "1M,10M" }.into())
        .split(',')
        .map(parse_scale)
        .collect();
    let temp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("SAMOS_SQL_BENCH_DIR")
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let binary = samos_binary();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut md = String::from(
        "| readings | query | Samos (s) | DuckDB (s) | Samos ÷ DuckDB | `samos sql` process (s) | rows |\n|---:|---|---:|---:|---:|---:|---:|\n",
    );
    let mut report = serde_json::json!({"runs": {"min": RUNS, "max": suite::MAX_RUNS, "min_timed_s": suite::MIN_TIMED_S, "rounds": suite::ROUNDS}, "cores": cores, "scales": []});
    let mut missed = Vec::new();
    for &rows in &scales {
        let data = store(&root, rows);
        let queries = suite::queries(rows);
        let history = rt.block_on(History::open(&data, Access::Query)).unwrap();
        let mut duck = suite::DuckDb::start(&data);
        if duck.is_none() {
            missed.push("DuckDB not installed: no ratios".into());
        }
        let answers = rt.block_on(suite::answers(&history, duck.as_mut(), &queries));
        let mut results = Vec::new();
        for (q, (s, d)) in queries.iter().zip(&answers) {
            let d = d.as_ref();
            if let Some(d) = d {
                suite::assert_same_rows(q.name, &s.rows, &d.rows);
            }
            let process = binary.as_deref().map(|b| whole_process(b, &data, &q.samos));
            let ratio = d.map(|d| s.median_s / d.median_s);
            if rows == 10_000_000 && ratio.is_some_and(|r| r > TARGET_RATIO) {
                missed.push(format!("{} at 10M: {:.2}×", q.name, ratio.unwrap_or(0.0)));
            }
            let cell = |v: Option<f64>, digits: usize| {
                v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
            };
            let line = format!(
                "| {rows} | {} | {:.4} | {} | {} | {} | {} |",
                q.name,
                s.median_s,
                cell(d.map(|d| d.median_s), 4),
                ratio.map_or("–".to_owned(), |r| format!("{r:.2}×")),
                cell(process, 3),
                s.rows.len()
            );
            println!("{line}");
            md.push_str(&line);
            md.push('\n');
            results.push(serde_json::json!({
                "query": q.name, "samos_sql": q.samos, "samos_median_s": s.median_s,
                "duckdb_median_s": d.map(|d| d.median_s), "ratio": ratio,
                "samos_sql_process_s": process, "rows": s.rows.len(),
            }));
        }
        if rows >= 100_000_000 {
            let lookup = answers[2].0.median_s;
            if lookup >= POINT_LOOKUP_TARGET_S {
                missed.push(format!("one node-day at {rows}: {lookup:.3} s"));
            }
        }
        report["scales"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "rows": rows,
                "duckdb": duck.as_ref().map(|d| d.version.clone()),
                "queries": results,
            }));
    }
    if binary.is_none() {
        println!(
            "`samos sql` process times: no release binary (cargo bench --bench table1 --no-run builds one)"
        );
    }
    // The object store against the local files, at 10M readings or the largest scale below.
    if let Some(&rows) = scales.iter().filter(|&&r| r <= 10_000_000).max() {
        let data = store(&root, rows);
        let (local_s, _, counted) = rt.block_on(async {
            time_query(&History::open(&data, Access::Query).await.unwrap()).await
        });
        assert_eq!(counted, rows as u64, "Samos counted every reading once");
        if let Some(lake) = rt.block_on(object_store(&data, rows)) {
            let lake_s = lake["median_s"].as_f64().unwrap();
            println!(
                "hourly average, {rows} readings: local files {local_s:.3} s, object store {lake_s:.3} s ({:.2}×)",
                lake_s / local_s
            );
            report["object_store"] = lake;
            report["object_store"]["local_median_s"] = local_s.into();
        } else {
            println!("object store: no Garage binary (scripts/setup.sh builds one); skipped");
        }
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("sql.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("sql.md"), &md).unwrap();
    println!("\n{md}");
    let checked: Vec<String> = [
        (
            scales.contains(&10_000_000),
            format!("≤ {TARGET_RATIO}× DuckDB on every query at 10M"),
        ),
        (
            scales.iter().any(|&r| r >= 100_000_000),
            format!("one node-day < {POINT_LOOKUP_TARGET_S} s at 100M"),
        ),
    ]
    .into_iter()
    .filter_map(|(ran, target)| ran.then_some(target))
    .collect();
    if checked.is_empty() {
        println!("no target applies to these scales (they are set at 10M and 100M)");
    } else if missed.is_empty() {
        println!("targets met: {}", checked.join("; "));
    } else {
        println!("targets missed: {}", missed.join("; "));
    }
}
