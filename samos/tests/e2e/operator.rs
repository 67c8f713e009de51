//! What an admin does through the HTTP API, seen from a real MQTT node: block and unblock,
//! a configuration over the air, a disconnect — and what viewers and strangers may not do.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test, with its message

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::raw::Reply;
use common::{TestServer, join_paper_node};
use serde_json::{Value, json};

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
const T: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request; the status and the JSON body (`null` when there is none).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let body = (!body.is_null()).then(|| body.to_string());
    let (status, text) = common::http_request(addr, method, path, token, body.as_deref());
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn cn1_config() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/node-configs/cn1_config.xml"),
    )
    .unwrap()
}

/// The next PUBLISH on the node's control topic, as text.
fn next_control(c: &mut common::raw::Raw) -> String {
    let (_, payload) = c.next_publish(T).expect("a control message");
    String::from_utf8(payload).unwrap()
}

/// Reads control messages until one starts with `prefix` (a refused reading is answered too).
fn wait_control(c: &mut common::raw::Raw, prefix: &str) -> String {
    loop {
        let m = next_control(c);
        if m.starts_with(prefix) {
            return m;
        }
    }
}

fn events(s: &TestServer, node: &str) -> Vec<Value> {
    let (_, v) = http(
        s.api.unwrap(),
        "GET",
        &format!("/api/v1/events?node={node}"),
        Some("admin"),
        &Value::Null,
    );
    v["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn admins_block_reconfigure_and_disconnect_nodes_and_nobody_else_does() {
    let s = TestServer::with_config("[api]\ntoken = \"viewer\"\nadmin_token = \"admin\"\n");
    let api = s.api.unwrap();
    let mut cn1 = join_paper_node(&s, "CN1");
    let control = format!("{NET}/CN1/{LOC}/control");
    let mode = format!("/api/v1/network/{NET}/CN1/mode");

    // Strangers and viewers may not act; the refusals are counted.
    assert_eq!(
        http(api, "POST", &mode, None, &json!({"mode": "blocked"})).0,
        401
    );
    assert_eq!(
        http(
            api,
            "POST",
            &mode,
            Some("viewer"),
            &json!({"mode": "blocked"})
        )
        .0,
        403
    );
    assert_eq!(
        http(api, "GET", "/api/v1/network", Some("viewer"), &Value::Null).0,
        200
    );
    assert!(s.metric("samos_refusals_total{reason=\"api_forbidden\"}") >= 1);
    assert_eq!(
        http(
            api,
            "POST",
            &format!("/api/v1/network/{NET}/NOPE/mode"),
            Some("admin"),
            &json!({"mode": "blocked"})
        )
        .0,
        404
    );

    // Blocked: the node is told, its readings are refused, and a new join does not undo it.
    let (status, v) = http(
        api,
        "POST",
        &mode,
        Some("admin"),
        &json!({"mode": "blocked"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        next_control(&mut cn1),
        "SET_CN_FUNCTIONAL_MODE, blocked, blocked by operator admin token"
    );
    let reading = format!("{NET}/CN1/{LOC}/indoorTemperatureSensor");
    cn1.publish_qos1(&reading, b"float,0-70,21.5", 7);
    let deadline = Instant::now() + T;
    while s.metric("samos_refusals_total{reason=\"node_not_active\"}") < 1 {
        assert!(
            Instant::now() < deadline,
            "the blocked node's reading was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cn1.publish_qos1(
        &control,
        format!("PUB_CONFIG_FILE, {}", cn1_config()).as_bytes(),
        8,
    );
    wait_control(
        &mut cn1,
        "SET_CN_FUNCTIONAL_MODE, blocked, blocked by operator admin token",
    );
    let (status, _) = http(
        api,
        "POST",
        &mode,
        Some("admin"),
        &json!({"mode": "active"}),
    );
    assert_eq!(status, 200);
    wait_control(&mut cn1, "SET_CN_FUNCTIONAL_MODE, active, normalMode");

    // Over the air: a document that would not pass a join is refused with its reasons...
    let config = format!("/api/v1/network/{NET}/CN1/config");
    let (status, v) = http(
        api,
        "POST",
        &config,
        Some("admin"),
        &json!({"document": "<nodeConfiguration/>"}),
    );
    assert_eq!(status, 400, "{v}");
    let foreign = cn1_config().replace("<ID>CN1</ID>", "<ID>CN9</ID>");
    let (status, v) = http(
        api,
        "POST",
        &config,
        Some("admin"),
        &json!({"document": foreign}),
    );
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("CN9"), "{v}");
    // ...a valid one is sent, and applied when the node joins with it.
    let new = cn1_config().replace(
        "<platform>Raspberry</platform>",
        "<platform>RaspberryPi4</platform>",
    );
    let (status, v) = http(
        api,
        "POST",
        &config,
        Some("admin"),
        &json!({"document": new}),
    );
    assert_eq!(status, 200, "{v}");
    let command = wait_control(&mut cn1, "SET_CN_CONFIG_FILE");
    assert_eq!(command, format!("SET_CN_CONFIG_FILE, {new}"));
    cn1.publish_qos1(&control, format!("PUB_CONFIG_FILE, {new}").as_bytes(), 9);
    wait_control(&mut cn1, "SET_CN_FUNCTIONAL_MODE, active");
    let deadline = Instant::now() + T;
    while !events(&s, "CN1")
        .iter()
        .any(|e| e["kind"] == "config_applied" && e["detail"]["by"] == "admin token")
    {
        assert!(
            Instant::now() < deadline,
            "no config_applied event: {:?}",
            events(&s, "CN1")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, node) = http(
        api,
        "GET",
        &format!("/api/v1/network/{NET}/CN1"),
        Some("viewer"),
        &Value::Null,
    );
    assert!(
        node["config_xml"]
            .as_str()
            .unwrap()
            .contains("RaspberryPi4")
    );
    assert_eq!(node["pushed_config"], Value::Null, "the push is settled");

    // A node may not send the server's command.
    cn1.publish_qos1(
        &control,
        format!("SET_CN_CONFIG_FILE, {new}").as_bytes(),
        10,
    );
    let deadline = Instant::now() + T;
    while s.metric("samos_refusals_total{reason=\"server_command\"}") < 1 {
        assert!(
            Instant::now() < deadline,
            "SET_CN_CONFIG_FILE from a node was not refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Disconnect: the connection closes; an unknown client is a 404.
    assert_eq!(
        http(
            api,
            "POST",
            "/api/v1/clients/nobody/disconnect",
            Some("admin"),
            &Value::Null
        )
        .0,
        404
    );
    let (status, v) = http(
        api,
        "POST",
        "/api/v1/clients/CN1/disconnect",
        Some("admin"),
        &Value::Null,
    );
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + T;
    loop {
        match cn1.next(Duration::from_millis(500)) {
            Reply::Closed => break,
            _ => assert!(Instant::now() < deadline, "the connection stayed open"),
        }
    }
    assert!(
        events(&s, "CN1")
            .iter()
            .any(|e| e["kind"] == "client_disconnected")
    );
}

/// Live streams are bounded: past `api.max_live_streams` a new one is refused with 429 (and
/// counted), and a closed one frees its place.
#[test]
fn live_streams_are_bounded() {
    let s = TestServer::with_config("[api]\nmax_live_streams = 2\n");
    let api = s.api.unwrap();
    let open = || {
        let mut c = TcpStream::connect(api).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(c, "GET /api/v1/live HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        (c, String::from_utf8_lossy(&head[9..12]).to_string())
    };
    let (a, status_a) = open();
    let (_b, status_b) = open();
    assert_eq!((status_a.as_str(), status_b.as_str()), ("200", "200"));
    let (_, status_c) = open();
    assert_eq!(status_c, "429");
    assert!(s.metric("samos_refusals_total{reason=\"api_live_streams_full\"}") >= 1);
    drop(a);
    // The server notices the closed stream at its next write (a stats event each second).
    let deadline = Instant::now() + T;
    loop {
        let (_c, status) = open();
        if status == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream never freed its place"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
