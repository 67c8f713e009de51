//! Persistent sessions across a `kill -9`: QoS 2 exactly once for a pipelined publisher that
//! resends after reconnecting, and a subscriber whose subscription outlives the crash.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::raw::*;
use common::*;
use mqttbytes::v4::Packet;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const T: Duration = Duration::from_secs(10);

fn temp_topic() -> String {
    format!("{NET}/CN1/{LOC}/indoorTemperatureSensor")
}

/// Connects CN1 with a persistent session and has it join; waits until the registry holds
/// it on disk (it is saved within a second), so a crash does not forget the node.
fn join_cn1_persistent(server: &TestServer) -> Raw {
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/node-configs/cn1_config.xml"),
    )
    .unwrap();
    let control = format!("{NET}/CN1/{LOC}/control");
    let (mut c, _) = Raw::connected(server.port(), 4, "CN1", false, &[]);
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
    while !std::fs::read_to_string(&nodes).is_ok_and(|s| s.contains("\"CN1\"")) {
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

/// What a QoS 2 client keeps of its session: the messages in flight by packet id.
#[derive(Default)]
struct ClientSession {
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
                Some((v, Phase::Sent)) => c.send(&publish(
                    4,
                    temp_topic().as_bytes(),
                    2,
                    *pkid,
                    true,
                    payload(*v).as_bytes(),
                )),
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
                c.send(&publish(
                    4,
                    temp_topic().as_bytes(),
                    2,
                    pkid,
                    false,
                    payload(v).as_bytes(),
                ));
                self.inflight.insert(pkid, (v, Phase::Sent));
                self.order.retain(|p| *p != pkid);
                self.order.push(pkid);
            }
            if self.inflight.is_empty() {
                return true;
            }
            match c.next(T) {
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_parquet.py");
    let out = run(
        Command::new("python3").arg(script).arg(data),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    store["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v.as_f64().unwrap() * 2000.0).round() as u32)
        .collect()
}

#[test]
fn qos2_is_exactly_once_across_kill_9_for_a_resending_persistent_session() {
    let s = TestServer::start();
    let mut c = join_cn1_persistent(&s);
    let mut session = ClientSession::default();
    let total = 1_000_000;
    let mut publisher = std::thread::spawn(move || {
        session.run(&mut c, total);
        session
    });
    // Let it run, then kill the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.metric("samos_readings_committed_total ") < 2_000 {
        assert!(Instant::now() < deadline, "too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = s.kill();
    let mut session = publisher.join().unwrap();
    let in_flight = session.inflight.len();
    let sent = session.next_value;
    assert!(in_flight > 0, "nothing in flight at the kill");

    let s = TestServer::in_dir(dir, "");
    assert!(
        s.wait_log("persistent sessions recovered", T),
        "{}",
        s.log()
    );
    let (mut c, present) = Raw::connected(s.port(), 4, "CN1", false, &[]);
    assert!(present, "the persistent session survived the crash");
    session.resend(&mut c);
    let total = sent + 500;
    publisher = std::thread::spawn(move || {
        assert!(session.run(&mut c, total), "connection lost after restart");
        session
    });
    let session = publisher.join().unwrap();
    assert_eq!(session.completed, total);
    let dir = s.stop();

    let stored = stored_values(&dir.path().join("data"));
    let mut seen = HashSet::new();
    for v in &stored {
        assert!(
            seen.insert(*v),
            "reading {v} stored twice ({in_flight} in flight at the kill)"
        );
    }
    for v in 0..total {
        assert!(seen.contains(&v), "reading {v} lost");
    }
    assert_eq!(stored.len() as u32, total);
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
