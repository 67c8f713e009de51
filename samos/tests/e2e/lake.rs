//! History on object storage, against a real S3 server (Garage, started by each test on free
//! loopback ports): readings land in a Delta table that delta-rs's Python binding, pyarrow and
//! DuckDB read; compaction never changes what a snapshot holds; a crash between upload and
//! commit, a crash while the store is down, and a 30-second outage lose and double nothing;
//! an outage past the WAL backlog limit pauses publishers; a second writer of one instance's
//! table is refused. Several instances sharing a dataset: `scale_out.rs`.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::garage::Garage;
use common::raw::*;
use common::*;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const T: Duration = Duration::from_secs(10);

fn temp_topic() -> String {
    format!("{NET}/CN1/{LOC}/indoorTemperatureSensor")
}

/// Samos with its history in `s3://samos/{prefix}` on `garage`, plus `extra` storage keys.
fn config(garage: &Garage, prefix: &str, extra: &str) -> String {
    format!("[storage]\n{extra}{}", garage.storage_toml(prefix))
}

/// What the Python reader (`read_delta.py`) finds in the table under `prefix`.
fn read_delta(garage: &Garage, prefix: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_delta.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(format!("s3://{}/{prefix}", garage.bucket));
    for (k, v) in garage.env() {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "read_delta.py: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        garage.log()
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Waits until the table holds `rows` rows (the sink's counter).
fn wait_lake_rows(s: &TestServer, rows: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while s.metric("samos_lake_rows_total ") < rows {
        assert!(
            Instant::now() < deadline,
            "the table holds {} of {rows} rows\n{}",
            s.metric("samos_lake_rows_total "),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `samos sql` over the data directory, with the bucket's credentials in the environment.
fn samos_sql(garage: &Garage, data: &Path, sql: &str) -> String {
    common::samos_sql(data, &garage.env(), &[], sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_over_mqtt_land_in_a_delta_table_every_engine_reads() {
    let garage = Garage::start();
    let s = TestServer::with_config(&config(
        &garage,
        "history",
        "parquet_rotate_secs = 1\nparquet_compact_files = 4\n",
    ));
    let spec = samos_tools::loadgen::LoadSpec {
        addr: s.mqtt[0],
        tls: None,
        credentials: None,
        publishers: 10,
        messages_per_publisher: 10_000,
        qos: mqttbytes::QoS::AtLeastOnce,
        inflight: 64,
        payload_bytes: 0,
        topic_prefix: String::new(),
        subscriber: false,
        idle_timeout: Duration::from_secs(30),
        deadline: Duration::from_secs(300),
        as_nodes: Some(samos_tools::loadgen::NodeMode {
            network: "lake".into(),
            server_id: "SN".into(),
            wave: false,
        }),
        stored_metrics: None,
        progress: false,
    };
    let report = samos_tools::loadgen::run(spec)
        .await
        .unwrap_or_else(|e| panic!("load run failed: {e}\n{}", s.log()));
    assert_eq!(report.acknowledged, 100_000);
    wait_lake_rows(&s, 100_000, Duration::from_secs(120));

    // The server's own SQL (HTTP API) and `samos sql` read the table on the store.
    let api = http_get(
        s.api.unwrap(),
        "/api/v1/query?sql=SELECT%20count(*)%20AS%20n,%20count(DISTINCT%20key)%20AS%20k%20FROM%20readings",
    );
    assert!(
        api.contains("\"n\":100000") && api.contains("\"k\":100000"),
        "{api}"
    );
    assert!(
        s.metric("samos_lake_files_total ") >= 1,
        "{}",
        s.metrics_text()
    );
    let dir = s.stop();
    let data = dir.path().join("data");
    assert!(
        !data.join("readings").exists(),
        "no local Parquet store when the history is on the object store"
    );
    let sql = samos_sql(
        &garage,
        &data,
        "SELECT count(*) AS n, count(DISTINCT key) AS k, min(date) AS d FROM readings",
    );
    assert!(
        sql.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("100000,100000,")),
        "{sql}"
    );

    // `samos mine` reads its series from the table too.
    let mut mine = Command::new(samos_bin());
    mine.args([
        "mine",
        "--node",
        "SIM000",
        "--sensor",
        "indoorTemperatureSensor",
    ])
    .args([
        "--window",
        "16",
        "--top",
        "1",
        "--backend",
        "cpu",
        "--data-dir",
    ])
    .arg(&data);
    for (k, v) in garage.env() {
        mine.env(k, v);
    }
    let mined = run(&mut mine, Duration::from_secs(180));
    assert!(
        mined.status.success() && stdout(&mined).contains("motifs:"),
        "samos mine: {}{}",
        stdout(&mined),
        String::from_utf8_lossy(&mined.stderr)
    );

    let read = read_delta(&garage, "history");
    assert_eq!(read["rows"], 100_000, "{read}");
    assert_eq!(read["unique_keys"], 100_000, "{read}");
    assert_eq!(read["pyarrow_rows"], 100_000, "{read}");
    assert_eq!(read["duckdb_rows"], 100_000, "{read}");
    assert_eq!(read["duckdb_unique_keys"], 100_000, "{read}");
    assert_eq!(read["partition_columns"], serde_json::json!(["date"]));
}

/// CN1 of the paper joins through `port` (MQTT 3.1.1); the connection, once active.
fn join_cn1(port: u16) -> Raw {
    join_paper_node_at(port, "CN1")
}

#[test]
fn compaction_is_one_transaction_no_snapshot_sees_a_reading_twice_or_not_at_all() {
    let garage = Garage::start();
    let s = TestServer::with_config(&config(
        &garage,
        "compact",
        "parquet_rotate_secs = 1\nparquet_compact_files = 3\n",
    ));
    let mut c = join_cn1(s.port());
    let mut n = 0u16;
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric("samos_lake_compactions_total ") < 2 {
        assert!(Instant::now() < deadline, "no compaction\n{}", s.log());
        for _ in 0..5 {
            n += 1;
            // Within the sensor's declared range 0-70, so that every reading is stored.
            let value = f64::from(n % 700) / 10.0;
            assert_eq!(
                c.publish_qos1(&temp_topic(), format!("float,0-70,{value}").as_bytes(), n),
                0
            );
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(c);
    let dir = s.stop();
    // Every version, old and new, read back by delta-rs: unique keys in each, and each
    // OPTIMIZE version holds exactly the rows of the version before it.
    let read = read_delta(&garage, "compact");
    let log = std::fs::read_to_string(dir.path().join("samos.log")).unwrap_or_default();
    assert!(read["compactions"].as_u64().unwrap() >= 2, "{read}");
    assert_eq!(read["rows"], u64::from(n), "{read}\n{log}");
    assert_eq!(read["unique_keys"], u64::from(n), "{read}");
    drop(dir);
}

/// Reading `i` carries the value `i / READING_SCALE`.
const READING_SCALE: f64 = 20_000.0;

/// Publishes QoS 1 readings one at a time until the connection goes, recording each
/// acknowledged reading.
fn publish_until_closed(port: u16, acked: Arc<Mutex<Vec<u32>>>) {
    let mut c = join_cn1(port);
    for i in 0..1_000_000u32 {
        // Inside the sensor's declared 0–70 for every index the loop can reach (a value
        // outside it would be quarantined, not stored).
        let value = format!("float,0-70,{}", f64::from(i) / READING_SCALE);
        let pkid = (i % 60_000) as u16 + 1;
        c.send(&publish(
            4,
            temp_topic().as_bytes(),
            1,
            pkid,
            false,
            value.as_bytes(),
        ));
        loop {
            match c.next(Duration::from_secs(5)) {
                Reply::V4(mqttbytes::v4::Packet::PubAck(a)) if a.pkid == pkid => break,
                Reply::Closed | Reply::Timeout => return,
                _ => {}
            }
        }
        acked.lock().unwrap().push(i);
    }
}

/// Every reading acknowledged (the publish indices `0..acked`, acknowledged in order) is in
/// the history once, as `samos sql` reads it (the table plus the WAL tail): no index twice,
/// none missing.
fn assert_every_acked_once(garage: &Garage, data: &Path, acked: &[u32]) {
    assert!(acked.iter().enumerate().all(|(i, &v)| i as u32 == v));
    let n = acked.len();
    let out = samos_sql(
        garage,
        data,
        &format!(
            "SELECT count(*) - count(DISTINCT i) AS doubled, \
                    count(DISTINCT i) FILTER (WHERE i < {n}) AS acked_present, count(*) AS stored \
             FROM (SELECT CAST(round(value * {READING_SCALE}) AS BIGINT) AS i FROM readings)"
        ),
    );
    let row: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no result row: {out}"))
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(row[0], 0, "readings stored twice: {out}");
    assert_eq!(row[1], n as u64, "acknowledged readings missing: {out}");
    // At most the reading in flight when the connection went is stored unacknowledged.
    assert!(row[2] <= n as u64 + 1, "{out}");
}

#[test]
fn a_crash_between_upload_and_commit_loses_and_doubles_nothing() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&garage, "crash", "parquet_rotate_secs = 1\n");
    // The failpoint aborts the server after its first upload, before the commit.
    let mut s =
        TestServer::in_dir_with_env(dir, &toml, &[("SAMOS_FAILPOINT", "lake-after-upload")]);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (acked, port) = (acked.clone(), s.port());
        std::thread::spawn(move || publish_until_closed(port, acked))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.is_running() {
        assert!(
            Instant::now() < deadline,
            "the failpoint never fired\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.log().contains("failpoint lake-after-upload"),
        "{}",
        s.log()
    );
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let dir = s.kill();
    let s = TestServer::in_dir(dir, &toml);
    wait_lake_rows(&s, 1, Duration::from_secs(30));
    let dir = s.stop();
    assert_every_acked_once(&garage, &dir.path().join("data"), &acked);
}

#[test]
fn a_crash_while_the_store_is_down_loses_and_doubles_nothing() {
    let mut garage = Garage::start();
    let toml = config(&garage, "down", "parquet_rotate_secs = 1\n");
    let s = TestServer::with_config(&toml);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (acked, port) = (acked.clone(), s.port());
        std::thread::spawn(move || publish_until_closed(port, acked))
    };
    wait_lake_rows(&s, 200, Duration::from_secs(30));
    garage.pause();
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < before + 500 {
        assert!(
            Instant::now() < deadline,
            "no acknowledgement while the store is down"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = s.kill();
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    garage.resume();
    let s = TestServer::in_dir(dir, &toml);
    let dir = s.stop();
    assert_every_acked_once(&garage, &dir.path().join("data"), &acked);
}

#[test]
fn a_thirty_second_outage_delays_the_table_and_loses_nothing() {
    let mut garage = Garage::start();
    let s = TestServer::with_config(&config(&garage, "outage", "parquet_rotate_secs = 1\n"));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (acked, port) = (acked.clone(), s.port());
        std::thread::spawn(move || publish_until_closed(port, acked))
    };
    wait_lake_rows(&s, 100, Duration::from_secs(30));
    garage.pause();
    let before = acked.lock().unwrap().len();
    let outage = Instant::now();
    let mut max_lag = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        max_lag = max_lag.max(s.metric("samos_lake_lag_batches "));
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = acked.lock().unwrap().len() - before;
    assert!(
        during > 100,
        "only {during} acknowledgements during the outage"
    );
    assert!(max_lag > 0, "no lag shown in /metrics during the outage");
    assert!(s.metric("samos_lake_errors_total ") > 0);
    garage.resume();
    // Everything acknowledged so far reaches the table once the store is back.
    let target = acked.lock().unwrap().len() as u64;
    wait_lake_rows(&s, target, Duration::from_secs(120));
    let dir = s.stop();
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_every_acked_once(&garage, &dir.path().join("data"), &acked);
}

#[test]
fn an_outage_past_the_backlog_limit_pauses_publishers_until_the_store_returns() {
    let mut garage = Garage::start();
    let s = TestServer::with_config(&config(
        &garage,
        "backlog",
        "max_wal_backlog_batches = 5\nmax_batch_rows = 1\nparquet_rotate_secs = 1\n",
    ));
    let mut c = join_cn1(s.port());
    garage.pause();
    for i in 0..5u16 {
        assert_eq!(
            c.publish_qos1(&temp_topic(), format!("float,0-70,{i}").as_bytes(), i + 1),
            0
        );
    }
    // The sixth reading would take the backlog past 5 batches: no acknowledgement while the
    // store is down (the client keeps it and would resend: nothing is dropped).
    c.send(&publish(
        4,
        temp_topic().as_bytes(),
        1,
        6,
        false,
        b"float,0-70,6",
    ));
    assert!(matches!(
        c.next(Duration::from_millis(1500)),
        Reply::Timeout
    ));
    assert!(s.wait_log("the object store is too far behind", T));
    garage.resume();
    match c.next(Duration::from_secs(90)) {
        Reply::V4(mqttbytes::v4::Packet::PubAck(a)) => assert_eq!(a.pkid, 6),
        other => panic!("no acknowledgement after the store came back: {other:?}"),
    }
    wait_lake_rows(&s, 6, Duration::from_secs(60));
}

#[test]
fn a_second_data_directory_under_the_same_instance_id_is_refused_at_start() {
    let garage = Garage::start();
    // Instances share a dataset, each with a table of its own; two data directories (two
    // WALs) claiming one instance id would share a table, and the second is refused.
    let toml = format!("instance_id = \"edge\"\n{}", config(&garage, "shared", ""));
    let first = TestServer::with_config(&toml);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("samos.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\n{toml}",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let out = run(
        Command::new(samos_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--api-listen", "127.0.0.1:0", "--config"])
            .arg(&conf),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("written by another Samos instance"), "{err}");
    drop(first);
}

#[test]
fn switching_to_the_object_store_moves_the_local_history_into_the_table() {
    let garage = Garage::start();
    let s = TestServer::with_config("[storage]\nparquet_rotate_secs = 1\n");
    let mut c = join_cn1(s.port());
    for i in 0..20u16 {
        let value = format!("float,0-70,{i}");
        assert_eq!(c.publish_qos1(&temp_topic(), value.as_bytes(), i + 1), 0);
    }
    drop(c);
    let dir = s.stop();
    let local = dir.path().join("data/readings");
    assert_eq!(read_store(&dir.path().join("data"))["rows"], 20);

    let toml = config(&garage, "moved", "parquet_rotate_secs = 1\n");
    let s = TestServer::in_dir(dir, &toml);
    assert!(s.wait_log(
        "moving the local Parquet store into the object-store table",
        T
    ));
    wait_lake_rows(&s, 20, Duration::from_secs(30));
    let mut c = join_cn1(s.port());
    for i in 20..30u16 {
        let value = format!("float,0-70,{i}");
        assert_eq!(c.publish_qos1(&temp_topic(), value.as_bytes(), i + 1), 0);
    }
    drop(c);
    let dir = s.stop();
    let read = read_delta(&garage, "moved");
    assert_eq!(read["rows"], 30, "{read}");
    assert_eq!(read["unique_keys"], 30, "{read}");
    let left: Vec<_> = walk_files(&local);
    assert!(left.is_empty(), "local files left after the move: {left:?}");
    drop(dir);
}

/// Every file under `dir`.
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            files.extend(walk_files(&e.path()));
        } else {
            files.push(e.path());
        }
    }
    files
}

#[test]
fn renaming_an_instance_while_its_outbox_holds_files_is_refused() {
    let mut garage = Garage::start();
    let storage = config(&garage, "renamed", "parquet_rotate_secs = 1\n");
    let toml = |id: &str| format!("instance_id = \"{id}\"\n{storage}");
    let s = TestServer::with_config(&toml("old"));
    // The store is down: finished files wait in the outbox.
    garage.pause();
    let mut c = join_cn1(s.port());
    for i in 0..5u16 {
        let value = format!("float,0-70,{i}");
        assert_eq!(c.publish_qos1(&temp_topic(), value.as_bytes(), i + 1), 0);
    }
    drop(c);
    let outbox = s.data_dir().join("outbox");
    let deadline = Instant::now() + T;
    let published = |f: &std::path::PathBuf| {
        f.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
    };
    while !walk_files(&outbox).iter().any(published) {
        assert!(Instant::now() < deadline, "no outbox file\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = s.kill();
    let conf = dir.path().join("samos.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\n{}",
            dir.path().join("data").display().to_string(),
            toml("new")
        ),
    )
    .unwrap();
    let out = run(
        Command::new(samos_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen"])
            .args(["127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--config"])
            .arg(&conf),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("differs from \"old\""), "{err}");
    // As the old instance it uploads them once the store is back.
    garage.resume();
    let s = TestServer::in_dir(dir, &toml("old"));
    wait_lake_rows(&s, 5, Duration::from_secs(60));
}
