//! The query suite: what operators of a sensor network ask of their history, each written
//! once for Samos (DataFusion) and once for DuckDB over the same files, answered by both in
//! the same run and compared row by row.
//!
//! Timing is in process on both sides: Samos through `History::query` (the session `samos sql`
//! and the HTTP API use, WAL check included), DuckDB from its Python package with the result
//! fetched as Arrow (one Python process for the suite). The engines take turns on each query
//! (`ROUNDS` turns each); in a turn the query runs once to warm the page cache and the session,
//! then at least `RUNS` times and on until the turn has run for `MIN_TIMED_S` seconds (at most
//! `MAX_RUNS` times). The median of a query's runs counts. Before, each engine ran the whole
//! suite in turn, five runs a query: a 10 ms query's ratio moved by a tenth or more between
//! runs of the bench, with the machine's speed. Times are returned as epoch milliseconds by both engines so the
//! rows compare as numbers; floats agree within 1e-9 relative (sums in another order).
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use samos_analytics::History;
use samos_analytics::datafusion::arrow;
use serde_json::Value;

use crate::synthetic_store::{NODES, SENSORS, START_MS, STEP_MS};

/// Timed runs of each query, after one warm-up: at least `RUNS`, then more until the runs
/// have taken `MIN_TIMED_S` seconds, at most `MAX_RUNS`.
pub const RUNS: usize = 5;
pub const MIN_TIMED_S: f64 = 1.0;
pub const MAX_RUNS: usize = 100;

/// Whether a query timed `times` so far should run again.
fn another_run(times: &[f64]) -> bool {
    times.len() < RUNS || (times.len() < MAX_RUNS && times.iter().sum::<f64>() < MIN_TIMED_S)
}

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;
/// A chart's width in buckets.
const CHART_BUCKETS: i64 = 500;
/// The node and sensor a dashboard chart shows.
const NODE: &str = "N042";
const SENSOR: &str = "temperature";
/// One refused reading per this many stored ones.
const REFUSED_EVERY: usize = 1000;
const REASONS: [&str; 4] = [
    "unknown_node",
    "node_not_active",
    "payload_format_invalid",
    "foreign_node",
];

/// One query of the suite.
pub struct Query {
    pub name: &'static str,
    pub samos: String,
    pub duckdb: String,
}

/// The suite for a store of `rows` readings written by `synthetic_store::write_store`.
pub fn queries(rows: usize) -> Vec<Query> {
    let span_ms = (rows / (NODES * SENSORS.len())) as i64 * STEP_MS;
    // The second day where there is one, so that a range query has files on either side.
    let day = START_MS + if span_ms > 2 * DAY_MS { DAY_MS } else { 0 };
    let date = chrono::DateTime::from_timestamp_millis(day)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let bucket = WEEK_MS / CHART_BUCKETS;
    let (from, to, week_end) = (day, day + DAY_MS, START_MS + WEEK_MS);
    let s = |sql: &str| sql.to_owned();
    vec![
        Query {
            name: "hourly aggregate per node and sensor",
            samos: s(
                "SELECT node_id, sensor, CAST(date_trunc('hour', ingest_time) AS BIGINT) AS hour, \
                 count(*) AS n, avg(value) AS mean, min(value) AS low, max(value) AS high \
                 FROM readings GROUP BY 1, 2, 3",
            ),
            duckdb: s(
                "SELECT node_id, sensor, epoch_ms(date_trunc('hour', ingest_time)) AS hour, \
                 count(*) AS n, avg(value) AS mean, min(value) AS low, max(value) AS high \
                 FROM {readings} GROUP BY ALL",
            ),
        },
        Query {
            name: "latest reading per node and sensor",
            samos: s(
                "SELECT node_id, sensor, CAST(max(ingest_time) AS BIGINT) AS at, \
                 last_value(value ORDER BY ingest_time) AS value FROM readings GROUP BY 1, 2",
            ),
            duckdb: s("SELECT node_id, sensor, epoch_ms(max(ingest_time)) AS at, \
                 arg_max(value, ingest_time) AS value FROM {readings} GROUP BY ALL"),
        },
        Query {
            name: "one node's sensor over one day",
            samos: format!(
                "SELECT CAST(ingest_time AS BIGINT) AS t, value FROM readings \
                 WHERE node_id = '{NODE}' AND sensor = '{SENSOR}' \
                 AND ingest_time >= to_timestamp_millis({from}) AND ingest_time < to_timestamp_millis({to}) \
                 ORDER BY ingest_time"
            ),
            duckdb: format!(
                "SELECT epoch_ms(ingest_time) AS t, value FROM {{readings}} \
                 WHERE node_id = '{NODE}' AND sensor = '{SENSOR}' \
                 AND ingest_time >= to_timestamp({fs}) AND ingest_time < to_timestamp({ts}) \
                 ORDER BY ingest_time",
                fs = from / 1000,
                ts = to / 1000
            ),
        },
        Query {
            name: "a week down-sampled to 500 buckets (min/max)",
            samos: format!(
                "SELECT (CAST(ingest_time AS BIGINT) - {START_MS}) / {bucket} AS bucket, \
                 min(value) AS low, max(value) AS high FROM readings \
                 WHERE node_id = '{NODE}' AND sensor = '{SENSOR}' \
                 AND ingest_time >= to_timestamp_millis({START_MS}) AND ingest_time < to_timestamp_millis({week_end}) \
                 GROUP BY 1 ORDER BY 1"
            ),
            duckdb: format!(
                "SELECT (epoch_ms(ingest_time) - {START_MS}) // {bucket} AS bucket, \
                 min(value) AS low, max(value) AS high FROM {{readings}} \
                 WHERE node_id = '{NODE}' AND sensor = '{SENSOR}' \
                 AND ingest_time >= to_timestamp({fs}) AND ingest_time < to_timestamp({ws}) \
                 GROUP BY ALL ORDER BY 1",
                fs = START_MS / 1000,
                ws = week_end / 1000
            ),
        },
        Query {
            name: "p50 and p99 per sensor",
            samos: s(
                "SELECT sensor, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS p50, \
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99 FROM readings GROUP BY 1",
            ),
            duckdb: s(
                "SELECT sensor, quantile_cont(value, 0.5) AS p50, quantile_cont(value, 0.99) AS p99 \
                 FROM {readings} GROUP BY ALL",
            ),
        },
        Query {
            name: "refused readings by reason and network",
            samos: s(
                "SELECT n.network, r.reason, count(*) AS refused FROM rejected r \
                 JOIN nodes n ON r.client_id = n.node_id GROUP BY 1, 2",
            ),
            duckdb: s(
                "SELECT n.network, r.reason, count(*) AS refused FROM {rejected} r \
                 JOIN {nodes} n ON r.client_id = n.node_id GROUP BY ALL",
            ),
        },
        Query {
            name: "one date, pruned by partition",
            samos: format!(
                "SELECT count(*) AS n, avg(value) AS mean, min(value) AS low, max(value) AS high \
                 FROM readings WHERE date = '{date}'"
            ),
            duckdb: format!(
                "SELECT count(*) AS n, avg(value) AS mean, min(value) AS low, max(value) AS high \
                 FROM {{readings}} WHERE date = '{date}'"
            ),
        },
    ]
}

/// Writes the protocol files a store of `rows` readings would come with: `nodes.json` (the
/// 100 nodes, five networks) and `rejected.jsonl` (one refused reading per `REFUSED_EVERY`).
pub fn write_protocol_files(data: &Path, rows: usize) {
    let nodes: Vec<Value> = (0..NODES)
        .map(|n| {
            serde_json::json!({
                "network": format!("site{}", n % 5), "node_id": format!("N{n:03}"),
                "functional_mode": "active", "severity": "normalMode",
                "assessed_severity": "normalMode", "config_xml": null, "config": null,
                "joined_at_ms": START_MS, "last_seen_ms": START_MS,
                "address": "127.0.0.1:1883", "readings_accepted": 0, "readings_rejected": 0,
            })
        })
        .collect();
    std::fs::write(data.join("nodes.json"), serde_json::to_vec(&nodes).unwrap()).unwrap();
    let mut lines = String::new();
    for i in 0..rows / REFUSED_EVERY {
        // Some refusals come from clients that never joined (no row in `nodes`).
        let client = if i % 10 == 9 {
            format!("X{:03}", i % 37)
        } else {
            format!("N{:03}", (i * 7) % NODES)
        };
        let line = serde_json::json!({
            "time_ms": START_MS + (i * REFUSED_EVERY / (NODES * SENSORS.len())) as i64 * STEP_MS,
            "client_id": client, "peer": "127.0.0.1:50000",
            "topic": format!("samos/bench/{client}/temperature"),
            "reason": REASONS[i % REASONS.len()], "detail": "synthetic",
            "payload": "{}", "payload_bytes": 2,
        });
        let _ = writeln!(lines, "{line}");
    }
    std::fs::write(data.join("rejected.jsonl"), lines).unwrap();
}

/// One engine's answer to one query: median seconds and its rows as JSON values.
pub struct Answer {
    pub median_s: f64,
    pub rows: Vec<Vec<Value>>,
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rows of Arrow batches as JSON values (arrow's JSON writer: strings, numbers, nulls).
fn json_rows(batches: &[arrow::record_batch::RecordBatch]) -> Vec<Vec<Value>> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&arrow::record_batch::RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).unwrap();
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Vec::new();
    }
    let objects: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&bytes).unwrap();
    let names: Vec<String> = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    objects
        .into_iter()
        .map(|mut o| {
            names
                .iter()
                .map(|n| o.remove(n).unwrap_or(Value::Null))
                .collect()
        })
        .collect()
}

/// Times `sql` through `History` (after one warm-up run) by the suite's rule, with its rows.
pub async fn time_samos(history: &History, sql: &str) -> (Vec<f64>, Vec<Vec<Value>>) {
    let rows = json_rows(&history.query(sql).await.unwrap());
    let mut times = Vec::new();
    while another_run(&times) {
        let t = Instant::now();
        let batches = history.query(sql).await.unwrap();
        times.push(t.elapsed().as_secs_f64());
        drop(batches);
    }
    (times, rows)
}

/// DuckDB in its Python package, one process for the whole suite, answering one query at a
/// time, so that each query is timed on both engines back to back.
pub struct DuckDb {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    readings: String,
    rejected: String,
    nodes: String,
    /// Its version and threads.
    pub version: String,
}

impl DuckDb {
    /// DuckDB over the store in `data`; `None` when the package is not installed.
    pub fn start(data: &Path) -> Option<DuckDb> {
        let script = format!(
            r#"
import json, sys, time, duckdb
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute("SET enable_progress_bar = false")
print(json.dumps({{"version": duckdb.__version__,
                  "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}}), flush=True)
for line in sys.stdin:
    q = json.loads(line)
    rows = [list(r) for r in con.execute(q).fetchall()]
    times = []
    while len(times) < {RUNS} or (len(times) < {MAX_RUNS} and sum(times) < {MIN_TIMED_S}):
        t = time.perf_counter(); con.execute(q).to_arrow_table(); times.append(time.perf_counter() - t)
    print(json.dumps({{"times": times, "rows": rows}}, default=float), flush=True)
"#
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let Some(hello) = read_object(&mut stdout) else {
            let mut err = String::new();
            let _ = child.stderr.take()?.read_to_string(&mut err);
            eprintln!(
                "DuckDB unavailable (bash scripts/setup.sh installs it): {}",
                err.lines().last().unwrap_or("")
            );
            let _ = child.wait();
            return None;
        };
        let version = format!(
            "{} ({} threads)",
            hello["version"].as_str()?,
            hello["threads"]
        );
        Some(DuckDb {
            child,
            stdin,
            stdout,
            readings: format!(
                "read_parquet('{}/readings/*/*.parquet', hive_partitioning = true)",
                data.display()
            ),
            rejected: format!(
                "read_json('{}/rejected.jsonl', format = 'newline_delimited')",
                data.display()
            ),
            nodes: format!(
                "read_json('{}/nodes.json', format = 'array')",
                data.display()
            ),
            version,
        })
    }

    /// Times a query of the suite (its DuckDB text, `{readings}` etc. filled in) by the
    /// suite's rule, with its rows.
    pub fn time(&mut self, sql: &str) -> (Vec<f64>, Vec<Vec<Value>>) {
        let sql = sql
            .replace("{readings}", &self.readings)
            .replace("{rejected}", &self.rejected)
            .replace("{nodes}", &self.nodes);
        writeln!(self.stdin, "{}", serde_json::to_string(&sql).unwrap()).unwrap();
        self.stdin.flush().unwrap();
        let answer = read_object(&mut self.stdout).expect("DuckDB answered");
        (
            serde_json::from_value(answer["times"].clone()).unwrap(),
            serde_json::from_value(answer["rows"].clone()).unwrap(),
        )
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next line of `out` that is a JSON object (anything DuckDB prints itself is skipped);
/// `None` at the end of the output.
fn read_object(out: &mut impl BufRead) -> Option<Value> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(line.trim()) {
            return Some(v);
        }
    }
}

/// Rounds of each query per engine, the engines taking turns: a drift of the machine's speed
/// during the run falls on both.
pub const ROUNDS: usize = 2;

/// Both engines' answers to every query: `ROUNDS` turns each, back to back, medians over all
/// of a query's runs. DuckDB's are `None` without DuckDB.
pub async fn answers(
    history: &History,
    duckdb: Option<&mut DuckDb>,
    queries: &[Query],
) -> Vec<(Answer, Option<Answer>)> {
    let mut duckdb = duckdb;
    let mut out = Vec::new();
    for q in queries {
        let (mut samos_times, mut duck_times) = (Vec::new(), Vec::new());
        let (mut samos_rows, mut duck_rows) = (Vec::new(), None);
        for _ in 0..ROUNDS {
            let (times, rows) = time_samos(history, &q.samos).await;
            samos_times.extend(times);
            samos_rows = rows;
            if let Some(d) = duckdb.as_deref_mut() {
                let (times, rows) = d.time(&q.duckdb);
                duck_times.extend(times);
                duck_rows = Some(rows);
            }
        }
        out.push((
            Answer {
                median_s: median(samos_times),
                rows: samos_rows,
            },
            duck_rows.map(|rows| Answer {
                median_s: median(duck_times),
                rows,
            }),
        ));
    }
    out
}

/// Two cells agree: equal, or numbers within 1e-9 relative.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

/// Row order is not part of an answer (the queries without ORDER BY leave it free). Sorted on
/// every cell, floats to 6 digits, so that last-digit differences do not reorder rows.
fn sorted(rows: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let key = |r: &Vec<Value>| -> Vec<String> {
        r.iter()
            .map(|v| match (v.as_i64(), v.as_f64()) {
                (None, Some(f)) => format!("{f:.6e}"),
                _ => v.to_string(),
            })
            .collect()
    };
    let mut rows = rows.to_vec();
    rows.sort_by_cached_key(key);
    rows
}

/// Fails unless both engines gave the same rows.
pub fn assert_same_rows(name: &str, samos: &[Vec<Value>], duckdb: &[Vec<Value>]) {
    assert_eq!(
        samos.len(),
        duckdb.len(),
        "{name}: Samos gave {} rows, DuckDB {}",
        samos.len(),
        duckdb.len()
    );
    assert!(!samos.is_empty(), "{name}: no rows");
    for (i, (s, d)) in sorted(samos).iter().zip(&sorted(duckdb)).enumerate() {
        assert!(
            s.len() == d.len() && s.iter().zip(d).all(|(a, b)| same(a, b)),
            "{name}: row {i} differs: Samos {s:?}, DuckDB {d:?}"
        );
    }
}
