//! `samos simulate` end to end: virtual nodes join a real server, readings flow, and a planted
//! temperature ramp that the node does not report is caught by the server's cross-check. The
//! same simulator also runs against a plain broker (Mosquitto).
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;
use samos_server::protocol::registry::{JsonLines, NodeRegistry};

fn simulate(server: &str, extra: &[&str]) -> serde_json::Value {
    let out = run(
        Command::new(samos_bin())
            .args([
                "simulate", "--server", server, "--quiet", "--json", "--speed", "600",
            ])
            .args(extra),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout(&out).trim()).expect("JSON report")
}

#[test]
fn simulated_nodes_join_publish_and_a_planted_ramp_raises_an_alert() {
    let s = TestServer::start();
    let report = simulate(
        &s.mqtt[0].to_string(),
        &[
            "--nodes",
            "5",
            "--samples",
            "10",
            "--ramp",
            "3",
            "--qos",
            "2",
        ],
    );
    assert_eq!(report["active"], 5, "{report}");
    assert_eq!(report["readings"], 150, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["alerts"].as_u64().unwrap() >= 1, "{report}");
    let events = JsonLines::read(&s.data_dir().join("events.jsonl")).unwrap();
    let alerted: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "alert")
        .map(|e| e["node_id"].as_str().unwrap())
        .collect();
    assert!(
        !alerted.is_empty() && alerted.iter().all(|n| *n == "SIM003"),
        "{alerted:?}"
    );
    assert_eq!(events.iter().filter(|e| e["kind"] == "join").count(), 5);
    let dir = s.stop();
    let nodes = NodeRegistry::read_records(&dir.path().join("data")).unwrap();
    assert_eq!(nodes.len(), 5);
    assert!(
        nodes
            .iter()
            .all(|n| n.readings_accepted == 30 && n.readings_rejected == 0),
        "{nodes:?}"
    );
}

#[test]
fn the_simulator_also_drives_a_plain_broker() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let mut broker = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto (Debian package mosquitto)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let sub = mosquitto_sub(
        port,
        &[
            "-t",
            "samos/+/+/+/+/+/+/+/+/indoorTemperatureSensor",
            "-C",
            "6",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = simulate(
        &format!("127.0.0.1:{port}"),
        &["--nodes", "2", "--samples", "3", "--join-timeout", "1"],
    );
    let _ = broker.kill();
    let _ = broker.wait();
    assert_eq!(report["unanswered"], 2, "{report}");
    assert_eq!(report["readings"], 18, "{report}");
    let got = stdout(&wait_output(sub, Duration::from_secs(10)));
    assert_eq!(got.lines().count(), 6, "{got}");
    assert!(got.lines().all(|l| l.starts_with("float,0-70,")), "{got}");
}
