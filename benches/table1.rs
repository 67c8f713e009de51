//! The paper's Table I, reproduced and put beside Samos: "stored messages/sec" at QoS 2, small
//! messages, TLS with passwords, each client sending its next message only once the previous
//! QoS 2 exchange completed. Then large pipelined loads at QoS 1 and 2 over TCP and TLS, and
//! Mosquitto (when installed) under the same loads, forwarding to one counting subscriber:
//! delivered, not stored.
//!
//! Both servers run side by side for the whole bench and are loaded in turn; each load starts
//! once neither is still busy with the previous one (at most 1 % of a core for a second).
//!
//! Stored messages/s = readings durable in Samos's WAL (counted by `samos_readings_committed_total`)
//! ÷ time from the first publish to the poll that saw the last of them. Publishers join as sensor
//! nodes first (XSD validation), so the whole admission, validation and durable path is measured.
//!
//! `cargo bench --bench table1` (`-- --quick`: smaller pipelined loads, the whole run in a few
//! minutes). Writes `target/samos-bench/report.md`, `report.json` and `table1.svg`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{Mosquitto, Samos, certs, wait_until_idle};
use mqttbytes::QoS;
use samos_tools::loadgen::{self, ClientTls, LoadReport, LoadSpec, NodeMode};

/// The paper's Table I: clients, messages per client, stored messages/s.
const PAPER: [(usize, usize, f64); 5] = [
    (1, 1_000, 70.0),
    (1, 2_000, 65.0),
    (1, 10_000, 44.0),
    (10, 1_000, 34.0),
    (500, 1, 71.0),
];
/// Each Table I row must reach this multiple of the paper's figure.
const TABLE_TARGET: f64 = 100.0;
const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
/// Plain topics as long as the sensor topics, for Mosquitto (which answers no join).
const PLAIN_PREFIX: &str =
    "Karlovasi_IoT_network/SIM/Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";

struct Bench {
    rt: tokio::runtime::Runtime,
    tls: ClientTls,
    samos: Samos,
    mosquitto: Option<Mosquitto>,
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Tls,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

impl Bench {
    fn spec(&self, addr: SocketAddr, t: Transport, clients: usize, per: usize) -> LoadSpec {
        LoadSpec {
            tls: (t == Transport::Tls).then(|| self.tls.clone()),
            credentials: Some((USER.into(), PASSWORD.into())),
            publishers: clients,
            messages_per_publisher: per,
            qos: QoS::ExactlyOnce,
            inflight: 1,
            payload_bytes: 16,
            idle_timeout: Duration::from_secs(20),
            deadline: Duration::from_secs(600),
            ..LoadSpec::new(addr)
        }
    }

    /// Waits until neither server is still busy with the previous load (see
    /// [`common::wait_until_idle`]), so that each load is measured on a quiet machine.
    fn quiet(&self) {
        let mut pids = vec![self.samos.child.id()];
        pids.extend(self.mosquitto.as_ref().map(Mosquitto::pid));
        let waited = wait_until_idle(&pids);
        if waited > 2.0 {
            eprintln!("waited {waited:.1} s for the servers to finish the previous load");
        }
    }

    /// Samos storing: publishers join as nodes; counts what is durable.
    fn samos(&self, t: Transport, clients: usize, per: usize, qos: QoS, inflight: usize) -> Run {
        self.quiet();
        let addr = match t {
            Transport::Tcp => self.samos.addr("mqtt"),
            Transport::Tls => self.samos.addr("mqtts"),
        };
        let spec = LoadSpec {
            qos,
            inflight,
            as_nodes: Some(NodeMode {
                network: "Karlovasi_IoT_network".into(),
                server_id: "SN".into(),
                wave: false,
            }),
            stored_metrics: Some(self.samos.addr("metrics")),
            ..self.spec(addr, t, clients, per)
        };
        let run = Run::new(self.rt.block_on(loadgen::run(spec)));
        eprintln!(
            "Samos     {} {clients:>4} × {per:<6} QoS {} in flight {inflight:<3} stored {} at {:.0}/s",
            t.name(),
            qos as u8,
            run.report.as_ref().map_or(0, |r| r.stored.unwrap_or(0)),
            run.rate
        );
        run
    }

    /// Mosquitto forwarding to one counting subscriber: what it delivers.
    fn mosquitto(
        &self,
        t: Transport,
        clients: usize,
        per: usize,
        qos: QoS,
        inflight: usize,
    ) -> Option<Run> {
        let m = self.mosquitto.as_ref()?;
        self.quiet();
        let addr = match t {
            Transport::Tcp => m.tcp,
            Transport::Tls => m.tls,
        };
        let spec = LoadSpec {
            qos,
            inflight,
            topic_prefix: PLAIN_PREFIX.into(),
            subscriber: true,
            idle_timeout: Duration::from_secs(10),
            ..self.spec(addr, t, clients, per)
        };
        let report = self.rt.block_on(loadgen::run(spec));
        let run = Run {
            rate: report.as_ref().map_or(0.0, LoadReport::received_per_second),
            report: report.map_err(|e| e.to_string()),
        };
        eprintln!(
            "Mosquitto {} {clients:>4} × {per:<6} QoS {} in flight {inflight:<3} delivered {} at {:.0}/s",
            t.name(),
            qos as u8,
            run.report.as_ref().map_or(0, |r| r.received),
            run.rate
        );
        Some(run)
    }
}

struct Run {
    report: Result<LoadReport, String>,
    /// Stored/s (Samos) or delivered/s (Mosquitto).
    rate: f64,
}

impl Run {
    fn new(report: Result<LoadReport, loadgen::LoadError>) -> Run {
        Run {
            rate: report
                .as_ref()
                .ok()
                .and_then(LoadReport::stored_per_second)
                .unwrap_or(0.0),
            report: report.map_err(|e| e.to_string()),
        }
    }

    /// Every message stored (Samos) or delivered (Mosquitto)?
    fn complete(&self, expected: usize) -> bool {
        self.report.as_ref().is_ok_and(|r| {
            r.stored.unwrap_or(r.received) >= expected as u64 && r.acknowledged >= expected as u64
        })
    }

    fn json(&self) -> serde_json::Value {
        match &self.report {
            Ok(r) => serde_json::json!({"rate": self.rate, "report": r}),
            Err(e) => serde_json::json!({"rate": 0, "error": e}),
        }
    }
}

fn start_samos(dir: &Path, certs: &Path, passwords: &Path) -> Samos {
    // Every bench client logs in as the same user; its node id is its client id.
    let top = format!(
        "password_file = \"{}\"\nallow_anonymous = false\n[protocol]\n\
         network = \"Karlovasi_IoT_network\"\nnode_identity = \"client_id\"",
        passwords.display()
    );
    Samos::with_tcp_and_tls(dir, certs, &top)
}

/// One password file for both servers, hashed with Mosquitto's own default of 101 PBKDF2
/// iterations: Mosquitto verifies every CONNECT afresh (Samos caches a verified password), and
/// at Samos's default of 210,000 its thousand-client runs would measure hashing.
fn password_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("passwords");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_samos"))
        .arg("passwd")
        .arg(&path)
        .args([USER, "--password", PASSWORD, "--iterations", "101"])
        .status()
        .unwrap();
    assert!(ok.success(), "samos passwd");
    path
}

fn fmt_rate(run: Option<&Run>) -> String {
    match run.map(|r| &r.report) {
        Some(Ok(_)) => format!("{:.0}", run.map_or(0.0, |r| r.rate)),
        Some(Err(e)) => format!("failed: {e}"),
        None => "–".into(),
    }
}

/// A log-scale bar chart of Table I: the paper, Samos stored, Mosquitto delivered.
fn chart(rows: &[(String, f64, f64, Option<f64>)]) -> String {
    let (w, h, left, top, bottom) = (760.0, 380.0, 70.0, 40.0, 60.0);
    let plot_h = h - top - bottom;
    let max = rows
        .iter()
        .flat_map(|(_, p, s, m)| [*p, *s, m.unwrap_or(0.0)])
        .fold(10.0f64, f64::max);
    let decades = max.log10().ceil();
    let y = |v: f64| top + plot_h * (1.0 - (v.max(1.0).log10() / decades));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<text x="{left}" y="20" font-size="14">Table I, QoS 2 over TLS with passwords: messages/s (log scale)</text>
"#
    );
    for d in 0..=decades as i32 {
        let v = 10f64.powi(d);
        let yy = y(v);
        svg.push_str(&format!(
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v}</text>
"##,
            w - 10.0,
            left - 6.0,
            yy + 4.0
        ));
    }
    let group = (w - left - 10.0) / rows.len() as f64;
    let bar = group / 4.0;
    for (i, (label, paper, samos, mosq)) in rows.iter().enumerate() {
        let x0 = left + group * i as f64 + bar * 0.5;
        for (j, (v, color)) in [
            (Some(*paper), "#999"),
            (Some(*samos), "#1f77b4"),
            (*mosq, "#ff7f0e"),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(v) = v else { continue };
            let (x, yy) = (x0 + bar * j as f64, y(v));
            svg.push_str(&format!(
                r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>
"#,
                bar * 0.9,
                (top + plot_h - yy).max(0.0)
            ));
        }
        svg.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>
"#,
            x0 + bar * 1.5,
            h - bottom + 18.0
        ));
    }
    let legend = [
        ("#999", "paper (stored)"),
        ("#1f77b4", "Samos (stored)"),
        ("#ff7f0e", "Mosquitto (delivered, not stored)"),
    ];
    for (i, (color, text)) in legend.iter().enumerate() {
        let x = left + 200.0 * i as f64;
        svg.push_str(&format!(
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{text}</text>
"#,
            h - 22.0,
            x + 14.0,
            h - 13.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var_os("SAMOS_BENCH_QUICK").is_some();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let passwords = password_file(dir.path());
    let bench = Bench {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        tls: ClientTls::from_ca(&certs.join("ca.crt"), "localhost").unwrap(),
        samos: start_samos(dir.path(), &certs, &passwords),
        mosquitto: Mosquitto::start(dir.path(), &certs, Some(&passwords)),
    };
    if bench.mosquitto.is_none() {
        eprintln!("mosquitto not installed: Samos only (apt-get install mosquitto)");
    }
    let mut md = String::new();
    let mut json = serde_json::Map::new();
    let mut misses = Vec::new();

    // Table I: paper mode, QoS 2, TLS with passwords.
    md.push_str(
        "### Table I — QoS 2, TLS with passwords, one exchange at a time per client\n\n\
         | clients × messages | paper: stored/s | Samos: stored/s | Samos ÷ paper | target | Mosquitto: delivered/s (not stored) | Samos ÷ Mosquitto |\n\
         |---|---:|---:|---:|---|---:|---:|\n",
    );
    let mut chart_rows = Vec::new();
    let mut table = Vec::new();
    for (clients, per, paper) in PAPER {
        let samos = bench.samos(Transport::Tls, clients, per, QoS::ExactlyOnce, 1);
        let mosq = bench.mosquitto(Transport::Tls, clients, per, QoS::ExactlyOnce, 1);
        let ratio = samos.rate / paper;
        let complete = samos.complete(clients * per);
        let met = complete && ratio >= TABLE_TARGET;
        if !met {
            misses.push(format!(
                "Table I {clients} × {per}: {:.0}/s is {ratio:.0}× the paper, target {TABLE_TARGET}× ({:.0}/s){}",
                samos.rate,
                paper * TABLE_TARGET,
                if complete { "" } else { "; not every reading was stored" }
            ));
        }
        let vs_mosq = mosq
            .as_ref()
            .filter(|m| m.rate > 0.0)
            .map_or("–".into(), |m| format!("{:.1}×", samos.rate / m.rate));
        md.push_str(&format!(
            "| {clients} × {per} | {paper} | {} | {ratio:.0}× | ≥ {TABLE_TARGET}×: {} | {} | {vs_mosq} |\n",
            fmt_rate(Some(&samos)),
            if met {
                "met".to_string()
            } else {
                format!("**missed by {:.1}×**", TABLE_TARGET / ratio.max(1e-9))
            },
            fmt_rate(mosq.as_ref()),
        ));
        chart_rows.push((
            format!("{clients} × {per}"),
            paper,
            samos.rate,
            mosq.as_ref().map(|m| m.rate),
        ));
        table.push(serde_json::json!({
            "clients": clients, "messages_per_client": per, "paper": paper,
            "samos_stored": samos.json(), "ratio": ratio, "target_met": met,
            "mosquitto_delivered": mosq.as_ref().map(Run::json),
        }));
    }
    json.insert("table1".into(), table.into());

    // Pipelined: Samos stores, Mosquitto delivers, the same load.
    let loads: [(usize, usize); 2] = if quick {
        [(100, 2_000), (1_000, 20)]
    } else {
        [(100, 10_000), (1_000, 100)]
    };
    let inflight = 10;
    md.push_str(&format!(
        "\n### Pipelined — {inflight} in flight per client, passwords\n\n\
         | clients × messages | transport | QoS | Samos: stored/s | target | Mosquitto: delivered/s (not stored) | Samos ÷ Mosquitto |\n\
         |---|---|---|---:|---|---:|---:|\n"
    ));
    let mut pipelined = Vec::new();
    for (clients, per) in loads {
        for t in [Transport::Tcp, Transport::Tls] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                // QoS 0 is not acknowledged, so not measured as stored; Mosquitto is shown.
                let samos =
                    (qos != QoS::AtMostOnce).then(|| bench.samos(t, clients, per, qos, inflight));
                let mosq = bench.mosquitto(t, clients, per, qos, inflight);
                let target = match (qos, t) {
                    (QoS::ExactlyOnce, Transport::Tcp) => Some(150_000.0),
                    (QoS::ExactlyOnce, Transport::Tls) => Some(100_000.0),
                    _ => None,
                };
                let mut verdict = "–".to_string();
                if let (Some(s), Some(target)) = (&samos, target) {
                    let met = s.complete(clients * per) && s.rate >= target;
                    verdict = if met {
                        format!("≥ {target:.0}: met")
                    } else {
                        misses.push(format!(
                            "pipelined {clients} × {per} QoS 2 {}: {:.0}/s, target {target:.0}",
                            t.name(),
                            s.rate
                        ));
                        format!("≥ {target:.0}: **missed by {:.0}**", target - s.rate)
                    };
                }
                if let (Some(s), Some(m), QoS::ExactlyOnce) = (&samos, &mosq, qos)
                    && m.rate > 0.0
                    && s.rate < 5.0 * m.rate
                {
                    misses.push(format!(
                        "pipelined {clients} × {per} QoS 2 {}: Samos stored {:.0}/s is {:.1}× Mosquitto delivered {:.0}/s, target 5×",
                        t.name(),
                        s.rate,
                        s.rate / m.rate,
                        m.rate
                    ));
                }
                let vs_mosq = match (&samos, &mosq) {
                    (Some(s), Some(m)) if m.rate > 0.0 => format!("{:.1}×", s.rate / m.rate),
                    _ => "–".into(),
                };
                md.push_str(&format!(
                    "| {clients} × {per} | {} | {} | {} | {verdict} | {} | {vs_mosq} |\n",
                    t.name(),
                    qos as u8,
                    samos
                        .as_ref()
                        .map_or("not acknowledged: –".into(), |s| fmt_rate(Some(s))),
                    fmt_rate(mosq.as_ref()),
                ));
                pipelined.push(serde_json::json!({
                    "clients": clients, "messages_per_client": per, "transport": t.name(),
                    "qos": qos as u8, "inflight": inflight,
                    "samos_stored": samos.as_ref().map(Run::json),
                    "mosquitto_delivered": mosq.as_ref().map(Run::json),
                }));
            }
        }
    }
    json.insert("pipelined".into(), pipelined.into());

    md.push_str(
        "\nStored/s: readings durable in Samos's WAL (fsync'd; counted by \
         `samos_readings_committed_total`) ÷ time from the first publish to the poll (every \
         millisecond) that saw the last of them; publishers joined as sensor nodes first. \
         Delivered/s (Mosquitto): messages its one subscriber received ÷ time from the first \
         publish to the last receipt; Mosquitto runs with persistence off and stores nothing.\n",
    );
    if misses.is_empty() {
        md.push_str("\nEvery target met.\n");
    } else {
        md.push_str("\nTargets missed:\n\n");
        for m in &misses {
            md.push_str(&format!("- {m}\n"));
        }
    }
    json.insert("missed".into(), misses.into());
    json.insert("quick".into(), quick.into());
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("report.md"), &md).unwrap();
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(json)).unwrap(),
    )
    .unwrap();
    std::fs::write(out.join("table1.svg"), chart(&chart_rows)).unwrap();
    eprintln!(
        "written: {}, report.json, table1.svg",
        out.join("report.md").display()
    );
}
