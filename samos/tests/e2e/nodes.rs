//! The sensor-network protocol end to end: nodes join with the paper's configuration files
//! over real MQTT, readings are checked against their declared sensors, refusals land in the
//! quarantine with their reason, `$SYS` reflects the network, and the registry survives a
//! restart.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::raw::*;
use common::*;
use samos_server::protocol::registry::JsonLines;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const T: Duration = Duration::from_secs(10);

fn config(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../datasets/node-configs")
            .join(name),
    )
    .unwrap()
}

fn control(node: &str) -> String {
    format!("{NET}/{node}/{LOC}/control")
}

fn data(node: &str, sensor: &str) -> String {
    format!("{NET}/{node}/{LOC}/{sensor}")
}

/// Connects as `node` (MQTT 5), subscribes to its control topic and sends its configuration;
/// returns the client and the server's reply.
fn join(s: &TestServer, node: &str, document: &str) -> (Raw, String) {
    join_on(s, node, &control(node), document)
}

fn join_on(s: &TestServer, node: &str, topic: &str, document: &str) -> (Raw, String) {
    let (mut c, _) = Raw::connected(s.port(), 5, node, true, &[]);
    c.send(&subscribe(5, 1, topic, 1));
    assert!(matches!(
        c.next(T),
        Reply::V5(mqttbytes::v5::Packet::SubAck(_))
    ));
    let rc = c.publish_qos1(topic, format!("PUB_CONFIG_FILE, {document}").as_bytes(), 2);
    assert_eq!(rc, 0, "the join request itself is accepted");
    loop {
        let (t, p) = c.next_publish(T).expect("a reply on the control topic");
        let p = String::from_utf8(p).unwrap();
        if t == topic && p.starts_with("SET_CN_FUNCTIONAL_MODE") {
            return (c, p);
        }
    }
}

fn rejected(s: &TestServer) -> Vec<serde_json::Value> {
    JsonLines::read(&s.data_dir().join("rejected.jsonl")).unwrap()
}

fn events(s: &TestServer) -> Vec<serde_json::Value> {
    JsonLines::read(&s.data_dir().join("events.jsonl")).unwrap()
}

#[test]
fn the_papers_configurations_join_or_are_blocked() {
    let s = TestServer::start();
    for (file, node) in [("cn1_config.xml", "CN1"), ("cn2_config.xml", "CN2")] {
        let (_, reply) = join(&s, node, &config(file));
        assert_eq!(
            reply, "SET_CN_FUNCTIONAL_MODE, active, normalMode",
            "{file}"
        );
    }
    // sn_config.xml is valid too; its location matches CN1's.
    let (_, reply) = join(&s, "SN", &config("sn_config.xml"));
    assert_eq!(reply, "SET_CN_FUNCTIONAL_MODE, active, normalMode");
    // node_config.xml lacks <serverID>: blocked, with the line of the fault.
    let bad = config("node_config.xml");
    let (mut c, reply) = join(&s, "CN1X", &bad.replace("<ID>CN1</ID>", "<ID>CN1X</ID>"));
    assert!(
        reply.starts_with("SET_CN_FUNCTIONAL_MODE, blocked, line 48:"),
        "{reply}"
    );
    assert!(reply.contains("serverID"), "{reply}");
    // A blocked node's readings are refused (0x87) and quarantined.
    assert_eq!(
        c.publish_qos1(
            &data("CN1X", "indoorTemperatureSensor"),
            b"float,0-70,21",
            9
        ),
        0x87
    );
    let ev = events(&s);
    let blocked = ev.iter().find(|e| e["kind"] == "blocked").unwrap();
    assert_eq!(blocked["node_id"], "CN1X");
    assert_eq!(blocked["detail"]["errors"][0]["line"], 48);
    assert!(
        rejected(&s)
            .iter()
            .any(|r| r["reason"] == "node_not_active")
    );
}

#[test]
fn a_document_that_does_not_match_its_topic_is_blocked() {
    let s = TestServer::start();
    // CN2's document sent on CN1's topic, by client CN1.
    let (_, reply) = join(&s, "CN1", &config("cn2_config.xml"));
    assert!(
        reply.starts_with("SET_CN_FUNCTIONAL_MODE, blocked,"),
        "{reply}"
    );
    assert!(reply.contains("node ID \"CN2\""), "{reply}");
    // A different location in the topic.
    let topic = format!("{NET}/CN2/Greece/Samos/Karlovasi/Elsewhere/indoor/A/A52/control");
    let (_, reply) = join_on(&s, "CN2", &topic, &config("cn2_config.xml"));
    assert!(reply.contains("location"), "{reply}");
}

#[test]
fn a_range_no_reading_could_meet_is_blocked_at_the_join_and_named() {
    let s = TestServer::start();
    let inverted =
        config("cn2_config.xml").replacen("<minValue>0</minValue>", "<minValue>90</minValue>", 1);
    let (_, reply) = join(&s, "CN2", &inverted);
    assert!(
        reply.starts_with("SET_CN_FUNCTIONAL_MODE, blocked, line ")
            && reply.ends_with(
                "sensor indoorTemperatureSensor: dataRange minValue 90 is above maxValue 70"
            ),
        "{reply}"
    );
    // The same node with a range its readings can meet joins.
    let (_, reply) = join(&s, "CN2", &config("cn2_config.xml"));
    assert_eq!(reply, "SET_CN_FUNCTIONAL_MODE, active, normalMode");
}

#[test]
fn hostile_xml_is_refused_without_expansion() {
    let s = TestServer::start();
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;"><!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;"><!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;"><!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;"><!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;"><!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]><nodeConfiguration>&lol9;</nodeConfiguration>"#;
    let (_, reply) = join(&s, "CN1", laughs);
    assert!(
        reply.contains("DTDs and entity declarations are not accepted"),
        "{reply}"
    );
    let secret = s.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET").unwrap();
    let xxe = format!(
        r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY f SYSTEM "file://{}">]><nodeConfiguration xmlns="https://www.w3schools.com">&f;</nodeConfiguration>"#,
        secret.display()
    );
    let (_, reply) = join(&s, "CN2", &xxe);
    assert!(
        reply.starts_with("SET_CN_FUNCTIONAL_MODE, blocked"),
        "{reply}"
    );
    let nodes = std::fs::read_to_string(s.data_dir().join("events.jsonl")).unwrap();
    assert!(!nodes.contains("TOP-SECRET"));
    assert!(s.metric("samos_refusals_total{reason=\"node_blocked\"}") >= 2);
}

#[test]
fn readings_are_checked_and_refusals_quarantined() {
    let s = TestServer::start();
    let (mut c, _) = join(&s, "CN1", &config("cn1_config.xml"));
    let temp = data("CN1", "indoorTemperatureSensor");
    let watcher_topic = format!("{NET}/CN1/{LOC}/+");
    let (mut w, _) = Raw::connected(s.port(), 4, "watcher", true, &[]);
    w.send(&subscribe(4, 1, &watcher_topic, 0));
    assert!(matches!(
        w.next(T),
        Reply::V4(mqttbytes::v4::Packet::SubAck(_))
    ));
    assert_eq!(c.publish_qos1(&temp, b"float,0-70,23.4", 10), 0);
    assert_eq!(c.publish_qos1(&temp, b"float,0-70,71.5", 11), 0x99);
    assert_eq!(c.publish_qos1(&temp, b"int,0-70,23", 12), 0x99);
    assert_eq!(c.publish_qos1(&temp, b"float,0-70,warm", 13), 0x99);
    assert_eq!(
        c.publish_qos1(&data("CN1", "flameDetectionSensor"), b"int,0-1024,900", 14),
        0x99
    );
    // Only the valid reading reached subscribers.
    assert_eq!(w.next_publish(T).unwrap().1, b"float,0-70,23.4");
    assert!(w.next_publish(Duration::from_millis(500)).is_none());
    let reasons: Vec<String> = rejected(&s)
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "out_of_range",
            "type_mismatch",
            "invalid_value",
            "undeclared_sensor"
        ]
    );
    assert_eq!(rejected(&s)[0]["payload"], "float,0-70,71.5");
    // MQTT 3.1.1 publishers get a plain acknowledgement; the refusal is still recorded.
    let (mut old, _) = Raw::connected(s.port(), 4, "CN1", true, &[]);
    assert_eq!(old.publish_qos1(&temp, b"float,0-70,-3", 1), 0);
    assert_eq!(rejected(&s).len(), 5);
}

#[test]
fn nodes_are_isolated_from_each_other_and_from_sys() {
    let s = TestServer::start();
    let (_c1, _) = join(&s, "CN1", &config("cn1_config.xml"));
    let (mut c2, _) = join(&s, "CN2", &config("cn2_config.xml"));
    // CN2 writing into CN1's subtree, or as the server.
    assert_eq!(
        c2.publish_qos1(&data("CN1", "indoorTemperatureSensor"), b"float,0-70,20", 5),
        0x87
    );
    assert_eq!(
        c2.publish_qos1(&control("CN1"), b"PUB_CN_SEVERITY_MODE, dangerMode", 6),
        0x87
    );
    assert_eq!(
        c2.publish_qos1(
            &control("CN2"),
            b"SET_CN_FUNCTIONAL_MODE, active, normalMode",
            7
        ),
        0x87
    );
    assert_eq!(
        c2.publish_qos1(&format!("{NET}/alerts/CN1"), b"{}", 8),
        0x87
    );
    assert_eq!(c2.publish_qos1("$SYS/x", b"1", 9), 0x87);
    // Readings from a node that never joined.
    let (mut ghost, _) = Raw::connected(s.port(), 5, "CN9", true, &[]);
    assert_eq!(
        ghost.publish_qos1(&data("CN9", "indoorTemperatureSensor"), b"float,0-70,20", 1),
        0x87
    );
    let reasons: Vec<String> = rejected(&s)
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "foreign_node",
            "foreign_node",
            "server_command",
            "server_topic",
            "unknown_node"
        ]
    );
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"publish_not_authorized\"}"),
        1
    );
}

#[test]
fn sys_topics_are_correct_and_retained() {
    let s = TestServer::with_config(&format!(
        "[protocol]\nserver_config = {:?}\n",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../datasets/node-configs/sn_config.xml")
            .display()
            .to_string()
    ));
    let (_c, _) = join(&s, "CN1", &config("cn1_config.xml"));
    std::thread::sleep(Duration::from_millis(300));
    let sys = format!("$SYS/{NET}/SN/{LOC}");
    // A late subscriber sees the current state.
    let (mut late, _) = Raw::connected(s.port(), 4, "late", true, &[]);
    late.send(&subscribe(4, 1, &format!("{sys}/#"), 0));
    let mut got = std::collections::BTreeMap::new();
    while let Some((t, p)) = late.next_publish(Duration::from_secs(2)) {
        got.insert(
            t.trim_start_matches(&format!("{sys}/")).to_string(),
            String::from_utf8(p).unwrap(),
        );
    }
    assert_eq!(
        got.get("networkStatus").map(String::as_str),
        Some("online"),
        "{got:?}"
    );
    assert_eq!(
        got.get("numOfConnectedNodes").map(String::as_str),
        Some("1"),
        "{got:?}"
    );
    assert_eq!(
        got.get("CN1/status").map(String::as_str),
        Some("active"),
        "{got:?}"
    );
    assert_eq!(
        got.get("CN1/ipAddress").map(String::as_str),
        Some("127.0.0.1"),
        "{got:?}"
    );
    assert_eq!(
        got.get("ipAddress").map(String::as_str),
        Some("127.0.0.1"),
        "{got:?}"
    );
    assert!(
        got.get("localDateTime").is_some_and(|t| t.len() >= 19),
        "{got:?}"
    );
}

#[test]
fn registry_and_severity_survive_a_restart() {
    let s = TestServer::start();
    let (mut c, reply) = join(&s, "CN1", &config("cn1_config.xml"));
    assert!(reply.ends_with("normalMode"));
    assert_eq!(
        c.publish_qos1(&control("CN1"), b"PUB_CN_SEVERITY_MODE, warningMode", 3),
        0
    );
    assert_eq!(
        c.publish_qos1(
            &data("CN1", "indoorTemperatureSensor"),
            b"float,0-70,30.5",
            4
        ),
        0
    );
    drop(c);
    let dir = s.stop();
    let s = TestServer::in_dir(dir, "");
    let out = run(
        std::process::Command::new(samos_bin())
            .args(["nodes", "--data-dir"])
            .arg(s.data_dir()),
        T,
    );
    let table = stdout(&out);
    assert!(
        table.contains("CN1") && table.contains("active") && table.contains("warning"),
        "{table}"
    );
    // Data from the node is accepted without a new join, and a rejoin gets its last mode back.
    let (mut c, _) = Raw::connected(s.port(), 5, "CN1", true, &[]);
    assert_eq!(
        c.publish_qos1(&data("CN1", "indoorTemperatureSensor"), b"float,0-70,24", 1),
        0
    );
    let (_, reply) = join(&s, "CN1", &config("cn1_config.xml"));
    assert_eq!(reply, "SET_CN_FUNCTIONAL_MODE, active, warningMode");
}

#[test]
fn a_temperature_ramp_raises_an_alert() {
    let s = TestServer::start();
    let (mut c, _) = join(&s, "CN1", &config("cn1_config.xml"));
    let (mut a, _) = Raw::connected(s.port(), 4, "dashboard", true, &[]);
    a.send(&subscribe(4, 1, &format!("{NET}/alerts/#"), 1));
    assert!(matches!(
        a.next(T),
        Reply::V4(mqttbytes::v4::Packet::SubAck(_))
    ));
    // The node stays in normalMode while its room heats past 28 °C.
    for (i, t) in [24.0, 25.5, 27.0, 28.5, 30.0].iter().enumerate() {
        let payload = format!("float,0-70,{t}");
        assert_eq!(
            c.publish_qos1(
                &data("CN1", "indoorTemperatureSensor"),
                payload.as_bytes(),
                20 + i as u16
            ),
            0
        );
    }
    let (topic, alert) = a.next_publish(T).expect("an alert");
    assert_eq!(topic, format!("{NET}/alerts/CN1"));
    let alert: serde_json::Value = serde_json::from_slice(&alert).unwrap();
    assert_eq!(alert["declared"], "normal");
    assert!(
        alert["assessed"] == "warning" || alert["assessed"] == "danger",
        "{alert}"
    );
    assert!(
        events(&s)
            .iter()
            .any(|e| e["kind"] == "alert" && e["node_id"] == "CN1")
    );
    // An alert is counted as an alert, not as a refusal: its readings were stored.
    assert!(s.metric("samos_alerts_total ") >= 1);
    assert!(
        !s.metrics_text().contains("reason=\"alert_raised\""),
        "alerts are not refusals"
    );
}

#[test]
fn with_authentication_the_node_id_is_the_verified_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let pw = make_passwords(dir.path(), &[("CN1", "one"), ("CN2", "two")]);
    let s = TestServer::with_config(&format!("password_file = {pw:?}\n"));
    // Any client id will do; the user name decides which node a client may speak for.
    let login = |user: &str, pass: &str| {
        let mut body = Vec::new();
        string(b"MQTT", &mut body);
        body.extend_from_slice(&[5, 0x02 | 0x80 | 0x40, 0, 60, 0]);
        string(format!("device-{user}").as_bytes(), &mut body);
        string(user.as_bytes(), &mut body);
        string(pass.as_bytes(), &mut body);
        let mut c = Raw::open(s.port(), 5);
        c.send(&frame(0x10, &body));
        assert!(
            matches!(c.next(T), Reply::V5(mqttbytes::v5::Packet::ConnAck(a)) if a.code == mqttbytes::v5::ConnectReturnCode::Success)
        );
        c
    };
    let mut c1 = login("CN1", "one");
    c1.send(&subscribe(5, 1, &control("CN1"), 1));
    let _ = c1.next(T);
    let doc = format!("PUB_CONFIG_FILE, {}", config("cn1_config.xml"));
    assert_eq!(c1.publish_qos1(&control("CN1"), doc.as_bytes(), 2), 0);
    let reply = loop {
        let (_, p) = c1.next_publish(T).expect("reply");
        let p = String::from_utf8(p).unwrap();
        if p.starts_with("SET_CN_FUNCTIONAL_MODE") {
            break p;
        }
    };
    assert_eq!(reply, "SET_CN_FUNCTIONAL_MODE, active, normalMode");
    assert_eq!(
        c1.publish_qos1(&data("CN1", "indoorTemperatureSensor"), b"float,0-70,21", 3),
        0
    );
    // CN2's credentials do not open CN1's subtree.
    let mut c2 = login("CN2", "two");
    assert_eq!(
        c2.publish_qos1(&data("CN1", "indoorTemperatureSensor"), b"float,0-70,21", 1),
        0x87
    );
    let r = rejected(&s);
    assert_eq!(r.last().unwrap()["reason"], "foreign_node");
    assert!(
        r.last().unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("user name")
    );
}
