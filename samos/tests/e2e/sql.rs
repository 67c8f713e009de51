//! SQL over the store a real server wrote: `samos sql` (one shot, formats, the shell) and the
//! HTTP API, checked against pyarrow, including readings acknowledged but not yet in Parquet.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::raw::*;
use common::*;
use serde_json::Value;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const SENSOR: &str = "indoorTemperatureSensor";

fn samos_sql(data: &Path, args: &[&str]) -> std::process::Output {
    run(
        Command::new(samos_bin())
            .arg("sql")
            .arg("--data-dir")
            .arg(data)
            .args(args),
        Duration::from_secs(60),
    )
}

fn sql(data: &Path, query: &str) -> String {
    let out = samos_sql(data, &[query]);
    assert!(
        out.status.success(),
        "samos sql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// `GET path` over a real socket: (status, JSON body).
fn api(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = http_request(addr, "GET", path, token, None);
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, body)
}

fn query(addr: SocketAddr, sql: &str, token: Option<&str>) -> (u16, Value) {
    api(
        addr,
        &format!("/api/v1/query?sql={}", percent_encode(sql)),
        token,
    )
}

/// `GET path` until the answer has rows: the registry file is saved once a second.
fn api_rows(addr: SocketAddr, path: &str, token: Option<&str>) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api(addr, path, token);
        assert_eq!(status, 200, "{body}");
        if body["row_count"].as_u64() > Some(0) || std::time::Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readings_not_yet_in_parquet_are_queried_and_agree_with_pyarrow() {
    // Files close after 25 rows; the rest stays in the WAL (and an open file) for an hour.
    let s =
        TestServer::with_config("[storage]\nparquet_max_rows = 25\nparquet_rotate_secs = 3600\n");
    let api_addr = s.api.expect("API on");
    let mut cn1 = join_paper_node(&s, "CN1");
    let mut cn2 = join_paper_node(&s, "CN2");
    publish_temperatures(&mut cn1, "CN1", (1..=30).map(|i| f64::from(i) / 2.0), 10);
    publish_temperatures(&mut cn2, "CN2", (1..=10).map(f64::from), 10);
    // Acknowledged just now: the HTTP API already answers with it.
    let (status, body) = query(
        api_addr,
        "SELECT node_id, count(*) AS n, sum(value) AS total FROM readings GROUP BY node_id ORDER BY node_id",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        serde_json::json!([
            {"node_id": "CN1", "n": 30, "total": 232.5},
            {"node_id": "CN2", "n": 10, "total": 55.0}
        ])
    );
    // So does `samos sql` from another process, while the server runs.
    let out = sql(
        &s.data_dir(),
        "SELECT count(*) AS n, sum(value) AS total, count(DISTINCT key) AS keys FROM readings",
    );
    assert!(out.contains("| 40 | 287.5 | 40   |"), "{out}");
    // Parquet holds only the closed file: the rest came from the WAL.
    let parquet = read_store(&s.data_dir());
    assert_eq!(parquet["rows"], 25, "{parquet}");
    let out = sql(
        &s.data_dir(),
        "SELECT count(*) AS n FROM readings WHERE key IN (SELECT key FROM readings WHERE value > 10)",
    );
    assert!(out.contains("| 10 |"), "{out}");

    // One more reading is visible at once.
    publish_temperatures(&mut cn2, "CN2", [69.0], 100);
    let (_, body) = query(
        api_addr,
        "SELECT max(value) AS hi, count(*) AS n FROM readings",
        None,
    );
    assert_eq!(body["rows"][0]["hi"], 69.0);
    assert_eq!(body["rows"][0]["n"], 41);

    // The protocol's tables: the join events, the registry, and a quarantined reading.
    publish_refused(&mut cn1);
    let body = api_rows(
        api_addr,
        &format!(
            "/api/v1/query?sql={}",
            percent_encode("SELECT node_id, functional_mode FROM nodes ORDER BY node_id")
        ),
        None,
    );
    assert_eq!(body["rows"][0]["node_id"], "CN1");
    assert_eq!(body["rows"][0]["functional_mode"], "active");
    let (_, body) = query(
        api_addr,
        "SELECT kind, count(*) AS n FROM events WHERE kind = 'join' GROUP BY kind",
        None,
    );
    assert_eq!(body["rows"][0]["n"], 2, "{body}");
    let (_, body) = query(api_addr, "SELECT reason, client_id FROM rejected", None);
    assert_eq!(body["row_count"], 1, "{body}");
    assert_eq!(body["rows"][0]["client_id"], "CN1");

    drop((cn1, cn2));
    let dir = s.stop();
    let data = dir.path().join("data");
    // After an orderly stop everything is in Parquet; pyarrow and samos sql agree.
    let store = read_store(&data);
    assert_eq!(store["rows"], 41);
    let sum: f64 = store["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let out = sql(
        &data,
        "SELECT count(*) AS n, sum(value) AS total, count(DISTINCT key) AS keys FROM readings",
    );
    assert!(out.contains(&format!("| 41 | {sum:.1} | 41   |")), "{out}");
    let out = sql(
        &data,
        "SELECT node_id, sensor, room, count(*) AS n FROM readings GROUP BY 1, 2, 3 ORDER BY 1",
    );
    assert!(
        out.contains("| CN1     | indoorTemperatureSensor | A52  | 30 |"),
        "{out}"
    );
    assert!(
        out.contains("| CN2     | indoorTemperatureSensor | A52  | 11 |"),
        "{out}"
    );
    let day = store["dates"][0].as_str().unwrap().to_string();
    let out = sql(
        &data,
        &format!("SELECT count(*) AS n FROM readings WHERE date = '{day}'"),
    );
    assert!(out.contains("| 41 |"), "{out}");
    let out = sql(
        &data,
        "SELECT count(*) AS n FROM readings WHERE date = '1999-01-01'",
    );
    assert!(out.contains("| 0 |"), "{out}");
    // EXPLAIN: the date filter prunes to that partition.
    let out = sql(
        &data,
        &format!("EXPLAIN SELECT avg(value) FROM readings WHERE date = '{day}'"),
    );
    assert!(out.contains(&format!("date={day}")), "{out}");
    let out = sql(
        &data,
        "EXPLAIN SELECT avg(value) FROM readings WHERE date = '1999-01-01'",
    );
    assert!(!out.contains("date=20"), "{out}");
}

/// An out-of-range reading from CN1, refused into the quarantine.
fn publish_refused(c: &mut Raw) {
    let topic = format!("{NET}/CN1/{LOC}/{SENSOR}");
    assert_eq!(c.publish_qos1(&topic, b"float,0-70,99", 500), 0);
}

#[test]
fn the_http_api_answers_and_refuses() {
    let s = TestServer::with_config(
        "[api]\ntoken = \"s3cret\"\nmax_rows = 5\nmax_query_bytes = 300\nquery_timeout_ms = 300\n",
    );
    let addr = s.api.expect("API on");
    let tok = Some("s3cret");
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", (1..=8).map(f64::from), 10);

    let (status, body) = query(addr, "SELECT count(*) AS n FROM readings", None);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("token"));
    let (status, _) = query(addr, "SELECT 1", Some("wrong"));
    assert_eq!(status, 401);

    let (status, body) = query(addr, "SELECT count(*) AS n FROM readings", tok);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["n"], 8);
    assert_eq!(body["columns"][0]["name"], "n");
    assert_eq!(body["truncated"], false);
    // More rows than max_rows: cut and marked.
    let (_, body) = query(addr, "SELECT value FROM readings ORDER BY value", tok);
    assert_eq!(body["row_count"], 5);
    assert_eq!(body["truncated"], true);
    assert_eq!(body["rows"][4]["value"], 5.0);

    for write in [
        "INSERT INTO readings SELECT * FROM readings",
        "COPY (SELECT * FROM readings) TO '/tmp/samos-copy.csv'",
        "CREATE VIEW v AS SELECT 1",
        "DROP VIEW latest_readings",
        "SELECT 1; DROP TABLE readings",
    ] {
        let (status, body) = query(addr, write, tok);
        assert_eq!(status, 400, "{write}: {body}");
        let e = body["error"].as_str().unwrap();
        assert!(
            e.contains("only SELECT") || e.contains("one statement"),
            "{e}"
        );
    }
    assert!(!Path::new("/tmp/samos-copy.csv").exists());
    let long = format!("SELECT {} AS x", "1 + ".repeat(100) + "1");
    let (status, body) = query(addr, &long, tok);
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("at most 300"),
        "{body}"
    );
    let (status, body) = query(addr, "SELECT nope FROM readings", tok);
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    let (status, body) = query(addr, "SELECT count(*) FROM nosuchtable", tok);
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("nosuchtable"),
        "{body}"
    );
    let (status, body) = query(addr, "SELECT count(*) FROM range(0, 1000000000000) a", tok);
    assert_eq!(status, 408, "{body}");
    assert!(body["error"].as_str().unwrap().contains("300 ms"));

    let body = api_rows(addr, "/api/v1/nodes", tok);
    assert_eq!(body["rows"][0]["node_id"], "CN1");
    assert_eq!(body["rows"][0]["functional_mode"], "active");
    assert!(body["rows"][0]["config"].is_object(), "{body}");

    let (status, body) = api(
        addr,
        &format!("/api/v1/readings?node=CN1&sensor={SENSOR}&from=2000-01-01"),
        tok,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["row_count"], 5);
    let values: Vec<f64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0], "in time order");
    let (_, body) = api(addr, "/api/v1/readings?node=CN9", tok);
    assert_eq!(body["row_count"], 0);
    let (_, body) = api(addr, "/api/v1/readings?node=CN1&to=2000-01-01", tok);
    assert_eq!(body["row_count"], 0);
    let (status, body) = api(addr, "/api/v1/readings?from=yesterday", tok);
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("RFC 3339"),
        "{body}"
    );

    // Every refusal is counted.
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"api_unauthorized\"}"),
        2
    );
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"api_not_read_only\"}"),
        5
    );
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"api_query_too_long\"}"),
        1
    );
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"api_query_timeout\"}"),
        1
    );
    drop(cn1);
}

#[test]
fn samos_sql_formats_and_the_shell() {
    let s = TestServer::start();
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", [20.5, 21.0, 21.5], 10);
    drop(cn1);
    let data = s.data_dir();
    let q = "SELECT value FROM readings ORDER BY value";
    assert_eq!(
        stdout(&samos_sql(&data, &["--format", "csv", q])),
        "value\n20.5\n21.0\n21.5\n"
    );
    assert_eq!(
        stdout(&samos_sql(&data, &["--format", "json", q])).trim(),
        r#"[{"value":20.5},{"value":21.0},{"value":21.5}]"#
    );
    let out_file = s.dir.path().join("out.parquet");
    let out = samos_sql(
        &data,
        &[
            "--format",
            "parquet",
            "--output",
            out_file.to_str().unwrap(),
            q,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = run(
        Command::new("python3").arg("-c").arg(format!(
            "import pyarrow.parquet as pq; print(pq.read_table({:?}).column('value').to_pylist())",
            out_file.display().to_string()
        )),
        Duration::from_secs(60),
    );
    assert_eq!(stdout(&read).trim(), "[20.5, 21.0, 21.5]");
    let out = samos_sql(&data, &["--format", "parquet", q]);
    assert!(!out.status.success());

    // The shell: multi-line statements, \d, errors that do not end the session.
    let mut shell = Command::new(samos_bin())
        .arg("sql")
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"SELECT count(*) AS n,\n   max(value) AS hi\n FROM readings;\n\\d nodes\n\
              SELECT nope FROM readings;\nSELECT node_id, value FROM latest_readings;\n\\q\n",
        )
        .unwrap();
    let out = wait_output(shell, Duration::from_secs(60));
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("| 3 | 21.5 |"), "{text}");
    assert!(text.contains("functional_mode"), "{text}");
    assert!(text.contains("| CN1     | 21.5  |"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn bad_sql_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = samos_sql(dir.path(), &["SELECT nope FROM readings"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");
    let out = samos_sql(dir.path(), &["INSERT INTO readings SELECT * FROM readings"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only SELECT"));
    // An empty store is an empty table, not an error.
    let out = sql(dir.path(), "SELECT count(*) AS n FROM readings");
    assert!(out.contains("| 0 |"), "{out}");
}
