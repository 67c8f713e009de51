//! The real `mosquitto_pub` / `mosquitto_sub` (Debian's mosquitto-clients) against `samos serve`.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn every_qos_over_every_protocol_version_is_delivered() {
    let s = TestServer::start();
    let sub = mosquitto_sub(
        s.port(),
        &["-V", "mqttv311", "-q", "2", "-t", "t/#", "-v", "-C", "9"],
    );
    wait_subscriptions(&s, 1);
    for v in ["mqttv31", "mqttv311", "mqttv5"] {
        for q in ["0", "1", "2"] {
            let out = mosquitto_pub(
                s.port(),
                &["-V", v, "-q", q, "-t", &format!("t/{v}"), "-m", q],
            );
            assert!(
                out.status.success(),
                "{v} q{q}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let got = stdout(&wait_output(sub, WAIT));
    let mut lines: Vec<&str> = got.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "t/mqttv31 0",
            "t/mqttv31 1",
            "t/mqttv31 2",
            "t/mqttv311 0",
            "t/mqttv311 1",
            "t/mqttv311 2",
            "t/mqttv5 0",
            "t/mqttv5 1",
            "t/mqttv5 2"
        ]
    );
    assert!(
        s.log().contains("protocol=3.1 "),
        "MQTT 3.1 client logged as such"
    );
}

#[test]
fn retained_messages_are_set_delivered_on_subscribe_and_cleared() {
    let s = TestServer::start();
    assert!(
        mosquitto_pub(s.port(), &["-t", "r/a", "-m", "one", "-r", "-q", "1"])
            .status
            .success()
    );
    assert!(
        mosquitto_pub(s.port(), &["-t", "r/b", "-m", "two", "-r"])
            .status
            .success()
    );
    let out = wait_output(
        mosquitto_sub(s.port(), &["-t", "r/+", "-v", "-C", "2"]),
        WAIT,
    );
    let mut got: Vec<String> = stdout(&out).lines().map(String::from).collect();
    got.sort();
    assert_eq!(got, ["r/a one", "r/b two"]);
    // An empty retained payload clears it.
    assert!(
        mosquitto_pub(s.port(), &["-t", "r/a", "-n", "-r"])
            .status
            .success()
    );
    let out = wait_output(
        mosquitto_sub(s.port(), &["-t", "r/+", "-v", "-W", "2"]),
        WAIT,
    );
    assert_eq!(stdout(&out).trim(), "r/b two");
}

#[test]
fn persistent_session_queues_messages_while_the_client_is_away() {
    let s = TestServer::start();
    let id = ["-i", "away-1", "-c", "-q", "1", "-t", "away/#"];
    let out = wait_output(mosquitto_sub(s.port(), &[&id[..], &["-E"]].concat()), WAIT);
    assert!(out.status.success());
    for i in 0..5 {
        mosquitto_pub(s.port(), &["-q", "1", "-t", "away/x", "-m", &i.to_string()]);
    }
    let out = wait_output(
        mosquitto_sub(s.port(), &[&id[..], &["-C", "5"]].concat()),
        WAIT,
    );
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4"]
    );
    // A clean session starts empty: nothing queued, no subscription.
    mosquitto_pub(s.port(), &["-q", "1", "-t", "away/x", "-m", "late"]);
    let out = wait_output(
        mosquitto_sub(s.port(), &["-i", "away-1", "-t", "other", "-W", "2"]),
        WAIT,
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn will_is_published_when_a_client_dies() {
    let s = TestServer::start();
    let watcher = mosquitto_sub(s.port(), &["-t", "wills/#", "-v", "-C", "1"]);
    let mut dying = mosquitto_sub(
        s.port(),
        &[
            "-t",
            "x",
            "--will-topic",
            "wills/n1",
            "--will-payload",
            "offline",
            "--will-qos",
            "1",
        ],
    );
    wait_subscriptions(&s, 2);
    dying.kill().unwrap();
    let _ = dying.wait();
    assert_eq!(
        stdout(&wait_output(watcher, WAIT)).trim(),
        "wills/n1 offline"
    );
}

#[test]
fn tls_with_server_certificate_and_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "node-7");
    let pw = make_passwords(dir.path(), &[("node1", "s3cret")]);
    let s = TestServer::with_config(&format!(
        r#"password_file = {pw:?}
[[listener]]
bind = "127.0.0.1:0"
[listener.tls]
cert = "{c}/server.crt"
key = "{c}/server.key"
"#,
        c = certs.display()
    ));
    let ca = format!("{}/ca.crt", certs.display());
    let tls = |user: &str, pass: &str| {
        vec![
            "--cafile".to_string(),
            ca.clone(),
            "-u".into(),
            user.into(),
            "-P".into(),
            pass.into(),
        ]
    };
    let ok: Vec<String> = tls("node1", "s3cret");
    let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
    let sub = mosquitto_sub(
        s.tls_port(),
        &[&ok[..], &["-t", "secure", "-C", "1"]].concat(),
    );
    wait_subscriptions(&s, 1);
    let out = mosquitto_pub(
        s.tls_port(),
        &[&ok[..], &["-t", "secure", "-m", "over tls", "-q", "2"]].concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&wait_output(sub, WAIT)).trim(), "over tls");

    // TLS 1.2 as well as 1.3.
    let out = mosquitto_pub(
        s.tls_port(),
        &[
            &ok[..],
            &["--tls-version", "tlsv1.2", "-t", "secure", "-m", "1.2"],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad: Vec<String> = tls("node1", "wrong");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = mosquitto_pub(
        s.tls_port(),
        &[&bad[..], &["-t", "secure", "-m", "x"]].concat(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad user name or password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.metric("samos_refusals_total{reason=\"bad_credentials\"}") >= 1);
}

#[test]
fn client_certificate_common_name_becomes_the_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "node-7");
    let s = TestServer::with_config(&format!(
        r#"[[listener]]
bind = "127.0.0.1:0"
[listener.tls]
cert = "{c}/server.crt"
key = "{c}/server.key"
client_ca = "{c}/ca.crt"
require_client_cert = true
use_identity_as_username = true

[[acl]]
user = "node-7"
publish = ["net/%u/#"]
subscribe = ["net/%u/#"]
"#,
        c = certs.display()
    ));
    let c = certs.display().to_string();
    let auth = [
        "--cafile".to_string(),
        format!("{c}/ca.crt"),
        "--cert".into(),
        format!("{c}/client.crt"),
        "--key".into(),
        format!("{c}/client.key"),
    ];
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let sub = mosquitto_sub(
        s.tls_port(),
        &[&auth[..], &["-t", "net/node-7/#", "-v", "-C", "1"]].concat(),
    );
    wait_subscriptions(&s, 1);
    mosquitto_pub(
        s.tls_port(),
        &[&auth[..], &["-t", "net/node-8/t", "-m", "denied"]].concat(),
    );
    mosquitto_pub(
        s.tls_port(),
        &[&auth[..], &["-t", "net/node-7/t", "-m", "mine"]].concat(),
    );
    assert_eq!(stdout(&wait_output(sub, WAIT)).trim(), "net/node-7/t mine");
    assert!(s.log().contains("user=\"node-7\""));
    // No client certificate: the handshake is refused.
    let out = mosquitto_pub(
        s.tls_port(),
        &["--cafile", &format!("{c}/ca.crt"), "-t", "x", "-m", "x"],
    );
    assert!(!out.status.success());
}

#[test]
fn acl_denied_subscription_gets_failure_0x80() {
    let s = TestServer::with_config(
        r#"
[[acl]]
publish = ["open/#"]
subscribe = ["open/#"]
"#,
    );
    let out = wait_output(
        mosquitto_sub(s.port(), &["-d", "-t", "closed/#", "-t", "open/#", "-E"]),
        WAIT,
    );
    let text = stdout(&out);
    assert!(text.contains("Subscribed (mid: 1): 128, 0"), "{text}");
    assert!(s.metric("samos_refusals_total{reason=\"subscribe_not_authorized\"}") == 1);
}

#[test]
fn anonymous_clients_are_refused_on_non_loopback_listeners_by_default() {
    let s = TestServer::with_config(
        r#"
[[listener]]
bind = "0.0.0.0:0"
"#,
    );
    let out = mosquitto_pub(s.port(), &["-t", "x", "-m", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not authorised"));
    assert!(s.log().contains("refused CONNECT"));
    let open = TestServer::with_config(
        r#"allow_anonymous = true
[[listener]]
bind = "0.0.0.0:0"
"#,
    );
    assert!(
        mosquitto_pub(open.port(), &["-t", "x", "-m", "x"])
            .status
            .success()
    );
}

#[test]
fn sys_topics_and_metrics_report_activity() {
    let s = TestServer::with_config("[mqtt]\nsys_interval_secs = 1\n");
    let out = wait_output(
        mosquitto_sub(
            s.port(),
            &["-t", "$SYS/broker/clients/connected", "-v", "-C", "1"],
        ),
        WAIT,
    );
    assert_eq!(stdout(&out).trim(), "$SYS/broker/clients/connected 1");
    let out = wait_output(
        mosquitto_sub(s.port(), &["-t", "$SYS/broker/version", "-C", "1"]),
        WAIT,
    );
    assert!(stdout(&out).starts_with("samos "));
    // `#` does not match $SYS.
    let out = wait_output(mosquitto_sub(s.port(), &["-t", "#", "-W", "2"]), WAIT);
    assert_eq!(stdout(&out), "");
    // Clients may not publish into $SYS.
    mosquitto_pub(s.port(), &["-t", "$SYS/broker/version", "-m", "fake", "-r"]);
    let out = wait_output(
        mosquitto_sub(s.port(), &["-t", "$SYS/broker/version", "-C", "1"]),
        WAIT,
    );
    assert!(stdout(&out).starts_with("samos "));
    // The instance is named, by default after the data directory's store id.
    let store_id = std::fs::read_to_string(s.data_dir().join("wal/store-id")).unwrap();
    let out = wait_output(
        mosquitto_sub(s.port(), &["-t", "$SYS/broker/instance_id", "-C", "1"]),
        WAIT,
    );
    assert_eq!(stdout(&out).trim(), &store_id[..12]);
    let m = s.metrics_text();
    assert!(
        m.contains(&format!(
            "samos_instance_info{{instance_id=\"{}\",version=\"{}\"}} 1",
            &store_id[..12],
            env!("CARGO_PKG_VERSION")
        )),
        "{m}"
    );
    assert!(m.contains("samos_connections_total"), "{m}");
    assert!(
        m.contains("samos_refusals_total{reason=\"publish_not_authorized\"} 1"),
        "{m}"
    );
    assert!(m.contains("samos_publish_ack_latency_seconds_count"));
}
