//! Rows per second out of Samos's SQL endpoints for one scan of the stored readings (10 million
//! by default, `SAMOS_SQL_WIRE_BENCH_ROWS` to change, `-- --quick`: 1 million), against DuckDB
//! reading the same Parquet files in the same run.
//!
//! The store is the synthetic one of the SQL benchmark (`samos/tests/e2e/common/synthetic_store.rs`:
//! the engine's file layout and writer settings). `samos serve` (this build) serves it with the
//! PostgreSQL wire and Flight SQL endpoints on loopback; each client runs the same query,
//! `SELECT ingest_time, node_id, sensor, value FROM readings`, and reads every row:
//! - `psql`: Debian's libpq client, unaligned rows piped to `wc -l` (libpq holds the whole
//!   result before psql prints it);
//! - psycopg 3 in single-row mode (`cursor.stream`: a Python object per row);
//! - pyarrow.flight: the Flight SQL ticket's record batches, counted;
//! - DuckDB (the Python package, in process, no wire) over `read_parquet(…)`, fetched as Arrow
//!   record batches: the peer, the fastest a client could see these rows.
//!
//! Each runs once to warm the page cache, then `RUNS` times; medians are reported with the
//! server's peak RSS growth during the runs. `cargo bench --bench sql_endpoints`; writes
//! `target/samos-bench/sql_endpoints.json`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "../samos/tests/e2e/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, run, stdout};

const RUNS: usize = 3;
const QUERY: &str = "SELECT ingest_time, node_id, sensor, value FROM readings";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `cmd` `RUNS + 1` times (the first warms up), checking the rows each reports (a bare
/// number, or `{"rows": n}`): (median seconds, peak server RSS growth in MiB).
fn time(label: &str, rows: u64, pid: u32, mut cmd: impl FnMut() -> Command) -> (f64, f64) {
    let (times, growth) = common::with_peak_rss(pid, || {
        let mut times = Vec::new();
        for i in 0..=RUNS {
            let t = Instant::now();
            let out = run(&mut cmd(), Duration::from_secs(1800));
            let elapsed = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "{label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = stdout(&out);
            let counted = text.trim().parse::<u64>().ok().or_else(|| {
                serde_json::from_str::<serde_json::Value>(text.trim()).ok()?["rows"].as_u64()
            });
            assert_eq!(counted, Some(rows), "{label}: {text}");
            if i > 0 {
                times.push(elapsed);
            }
        }
        times
    });
    (median(times), growth)
}

/// `sql_clients.py` (the tests' real clients) with `args`.
fn clients(args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_clients.py"))
        .args(args);
    c
}

fn python(code: &str, args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(code).args(args);
    c
}

const DUCKDB: &str = r#"
import sys, duckdb
con = duckdb.connect()
reader = con.sql(sys.argv[2].replace("FROM readings", "FROM read_parquet('" + sys.argv[1] + "', hive_partitioning = true)")).fetch_record_batch(122880)
n = 0
for batch in reader:
    n += batch.num_rows
print(n)
"#;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rows: u64 = std::env::var("SAMOS_SQL_WIRE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1_000_000 } else { 10_000_000 });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t = Instant::now();
    common::synthetic_store::write_store(&data, rows as usize);
    eprintln!(
        "store: {rows} readings written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let glob = format!("{}/readings/*/*.parquet", data.display());
    let server = TestServer::in_dir(
        dir,
        "[protocol]\nenabled = false\n\
         [pgwire]\nbind = \"127.0.0.1:0\"\nmax_rows = 0\nquery_timeout_ms = 3600000\n\
         [flight]\nbind = \"127.0.0.1:0\"\nmax_rows = 0\nquery_timeout_ms = 3600000\n",
    );
    let pid = server.pid();
    let pg = server.pg.unwrap();
    let dsn = format!("host=127.0.0.1 port={} dbname=samos user=bench", pg.port());
    let flight = format!("grpc://127.0.0.1:{}", server.flight.unwrap().port());

    let mut results = Vec::new();
    let (duckdb, _) = time("duckdb", rows, pid, || python(DUCKDB, &[&glob, QUERY]));
    results.push(("DuckDB (in process, Arrow batches)", duckdb, None));
    let (s, mem) = time("flight", rows, pid, || {
        clients(&["flight-stream", &flight, QUERY])
    });
    results.push(("Samos Flight SQL → pyarrow.flight", s, Some(mem)));
    let (s, mem) = time("psql", rows, pid, || {
        let mut c = Command::new("bash");
        c.arg("-c").arg(format!(
            "set -o pipefail; psql -X -A -t -c \"{QUERY}\" \"{dsn}\" | wc -l"
        ));
        c
    });
    results.push(("Samos PostgreSQL wire → psql", s, Some(mem)));
    let (s, mem) = time("psycopg", rows, pid, || {
        clients(&["psycopg-stream", &dsn, QUERY])
    });
    results.push((
        "Samos PostgreSQL wire → psycopg (single-row mode)",
        s,
        Some(mem),
    ));

    println!("\n{rows} rows of `{QUERY}`, median of {RUNS} runs after one warm-up\n");
    println!("| client | seconds | rows/s | ÷ DuckDB | server RSS growth |");
    println!("|---|---:|---:|---:|---:|");
    let mut json = Vec::new();
    for (label, secs, mem) in &results {
        let rate = rows as f64 / secs;
        println!(
            "| {label} | {secs:.2} | {rate:.0} | {:.2} | {} |",
            duckdb / secs,
            mem.map_or("–".to_string(), |m| format!("{m:.0} MiB"))
        );
        json.push(serde_json::json!({
            "client": label, "seconds": secs, "rows_per_s": rate,
            "ratio_to_duckdb": duckdb / secs, "server_rss_growth_mib": mem,
        }));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("sql_endpoints.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "rows": rows, "query": QUERY, "runs": RUNS, "results": json,
        }))
        .unwrap(),
    )
    .unwrap();
    drop(server);
}
