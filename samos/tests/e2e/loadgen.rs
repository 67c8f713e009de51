//! The load generator (used by `cargo bench --bench broker`) counts exactly: on a tiny run
//! against a real server, every published message is acknowledged and received.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::*;
use mqttbytes::QoS;
use samos_tools::loadgen::{self, ClientTls, LoadSpec};

fn spec(addr: std::net::SocketAddr, qos: QoS, inflight: usize) -> LoadSpec {
    LoadSpec {
        addr,
        tls: None,
        credentials: None,
        publishers: 3,
        messages_per_publisher: 200,
        qos,
        inflight,
        payload_bytes: 16,
        topic_prefix: format!("lg/{}", qos as u8),
        subscriber: true,
        idle_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(30),
        as_nodes: None,
        stored_metrics: None,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_nodes_every_acknowledged_reading_is_durable() {
    let s = TestServer::start();
    let mut sp = spec(s.mqtt[0], QoS::ExactlyOnce, 5);
    sp.subscriber = false;
    sp.as_nodes = Some(loadgen::NodeMode {
        network: "bench".into(),
        server_id: "SN".into(),
        wave: false,
    });
    let r = loadgen::run(sp).await.unwrap();
    assert_eq!(r.acknowledged, 600);
    assert_eq!(s.metric("samos_readings_committed_total "), 600);
    assert_eq!(s.metric("samos_refusals_total{reason=\"unknown_node\"}"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_message_is_counted_once() {
    let s = TestServer::start();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for inflight in [1, 7] {
            let r = loadgen::run(spec(s.mqtt[0], qos, inflight)).await.unwrap();
            assert_eq!(r.published, 600, "{qos:?}");
            assert_eq!(r.acknowledged, 600, "{qos:?}");
            assert_eq!(r.received, 600, "{qos:?} window {inflight}");
        }
    }
    assert_eq!(s.metric("samos_messages_received_total{qos=\"2\"}"), 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "unused");
    let pw = make_passwords(dir.path(), &[("bench", "pw")]);
    let s = TestServer::with_config(&format!(
        "password_file = {pw:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{c}/server.crt\"\nkey = \"{c}/server.key\"\n",
        c = certs.display()
    ));
    let mut sp = spec(s.mqtts[0], QoS::ExactlyOnce, 4);
    sp.tls = Some(ClientTls::from_ca(&certs.join("ca.crt"), "localhost").unwrap());
    sp.credentials = Some(("bench".into(), "pw".into()));
    let r = loadgen::run(sp.clone()).await.unwrap();
    assert_eq!((r.acknowledged, r.received), (600, 600));
    sp.credentials = Some(("bench".into(), "wrong".into()));
    assert!(loadgen::run(sp).await.is_err());
}

/// `samos bench` as a user runs it — joined nodes, QoS 2 in the paper's mode, TLS with a
/// password, storage counted from the server's metrics — counts right: every published
/// reading acknowledged, stored and counted, and pyarrow finds exactly them in Parquet.
#[test]
fn samos_bench_counts_every_stored_reading_on_a_tiny_run() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "unused");
    let pw = make_passwords(dir.path(), &[("bench", "pw")]);
    let s = TestServer::with_config(&format!(
        "password_file = {pw:?}\n[protocol]\nnode_identity = \"client_id\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{c}/server.crt\"\nkey = \"{c}/server.key\"\n",
        c = certs.display()
    ));
    // `samos bench` over TLS with the password, counting storage from the server's metrics.
    let bench = |extra: &[&str]| -> serde_json::Value {
        let out = run(
            std::process::Command::new(samos_bin())
                .arg("bench")
                .arg("--server")
                .arg(s.mqtts[0].to_string())
                .arg("--cafile")
                .arg(certs.join("ca.crt"))
                .args(["-u", "bench", "-P", "pw", "--json"])
                .arg("--samos-metrics")
                .arg(s.metrics.unwrap().to_string())
                .args(extra),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "samos bench: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let report = bench(&[
        "--clients",
        "3",
        "--messages",
        "20",
        "--qos",
        "2",
        "--inflight",
        "1",
        "--subscriber",
    ]);
    let r = &report["report"];
    assert_eq!(r["published"], 60, "{report}");
    assert_eq!(r["acknowledged"], 60, "{report}");
    assert_eq!(r["stored"], 60, "{report}");
    assert_eq!(r["received"], 60, "{report}");
    assert!(report["stored_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(s.metric("samos_readings_committed_total "), 60);
    // A second run counts only its own readings.
    let report = bench(&["-c", "2", "-m", "5"]);
    assert_eq!(report["report"]["stored"], 10, "{report}");
    let dir = s.stop();
    let store = read_store(&dir.path().join("data"));
    assert_eq!(store["rows"], 70);
    assert_eq!(store["unique_keys"], 70);
}

#[test]
fn samos_bench_fails_loudly_when_readings_are_not_stored() {
    // A plain broker (protocol off): the nodes' joins go unanswered.
    let s = TestServer::with_config("[protocol]\nenabled = false\n");
    let out = run(
        std::process::Command::new(samos_bin())
            .arg("bench")
            .arg("--server")
            .arg(s.mqtt[0].to_string())
            .args(["-c", "1", "-m", "5", "--idle-timeout", "2", "--quiet"]),
        Duration::from_secs(120),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no answer to its join"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
