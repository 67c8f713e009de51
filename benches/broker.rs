//! Broker-only throughput: many publishers, one counting subscriber, QoS 0/1/2, TCP and TLS,
//! Samos side by side with Mosquitto (and rumqttd when installed) under the same load.
//!
//! `cargo bench --bench broker` (add `-- --quick` for a short run). Each broker runs as its own
//! process on loopback; the load generator runs in this process. Rates count what the
//! subscriber actually received. Writes `target/samos-bench/broker.md` and `broker.json`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{Mosquitto, Rumqttd, Samos, certs, wait_until_idle};
use mqttbytes::QoS;
use samos_tools::loadgen::{self, ClientTls, LoadReport, LoadSpec};

struct Broker {
    name: &'static str,
    tcp: SocketAddr,
    tls: Option<SocketAddr>,
    /// The server's process, watched for idleness between loads.
    pid: u32,
    /// Samos stops when this is dropped.
    _samos: Option<Samos>,
    _mosquitto: Option<Mosquitto>,
    _rumqttd: Option<Rumqttd>,
}

fn start_samos(dir: &Path, certs: &Path) -> Broker {
    let config = dir.join("samos.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{d}/samos-data"
[mqtt]
max_inflight_messages = 1000
max_queued_messages = 1000000
sys_interval_secs = 0
[[listener]]
bind = "127.0.0.1:0"
[[listener]]
bind = "127.0.0.1:0"
[listener.tls]
cert = "{c}/server.crt"
key = "{c}/server.key"
[metrics]
enabled = false
"#,
            d = dir.display(),
            c = certs.display()
        ),
    )
    .unwrap();
    let samos = Samos::start(dir, &["--config", config.to_str().unwrap()]);
    Broker {
        name: "Samos",
        tcp: samos.addr("mqtt"),
        tls: Some(samos.addr("mqtts")),
        pid: samos.child.id(),
        _samos: Some(samos),
        _mosquitto: None,
        _rumqttd: None,
    }
}

fn start_mosquitto(dir: &Path, certs: &Path) -> Option<Broker> {
    let m = Mosquitto::start(dir, certs, None)?;
    Some(Broker {
        name: "Mosquitto",
        tcp: m.tcp,
        tls: Some(m.tls),
        pid: m.pid(),
        _samos: None,
        _mosquitto: Some(m),
        _rumqttd: None,
    })
}

fn start_rumqttd(dir: &Path) -> Option<Broker> {
    let r = Rumqttd::start(dir, 10_010)?;
    Some(Broker {
        name: "rumqttd",
        tcp: r.tcp,
        tls: None,
        pid: r.child.id(),
        _samos: None,
        _mosquitto: None,
        _rumqttd: Some(r),
    })
}

struct Row {
    broker: &'static str,
    transport: &'static str,
    qos: u8,
    report: Result<LoadReport, String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var_os("SAMOS_BENCH_QUICK").is_some();
    let (mut publishers, mut per) = if quick { (20, 1_000) } else { (100, 5_000) };
    // Optional: --broker NAME, --qos N, --transport tcp|tls, --publishers N, --messages N.
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only_broker = arg("--broker");
    let only_qos = arg("--qos");
    let only_transport = arg("--transport");
    if let Some(n) = arg("--publishers") {
        publishers = n.parse().expect("--publishers N");
    }
    if let Some(n) = arg("--messages") {
        per = n.parse().expect("--messages N (per publisher)");
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let tls = ClientTls::from_ca(&certs.join("ca.crt"), "localhost").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut brokers = vec![start_samos(dir.path(), &certs)];
    match start_mosquitto(dir.path(), &certs) {
        Some(m) => brokers.push(m),
        None => eprintln!("mosquitto not installed: Samos only (apt-get install mosquitto)"),
    }
    match start_rumqttd(dir.path()) {
        Some(r) => brokers.push(r),
        None => eprintln!("rumqttd not installed: skipped (cargo install rumqttd)"),
    }

    let pids: Vec<u32> = brokers.iter().map(|b| b.pid).collect();
    let mut rows = Vec::new();
    for transport in ["tcp", "tls"] {
        if only_transport.as_ref().is_some_and(|t| t != transport) {
            continue;
        }
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            if only_qos
                .as_ref()
                .is_some_and(|q| *q != (qos as u8).to_string())
            {
                continue;
            }
            for b in &brokers {
                if only_broker
                    .as_ref()
                    .is_some_and(|n| !n.eq_ignore_ascii_case(b.name))
                {
                    continue;
                }
                let addr = match transport {
                    "tcp" => b.tcp,
                    _ => match b.tls {
                        Some(a) => a,
                        None => continue,
                    },
                };
                let spec = LoadSpec {
                    addr,
                    tls: (transport == "tls").then(|| tls.clone()),
                    credentials: None,
                    publishers,
                    messages_per_publisher: per,
                    qos,
                    inflight: 10,
                    payload_bytes: 64,
                    topic_prefix: format!("bench/{transport}/{}", qos as u8),
                    subscriber: true,
                    idle_timeout: Duration::from_secs(10),
                    deadline: Duration::from_secs(60),
                    as_nodes: None,
                    stored_metrics: None,
                    progress: false,
                };
                // All brokers run side by side: start on a quiet machine.
                wait_until_idle(&pids);
                let report = rt.block_on(loadgen::run(spec)).map_err(|e| e.to_string());
                match &report {
                    Ok(r) => eprintln!(
                        "{:10} {transport} qos{} received {}/{} at {:.0}/s",
                        b.name,
                        qos as u8,
                        r.received,
                        r.published,
                        r.received_per_second()
                    ),
                    Err(e) => eprintln!("{:10} {transport} qos{}: {e}", b.name, qos as u8),
                }
                rows.push(Row {
                    broker: b.name,
                    transport,
                    qos: qos as u8,
                    report,
                });
            }
        }
    }

    let mut md = format!(
        "Broker-only throughput: {publishers} publishers × {per} messages (64-byte payload, 10 in flight each) → 1 subscriber on `bench/#`.\n\
         Received/s = messages the subscriber received ÷ time from the first publish to the last receipt; \
         missing = published but not received within 60 s. Every broker allows 1000 messages in flight per client.\n\n\
         | transport | QoS | broker | published | received | missing | received/s | vs Mosquitto | ack p50 ms | ack p99 ms |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let mut json = Vec::new();
    for r in &rows {
        let mosq = rows
            .iter()
            .find(|m| m.broker == "Mosquitto" && m.transport == r.transport && m.qos == r.qos)
            .and_then(|m| m.report.as_ref().ok())
            .map(LoadReport::received_per_second);
        match &r.report {
            Ok(rep) => {
                let ratio = mosq.map_or("–".to_string(), |m| {
                    format!("{:.2}×", rep.received_per_second() / m.max(1e-9))
                });
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} |\n",
                    r.transport,
                    r.qos,
                    r.broker,
                    rep.published,
                    rep.received,
                    rep.published.saturating_sub(rep.received),
                    rep.received_per_second(),
                    ratio,
                    rep.ack_latency_ms[0],
                    rep.ack_latency_ms[2],
                ));
                json.push(serde_json::json!({
                    "broker": r.broker, "transport": r.transport, "qos": r.qos,
                    "report": rep, "received_per_second": rep.received_per_second(),
                }));
            }
            Err(e) => md.push_str(&format!(
                "| {} | {} | {} | – | – | – | failed: {e} | | | |\n",
                r.transport, r.qos, r.broker
            )),
        }
    }
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("broker.md"), &md).unwrap();
    std::fs::write(
        out.join("broker.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    eprintln!("written to {}", out.join("broker.md").display());
}
