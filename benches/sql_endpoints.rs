//! Rows per second out of Samos's SQL endpoints for one scan of the stored readings (10 million
//! by default, `SAMOS_SQL_WIRE_BENCH_ROWS` to change, `-- --quick`: 1 million), against DuckDB
//! reading the same Parquet files in the same run.
//!
//! The store is the synthetic one of the SQL benchmark (`samos/tests/common/synthetic_store.rs`:
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

#[path = "../samos/tests/common/mod.rs"]
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

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Runs `cmd` `RUNS + 1` times (the first warms up), checking each printed `rows`:
/// (median seconds, peak server RSS growth in MiB).
fn time(label: &str, rows: u64, pid: u32, mut cmd: impl FnMut() -> Command) -> (f64, f64) {
    let base = rss_kib(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
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
        let counted: u64 = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{label}: {text}"));
        assert_eq!(counted, rows, "{label}");
        if i > 0 {
            times.push(elapsed);
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    (median(times), peak.saturating_sub(base) as f64 / 1024.0)
}

fn python(code: &str, args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(code).args(args);
    c
}

const PSYCOPG: &str = r#"
import sys, psycopg
n = 0
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    with conn.cursor() as cur:
        for _ in cur.stream(sys.argv[2]):
            n += 1
print(n)
"#;

const FLIGHT: &str = r#"
import sys, pyarrow.flight as fl
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
client = fl.FlightClient(sys.argv[1])
q = sys.argv[2].encode()
cmd = b"\x0a" + varint(len(q)) + q
url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
info = client.get_flight_info(fl.FlightDescriptor.for_command(b"\x0a" + varint(len(url)) + url + b"\x12" + varint(len(cmd)) + cmd))
n = 0
for e in info.endpoints:
    for chunk in client.do_get(e.ticket):
        n += chunk.data.num_rows
print(n)
"#;

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
    let (s, mem) = time("flight", rows, pid, || python(FLIGHT, &[&flight, QUERY]));
    results.push(("Samos Flight SQL → pyarrow.flight", s, Some(mem)));
    let (s, mem) = time("psql", rows, pid, || {
        let mut c = Command::new("bash");
        c.arg("-c").arg(format!(
            "set -o pipefail; psql -X -A -t -c \"{QUERY}\" \"{dsn}\" | wc -l"
        ));
        c
    });
    results.push(("Samos PostgreSQL wire → psql", s, Some(mem)));
    let (s, mem) = time("psycopg", rows, pid, || python(PSYCOPG, &[&dsn, QUERY]));
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
