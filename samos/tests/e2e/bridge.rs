//! The store-and-forward bridge against a real Mosquitto (TLS, password, persistence): every
//! reading arrives upstream across a 20 s outage of the broker and a `kill -9` of Samos, and
//! the events follow the event log.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mosquitto::{self, Mosquitto};
use common::raw::{self, Raw, Reply};
use common::*;
use mqttbytes::v4;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const NODES: [&str; 2] = ["CN1", "CN2"];

/// What the upstream subscriber received, as (topic, payload), duplicates included.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A subscriber with a persistent session at the upstream broker (so messages wait for it
/// while it reconnects after the broker's restart), acknowledging every message.
struct Collector {
    got: Received,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(port: u16, filters: &'static [&'static str]) -> Collector {
        let got = Received::default();
        let stop = Arc::new(AtomicBool::new(false));
        let subscribed = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (got, stop, subscribed) = (got.clone(), stop.clone(), subscribed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    let Ok((mut c, _)) = std::panic::catch_unwind(|| {
                        Raw::connected(port, 4, "collector", false, &[])
                    }) else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    for (i, f) in filters.iter().enumerate() {
                        c.send(&raw::subscribe(4, i as u16 + 1, f, 1));
                    }
                    loop {
                        match c.next(Duration::from_millis(200)) {
                            Reply::V4(v4::Packet::Publish(p)) => {
                                if p.qos == mqttbytes::QoS::AtLeastOnce {
                                    c.send(&raw::ack(0x40, p.pkid));
                                }
                                got.lock().unwrap().push((p.topic, p.payload.to_vec()));
                            }
                            Reply::V4(v4::Packet::SubAck(_)) => {
                                subscribed.fetch_add(1, Ordering::Relaxed);
                            }
                            Reply::Closed => break,
                            Reply::Timeout if stop.load(Ordering::Relaxed) => return,
                            _ => {}
                        }
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while subscribed.load(Ordering::Relaxed) < filters.len() {
            assert!(Instant::now() < deadline, "the collector did not subscribe");
            std::thread::sleep(Duration::from_millis(20));
        }
        Collector {
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// The distinct readings received on `up/…`: (node, value × 100) → copies.
    fn readings(&self) -> BTreeMap<(String, i64), usize> {
        let mut out = BTreeMap::new();
        for (topic, payload) in self.got.lock().unwrap().iter() {
            if !topic.starts_with("up/") {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let key = (
                v["node_id"].as_str().unwrap().to_owned(),
                (v["value"].as_f64().unwrap() * 100.0).round() as i64,
            );
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }

    fn events(&self) -> Vec<(String, serde_json::Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.starts_with("ev/"))
            .map(|(t, p)| (t.clone(), serde_json::from_slice(p).unwrap()))
            .collect()
    }

    /// Waits until `n` distinct readings arrived.
    fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.readings().len() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes `values` (× 100, so 4321 is 43.21 °C) from node `id`, QoS 1, a window of 100 at
/// a time; returns how many were acknowledged (Samos acknowledges in order: a prefix).
fn publish_pipelined(c: &mut Raw, id: &str, values: &[i64]) -> usize {
    let topic = format!("{NET}/{id}/{LOC}/indoorTemperatureSensor");
    let mut acked = 0;
    for chunk in values.chunks(100) {
        for (j, v) in chunk.iter().enumerate() {
            let payload = format!("float,0-70,{}", *v as f64 / 100.0);
            c.send(&raw::publish(
                4,
                topic.as_bytes(),
                1,
                j as u16 + 1,
                false,
                payload.as_bytes(),
            ));
        }
        let mut n = 0;
        while n < chunk.len() {
            match c.next(Duration::from_secs(10)) {
                Reply::V4(v4::Packet::PubAck(_)) => n += 1,
                Reply::Closed | Reply::Timeout => return acked + n,
                _ => {}
            }
        }
        acked += chunk.len();
    }
    acked
}

fn bridge_config(broker: &Mosquitto, certs: &std::path::Path) -> String {
    format!(
        r#"
[[bridge]]
name = "up"
url = "mqtts://localhost:{port}"
ca_file = "{certs}/ca.crt"
username = "{user}"
password = "{password}"
keep_alive_secs = 5
max_in_flight = 50

[[bridge.forward]]
source = "readings"
topic = "up/{{topic}}"

[[bridge.forward]]
source = "events"
topic = "ev/{{kind}}/{{node_id}}"
"#,
        port = broker.tls_port,
        certs = certs.display(),
        user = mosquitto::USER,
        password = mosquitto::PASSWORD,
    )
}

fn values(range: std::ops::Range<i64>) -> Vec<i64> {
    range.collect()
}

#[test]
fn every_reading_arrives_upstream_across_a_broker_outage_and_a_crash() {
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path(), "unused");
    let mut broker = Mosquitto::start(&certs);
    let collector = Collector::start(broker.plain_port, &["up/#", "ev/#"]);
    let config = bridge_config(&broker, &certs);
    let server = TestServer::with_config(&config);
    let mut nodes: Vec<Raw> = NODES.iter().map(|n| join_paper_node(&server, n)).collect();

    // 10k readings: 3k, then 4k while the broker is down for 20 s, then 3k.
    for (c, id) in nodes.iter_mut().zip(NODES) {
        assert_eq!(publish_pipelined(c, id, &values(0..1500)), 1500);
    }
    assert!(
        collector.wait_for(1, Duration::from_secs(30)),
        "nothing arrived upstream: {}",
        server.log()
    );
    broker.stop();
    let down = Instant::now();
    for (c, id) in nodes.iter_mut().zip(NODES) {
        assert_eq!(publish_pipelined(c, id, &values(1500..3500)), 2000);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric("samos_bridge_connected{bridge=\"up\"}") != 0 {
        assert!(
            Instant::now() < deadline,
            "the bridge never noticed the outage"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    while server.metric("samos_bridge_lag_batches{bridge=\"up\"}") == 0 {
        assert!(Instant::now() < deadline, "{}", server.metrics_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down.elapsed()));
    broker.resume();
    for (c, id) in nodes.iter_mut().zip(NODES) {
        assert_eq!(publish_pipelined(c, id, &values(3500..5000)), 1500);
    }
    assert!(
        collector.wait_for(10_000, Duration::from_secs(90)),
        "{} of 10000 readings arrived after the outage; samos: {}\nmosquitto: {}",
        collector.readings().len(),
        server.log(),
        broker.log()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.metric("samos_bridge_lag_batches{bridge=\"up\"}") != 0 {
        assert!(Instant::now() < deadline, "{}", server.metrics_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.metric("samos_bridge_connection_errors_total{bridge=\"up\"}") >= 1);
    let after_outage = collector.readings();
    let copies: usize = after_outage.values().sum();
    eprintln!(
        "outage: 10000 readings arrived, {} extra copies (QoS 1 resends)",
        copies - 10_000
    );

    // kill -9 mid-stream: 4k more readings, Samos killed once 1k of them are upstream.
    drop(nodes);
    let mut nodes: Vec<Raw> = NODES.iter().map(|n| join_paper_node(&server, n)).collect();
    let publisher = std::thread::spawn(move || {
        let mut acked = [0usize; 2];
        'publishing: for start in (5000..7000).step_by(100) {
            for (i, (c, id)) in nodes.iter_mut().zip(NODES).enumerate() {
                let n = publish_pipelined(c, id, &values(start..start + 100));
                acked[i] += n;
                if n < 100 {
                    break 'publishing;
                }
            }
        }
        acked
    });
    assert!(collector.wait_for(11_000, Duration::from_secs(60)));
    let dir = server.kill();
    let upstream_at_kill = collector.readings().len();
    let acked = publisher.join().unwrap();
    eprintln!(
        "kill -9 with {acked:?} of 2000 readings per node acknowledged by Samos, \
         {upstream_at_kill} of 14000 upstream"
    );
    let server = TestServer::in_dir(dir, &config);
    for (i, id) in NODES.iter().enumerate() {
        let first = 5000 + acked[i] as i64;
        let mut c = join_paper_node(&server, id);
        assert_eq!(
            publish_pipelined(&mut c, id, &values(first..7000)),
            (7000 - first) as usize
        );
    }
    assert!(
        collector.wait_for(14_000, Duration::from_secs(90)),
        "{} of 14000 readings arrived after the crash; samos: {}",
        collector.readings().len(),
        server.log()
    );
    let got = collector.readings();
    for id in NODES {
        for v in 0..7000 {
            assert!(got.contains_key(&(id.to_owned(), v)), "{id} {v} missing");
        }
    }
    assert_eq!(got.len(), 14_000, "nothing but the published readings");

    // The events followed the event log: the joins, each with its instance and id.
    let events = collector.events();
    let kinds: BTreeSet<&str> = events
        .iter()
        .map(|(_, e)| e["kind"].as_str().unwrap())
        .collect();
    assert!(!events.is_empty(), "no event forwarded");
    for (topic, e) in &events {
        assert_eq!(
            topic,
            &format!(
                "ev/{}/{}",
                e["kind"].as_str().unwrap(),
                e["node_id"].as_str().unwrap()
            )
        );
        assert!(e["id"].as_str().is_some() && e["instance"].as_str().is_some());
    }
    eprintln!("events forwarded: {kinds:?}");
}

#[test]
fn a_bridge_that_cannot_log_in_holds_the_readings_and_pauses_publishers_at_its_backlog() {
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path(), "unused");
    let broker = Mosquitto::start(&certs);
    let collector = Collector::start(broker.plain_port, &["up/#"]);
    // One reading per WAL batch, at most 100 batches behind the bridge.
    let limits = "[storage]\nmax_wal_backlog_batches = 100\nmax_batch_rows = 1\n";
    let good = format!("{limits}{}", bridge_config(&broker, &certs));
    let server = TestServer::with_config(&good.replace(mosquitto::PASSWORD, "wrong"));
    let mut node = join_paper_node(&server, "CN1");
    let acked = publish_pipelined(&mut node, "CN1", &values(0..200));
    assert!((90..=100).contains(&acked), "{acked} acknowledged");
    assert!(server.log().contains("refused"), "{}", server.log());
    assert!(server.wait_log("bridge up is too far behind", Duration::from_secs(10)));
    assert!(server.metric("samos_bridge_lag_batches{bridge=\"up\"}") >= 90);
    assert_eq!(server.metric("samos_bridge_connected{bridge=\"up\"}"), 0);
    assert!(collector.readings().is_empty());
    // The dashboard's overview shows it too.
    let overview: serde_json::Value =
        serde_json::from_str(&http_get(server.api.unwrap(), "/api/v1/overview")).unwrap();
    let bridge = &overview["bridges"][0];
    assert_eq!(bridge["name"], "up");
    assert_eq!(bridge["connected"], false);
    assert!(bridge["lag_batches"].as_u64().unwrap() >= 90, "{overview}");

    // The acknowledged readings wait in the WAL: killed, fixed and restarted, the bridge sends
    // them all.
    drop(node);
    let dir = server.kill();
    let server = TestServer::in_dir(dir, &good);
    assert!(
        collector.wait_for(acked, Duration::from_secs(30)),
        "{} of {acked} after the password was fixed: {}",
        collector.readings().len(),
        server.log()
    );
    let got = collector.readings();
    assert!((0..acked as i64).all(|v| got.contains_key(&("CN1".to_owned(), v))));
}
