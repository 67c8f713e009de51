//! Alert rules and their notifications against real receivers: a Python HTTP server that
//! records webhooks (checking their HMAC signature with Python's own hmac) and can be made to
//! answer 503, and `mosquitto_sub` on the MQTT action's topic; retries while the receiver
//! fails, delivery after `kill -9` of Samos and a restart, each notification accepted once.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SENSOR: &str = "indoorTemperatureSensor";
const SECRET: &str = "hook-s3cret";
const ADMIN: &str = "admin-t0ken";

/// Starts `tests/{script} PORT DIR ARGS…` (a recording server) on a free port with a fresh
/// directory; returns once it accepts connections.
fn python_server(script: &str, args: &[&std::ffi::OsStr]) -> (Child, tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join(script),
        )
        .arg(port.to_string())
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{script} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, dir, port)
}

/// The recording webhook receiver, killed when dropped.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Receiver {
    fn start() -> Receiver {
        let (child, dir, port) = python_server("webhook_server.py", &[SECRET.as_ref()]);
        Receiver { child, dir, port }
    }

    /// Serving HTTPS with the server certificate of `certs` (from `make_certs`).
    fn start_tls(certs: &Path) -> Receiver {
        let (cert, key) = (certs.join("server.crt"), certs.join("server.key"));
        let (child, dir, port) = python_server(
            "webhook_server.py",
            &[SECRET.as_ref(), cert.as_os_str(), key.as_os_str()],
        );
        Receiver { child, dir, port }
    }

    fn fail(&self, on: bool) {
        let path = self.dir.path().join("fail");
        if on {
            std::fs::write(path, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `pred` holds for the recorded requests.
    fn wait(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.requests();
            if pred(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "{what}: {r:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16) -> String {
    format!(
        "[api]\nadmin_token = \"{ADMIN}\"\n\
         [alerts]\neval_interval_ms = 200\n\
         [[alerts.rule]]\nname = \"hot\"\nwhen = \"sensor = '{SENSOR}' AND value > 45\"\nseverity = \"critical\"\nactions = [\"ops\", \"bus\"]\n\
         [[alerts.rule]]\nname = \"silent\"\nwhen = \"node_id = 'CN2' AND silent_secs > 2\"\nactions = [\"ops\"]\n\
         [[alerts.webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\ntimeout_ms = 2000\n\
         [[alerts.mqtt]]\nname = \"bus\"\ntopic = \"alerts/{{rule}}/{{node_id}}/{{event}}\"\n"
    )
}

/// 200-answered requests for `event` of `rule`.
fn accepted<'a>(requests: &'a [Value], rule: &str, event: &str) -> Vec<&'a Value> {
    requests
        .iter()
        .filter(|r| r["status"] == 200 && r["body"]["rule"] == rule && r["event"] == event)
        .collect()
}

#[test]
fn webhooks_are_signed_retried_through_503_and_kill_9_and_accepted_once() {
    let receiver = Receiver::start();
    receiver.fail(true);
    let s = TestServer::with_config(&config(receiver.port));
    let mut bus = mosquitto_sub(s.port(), &["-t", "alerts/#", "-v", "-C", "1", "-W", "30"]);
    wait_subscriptions(&s, 1);

    // CN1 runs hot: the alert fires; the receiver answers 503, so the notification is retried.
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", [50.0], 10);
    let tries = receiver.wait("two attempts of the firing notification", |r| {
        r.iter()
            .filter(|r| r["event"] == "firing" && r["body"]["rule"] == "hot")
            .count()
            >= 2
    });
    assert!(tries.iter().all(|r| r["status"] == 503));
    assert!(s.metric("samos_alert_notifications_total{result=\"retried\"}") >= 1);
    // The MQTT action delivered through the broker at once.
    let mut line = String::new();
    bus.stdout
        .take()
        .unwrap()
        .read_to_string(&mut line)
        .unwrap();
    let _ = bus.wait();
    assert!(line.starts_with("alerts/hot/CN1/firing "), "{line}");
    let message: Value = serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
    assert_eq!(message["value"], 50.0);
    assert_eq!(message["severity"], "critical");

    // Samos is killed while the notification waits; the receiver recovers; the restart
    // delivers it, and does not raise the still-firing alert again.
    let dir = s.kill();
    receiver.fail(false);
    let s = TestServer::in_dir(dir, &config(receiver.port));
    let r = receiver.wait("the firing notification delivered after the restart", |r| {
        !accepted(r, "hot", "firing").is_empty()
    });
    let firing = accepted(&r, "hot", "firing");
    assert_eq!(firing.len(), 1, "{firing:#?}");
    let id = firing[0]["delivery"].as_str().unwrap();
    assert!(id.starts_with("hot/Karlovasi_IoT_network/CN1/indoorTemperatureSensor/"));
    assert!(id.ends_with("#firing#ops"), "{id}");
    assert_eq!(firing[0]["body"]["delivery_id"], id);

    // Back to normal: resolved, once. CN2 joins and stays silent: the silent rule fires.
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", [21.0], 20);
    let _cn2 = join_paper_node(&s, "CN2");
    receiver.wait("resolved and silent", |r| {
        !accepted(r, "hot", "resolved").is_empty() && !accepted(r, "silent", "firing").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let r = receiver.requests();
    assert_eq!(accepted(&r, "hot", "firing").len(), 1, "{r:#?}");
    assert_eq!(accepted(&r, "hot", "resolved").len(), 1, "{r:#?}");
    assert_eq!(accepted(&r, "silent", "firing").len(), 1, "{r:#?}");
    assert!(
        r.iter().all(|r| r["signature_ok"] == true),
        "every request signed: {r:#?}"
    );
    let resolved = accepted(&r, "hot", "resolved")[0];
    assert_eq!(resolved["body"]["alert_id"], firing[0]["body"]["alert_id"]);
    assert_eq!(resolved["body"]["value"], 21.0);

    // The dashboard's API shows each alert's state; an admin acknowledges the silent one,
    // which its actions hear; an unknown id is refused.
    let api = s.api.unwrap();
    let rule_alerts = || -> Vec<Value> {
        let (status, body) = http_request(api, "GET", "/api/v1/alerts", Some(ADMIN), None);
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["rules"].as_array().unwrap().clone()
    };
    let state = |alerts: &[Value], rule: &str| {
        alerts
            .iter()
            .find(|a| a["rule"] == rule)
            .map(|a| a["state"].as_str().unwrap().to_owned())
    };
    let alerts = rule_alerts();
    assert_eq!(
        state(&alerts, "hot").as_deref(),
        Some("resolved"),
        "{alerts:#?}"
    );
    assert_eq!(
        state(&alerts, "silent").as_deref(),
        Some("firing"),
        "{alerts:#?}"
    );
    let silent = alerts.iter().find(|a| a["rule"] == "silent").unwrap();
    let ack = serde_json::json!({ "id": silent["id"] }).to_string();
    let (status, body) = http_request(api, "POST", "/api/v1/alerts/ack", Some(ADMIN), Some(&ack));
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_request(
        api,
        "POST",
        "/api/v1/alerts/ack",
        Some(ADMIN),
        Some(r#"{"id": "silent/nowhere"}"#),
    );
    assert_eq!(status, 404);
    receiver.wait("the acknowledgement notified", |r| {
        !accepted(r, "silent", "acknowledged").is_empty()
    });
    let alerts = rule_alerts();
    assert_eq!(
        state(&alerts, "silent").as_deref(),
        Some("acknowledged"),
        "{alerts:#?}"
    );
    assert!(
        alerts.iter().any(|a| a["acknowledged_by"].is_string()),
        "{alerts:#?}"
    );

    // The alert's life is in the events table.
    let events = samos_sql(
        &s.data_dir(),
        &[],
        &[],
        "SELECT kind, count(*) AS n FROM events WHERE kind LIKE 'alert_%' GROUP BY kind ORDER BY kind",
    );
    assert!(events.contains("alert_firing,2"), "{events}");
    assert!(events.contains("alert_resolved,1"), "{events}");
    assert!(events.contains("alert_acknowledged,1"), "{events}");
    assert!(s.metric("samos_alert_notifications_total{result=\"delivered\"}") >= 3);
}

#[test]
fn a_webhook_reaches_an_https_receiver_that_trusts_a_private_ca() {
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path(), "unused");
    let receiver = Receiver::start_tls(&certs);
    let toml = format!(
        "[alerts]\neval_interval_ms = 200\n\
         [[alerts.rule]]\nname = \"hot\"\nwhen = \"value > 45\"\nactions = [\"ops\"]\n\
         [[alerts.webhook]]\nname = \"ops\"\nurl = \"https://localhost:{}/hook\"\n\
         secret = \"{SECRET}\"\nca_file = \"{}\"\n",
        receiver.port,
        certs.join("ca.crt").display()
    );
    let s = TestServer::with_config(&toml);
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", [50.0], 10);
    let r = receiver.wait("the firing notification over HTTPS", |r| {
        !accepted(r, "hot", "firing").is_empty()
    });
    assert_eq!(accepted(&r, "hot", "firing").len(), 1, "{r:#?}");
    assert!(r.iter().all(|r| r["signature_ok"] == true), "{r:#?}");
    assert_eq!(
        s.metric("samos_alert_notifications_total{result=\"retried\"}"),
        0,
        "the receiver's certificate was trusted at once: {}",
        s.log()
    );
}

#[test]
fn a_bad_rule_or_an_unknown_action_stops_the_start_with_its_name() {
    for (toml, needle) in [
        (
            "[[alerts.rule]]\nname = \"typo\"\nwhen = \"valu > 3\"\n",
            "typo",
        ),
        (
            "[[alerts.rule]]\nname = \"hot\"\nwhen = \"value > 3\"\nactions = [\"nowhere\"]\n",
            "nowhere",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("samos.toml");
        std::fs::write(
            &config,
            format!("data_dir = \"{}/data\"\n{toml}", dir.path().display()),
        )
        .unwrap();
        let out = run(
            Command::new(samos_bin())
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--api-listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "127.0.0.1:0",
                    "--config",
                ])
                .arg(&config),
            Duration::from_secs(30),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }
}

/// The recording SMTP server, killed when dropped.
struct MailServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl MailServer {
    /// `tls`: `starttls` (required) or `implicit` (SMTPS).
    fn start(certs: &Path, tls: &str) -> MailServer {
        let (child, dir, port) = python_server(
            "smtp_server.py",
            &[
                certs.join("server.crt").as_os_str(),
                certs.join("server.key").as_os_str(),
                "alerts".as_ref(),
                "mail-pw".as_ref(),
                tls.as_ref(),
            ],
        );
        MailServer { child, dir, port }
    }

    fn mail(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("mail.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_alert_is_mailed_over_starttls_with_auth() {
    an_alert_is_mailed("starttls");
}

#[test]
fn an_alert_is_mailed_over_implicit_tls_with_auth() {
    an_alert_is_mailed("implicit");
}

fn an_alert_is_mailed(tls: &str) {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = make_certs(certs_dir.path(), "unused");
    let smtp = MailServer::start(&certs, tls);
    let s = TestServer::with_config(&format!(
        "[api]\nadmin_token = \"{ADMIN}\"\n\
         [alerts]\neval_interval_ms = 200\n\
         [[alerts.rule]]\nname = \"hot\"\nwhen = \"value > 45\"\nseverity = \"critical\"\nactions = [\"mail\"]\n\
         [[alerts.email]]\nname = \"mail\"\nserver = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\nca_file = {:?}\n\
         username = \"alerts\"\npassword = \"mail-pw\"\nfrom = \"Samos <samos@example.org>\"\nto = [\"ops@example.org\"]\n",
        smtp.port,
        certs.join("ca.crt").display().to_string()
    ));
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", [52.5], 10);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mail = loop {
        let m = smtp.mail();
        if !m.is_empty() {
            break m;
        }
        assert!(Instant::now() < deadline, "no mail: {}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(mail.len(), 1, "{mail:#?}");
    let m = &mail[0];
    assert_eq!(m["tls"], true, "{tls}");
    assert_eq!(m["authenticated"], true, "AUTH");
    assert_eq!(m["user"], "alerts", "AUTH");
    assert_eq!(m["to"][0], "ops@example.org");
    let data = m["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [samos] FIRING critical: hot indoorTemperatureSensor on CN1"),
        "{data}"
    );
    assert!(data.contains("value:     52.5"), "{data}");
    assert!(
        data.contains("hot/Karlovasi_IoT_network/CN1/indoorTemperatureSensor/"),
        "{data}"
    );
    assert!(data.contains("@samos.alerts>"), "{data}");
}

/// A sine of period 50 around 35 °C with a little deterministic noise; readings 1,500 to 1,529
/// are a square wave instead: the planted discord.
fn planted(i: usize) -> f64 {
    if (1_500..1_530).contains(&i) {
        return if (i / 5).is_multiple_of(2) {
            45.0
        } else {
            25.0
        };
    }
    let noise = ((i * 7919) % 101) as f64 / 101.0 - 0.5;
    35.0 + (i as f64 * std::f64::consts::TAU / 50.0).sin() * 10.0 + noise * 0.2
}

#[test]
fn a_planted_discord_streamed_through_mqtt_raises_exactly_one_alert() {
    let receiver = Receiver::start();
    let config = format!(
        "[alerts]\neval_interval_ms = 200\ndiscord_actions = [\"ops\"]\n\
         [[alerts.webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"{SECRET}\"\n\
         [[stream_profile]]\nsensor = \"{SENSOR}\"\nwindow = 20\nhistory = 400\nthreshold = 0.8\n",
        receiver.port
    );
    let s = TestServer::with_config(&config);
    let mut alerts = mosquitto_sub(
        s.port(),
        &["-t", "Karlovasi_IoT_network/alerts/CN1", "-W", "30"],
    );
    wait_subscriptions(&s, 1);
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", (0..1_000).map(planted), 1);
    // Ordinary readings, long after warm-up: nothing.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.metric("samos_discords_total "), 0);
    publish_temperatures(&mut cn1, "CN1", (1_000..2_000).map(planted), 1_001);

    let r = receiver.wait("the discord fired and resolved", |r| {
        !accepted(r, "discord", "resolved").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let r = [r, receiver.requests()].concat();
    let firing: std::collections::BTreeSet<_> = accepted(&r, "discord", "firing")
        .iter()
        .map(|f| f["delivery"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(firing.len(), 1, "{r:#?}");
    assert!(
        firing
            .first()
            .unwrap()
            .contains("/CN1/indoorTemperatureSensor/"),
        "{firing:?}"
    );
    assert_eq!(s.metric("samos_discords_total "), 1);

    // One message on the node's alert topic, with where the discord lies.
    let _ = Command::new("kill").arg(alerts.id().to_string()).status();
    let mut text = String::new();
    alerts
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = alerts.wait();
    // (The paper's severity cross-check speaks on the same topic, without a kind.)
    let messages: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|m| m["kind"] == "discord")
        .collect();
    assert_eq!(messages.len(), 1, "{text}");
    assert!(messages[0]["score"].as_f64().unwrap() >= 0.8, "{text}");

    // The event, and the live profile as a table.
    let data = s.data_dir();
    let events = samos_sql(
        &data,
        &[],
        &[],
        "SELECT count(*) AS n FROM events WHERE kind = 'discord'",
    );
    assert_eq!(events.lines().nth(1), Some("1"), "{events}");
    let live = samos_sql(
        &data,
        &[],
        &[],
        "SELECT node_id, sensor, windows, discords, in_discord, max_score >= 0.8 AS high \
         FROM stream_profiles",
    );
    assert_eq!(
        live.lines().nth(1),
        Some("CN1,indoorTemperatureSensor,1981,1,false,true"),
        "{live}"
    );
}

#[test]
fn a_new_list_of_sensors_starts_the_profiles_afresh() {
    const NET: &str = "Karlovasi_IoT_network";
    const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
    let s = TestServer::with_config(
        "[[stream_profile]]\nsensor = \"*\"\nwindow = 8\nhistory = 50\nwarmup = 1000000\n",
    );
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", (0..40).map(planted), 1);
    // CN1 joins again declaring another sensor where the temperature was: what was kept for
    // sensor 0 must not carry over to it.
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/node-configs/cn1_config.xml"),
    )
    .unwrap()
    .replace("indoorTemperatureSensor", "outdoorTemperatureSensor");
    let control = format!("{NET}/CN1/{LOC}/control");
    cn1.publish_qos1(
        &control,
        format!("PUB_CONFIG_FILE, {config}").as_bytes(),
        100,
    );
    while !cn1
        .next_publish(Duration::from_secs(10))
        .expect("join reply")
        .1
        .starts_with(b"SET_CN_FUNCTIONAL_MODE, active")
    {}
    let topic = format!("{NET}/CN1/{LOC}/outdoorTemperatureSensor");
    for i in 0..20u16 {
        let payload = format!("float,0-70,{}", planted(usize::from(i)));
        assert_eq!(cn1.publish_qos1(&topic, payload.as_bytes(), 200 + i), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = samos_sql(
            &s.data_dir(),
            &[],
            &[],
            "SELECT sensor, windows FROM stream_profiles ORDER BY sensor",
        );
        if live.lines().skip(1).collect::<Vec<_>>() == ["outdoorTemperatureSensor,13"] {
            break;
        }
        assert!(Instant::now() < deadline, "{live}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_graceful_restart_keeps_the_profiles_and_a_discord_right_after_it_is_raised() {
    // warmup 200 windows: without the saved values, the discord right after the restart would
    // fall in a new warm-up and go unseen.
    let config = "[[stream_profile]]\nsensor = \"indoorTemperatureSensor\"\nwindow = 20\n\
                  history = 100\nthreshold = 0.8\nwarmup = 200\n";
    let s = TestServer::with_config(config);
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", (0..300).map(planted), 1);
    drop(cn1);
    let dir = s.stop();
    let s = TestServer::in_dir(dir, config);
    let windows = || {
        samos_sql(
            &s.data_dir(),
            &[],
            &[],
            "SELECT windows, discords FROM stream_profiles",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while windows().lines().nth(1) != Some("281,0") {
        assert!(Instant::now() < deadline, "{}", windows());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The square wave `planted` puts at 1,500, sent right after the restart.
    let mut cn1 = join_paper_node(&s, "CN1");
    publish_temperatures(&mut cn1, "CN1", (1_500..1_560).map(planted), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric("samos_discords_total ") != 1 {
        assert!(Instant::now() < deadline, "no discord after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
}
