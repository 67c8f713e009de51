//! Eclipse paho-mqtt 2.x (Python) speaking MQTT 3.1, 3.1.1 and 5 to `samos serve`.
//! Each test runs one scenario from `paho_scenarios.py`.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;

fn scenario(server: &TestServer, name: &str, extra: &[&str]) {
    let out = paho(name, server.port(), extra);
    assert!(
        out.status.success() && stdout(&out).contains("OK"),
        "paho scenario {name} failed:\n{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pubsub_over_3_1_3_1_1_and_5() {
    scenario(&TestServer::start(), "versions", &[]);
}

#[test]
fn tls_with_passwords_over_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "unused");
    let pw = make_passwords(dir.path(), &[("node1", "s3cret")]);
    let s = TestServer::with_config(&format!(
        "password_file = {pw:?}\n[[listener]]\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncert = \"{c}/server.crt\"\nkey = \"{c}/server.key\"\n",
        c = certs.display()
    ));
    let ca = format!("{}/ca.crt", certs.display());
    let out = paho(
        "tls_with_passwords",
        s.tls_port(),
        &[&ca, "node1", "s3cret"],
    );
    assert!(
        out.status.success() && stdout(&out).contains("OK"),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.metric("samos_refusals_total{reason=\"bad_credentials\"}") >= 1);
}

#[test]
fn connack_properties_assigned_id_and_server_keep_alive() {
    let s = TestServer::with_config("[mqtt]\nmax_keepalive = 30\n");
    scenario(&s, "assigned_id_and_keepalive", &["30"]);
}

#[test]
fn overlapping_subscriptions_deliver_once_with_every_identifier() {
    scenario(&TestServer::start(), "overlapping_subscriptions", &[]);
}

#[test]
fn no_local_and_retain_as_published() {
    scenario(
        &TestServer::start(),
        "no_local_and_retain_as_published",
        &[],
    );
}

#[test]
fn retain_handling_options() {
    scenario(&TestServer::start(), "retain_handling", &[]);
}

#[test]
fn user_properties_request_response_and_payload_format() {
    let s = TestServer::start();
    scenario(&s, "properties_pass_through", &[]);
    assert!(s.metric("samos_refusals_total{reason=\"payload_format_invalid\"}") == 1);
}

#[test]
fn expired_messages_are_not_delivered() {
    scenario(&TestServer::start(), "message_expiry", &[]);
}

#[test]
fn topic_aliases_both_ways() {
    scenario(&TestServer::start(), "topic_alias", &[]);
}

#[test]
fn shared_subscriptions_split_the_load() {
    scenario(&TestServer::start(), "shared_subscriptions", &[]);
}

#[test]
fn will_delay_and_disconnect_with_will() {
    scenario(&TestServer::start(), "will_delay_and_session_expiry", &[]);
}

#[test]
fn session_expiry_and_resume() {
    scenario(&TestServer::start(), "session_resume", &[]);
}

#[test]
fn session_takeover_disconnects_the_old_connection_with_0x8e() {
    scenario(&TestServer::start(), "takeover", &[]);
}

#[test]
fn acl_refusals_carry_v5_reason_codes() {
    let s = TestServer::with_config("[[acl]]\npublish = [\"open/#\"]\nsubscribe = [\"open/#\"]\n");
    scenario(&s, "denied", &[]);
    assert!(s.metric("samos_refusals_total{reason=\"publish_not_authorized\"}") == 1);
}

#[test]
fn session_expiry_set_on_disconnect_raises_cuts_and_cannot_revive() {
    let s = TestServer::start();
    scenario(&s, "session_expiry_on_disconnect", &[]);
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"session_expiry_raised_from_zero\"}"),
        1
    );
}

#[test]
fn deny_rules_inside_an_allow_of_everything() {
    let s = TestServer::with_config(
        "[[acl]]\npublish = [\"#\"]\nsubscribe = [\"#\"]\n\
         deny_subscribe = [\"test/nosubscribe\"]\n\
         deny_publish = [\"test/nopublish\", \"own/%c/readonly\"]\n",
    );
    scenario(&s, "deny_inside_allow", &[]);
    for (reason, n) in [
        ("subscribe_not_authorized", 2),
        ("delivery_not_authorized", 2),
        ("publish_not_authorized", 4),
    ] {
        assert_eq!(
            s.metric(&format!("samos_refusals_total{{reason=\"{reason}\"}}")),
            n,
            "{reason}"
        );
    }
}

fn node_configs() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/node-configs")
        .display()
        .to_string()
}

fn rejected_reasons(s: &TestServer) -> Vec<String> {
    samos_server::protocol::registry::JsonLines::read(&s.data_dir().join("rejected.jsonl"))
        .expect("rejected.jsonl is readable")
        .iter()
        .map(|r| r["reason"].as_str().expect("a reason").to_string())
        .collect()
}

#[test]
fn the_papers_nodes_join_with_pahos_default_client_id() {
    let s = TestServer::start();
    scenario(&s, "paper_nodes_any_client_id", &[&node_configs()]);
    let reasons = rejected_reasons(&s);
    assert_eq!(
        reasons.iter().filter(|r| *r == "foreign_node").count(),
        6,
        "{reasons:?}"
    );
    let dir = s.stop();
    let store = read_store(&dir.path().join("data"));
    assert_eq!(store["rows"], 4, "{store}");
    assert_eq!(store["nodes"], serde_json::json!(["CN1", "CN2", "SN"]));
    assert_eq!(store["values"], serde_json::json!([20.5, 21.5, 22.5, 30.0]));
}

#[test]
fn with_passwords_a_node_is_the_verified_user_whatever_its_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let pw = make_passwords(dir.path(), &[("CN1", "one"), ("CN2", "two")]);
    let s = TestServer::with_config(&format!("password_file = {pw:?}\n"));
    scenario(
        &s,
        "paper_node_with_password",
        &[&node_configs(), "CN1", "one", "CN2", "two"],
    );
    assert_eq!(rejected_reasons(&s), ["foreign_node", "foreign_node"]);
}
