//! The durable path with real files: readings acknowledged only once fsync'd in the WAL, the
//! Parquet store read back by pyarrow, and a `kill -9` mid-stream losing nothing acknowledged.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw::*;
use common::*;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const T: Duration = Duration::from_secs(10);

fn cn1_config() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/node-configs/cn1_config.xml"),
    )
    .unwrap()
}

fn temp_topic() -> String {
    format!("{NET}/CN1/{LOC}/indoorTemperatureSensor")
}

/// Joins CN1 over MQTT 3.1.1 and returns the client.
fn join_cn1(port: u16) -> Raw {
    let control = format!("{NET}/CN1/{LOC}/control");
    let (mut c, _) = Raw::connected(port, 4, "CN1", true, &[]);
    c.send(&subscribe(4, 1, &control, 1));
    let _ = c.next(T);
    c.publish_qos1(
        &control,
        format!("PUB_CONFIG_FILE, {}", cn1_config()).as_bytes(),
        1,
    );
    loop {
        let (_, p) = c.next_publish(T).expect("join reply");
        if p.starts_with(b"SET_CN_FUNCTIONAL_MODE, active") {
            return c;
        }
    }
}

#[test]
fn parquet_holds_exactly_the_ingested_rows() {
    let s = TestServer::with_config("[storage]\nparquet_rotate_secs = 1\n");
    let mut c = join_cn1(s.port());
    let mut sent = Vec::new();
    for i in 0..200u16 {
        let v = f64::from(i) * 0.25;
        assert_eq!(
            c.publish_qos1(&temp_topic(), format!("float,0-70,{v}").as_bytes(), i + 10),
            0
        );
        sent.push(v);
    }
    // A refused reading is not stored.
    c.publish_qos1(&temp_topic(), b"float,0-70,99", 999);
    assert_eq!(s.metric("samos_readings_committed_total "), 200);
    let dir = s.stop();
    let store = read_store(&dir.path().join("data"));
    assert_eq!(store["rows"], 200, "{store}");
    assert_eq!(store["unique_keys"], 200);
    let values: Vec<f64> = store["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(values, sent);
    assert_eq!(store["nodes"], serde_json::json!(["CN1"]));
    assert_eq!(
        store["sensors"],
        serde_json::json!(["indoorTemperatureSensor"])
    );
    assert_eq!(store["severities"], serde_json::json!(["normal"]));
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(store["dates"], serde_json::json!([today]));
    // Nothing is left in the WAL beyond the checkpoint after an orderly stop.
    let checkpoint: u64 = std::fs::read_to_string(dir.path().join("data/wal/checkpoint"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(checkpoint >= 1);
}

/// Publishes one reading at a time (the paper's style), recording which were acknowledged,
/// until the connection dies.
fn publish_until_killed(port: u16, qos: u8, acked: Arc<Mutex<Vec<u32>>>) {
    let mut c = join_cn1(port);
    for i in 0..100_000u32 {
        let value = format!("float,0-70,{}", f64::from(i) / 2000.0);
        let pkid = (i % 60_000) as u16 + 1;
        c.send(&publish(
            4,
            temp_topic().as_bytes(),
            qos,
            pkid,
            false,
            value.as_bytes(),
        ));
        loop {
            match c.next(Duration::from_secs(5)) {
                Reply::V4(mqttbytes::v4::Packet::PubAck(a)) if a.pkid == pkid => break,
                Reply::V4(mqttbytes::v4::Packet::PubRec(r)) if r.pkid == pkid => {
                    c.send(&ack(0x62, pkid));
                }
                Reply::V4(mqttbytes::v4::Packet::PubComp(r)) if r.pkid == pkid => break,
                Reply::Closed | Reply::Timeout => return,
                _ => {}
            }
        }
        // Acknowledged (QoS 1: PUBACK; QoS 2: PUBREC, which is sent only once durable).
        acked.lock().unwrap().push(i);
    }
}

fn crash_loses_nothing_acknowledged(qos: u8) {
    let s = TestServer::start();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let port = s.port();
    let publisher = {
        let acked = acked.clone();
        std::thread::spawn(move || publish_until_killed(port, qos, acked))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(std::time::Instant::now() < deadline, "too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = s.kill(); // SIGKILL mid-stream
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    // Restart on the same directory: recovery replays the WAL into Parquet.
    let s = TestServer::in_dir(dir, "");
    assert!(s.wait_log("WAL recovered into Parquet", T), "{}", s.log());
    let dir = s.stop();
    let store = read_store(&dir.path().join("data"));
    let stored: Vec<u32> = store["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v.as_f64().unwrap() * 2000.0).round() as u32)
        .collect();
    assert_eq!(store["unique_keys"], store["rows"]);
    let mut seen = std::collections::HashSet::new();
    for v in &stored {
        assert!(seen.insert(*v), "reading {v} stored twice");
    }
    for v in &acked {
        assert!(
            seen.contains(v),
            "acknowledged reading {v} lost ({} acked, {} stored)",
            acked.len(),
            stored.len()
        );
    }
    // At most the one reading in flight at the kill is stored without its acknowledgement.
    assert!(
        stored.len() <= acked.len() + 1,
        "{} stored, {} acked",
        stored.len(),
        acked.len()
    );
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_qos1_reading() {
    crash_loses_nothing_acknowledged(1);
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_qos2_reading() {
    crash_loses_nothing_acknowledged(2);
}

fn pg_count(pg: &pg::TempPostgres, sql: &str) -> u64 {
    pg.psql(sql).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn wait_pg_rows(pg: &pg::TempPostgres, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pg_count(pg, "SELECT count(*) FROM readings") < n {
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL has {} of {n} rows",
            pg_count(pg, "SELECT count(*) FROM readings")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn postgres_gets_every_row_once_across_an_outage() {
    let mut pg = pg::TempPostgres::start();
    let s = TestServer::with_config(&format!("[storage]\npostgres = {:?}\n", pg.url()));
    let mut c = join_cn1(s.port());
    for i in 0..100u16 {
        assert_eq!(
            c.publish_qos1(
                &temp_topic(),
                format!("float,0-70,{}", f64::from(i) / 10.0).as_bytes(),
                i + 10
            ),
            0
        );
    }
    wait_pg_rows(&pg, 100);
    // The database goes away; readings are still acknowledged (durable in the WAL).
    pg.stop();
    for i in 100..300u16 {
        assert_eq!(
            c.publish_qos1(
                &temp_topic(),
                format!("float,0-70,{}", f64::from(i) / 10.0).as_bytes(),
                i + 10
            ),
            0
        );
    }
    assert_eq!(s.metric("samos_readings_committed_total "), 300);
    assert!(
        s.metric("samos_postgres_lag_batches ") > 0,
        "the outage shows as lag"
    );
    pg.resume();
    wait_pg_rows(&pg, 300);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM readings"), 300);
    assert_eq!(
        pg_count(&pg, "SELECT count(DISTINCT key) FROM readings"),
        300
    );
    assert_eq!(
        pg_count(&pg, "SELECT count(DISTINCT value) FROM readings"),
        300
    );
    assert_eq!(
        pg.psql("SELECT DISTINCT node_id || '/' || sensor || '/' || room FROM readings")
            .unwrap(),
        "CN1/indoorTemperatureSensor/A52"
    );
}

/// Waits until `sql` (a count) reaches `n` in PostgreSQL.
fn wait_pg_count(pg: &pg::TempPostgres, sql: &str, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg_count(pg, sql) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{sql}: {} of {n}",
            pg_count(pg, sql)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn postgres_mirrors_the_node_registry_events_and_quarantine_once() {
    let pg = pg::TempPostgres::start();
    let config = format!("[storage]\npostgres = {:?}\n", pg.url());
    let s = TestServer::with_config(&config);
    let mut c = join_cn1(s.port());
    assert_eq!(c.publish_qos1(&temp_topic(), b"float,0-70,21.5", 10), 0);
    // Not a number: refused, quarantined (3.1.1 still gets its PUBACK).
    assert_eq!(c.publish_qos1(&temp_topic(), b"float,0-70,99\x00x", 11), 0);
    drop(c);
    let events_in_file = || {
        std::fs::read_to_string(s.data_dir().join("events.jsonl"))
            .unwrap()
            .lines()
            .count() as u64
    };
    wait_pg_count(&pg, "SELECT count(*) FROM rejected", 1);
    wait_pg_count(&pg, "SELECT count(*) FROM events", events_in_file());
    wait_pg_count(
        &pg,
        "SELECT count(*) FROM nodes WHERE node_id = 'CN1' AND functional_mode = 'active' \
         AND config->>'node_id' = 'CN1' AND config_xml LIKE '%CN1%'",
        1,
    );
    assert_eq!(
        pg.psql("SELECT client_id || ' ' || reason || ' ' || payload_bytes FROM rejected")
            .unwrap(),
        "CN1 invalid_value 15"
    );
    // PostgreSQL text holds no NUL: it arrives as U+FFFD.
    assert_eq!(
        pg.psql("SELECT payload FROM rejected").unwrap(),
        "float,0-70,99\u{fffd}x"
    );
    assert_eq!(
        pg_count(
            &pg,
            "SELECT count(*) FROM events WHERE kind = 'join' AND node_id = 'CN1'"
        ),
        1
    );
    // A restart loads nothing twice.
    let dir = s.stop();
    let s = TestServer::in_dir(dir, &config);
    let mut c = join_cn1(s.port());
    assert_eq!(c.publish_qos1(&temp_topic(), b"float,0-70,bad", 12), 0);
    drop(c);
    wait_pg_count(&pg, "SELECT count(*) FROM rejected", 2);
    let events = std::fs::read_to_string(s.data_dir().join("events.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    wait_pg_count(&pg, "SELECT count(*) FROM events", events);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM events"), events);
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM rejected"), 2);
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM nodes"), 1);
    drop(s);
}

#[test]
fn a_replay_into_postgresql_skips_the_rows_it_already_holds() {
    let pg = pg::TempPostgres::start();
    let config = format!("[storage]\npostgres = {:?}\n", pg.url());
    let s = TestServer::with_config(&config);
    let mut c = join_cn1(s.port());
    for i in 0..50u16 {
        let value = format!("float,0-70,{i}");
        assert_eq!(c.publish_qos1(&temp_topic(), value.as_bytes(), i + 10), 0);
    }
    wait_pg_rows(&pg, 50);
    drop(c);
    let dir = s.stop();
    // The sink forgets how far it got: it starts over from the oldest WAL record kept.
    pg.psql("DELETE FROM samos_sink_checkpoint WHERE sink LIKE 'readings:%'")
        .unwrap();
    let s = TestServer::in_dir(dir, &config);
    let mut c = join_cn1(s.port());
    for i in 50..60u16 {
        let value = format!("float,0-70,{i}");
        assert_eq!(c.publish_qos1(&temp_topic(), value.as_bytes(), i + 10), 0);
    }
    wait_pg_rows(&pg, 60);
    assert!(
        s.wait_log("already holds some of these rows", T),
        "{}",
        s.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM readings"), 60);
    assert_eq!(
        pg_count(&pg, "SELECT count(DISTINCT value) FROM readings"),
        60
    );
}

#[test]
fn two_data_directories_share_a_database_each_under_its_instance_id() {
    let pg = pg::TempPostgres::start();
    let config = format!("[storage]\npostgres = {:?}\n", pg.url());
    let first = TestServer::with_config(&config);
    // A second instance: its WAL counts from 1 too, so the keys collide; (instance, key) not.
    let second = TestServer::with_config(&config);
    for (s, value) in [(&first, "1"), (&second, "2")] {
        let mut c = join_cn1(s.port());
        let payload = format!("float,0-70,{value}");
        assert_eq!(c.publish_qos1(&temp_topic(), payload.as_bytes(), 10), 0);
    }
    wait_pg_rows(&pg, 2);
    assert_eq!(pg_count(&pg, "SELECT count(DISTINCT key) FROM readings"), 1);
    assert_eq!(
        pg_count(&pg, "SELECT count(DISTINCT instance) FROM readings"),
        2
    );
    assert_eq!(
        pg_count(&pg, "SELECT count(*) FROM samos_instances"),
        2,
        "{}",
        second.log()
    );
}

#[test]
fn a_second_data_directory_under_the_same_instance_id_is_refused() {
    let pg = pg::TempPostgres::start();
    let config = format!(
        "instance_id = \"edge\"\n[storage]\npostgres = {:?}\n",
        pg.url()
    );
    let s = TestServer::with_config(&config);
    let mut c = join_cn1(s.port());
    assert_eq!(c.publish_qos1(&temp_topic(), b"float,0-70,1", 10), 0);
    wait_pg_rows(&pg, 1);
    drop(c);
    drop(s);
    // A fresh data directory claiming the same instance id: its keys would collide.
    let s = TestServer::with_config(&config);
    let mut c = join_cn1(s.port());
    assert_eq!(c.publish_qos1(&temp_topic(), b"float,0-70,2", 10), 0);
    assert!(
        s.wait_log("rows of instance \"edge\" from another data directory", T),
        "{}",
        s.log()
    );
    assert!(s.metric("samos_refusals_total{reason=\"postgres_foreign_store\"} ") >= 1);
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM readings"), 1);
    // Still durable (acknowledged, in Parquet): only PostgreSQL is withheld.
    assert_eq!(s.metric("samos_readings_committed_total "), 1);
}

#[test]
fn a_database_from_before_several_instances_is_migrated_by_its_data_directory() {
    let pg = pg::TempPostgres::start();
    // The layout of the first release: one data directory, the key alone the primary key.
    pg.psql(
        "CREATE TABLE readings (key bigint PRIMARY KEY, ingest_time timestamptz NOT NULL, \
           network text NOT NULL, node_id text NOT NULL, country text NOT NULL, \
           district_state text NOT NULL, city text NOT NULL, area_description text NOT NULL, \
           area text NOT NULL, building text NOT NULL, room text NOT NULL, sensor text NOT NULL, \
           data_type text NOT NULL, units text NOT NULL, value double precision, raw text, \
           severity text NOT NULL, qos smallint NOT NULL, client_id text NOT NULL); \
         CREATE TABLE samos_sink_checkpoint (sink text PRIMARY KEY, wal_seq bigint NOT NULL); \
         CREATE TABLE samos_store (store_id text PRIMARY KEY); \
         INSERT INTO samos_store VALUES ('0123456789abcdef0123456789abcdef'); \
         INSERT INTO samos_sink_checkpoint VALUES ('readings', 0); \
         INSERT INTO readings VALUES (42, now(), 'n', 'CN0', 'c', 'd', 'ci', 'ad', 'a', 'b', 'r', \
           's', 'float', 'C', 1.5, NULL, 'normal', 1, 'CN0')",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("data/wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join("store-id"), "0123456789abcdef0123456789abcdef").unwrap();
    let config = format!(
        "instance_id = \"old\"\n[storage]\npostgres = {:?}\n",
        pg.url()
    );
    let s = TestServer::in_dir(dir, &config);
    assert!(
        s.wait_log("PostgreSQL database migrated to several instances", T),
        "{}",
        s.log()
    );
    let mut c = join_cn1(s.port());
    assert_eq!(c.publish_qos1(&temp_topic(), b"float,0-70,2", 10), 0);
    wait_pg_rows(&pg, 2);
    assert_eq!(
        pg_count(&pg, "SELECT count(*) FROM readings WHERE instance = 'old'"),
        2
    );
    assert_eq!(
        pg_count(
            &pg,
            "SELECT count(*) FROM samos_sink_checkpoint \
             WHERE sink = 'readings:0123456789abcdef0123456789abcdef'"
        ),
        1
    );
    let key = pg.psql(
        "SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum)) \
         FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = 'readings'::regclass AND i.indisprimary",
    );
    assert_eq!(key.unwrap().trim(), "instance,key");
}

#[test]
fn postgres_and_parquet_agree_after_kill_9() {
    let pg = pg::TempPostgres::start();
    let config = format!("[storage]\npostgres = {:?}\n", pg.url());
    let s = TestServer::with_config(&config);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let port = s.port();
    let publisher = {
        let acked = acked.clone();
        std::thread::spawn(move || publish_until_killed(port, 1, acked))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = s.kill();
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().len() as u64;
    // Restart: the WAL replays into Parquet, and the PostgreSQL sink resumes from its checkpoint.
    let s = TestServer::in_dir(dir, &config);
    let dir = s.stop();
    let parquet_rows = read_store(&dir.path().join("data"))["rows"]
        .as_u64()
        .unwrap();
    assert!(parquet_rows >= acked);
    wait_pg_rows(&pg, parquet_rows);
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM readings"), parquet_rows);
    assert_eq!(
        pg_count(&pg, "SELECT count(DISTINCT key) FROM readings"),
        parquet_rows
    );
}

fn last_segment(data: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a WAL segment")
}

#[test]
fn a_torn_wal_tail_is_cut_and_reported_without_losing_acknowledged_readings() {
    use std::io::Write;
    for (round, torn) in [
        &[9u8, 0, 0][..],
        &[200, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7][..],
        &[
            40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2,
        ][..],
    ]
    .iter()
    .enumerate()
    {
        let s = TestServer::start();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let port = s.port();
        let publisher = {
            let acked = acked.clone();
            std::thread::spawn(move || publish_until_killed(port, 1, acked))
        };
        while acked.lock().unwrap().len() < 100 + 50 * round {
            std::thread::sleep(Duration::from_millis(5));
        }
        let dir = s.kill();
        publisher.join().unwrap();
        let acked = acked.lock().unwrap().clone();
        // A crash in the middle of writing the next record: a partial record at the tail.
        let seg = last_segment(&dir.path().join("data"));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(torn)
            .unwrap();
        let s = TestServer::in_dir(dir, "");
        assert!(s.wait_log("cut a torn tail", T), "{}", s.log());
        // What was cut is at least what was appended (the kill itself may have torn a
        // multi-page write before it).
        let log = s.log();
        let cut: usize = log
            .split("torn_tail_bytes=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no torn_tail_bytes in {log}"));
        assert!(cut >= torn.len(), "{log}");
        let dir = s.stop();
        let store = read_store(&dir.path().join("data"));
        let stored: std::collections::HashSet<u32> = store["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v.as_f64().unwrap() * 2000.0).round() as u32)
            .collect();
        assert!(
            acked.iter().all(|v| stored.contains(v)),
            "round {round}: an acknowledged reading is missing"
        );
    }
}

#[test]
fn after_an_orderly_stop_truncating_the_wal_anywhere_loses_nothing() {
    let s = TestServer::start();
    let mut c = join_cn1(s.port());
    for i in 0..50u16 {
        assert_eq!(
            c.publish_qos1(&temp_topic(), format!("float,0-70,{i}").as_bytes(), i + 10),
            0
        );
    }
    drop(c);
    let dir = s.stop();
    let data = dir.path().join("data");
    let seg = last_segment(&data);
    let len = std::fs::metadata(&seg).unwrap().len();
    // Everything is in Parquet and behind the checkpoint: any cut of the WAL is harmless.
    let cut = len / 3;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let s = TestServer::in_dir(dir, "");
    let dir = s.stop();
    assert_eq!(read_store(&dir.path().join("data"))["rows"], 50);
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Sinks made slow on purpose by configuration — a WAL commit (fsync) per reading and a
/// Parquet file (fsync + rename + checkpoint) per batch, with tiny queues — while 20 nodes
/// publish as fast as they can: publishers are slowed down, memory stays bounded, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sinks_slow_publishers_down_without_loss() {
    let s = TestServer::with_config(
        "[storage]\nmax_batch_rows = 1\nqueue_capacity = 8\nsink_queue_batches = 1\nparquet_max_rows = 1\n",
    );
    let pid = s.pid();
    let spec = samos_tools::loadgen::LoadSpec {
        addr: s.mqtt[0],
        tls: None,
        credentials: None,
        publishers: 20,
        messages_per_publisher: 50,
        qos: mqttbytes::QoS::AtLeastOnce,
        inflight: 10,
        payload_bytes: 0,
        topic_prefix: String::new(),
        subscriber: false,
        idle_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(60),
        as_nodes: Some(samos_tools::loadgen::NodeMode {
            network: "slow".into(),
            server_id: "SN".into(),
            wave: false,
        }),
        stored_metrics: None,
        progress: false,
    };
    let sampler = {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop2, peak2) = (stop.clone(), peak.clone());
        let h = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                peak2.fetch_max(rss_kb(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (stop, peak, h)
    };
    let r = samos_tools::loadgen::run(spec).await;
    sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = r.unwrap_or_else(|e| panic!("load run failed: {e}\n{}", s.log()));
    sampler.2.join().unwrap();
    let peak_mb = sampler.1.load(std::sync::atomic::Ordering::Relaxed) / 1024;
    assert_eq!(r.acknowledged, 1000);
    assert_eq!(s.metric("samos_readings_committed_total "), 1000);
    assert!(
        s.metric("samos_ingest_backpressure_total ") > 0,
        "publishers were never held back"
    );
    assert!(peak_mb < 256, "resident memory peaked at {peak_mb} MB");
    let dir = s.stop();
    let store = read_store(&dir.path().join("data"));
    assert_eq!(store["rows"], 1000);
    assert_eq!(store["unique_keys"], 1000);
}

#[test]
fn small_parquet_files_are_compacted_without_losing_or_doubling_rows() {
    let s =
        TestServer::with_config("[storage]\nparquet_rotate_secs = 1\nparquet_compact_files = 3\n");
    let mut c = join_cn1(s.port());
    let mut n = 0u16;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.metric("samos_parquet_compactions_total ") == 0 {
        assert!(std::time::Instant::now() < deadline, "no compaction");
        for _ in 0..5 {
            n += 1;
            assert_eq!(
                c.publish_qos1(
                    &temp_topic(),
                    format!("float,0-70,{}", f64::from(n) / 100.0).as_bytes(),
                    n
                ),
                0
            );
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    let dir = s.stop();
    let store = read_store(&dir.path().join("data"));
    assert_eq!(store["rows"], u64::from(n));
    assert_eq!(store["unique_keys"], u64::from(n));
    assert!(
        store["files"].as_u64().unwrap() < u64::from(n) / 5,
        "{store}"
    );
}

#[test]
fn parquet_files_rotate_by_size() {
    // A 1-byte limit: every committed batch closes its file.
    let s = TestServer::with_config(
        "[storage]\nparquet_max_bytes = 1\nparquet_rotate_secs = 3600\nparquet_compact_files = 0\n",
    );
    let mut c = join_cn1(s.port());
    for i in 0..12u16 {
        let value = format!("float,0-70,{i}");
        assert_eq!(c.publish_qos1(&temp_topic(), value.as_bytes(), i + 10), 0);
    }
    // One at a time, so one batch per reading, so one file per reading — before any stop.
    let deadline = std::time::Instant::now() + T;
    while s.metric("samos_parquet_files_total ") < 12 {
        assert!(std::time::Instant::now() < deadline, "{}", s.metrics_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = s.stop();
    let store = read_store(&dir.path().join("data"));
    assert_eq!(store["rows"], 12);
    assert_eq!(store["files"], 12);
}

#[test]
fn partitions_and_rows_past_the_retention_are_deleted() {
    let pg = pg::TempPostgres::start();
    // Tables as Samos creates them, with rows from 2020 and from now.
    let ddl = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/sql/postgres.sql"),
    )
    .unwrap();
    pg.psql(&ddl).unwrap();
    pg.psql(
        "INSERT INTO events VALUES ('2020-01-01T00:00:00Z', 'join', 'n', 'CN9', NULL), \
                                   (now(), 'join', 'n', 'CN8', NULL); \
         INSERT INTO rejected (time, client_id, topic, reason) \
              VALUES ('2020-01-01T00:00:00Z', 'c', 't', 'r')",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("data/readings/date=2020-01-01");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("part-00000000000000000001-00000000000000000001.parquet"),
        b"x",
    )
    .unwrap();
    let config = format!(
        "[storage]\nretention_days = 30\npostgres = {:?}\n",
        pg.url()
    );
    let s = TestServer::in_dir(dir, &config);
    let mut c = join_cn1(s.port());
    assert_eq!(c.publish_qos1(&temp_topic(), b"float,0-70,20", 10), 0);
    let deadline = std::time::Instant::now() + T;
    while old.exists() || pg_count(&pg, "SELECT count(*) FROM events WHERE node_id = 'CN9'") > 0 {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.metric("samos_parquet_partitions_expired_total "), 1);
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM rejected"), 0);
    assert_eq!(
        pg_count(&pg, "SELECT count(*) FROM events WHERE node_id = 'CN8'"),
        1
    );
    wait_pg_rows(&pg, 1);
    let dir = s.stop();
    assert_eq!(read_store(&dir.path().join("data"))["rows"], 1);
}

#[test]
fn an_interrupted_compaction_is_completed_at_start() {
    let s = TestServer::with_config("[storage]\nparquet_compact_files = 0\n");
    let mut c = join_cn1(s.port());
    for i in 0..20u16 {
        assert_eq!(
            c.publish_qos1(&temp_topic(), format!("float,0-70,{i}").as_bytes(), i + 1),
            0
        );
    }
    drop(c);
    let dir = s.stop();
    // Simulate a crash after the merged file was renamed but before its inputs were deleted:
    // copy the one file under a name whose range covers it.
    let day = std::fs::read_dir(dir.path().join("data/readings"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = std::fs::read_dir(&day)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(
        &file,
        day.join(format!("part-{:020}-{:020}.parquet", 0, 1_000_000)),
    )
    .unwrap();
    let s = TestServer::in_dir(dir, "");
    assert!(s.wait_log("already merged by compaction", T), "{}", s.log());
    let dir = s.stop();
    assert_eq!(read_store(&dir.path().join("data"))["rows"], 20);
}

#[test]
fn the_store_is_readable_while_samos_runs() {
    let s = TestServer::with_config("[storage]\nparquet_rotate_secs = 1\n");
    let mut c = join_cn1(s.port());
    for i in 0..30u16 {
        assert_eq!(
            c.publish_qos1(&temp_topic(), format!("float,0-70,{i}").as_bytes(), i + 1),
            0
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.metric("samos_parquet_rows_total ") < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "no Parquet file closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // More readings keep arriving into an open (temporary, hidden) file while pyarrow reads.
    for i in 30..40u16 {
        assert_eq!(
            c.publish_qos1(&temp_topic(), format!("float,0-70,{i}").as_bytes(), i + 1),
            0
        );
    }
    // The reader sees whole files only: the first 30 rows, or all 40 if the second file was
    // closed in the meantime — never a partial file.
    let store = read_store(&s.data_dir());
    let rows = store["rows"].as_u64().unwrap();
    assert!(rows == 30 || rows == 40, "{store}");
    assert_eq!(store["unique_keys"].as_u64().unwrap(), rows);
}

#[test]
fn a_postgres_outage_past_the_backlog_limit_pauses_publishers_until_it_returns() {
    let mut pg = pg::TempPostgres::start();
    pg.stop();
    let s = TestServer::with_config(&format!(
        "[storage]\npostgres = {:?}\nmax_wal_backlog_batches = 5\nmax_batch_rows = 1\n",
        pg.url()
    ));
    let mut c = join_cn1(s.port());
    for i in 0..5u16 {
        assert_eq!(
            c.publish_qos1(&temp_topic(), format!("float,0-70,{i}").as_bytes(), i + 1),
            0
        );
    }
    // The sixth reading would take the backlog past 5 batches: no acknowledgement while the
    // database is down (the client keeps it and would resend: nothing is dropped).
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
    assert!(s.wait_log("PostgreSQL is too far behind", T));
    pg.resume();
    match c.next(Duration::from_secs(30)) {
        Reply::V4(mqttbytes::v4::Packet::PubAck(a)) => assert_eq!(a.pkid, 6),
        other => panic!("no acknowledgement after PostgreSQL came back: {other:?}"),
    }
    wait_pg_rows(&pg, 6);
    assert_eq!(pg_count(&pg, "SELECT count(DISTINCT key) FROM readings"), 6);
}
