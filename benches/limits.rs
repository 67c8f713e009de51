//! Ingest at the machine's limits: the three loads of a sensor network furthest from what the
//! machine allows, each against a peer measured in the same run (BENCHMARKS.md, "Ingest at
//! the machine's limits").
//!
//! 1. **Many nodes, little pipelining**: 1,000 nodes × 100 QoS 2 readings, 10 in flight each.
//!    Samos's durable readings/s against rumqttd's delivered/s (to one subscriber; rumqttd
//!    forwards and stores nothing), alternating, `LIMITS_PAIRS` pairs (default 3), medians.
//! 2. **Paper mode**: one node, one QoS 2 exchange at a time, 10,000 readings. The floor is one
//!    `fdatasync` (the median of 2,000 appends of a small record into an already written file
//!    on the data directory's file system, as the WAL writes into its runway) plus rumqttd's
//!    time per exchange in the same mode; the target is 0.8 × 1 / floor.
//! 3. **Idle nodes**: `LIMITS_IDLE` connections (default 100,000, or as many as the descriptor
//!    limit leaves: the bench raises its soft limit to the hard one, and each side holds one
//!    descriptor per connection), half over TLS (rumqttd: all TCP, its TLS listener is not
//!    configured here), held idle for 10 s to Samos, Mosquitto and rumqttd in turn: resident
//!    memory per connection and CPU while idle; then all close and reconnect at once: seconds
//!    until every one is admitted.
//!
//! rumqttd is optional (`cargo install rumqttd`); without it the ratios that need it are not
//! computed and say so. `cargo bench --bench limits` (`-- --quick`: one pair, 10,000 idle
//! connections; `LIMITS_ONLY=many,paper,idle`: those loads only). Writes
//! `target/samos-bench/limits.md` and `limits.json`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Mosquitto, Rumqttd, Samos, certs, connect_all, cpu_seconds, env_or, fd_limit, metric_value,
    metrics_text, rss_mib,
};
use mqttbytes::QoS;
use samos_tools::client::ClientTls;
use samos_tools::loadgen::{self, LoadReport, LoadSpec, NodeMode};

/// `publishers` × `per` QoS 2 messages, `inflight` each: as joined sensor nodes (Samos) or
/// as plain publishers to a counting subscriber (a broker).
fn load(addr: SocketAddr, publishers: usize, per: usize, inflight: usize, nodes: bool) -> LoadSpec {
    LoadSpec {
        addr,
        tls: None,
        credentials: None,
        publishers,
        messages_per_publisher: per,
        qos: QoS::ExactlyOnce,
        inflight,
        payload_bytes: 16,
        topic_prefix: "bench".into(),
        subscriber: !nodes && inflight > 1,
        idle_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(300),
        as_nodes: nodes.then(|| NodeMode {
            network: "bench".into(),
            server_id: "SN".into(),
            wave: false,
        }),
        stored_metrics: None,
        progress: false,
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// The median time of `fdatasync` after appending a `record`-byte write into a file whose
/// blocks are already written, in `dir` (the WAL's situation: it writes into a zeroed runway).
fn fdatasync_p50(dir: &Path, record: usize, samples: usize) -> Duration {
    let path = dir.join("fsync-probe");
    let file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let bytes = record * samples;
    let zeros = vec![0u8; 1 << 20];
    for at in (0..bytes).step_by(zeros.len()) {
        file.write_all_at(&zeros, at as u64).unwrap();
    }
    file.sync_all().unwrap();
    let payload = vec![0x5au8; record];
    let mut times: Vec<f64> = (0..samples)
        .map(|i| {
            let started = Instant::now();
            file.write_all_at(&payload, (i * record) as u64).unwrap();
            file.sync_data().unwrap();
            started.elapsed().as_secs_f64()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    Duration::from_secs_f64(times[samples / 2])
}

struct Idle {
    server: &'static str,
    connections: usize,
    tls: usize,
    rss_before_mib: f64,
    rss_idle_mib: f64,
    kib_per_connection: f64,
    idle_cpu_percent: f64,
    connect_seconds: f64,
    reconnect_seconds: f64,
}

/// Scenario 3 against one server (`pid`): connect `n`, idle 10 s, close all, reconnect all.
fn idle_nodes(
    rt: &tokio::runtime::Runtime,
    server: &'static str,
    pid: u32,
    n: usize,
    tcp: SocketAddr,
    tls: Option<(SocketAddr, ClientTls)>,
) -> Idle {
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_mib(pid);
    let with_tls = if tls.is_some() { n / 2 } else { 0 };
    let (clients, connect_seconds) =
        rt.block_on(connect_all(n, tcp, tls.clone(), |_| None, "idle-a"));
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(pid);
    let idle_for = Duration::from_secs(10);
    std::thread::sleep(idle_for);
    let idle_cpu = (cpu_seconds(pid) - cpu) / idle_for.as_secs_f64();
    let rss_idle = rss_mib(pid);
    drop(clients);
    std::thread::sleep(Duration::from_secs(2));
    let (clients, reconnect_seconds) = rt.block_on(connect_all(n, tcp, tls, |_| None, "idle-b"));
    drop(clients);
    let idle = Idle {
        server,
        connections: n,
        tls: with_tls,
        rss_before_mib: rss_before,
        rss_idle_mib: rss_idle,
        kib_per_connection: (rss_idle - rss_before) * 1024.0 / n as f64,
        idle_cpu_percent: idle_cpu * 100.0,
        connect_seconds,
        reconnect_seconds,
    };
    eprintln!(
        "idle: {server}: {n} connections ({with_tls} TLS) in {connect_seconds:.2} s; RSS {rss_before:.1} → {rss_idle:.1} MiB ({:.1} KiB each); idle CPU {:.2} %; all reconnected in {reconnect_seconds:.2} s",
        idle.kib_per_connection, idle.idle_cpu_percent
    );
    std::thread::sleep(Duration::from_secs(2));
    idle
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = std::env::var("LIMITS_ONLY").ok();
    let wants = |load: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|l| l.trim() == load))
    };
    samos_tools::fd_limit::raise_open_file_limit();
    let pairs: usize = env_or("LIMITS_PAIRS", if quick { 1 } else { 3 });
    let wanted_idle: usize = env_or("LIMITS_IDLE", if quick { 10_000 } else { 100_000 });
    // Each side holds a descriptor per connection, plus its own files and a margin.
    let idle_n = wanted_idle.min(fd_limit().saturating_sub(600)) & !1;
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let ca = ClientTls::from_ca(&certs.join("ca.crt"), "localhost").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let have_rumqttd = common::which("rumqttd").is_some();
    if !have_rumqttd {
        eprintln!("rumqttd not installed (cargo install rumqttd): its figures are left out");
    }
    let mut json = serde_json::Map::new();
    let mut md = String::new();

    // 1. Many nodes, little pipelining.
    if wants("many") {
        let mut samos_rates = Vec::new();
        let mut rumqttd_rates = Vec::new();
        for pair in 1..=pairs {
            let run = tempfile::tempdir_in(dir.path()).unwrap();
            let samos = Samos::with_tcp_and_tls(run.path(), &certs, "");
            let r = rt
                .block_on(loadgen::run(load(samos.addr("mqtt"), 1000, 100, 10, true)))
                .expect("Samos run");
            let committed = metric_value(
                &metrics_text(samos.addr("metrics")),
                "samos_readings_committed_total",
            );
            assert!(
                committed >= r.acknowledged as f64,
                "acknowledged more than committed"
            );
            drop(samos);
            samos_rates.push(r.acknowledged_per_second());
            let mut line = format!(
                "pair {pair}: Samos {:.0} durable/s",
                r.acknowledged_per_second()
            );
            if have_rumqttd {
                let broker = Rumqttd::start(run.path(), 2000).unwrap();
                let r = rt
                    .block_on(loadgen::run(load(broker.tcp, 1000, 100, 10, false)))
                    .expect("rumqttd run");
                rumqttd_rates.push(r.received_per_second());
                let _ = write!(line, ", rumqttd {:.0} delivered/s", r.received_per_second());
            }
            eprintln!("many nodes: {line}");
        }
        let samos_many = median(samos_rates.clone());
        let _ = writeln!(
            md,
            "### 1,000 nodes × 100 QoS 2 readings, 10 in flight each ({pairs} alternating pairs, medians)\n\n\
             | | per second | runs |\n|---|---:|---|\n\
             | Samos, durable | {samos_many:.0} | {samos_rates:.0?} |"
        );
        let rumqttd_many = (!rumqttd_rates.is_empty()).then(|| median(rumqttd_rates.clone()));
        if let Some(peer) = rumqttd_many {
            let _ = writeln!(
                md,
                "| rumqttd, delivered (stores nothing) | {peer:.0} | {rumqttd_rates:.0?} |\n\n\
                 Samos ÷ rumqttd: **{:.2}×** (target ≥ 1); Samos ≥ 150,000/s: **{}**.\n",
                samos_many / peer,
                verdict(samos_many >= 150_000.0)
            );
        } else {
            let _ = writeln!(md, "\nrumqttd not installed: no ratio.\n");
        }
        json.insert(
            "many_nodes".into(),
            serde_json::json!({"samos_durable_per_second": samos_rates, "rumqttd_delivered_per_second": rumqttd_rates}),
        );
    }

    // 2. Paper mode.
    if wants("paper") {
        let run = tempfile::tempdir_in(dir.path()).unwrap();
        let fsync = fdatasync_p50(run.path(), 512, 2000);
        let samos = Samos::with_tcp_and_tls(run.path(), &certs, "");
        let samos_paper: LoadReport = rt
            .block_on(loadgen::run(load(samos.addr("mqtt"), 1, 10_000, 1, true)))
            .expect("Samos paper-mode run");
        drop(samos);
        let peer_paper = have_rumqttd.then(|| {
            let broker = Rumqttd::start(run.path(), 100).unwrap();
            rt.block_on(loadgen::run(load(broker.tcp, 1, 10_000, 1, false)))
                .expect("rumqttd paper-mode run")
        });
        let samos_rate = samos_paper.acknowledged_per_second();
        let _ = writeln!(
            md,
            "### Paper mode: 1 node × 10,000 QoS 2 readings, one exchange at a time\n\n\
             | | per exchange (µs) | per second |\n|---|---:|---:|\n\
             | fdatasync p50 (512-byte append into written blocks, 2,000 samples) | {:.0} | |\n\
             | Samos, durable | {:.0} | {samos_rate:.0} |",
            fsync.as_secs_f64() * 1e6,
            1e6 / samos_rate,
        );
        if let Some(peer) = &peer_paper {
            let peer_rate = peer.acknowledged_per_second();
            let floor = fsync.as_secs_f64() + 1.0 / peer_rate;
            let target = 0.8 / floor;
            let _ = writeln!(
                md,
                "| rumqttd (stores nothing) | {:.0} | {peer_rate:.0} |\n\
                 | floor: fdatasync + rumqttd's exchange | {:.0} | {:.0} |\n\n\
                 Samos ÷ floor rate: **{:.2}** (target ≥ 0.8: **{}**).\n",
                1e6 / peer_rate,
                floor * 1e6,
                1.0 / floor,
                samos_rate * floor,
                verdict(samos_rate >= target)
            );
        } else {
            let _ = writeln!(md, "\nrumqttd not installed: no floor.\n");
        }
        json.insert(
            "paper_mode".into(),
            serde_json::json!({
                "fdatasync_p50_us": fsync.as_secs_f64() * 1e6,
                "samos": samos_paper,
                "rumqttd": peer_paper,
            }),
        );
    }

    // 3. Idle nodes.
    if wants("idle") {
        let mut idle = Vec::new();
        {
            let run = tempfile::tempdir_in(dir.path()).unwrap();
            let samos = Samos::with_tcp_and_tls(run.path(), &certs, "");
            let tls = Some((samos.addr("mqtts"), ca.clone()));
            idle.push(idle_nodes(
                &rt,
                "Samos",
                samos.child.id(),
                idle_n,
                samos.addr("mqtt"),
                tls,
            ));
        }
        if let Some(m) = Mosquitto::start(dir.path(), &certs, None) {
            let tls = Some((m.tls, ca.clone()));
            idle.push(idle_nodes(&rt, "Mosquitto", m.pid(), idle_n, m.tcp, tls));
        }
        if have_rumqttd {
            let r = Rumqttd::start(dir.path(), idle_n + 100).unwrap();
            idle.push(idle_nodes(
                &rt,
                "rumqttd",
                r.child.id(),
                idle_n,
                r.tcp,
                None,
            ));
        }
        let _ = writeln!(
            md,
            "### Idle nodes: {idle_n} connections (asked for {wanted_idle}; descriptor limit {})\n\n\
             | server | connections (TLS) | RSS before → idle (MiB) | per connection (KiB) | idle CPU (% of a core) | connected in (s) | all reconnected in (s) |\n\
             |---|---:|---:|---:|---:|---:|---:|",
            fd_limit()
        );
        for i in &idle {
            let _ = writeln!(
                md,
                "| {} | {} ({}) | {:.1} → {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
                i.server,
                i.connections,
                i.tls,
                i.rss_before_mib,
                i.rss_idle_mib,
                i.kib_per_connection,
                i.idle_cpu_percent,
                i.connect_seconds,
                i.reconnect_seconds
            );
            json.insert(
                format!("idle_{}", i.server),
                serde_json::json!({
                    "connections": i.connections, "tls": i.tls, "rss_before_mib": i.rss_before_mib,
                    "rss_idle_mib": i.rss_idle_mib, "kib_per_connection": i.kib_per_connection,
                    "idle_cpu_percent": i.idle_cpu_percent, "connect_seconds": i.connect_seconds,
                    "reconnect_seconds": i.reconnect_seconds,
                }),
            );
        }
    }
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("limits.md"), &md).unwrap();
    std::fs::write(
        out.join("limits.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}
