//! Persistent sessions across a `kill -9`: QoS 2 exactly once for a pipelined publisher that
//! resends after reconnecting, and a subscriber whose subscription outlives the crash.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::raw::*;
use common::*;
use mqttbytes::v4::Packet;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const T: Duration = Duration::from_secs(10);

fn temp_topic() -> String {
    topic_of("CN1")
}

fn topic_of(node: &str) -> String {
    format!("{NET}/{node}/{LOC}/indoorTemperatureSensor")
}

fn join_cn1_persistent(server: &TestServer) -> Raw {
    join_persistent(server, "CN1")
}

/// Connects `node` (CN1 or CN2) with a persistent session and has it join with its paper
/// configuration; waits until the registry holds it on disk (it is saved within a second), so
/// a crash does not forget the node.
fn join_persistent(server: &TestServer, node: &str) -> Raw {
    let config = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../datasets/node-configs/{}_config.xml",
        node.to_lowercase()
    )))
    .unwrap();
    let control = format!("{NET}/{node}/{LOC}/control");
    let (mut c, _) = Raw::connected(server.port(), 4, node, false, &[]);
    c.send(&subscribe(4, 1, &control, 0));
    let _ = c.next(T);
    c.publish_qos1(&control, format!("PUB_CONFIG_FILE, {config}").as_bytes(), 1);
    loop {
        let (_, p) = c.next_publish(T).expect("join reply");
        if p.starts_with(b"SET_CN_FUNCTIONAL_MODE, active") {
            break;
        }
    }
    let nodes = server.data_dir().join("nodes.json");
    let deadline = Instant::now() + T;
    while !std::fs::read_to_string(&nodes).is_ok_and(|s| s.contains(&format!("\"{node}\""))) {
        assert!(Instant::now() < deadline, "registry not saved");
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// PUBLISH sent, no PUBREC yet.
    Sent,
    /// PUBREL sent, no PUBCOMP yet.
    Released,
}

/// What a QoS 1/2 client keeps of its session: the messages in flight by packet id.
struct ClientSession {
    qos: u8,
    topic: String,
    /// Added to every value, so two publishers' readings can be told apart.
    offset: u32,
    next_value: u32,
    inflight: BTreeMap<u16, (u32, Phase)>,
    /// Packet ids in the order their messages were first sent.
    order: Vec<u16>,
    acknowledged: HashSet<u32>,
    completed: u32,
}

/// Packet ids cycle through a small range, so ids are reused all the time (also right after
/// the restart): a reused id must never be taken for a resend.
const PKIDS: std::ops::Range<u16> = 100..140;
const WINDOW: usize = 20;

impl ClientSession {
    fn new(node: &str, qos: u8, offset: u32) -> ClientSession {
        ClientSession {
            qos,
            topic: topic_of(node),
            offset,
            next_value: 0,
            inflight: BTreeMap::new(),
            order: Vec::new(),
            acknowledged: HashSet::new(),
            completed: 0,
        }
    }

    fn publish(&self, pkid: u16, v: u32, dup: bool) -> Vec<u8> {
        publish(
            4,
            self.topic.as_bytes(),
            self.qos,
            pkid,
            dup,
            payload(v + self.offset).as_bytes(),
        )
    }

    fn free_pkid(&self) -> u16 {
        PKIDS
            .clone()
            .find(|p| !self.inflight.contains_key(p))
            .expect("window < id range")
    }

    /// Resends what is in flight, in the order it was first sent: PUBLISH with DUP, or PUBREL.
    fn resend(&self, c: &mut Raw) {
        for pkid in &self.order {
            match self.inflight.get(pkid) {
                Some((v, Phase::Sent)) => c.send(&self.publish(*pkid, *v, true)),
                Some((_, Phase::Released)) => c.send(&ack(0x62, *pkid)),
                None => {}
            }
        }
    }

    /// Publishes values below `total`, `WINDOW` in flight, until done or the connection dies.
    fn run(&mut self, c: &mut Raw, total: u32) -> bool {
        loop {
            while self.inflight.len() < WINDOW && self.next_value < total {
                let pkid = self.free_pkid();
                let v = self.next_value;
                self.next_value += 1;
                c.send(&self.publish(pkid, v, false));
                self.inflight.insert(pkid, (v, Phase::Sent));
                self.order.retain(|p| *p != pkid);
                self.order.push(pkid);
            }
            if self.inflight.is_empty() {
                return true;
            }
            match c.next(T) {
                Reply::V4(Packet::PubAck(a)) => {
                    if let Some((v, _)) = self.inflight.remove(&a.pkid) {
                        self.acknowledged.insert(v);
                        self.completed += 1;
                    }
                }
                Reply::V4(Packet::PubRec(r)) => {
                    if let Some((v, phase)) = self.inflight.get_mut(&r.pkid) {
                        *phase = Phase::Released;
                        self.acknowledged.insert(*v);
                    }
                    c.send(&ack(0x62, r.pkid));
                }
                Reply::V4(Packet::PubComp(r)) if self.inflight.remove(&r.pkid).is_some() => {
                    self.completed += 1;
                }
                Reply::Closed | Reply::Timeout => return false,
                _ => {}
            }
        }
    }
}

fn payload(v: u32) -> String {
    format!("float,0-70,{}", f64::from(v) / 2000.0)
}

fn stored_values(data: &Path) -> Vec<u32> {
    let store = read_store(data);
    store["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v.as_f64().unwrap() * 2000.0).round() as u32)
        .collect()
}

/// Runs both sessions on their own threads until `totals`; returns them when their
/// connections end (a kill) or they are done.
fn run_both(
    sessions: [(ClientSession, Raw); 2],
    totals: [u32; 2],
) -> [std::thread::JoinHandle<(ClientSession, bool)>; 2] {
    let [(mut a, mut ca), (mut b, mut cb)] = sessions;
    [
        std::thread::spawn(move || {
            let done = a.run(&mut ca, totals[0]);
            (a, done)
        }),
        std::thread::spawn(move || {
            let done = b.run(&mut cb, totals[1]);
            (b, done)
        }),
    ]
}

fn pg_count(pg: &pg::TempPostgres, sql: &str) -> u64 {
    pg.psql(sql).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn qos1_and_qos2_persistent_sessions_resend_after_kill_9_and_lose_nothing() {
    const QOS1_OFFSET: u32 = 70_000;
    let pg = pg::TempPostgres::start();
    let config = format!("[storage]\npostgres = {:?}\n", pg.url());
    let s = TestServer::with_config(&config);
    let sessions = [
        (ClientSession::new("CN1", 2, 0), join_persistent(&s, "CN1")),
        (
            ClientSession::new("CN2", 1, QOS1_OFFSET),
            join_persistent(&s, "CN2"),
        ),
    ];
    let publishers = run_both(sessions, [60_000, 60_000]);
    // Full rate for a while, then kill the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric("samos_readings_committed_total ") < 3_000 {
        assert!(Instant::now() < deadline, "too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = s.kill();
    let [q2, q1] = publishers.map(|p| p.join().unwrap().0);
    assert!(!q2.inflight.is_empty(), "nothing in flight at the kill");
    let q2_in_flight: Vec<u32> = q2.inflight.values().map(|(v, _)| *v).collect();
    let q1_in_flight: Vec<u32> = q1.inflight.values().map(|(v, _)| *v).collect();
    let q1_acked_at_kill = q1.acknowledged.clone();

    let s = TestServer::in_dir(dir, &config);
    assert!(
        s.wait_log("persistent sessions recovered", T),
        "{}",
        s.log()
    );
    let mut resumed = Vec::new();
    for (session, node) in [(q2, "CN1"), (q1, "CN2")] {
        let (mut c, present) = Raw::connected(s.port(), 4, node, false, &[]);
        assert!(present, "{node}'s persistent session survived the crash");
        session.resend(&mut c);
        resumed.push((session, c));
    }
    let totals = [resumed[0].0.next_value + 300, resumed[1].0.next_value + 300];
    let [a, b]: [(ClientSession, Raw); 2] = resumed.try_into().ok().unwrap();
    let publishers = run_both([a, b], totals);
    let [(q2, done2), (q1, done1)] = publishers.map(|p| p.join().unwrap());
    assert!(done2 && done1, "a connection was lost after the restart");
    assert_eq!(q2.completed, totals[0]);
    assert_eq!(q1.next_value, totals[1]);
    let dir = s.stop();

    // Parquet, read by pyarrow.
    let stored = stored_values(&dir.path().join("data"));
    let mut count = BTreeMap::<u32, u32>::new();
    for v in &stored {
        *count.entry(*v).or_default() += 1;
    }
    // QoS 2: every message exactly once, the ones in flight at the kill included.
    for v in 0..totals[0] {
        let n = count.get(&v).copied().unwrap_or(0);
        assert_eq!(
            n, 1,
            "QoS 2 reading {v} stored {n} times (in flight at the kill: {q2_in_flight:?})"
        );
    }
    // QoS 1: nothing lost; only a message in flight at the kill (stored, its PUBACK lost with
    // the server) may be stored twice; one acknowledged before the kill is stored once.
    for v in 0..totals[1] {
        let n = count.get(&(v + QOS1_OFFSET)).copied().unwrap_or(0);
        assert!(n >= 1, "QoS 1 reading {v} lost");
        assert!(
            n == 1 || q1_in_flight.contains(&v),
            "QoS 1 reading {v} stored {n} times"
        );
        if q1_acked_at_kill.contains(&v) {
            assert_eq!(n, 1, "acknowledged QoS 1 reading {v} stored {n} times");
        }
    }

    // PostgreSQL holds the same rows, each key once.
    let rows = stored.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg_count(&pg, "SELECT count(*) FROM readings") < rows {
        assert!(Instant::now() < deadline, "PostgreSQL behind");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pg_count(&pg, "SELECT count(*) FROM readings"), rows);
    assert_eq!(
        pg_count(&pg, "SELECT count(DISTINCT key) FROM readings"),
        rows
    );
    assert_eq!(
        pg_count(
            &pg,
            "SELECT count(DISTINCT value) FROM readings WHERE node_id = 'CN1' AND qos = 2"
        ),
        u64::from(totals[0])
    );
    assert_eq!(
        pg_count(&pg, "SELECT count(*) FROM readings WHERE node_id = 'CN1'"),
        u64::from(totals[0])
    );
}

#[test]
fn a_persistent_subscription_outlives_kill_9() {
    let s = TestServer::start();
    let mut node = join_cn1_persistent(&s);
    let (mut sub, present) = Raw::connected(s.port(), 4, "dashboard", false, &[]);
    assert!(!present);
    sub.send(&subscribe(
        4,
        7,
        &format!("{NET}/+/{LOC}/indoorTemperatureSensor"),
        1,
    ));
    // SUBACK leaves once the subscription is durable.
    match sub.next(T) {
        Reply::V4(Packet::SubAck(a)) => assert_eq!(a.pkid, 7),
        _ => panic!("no SUBACK"),
    }
    drop(node);
    let dir = s.kill();

    let s = TestServer::in_dir(dir, "");
    assert_eq!(s.metric("samos_durable_sessions "), 2, "{}", s.log());
    // A reading published while the subscriber is offline is kept for it.
    let (mut n, present) = Raw::connected(s.port(), 4, "CN1", false, &[]);
    assert!(present);
    assert_eq!(n.publish_qos1(&temp_topic(), payload(42).as_bytes(), 9), 0);
    node = n;
    let (mut sub, present) = Raw::connected(s.port(), 4, "dashboard", false, &[]);
    assert!(present, "the subscriber's session survived the crash");
    let (topic, body) = sub.next_publish(T).expect("the queued reading");
    assert_eq!(topic, temp_topic());
    assert_eq!(body, payload(42).as_bytes());
    drop((node, sub));

    // A clean session ends what was stored for the client id, for good.
    let (sub, present) = Raw::connected(s.port(), 4, "dashboard", true, &[]);
    assert!(!present);
    drop(sub);
    let dir = s.kill();
    let s = TestServer::in_dir(dir, "");
    let (_sub, present) = Raw::connected(s.port(), 4, "dashboard", false, &[]);
    assert!(!present, "the clean session ended the stored one");
}
