//! The operator's own tools against a real server: Debian's `psql`, psycopg 3 and the ADBC
//! Flight SQL driver and pyarrow's Flight client from PyPI (`sql_clients.py`), over TLS with
//! password-file users and the API token, each answer compared with `samos sql`; refusals
//! (writes, wrong passwords, no credentials, row cap, timeout); a million readings streamed to
//! psycopg and to Flight with the server's memory watched.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "viewer-token-7";
const USER: &str = "grafana";
const PASSWORD: &str = "s3cret-pw";

/// A server with a password file, an API token, and both SQL endpoints over TLS, holding 30
/// readings of CN1 and 10 of CN2.
fn server(dir: &tempfile::TempDir) -> (TestServer, PathBuf) {
    let certs = make_certs(dir.path(), "unused");
    let passwords = make_passwords(dir.path(), &[(USER, PASSWORD)]);
    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        certs.join("server.crt").display().to_string(),
        certs.join("server.key").display().to_string()
    );
    let s = TestServer::with_config(&format!(
        "password_file = {:?}\n\
         [api]\ntoken = \"{TOKEN}\"\n\
         [pgwire]\nbind = \"127.0.0.1:0\"\n{tls}\nmax_rows = 1000\nquery_timeout_ms = 3000\n\
         [flight]\nbind = \"127.0.0.1:0\"\n{tls}\nmax_rows = 1000\nquery_timeout_ms = 3000\n",
        passwords.display().to_string()
    ));
    let mut cn1 = join_paper_node(&s, "CN1");
    let mut cn2 = join_paper_node(&s, "CN2");
    publish_temperatures(&mut cn1, "CN1", (1..=30).map(|i| f64::from(i) / 2.0), 10);
    publish_temperatures(&mut cn2, "CN2", (1..=10).map(f64::from), 10);
    (s, certs.join("ca.crt"))
}

/// `psql` with `conninfo` and `PGPASSWORD`, one command: (success, stdout, stderr).
fn psql(conninfo: &str, password: &str, command: &str) -> (bool, String, String) {
    let out = run(
        Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", command])
            .arg(conninfo)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10"),
        Duration::from_secs(60),
    );
    (
        out.status.success(),
        stdout(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn conninfo(addr: SocketAddr, user: &str, ssl: &str) -> String {
    format!(
        "host=127.0.0.1 port={} dbname=samos user={user} {ssl}",
        addr.port()
    )
}

/// `sql_clients.py ARGS`: Ok(rows) or Err(the refusal's JSON).
fn client(args: &[&str]) -> Result<Value, Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql_clients.py");
    let out = run(
        Command::new("python3").arg(script).args(args),
        Duration::from_secs(120),
    );
    let text = stdout(&out);
    let value: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    match out.status.code() {
        Some(0) => Ok(value),
        Some(3) => Err(value),
        other => panic!(
            "{args:?} exited with {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `samos sql --format csv` rows, each as its fields.
fn samos_rows(data: &Path, query: &str) -> Vec<Vec<String>> {
    samos_sql(data, &[], &[], query)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn rows_of(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

const ROWS_QUERY: &str =
    "SELECT node_id, sensor, value, key FROM readings ORDER BY node_id, value, key";

#[test]
fn psql_describes_queries_and_is_refused_writes_and_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ca) = server(&dir);
    let pg = s.pg.expect("the PostgreSQL endpoint");
    let tls = format!("sslmode=verify-full sslrootcert={}", ca.display());
    let user = conninfo(pg, USER, &tls);

    // `\d`: the tables and views, as psql lists them from pg_catalog.
    let (ok, out, err) = psql(&user, PASSWORD, "\\d");
    assert!(ok, "{err}");
    for name in ["readings", "nodes", "events", "rejected", "latest_readings"] {
        assert!(
            out.lines().any(|l| l.contains(&format!("|{name}|"))),
            "{name} missing from \\d: {out}"
        );
    }
    // `\d readings`: its columns and types.
    let (ok, out, err) = psql(&user, PASSWORD, "\\d readings");
    assert!(ok, "{err}");
    for column in [
        "node_id",
        "sensor",
        "value",
        "ingest_time",
        "key",
        "instance",
    ] {
        assert!(out.contains(column), "{column} missing: {out}");
    }
    // A query, with the same answer as `samos sql`.
    let (ok, out, err) = psql(
        &user,
        PASSWORD,
        "SELECT node_id, count(*), sum(value) FROM readings GROUP BY node_id ORDER BY node_id",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "CN1|30|232.5\nCN2|10|55.0", "{out}");

    // Writes are refused before they are planned.
    for write in [
        "CREATE TABLE t (a INT)",
        "INSERT INTO readings (value) VALUES (1)",
        "DROP VIEW latest_readings",
        "COPY readings TO '/tmp/x.csv'",
    ] {
        let (ok, _, err) = psql(&user, PASSWORD, write);
        assert!(!ok, "{write} was accepted");
        assert!(err.contains("only reads"), "{write}: {err}");
    }
    // A SET of a server-wide setting is acknowledged and changes nothing.
    let (ok, out, err) = psql(
        &user,
        PASSWORD,
        "SET datafusion.execution.batch_size = 1; SHOW datafusion.execution.batch_size",
    );
    assert!(ok, "{err}");
    assert!(
        !out.contains("| 1\n") && !out.trim().ends_with("|1"),
        "{out}"
    );

    // Wrong password, unknown user, no TLS: refused with PostgreSQL's message.
    let (ok, _, err) = psql(&user, "wrong", "SELECT 1");
    assert!(
        !ok && err
            .to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    let (ok, _, err) = psql(&conninfo(pg, "nobody", &tls), "wrong", "SELECT 1");
    assert!(
        !ok && err
            .to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    // Any user name with the API token, proved by SCRAM (the token is never sent), here
    // without TLS.
    let (ok, out, err) = psql(
        &conninfo(pg, "dashboard", "sslmode=disable"),
        TOKEN,
        "SELECT count(*) FROM readings",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "40");
    assert!(
        s.wait_log("method=Token", Duration::from_secs(5)),
        "{}",
        s.log()
    );
    let (ok, _, err) = psql(
        &conninfo(pg, "dashboard", "sslmode=disable"),
        "not-the-token",
        "SELECT 1",
    );
    assert!(
        !ok && err
            .to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );
    assert!(s.metric("samos_refusals_total{reason=\"sql_unauthorized\"}") >= 3);
    assert!(s.metric("samos_refusals_total{reason=\"sql_not_read_only\"}") >= 4);
}

#[test]
fn psycopg_adbc_and_flight_return_the_rows_of_samos_sql() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ca) = server(&dir);
    let (pg, flight) = (s.pg.unwrap(), s.flight.unwrap());
    let ca = ca.display().to_string();
    let expected = samos_rows(&s.data_dir(), ROWS_QUERY);
    assert_eq!(expected.len(), 40);

    let dsn = format!(
        "host=127.0.0.1 port={} dbname=samos user={USER} password={PASSWORD} sslmode=verify-full sslrootcert={ca}",
        pg.port()
    );
    let rows = client(&["psycopg", &dsn, ROWS_QUERY]).unwrap();
    assert_eq!(rows_of(&rows), expected, "psycopg");
    // A bound parameter (the extended protocol's Bind).
    let rows = client(&[
        "psycopg",
        &dsn,
        "SELECT count(*), max(value) FROM readings WHERE node_id = %s",
        "CN2",
    ])
    .unwrap();
    assert_eq!(rows_of(&rows), [["10", "10.0"]]);

    let uri = format!("grpc+tls://127.0.0.1:{}", flight.port());
    let rows = client(&["flight", &uri, USER, PASSWORD, &ca, ROWS_QUERY]).unwrap();
    assert_eq!(rows_of(&rows), expected, "pyarrow.flight");
    let rows = client(&["adbc", &uri, "anyone", TOKEN, &ca, ROWS_QUERY]).unwrap();
    assert_eq!(rows_of(&rows), expected, "ADBC");

    // The Grafana example's queries (docs/grafana/dashboard.json), with its macros expanded
    // as Grafana's PostgreSQL data source expands them, through psycopg.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let expand = |sql: &str| {
        let mut sql = sql
            .replace("$__interval_ms", "60000")
            .replace("($node)", "('CN1','CN2')");
        while let Some(at) = sql.find("$__timeFilter(") {
            let end = at + sql[at..].find(')').unwrap();
            let column = &sql[at + "$__timeFilter(".len()..end];
            let filter =
                format!("{column} BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'");
            sql.replace_range(at..=end, &filter);
        }
        sql
    };
    let variable = dashboard["templating"]["list"][0]["query"]
        .as_str()
        .unwrap();
    let nodes = client(&["psycopg", &dsn, variable]).unwrap();
    assert_eq!(rows_of(&nodes), [["CN1"], ["CN2"]]);
    for panel in dashboard["panels"].as_array().unwrap() {
        let sql = expand(panel["targets"][0]["rawSql"].as_str().unwrap());
        let rows = client(&["psycopg", &dsn, &sql])
            .unwrap_or_else(|e| panic!("panel {}: {e}", panel["title"]));
        let rows = rows_of(&rows);
        match panel["id"].as_u64().unwrap() {
            1 => assert!(rows.len() >= 2 && rows[0].len() == 3, "{rows:?}"),
            2 => assert_eq!(rows, [["40"]]),
            3 => assert_eq!(rows.len(), 2, "{rows:?}"),
            4 => assert!(rows.is_empty(), "{rows:?}"),
            _ => assert!(!rows.is_empty(), "{}: {rows:?}", panel["title"]),
        }
    }

    // Refusals: no credentials, a write, past the row cap, past the timeout.
    let err = client(&["flight", &uri, "", "", &ca, "SELECT 1"]).unwrap_err();
    assert!(err["message"].as_str().unwrap().contains("log in"), "{err}");
    let err = client(&["adbc", &uri, USER, PASSWORD, &ca, "CREATE TABLE t (a INT)"]).unwrap_err();
    assert!(
        err["message"].as_str().unwrap().contains("only reads"),
        "{err}"
    );
    let err = client(&["psycopg", &dsn, "SELECT value FROM range(5000)"]).unwrap_err();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("more than 1000 rows"),
        "{err}"
    );
    let err = client(&[
        "flight",
        &uri,
        USER,
        PASSWORD,
        &ca,
        "SELECT value FROM range(5000)",
    ])
    .unwrap_err();
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("more than 1000 rows"),
        "{err}"
    );
    let slow = "SELECT sum(a.value * b.value) FROM range(200000) a CROSS JOIN range(200000) b";
    let started = Instant::now();
    let err = client(&["psycopg", &dsn, slow]).unwrap_err();
    assert!(
        err["message"].as_str().unwrap().contains("3000 ms"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(s.metric("samos_refusals_total{reason=\"sql_too_many_rows\"}") >= 2);
    assert!(s.metric("samos_refusals_total{reason=\"sql_query_timeout\"}") >= 1);
}

/// The bound the test holds the server to while it streams a million readings: what buffering
/// them would need is several times more (the Arrow columns alone are ~70 MiB, their text
/// rows ~130 MiB).
const STREAM_RSS_BOUND_MIB: f64 = 64.0;

#[test]
fn a_million_readings_stream_to_psycopg_and_flight_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    synthetic_store::write_store(&data, 1_000_000);
    let s = TestServer::in_dir(
        dir,
        "[protocol]\nenabled = false\n\
         [pgwire]\nbind = \"127.0.0.1:0\"\nmax_rows = 0\n\
         [flight]\nbind = \"127.0.0.1:0\"\nmax_rows = 0\n",
    );
    let query = "SELECT * FROM readings";
    let dsn = format!(
        "host=127.0.0.1 port={} dbname=samos user=local",
        s.pg.unwrap().port()
    );
    // Warm up: the first query loads the tables' metadata.
    client(&["psycopg", &dsn, "SELECT count(*) FROM readings"]).unwrap();
    let (answer, growth) = with_peak_rss(s.pid(), || {
        client(&["psycopg-stream", &dsn, query]).unwrap()
    });
    assert_eq!(answer["rows"], 1_000_000, "{answer}");
    eprintln!("psycopg: 1,000,000 rows streamed; server RSS grew by {growth:.1} MiB at most");
    assert!(growth < STREAM_RSS_BOUND_MIB, "{growth:.1} MiB");

    let uri = format!("grpc://127.0.0.1:{}", s.flight.unwrap().port());
    let (answer, growth) =
        with_peak_rss(s.pid(), || client(&["flight-stream", &uri, query]).unwrap());
    assert_eq!(answer["rows"], 1_000_000, "{answer}");
    eprintln!("flight: 1,000,000 rows streamed; server RSS grew by {growth:.1} MiB at most");
    assert!(growth < STREAM_RSS_BOUND_MIB, "{growth:.1} MiB");
}
