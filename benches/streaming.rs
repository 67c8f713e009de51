//! What the streaming matrix profile costs: 1,000 nodes, each streaming one temperature series
//! (a sine with a phase per node, `samos bench --wave`), QoS 1 with 10 in flight, against a
//! server with `[[stream_profile]] sensor = "*"` (window 32, history `STREAMING_HISTORY`,
//! default 1,000: the defaults) and
//! one without, alternating `STREAMING_ROUNDS` rounds (default 3) of `STREAMING_READINGS`
//! readings per node (default 3,000: the first 1,000 windows of a series fill its history).
//! Reported: durable readings/s, and readings per second of server CPU — readings/s per core —
//! medians, on vs off; the resident memory the profiles add per series; and the kernel alone
//! (`LeftProfile::push`, one series, in this process). Writes `target/samos-bench/streaming.md`.
//!
//! `cargo bench --bench streaming`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Samos, cpu_seconds, env_or, metric_value, metrics_text, rss_mib};
use mqttbytes::QoS;
use samos_tools::loadgen::{self, LoadSpec, NodeMode};

const NODES: usize = 1000;

fn load(addr: SocketAddr, per: usize) -> LoadSpec {
    LoadSpec {
        addr,
        tls: None,
        credentials: None,
        publishers: NODES,
        messages_per_publisher: per,
        qos: QoS::AtLeastOnce,
        inflight: 10,
        payload_bytes: 16,
        topic_prefix: "bench".into(),
        subscriber: false,
        idle_timeout: Duration::from_secs(30),
        deadline: Duration::from_secs(600),
        as_nodes: Some(NodeMode {
            network: "bench".into(),
            server_id: "SN".into(),
            wave: true,
        }),
        stored_metrics: None,
        progress: false,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// One run: (durable readings/s, readings per server CPU second, RSS MiB after, discords).
fn run(rt: &tokio::runtime::Runtime, dir: &Path, history: Option<usize>, per: usize) -> [f64; 4] {
    let config = dir.join("samos.toml");
    let profile = match history {
        Some(h) => format!("[[stream_profile]]\nsensor = \"*\"\nhistory = {h}\n"),
        None => String::new(),
    };
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}/data\"\n[mqtt]\nsys_interval_secs = 0\n{profile}",
            dir.display()
        ),
    )
    .unwrap();
    let samos = Samos::with_config(dir, &config);
    let pid = samos.child.id();
    let cpu = cpu_seconds(pid);
    let r = rt
        .block_on(loadgen::run(load(samos.addr("mqtt"), per)))
        .expect("load");
    let used = cpu_seconds(pid) - cpu;
    let text = metrics_text(samos.addr("metrics"));
    assert!(
        metric_value(&text, "samos_readings_committed_total") >= r.acknowledged as f64,
        "acknowledged more than committed"
    );
    assert_eq!(
        r.acknowledged,
        (NODES * per) as u64,
        "every reading acknowledged"
    );
    let discords = metric_value(&text, "samos_discords_total");
    [
        r.acknowledged_per_second(),
        r.acknowledged as f64 / used,
        rss_mib(pid),
        discords,
    ]
}

/// ns per value of the kernel alone: one series of `n` values, window 32.
fn kernel_ns(n: usize, history: usize) -> f64 {
    let values = samos_offload::reference::random_walk(n, 3);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut p = samos_offload::stream::LeftProfile::new(32, history).unwrap();
        let started = Instant::now();
        let mut sink = 0.0;
        for v in &values {
            if let Some(s) = p.push(*v) {
                sink += s.distance.min(1e9);
            }
        }
        std::hint::black_box(sink);
        best = best.min(started.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    best
}

fn main() {
    let rounds: usize = env_or("STREAMING_ROUNDS", 3);
    let per: usize = env_or("STREAMING_READINGS", 3000);
    let history: usize = env_or("STREAMING_HISTORY", 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for streaming in [false, true] {
            let run_dir = tempfile::tempdir_in(dir.path()).unwrap();
            let r = run(&rt, run_dir.path(), streaming.then_some(history), per);
            eprintln!(
                "round {round}, streaming {}: {:.0} readings/s, {:.0} per CPU second, RSS {:.0} MiB, {} discords",
                if streaming { "on " } else { "off" },
                r[0],
                r[1],
                r[2],
                r[3]
            );
            if streaming { &mut on } else { &mut off }.push(r);
        }
    }
    let col = |v: &[[f64; 4]], i: usize| median(v.iter().map(|r| r[i]).collect());
    let kernel = kernel_ns(200_000, history);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Streaming matrix profile: {NODES} series × {per} readings, QoS 1, 10 in flight \
         ({rounds} alternating rounds, medians)\n\n\
         | | readings/s | readings per server CPU second | RSS after (MiB) |\n|---|---:|---:|---:|\n\
         | streaming off | {:.0} | {:.0} | {:.0} |\n\
         | streaming on (window 32, history {history}, every series) | {:.0} | {:.0} | {:.0} |\n\n\
         On ÷ off: readings/s **{:.2}×**, per CPU second **{:.2}×**; memory the profiles add: \
         {:.0} KiB per series; discords raised on the sines: {}. The kernel alone \
         (`LeftProfile::push`, window 32, history {history}, one series in this process): **{kernel:.0} ns** \
         per reading ({:.0} readings/s on one core).\n",
        col(&off, 0),
        col(&off, 1),
        col(&off, 2),
        col(&on, 0),
        col(&on, 1),
        col(&on, 2),
        col(&on, 0) / col(&off, 0),
        col(&on, 1) / col(&off, 1),
        (col(&on, 2) - col(&off, 2)) * 1024.0 / NODES as f64,
        col(&on, 3),
        1e9 / kernel,
    );
    println!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("streaming.md"), md).unwrap();
}
