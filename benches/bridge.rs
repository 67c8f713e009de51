//! The bridge's forwarding rate against the durable ingest rate, in the same run: sensor nodes
//! publish readings (QoS 1, pipelined) into `samos serve`, whose bridge forwards each one as
//! JSON to a Mosquitto on loopback over TLS (QoS 1). The metrics are sampled every 50 ms:
//! ingest time is until every reading is committed (`samos_readings_committed_total`),
//! forwarding time until the broker has acknowledged every one (`samos_bridge_messages_total`),
//! both from the first publish. Medians of `RUNS` runs (one with `-- --quick`).
//!
//! `cargo bench --bench bridge`; writes `target/samos-bench/bridge.md` and `bridge.json`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mosquitto, Samos};
use mqttbytes::QoS;
use samos_tools::loadgen::{self, LoadSpec, NodeMode};

const RUNS: usize = 3;

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One run: (readings, seconds until all committed, until all forwarded, peak lag in batches).
fn run_once(
    rt: &tokio::runtime::Runtime,
    broker: &Mosquitto,
    certs: &Path,
    publishers: usize,
    per: usize,
    max_in_flight: u16,
) -> (u64, f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("samos.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n\
             [[bridge]]\nname = \"bench\"\nurl = \"mqtts://localhost:{port}\"\n\
             ca_file = {ca:?}\nmax_in_flight = {max_in_flight}\n\
             [[bridge.forward]]\nsource = \"readings\"\ntopic = \"up/{{topic}}\"\n",
            data = dir.path().join("data").display().to_string(),
            port = broker.tls.port(),
            ca = certs.join("ca.crt").display().to_string(),
        ),
    )
    .unwrap();
    let samos = Samos::with_config(dir.path(), &config);
    let metrics = samos.addr("metrics");
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let start = Instant::now();
    let sampler = {
        let target = target.clone();
        std::thread::spawn(move || {
            let (mut committed_at, mut forwarded_at, mut peak_lag) = (None, None, 0);
            while forwarded_at.is_none() && start.elapsed() < Duration::from_secs(600) {
                let t = start.elapsed().as_secs_f64();
                let want = target.load(Ordering::Relaxed);
                let committed = metric(metrics, "samos_readings_committed_total ");
                let forwarded = metric(metrics, "samos_bridge_messages_total{bridge=\"bench\"} ");
                peak_lag = peak_lag.max(metric(
                    metrics,
                    "samos_bridge_lag_batches{bridge=\"bench\"} ",
                ));
                if committed_at.is_none() && committed >= want {
                    committed_at = Some(t);
                }
                if forwarded >= want {
                    forwarded_at = Some(t);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (committed_at, forwarded_at, peak_lag)
        })
    };
    let spec = LoadSpec {
        addr: samos.addr("mqtt"),
        tls: None,
        credentials: None,
        publishers,
        messages_per_publisher: per,
        qos: QoS::AtLeastOnce,
        inflight: 10,
        payload_bytes: 0,
        topic_prefix: String::new(),
        subscriber: false,
        idle_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(300),
        as_nodes: Some(NodeMode {
            network: "bench".into(),
            server_id: "SN".into(),
            wave: false,
        }),
        stored_metrics: None,
        progress: false,
    };
    let report = rt.block_on(loadgen::run(spec)).expect("load run");
    let readings = metric(metrics, "samos_readings_committed_total ");
    assert!(
        readings >= report.acknowledged,
        "acknowledged more than committed"
    );
    target.store(readings, Ordering::Relaxed);
    let (committed_at, forwarded_at, peak_lag) = sampler.join().unwrap();
    let committed_at = committed_at.expect("every reading committed");
    let forwarded_at = forwarded_at.expect("every reading forwarded within 10 minutes");
    (readings, committed_at, forwarded_at, peak_lag)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (runs, per) = if quick { (1, 1_000) } else { (RUNS, 5_000) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let certs = common::certs(work.path());
    let broker =
        Mosquitto::start(work.path(), &certs, None).expect("mosquitto (apt-get install mosquitto)");
    let mut md = String::from(
        "Bridge forwarding vs durable ingest, same run: 100 sensor nodes publish readings \
         (QoS 1, 10 in flight each) into Samos, whose bridge forwards each as JSON to Mosquitto \
         over TLS (QoS 1). Rates from the first publish to the last reading committed / \
         acknowledged upstream; medians.\n\n\
         | bridge max_in_flight | readings | durable ingest/s | forwarded/s | forwarded ÷ ingest | peak lag (WAL batches) |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json = Vec::new();
    for max_in_flight in [100u16, 1000] {
        let (mut ingest, mut forward, mut lags, mut total) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            let (readings, committed_at, forwarded_at, lag) =
                run_once(&rt, &broker, &certs, 100, per, max_in_flight);
            eprintln!(
                "max_in_flight {max_in_flight}: {readings} readings committed in {committed_at:.2} s, forwarded in {forwarded_at:.2} s, peak lag {lag}"
            );
            ingest.push(readings as f64 / committed_at);
            forward.push(readings as f64 / forwarded_at);
            lags.push(lag as f64);
            total = readings;
        }
        let (ingest, forward, lag) = (median(ingest), median(forward), median(lags));
        md.push_str(&format!(
            "| {max_in_flight} | {total} | {ingest:.0} | {forward:.0} | {:.2} | {lag:.0} |\n",
            forward / ingest
        ));
        json.push(serde_json::json!({
            "max_in_flight": max_in_flight, "readings": total, "runs": runs,
            "durable_ingest_per_second": ingest, "forwarded_per_second": forward,
            "ratio": forward / ingest, "peak_lag_batches": lag,
        }));
    }
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("bridge.md"), &md).unwrap();
    std::fs::write(
        out.join("bridge.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}
