//! End-to-end durable ingest: publishers join as sensor nodes (XSD validation included) and
//! publish readings; every acknowledgement is sent only after the reading's WAL batch is
//! fsync'd, so acknowledged/s is durable readings/s. Samos runs as its own process.
//!
//! The pipelined QoS 2 load runs twice in a row, the second time with ten live dashboards
//! connected (the dashboard's server-sent-events stream: five watching a publishing node's
//! readings, five the counters and events while re-reading the node list every 5 s, as the
//! Nodes page does), so their cost is the ratio of two figures of one run.
//!
//! Where a Garage binary is installed (`scripts/setup.sh`), the pipelined QoS 2 load then runs
//! in alternating pairs against the local Parquet sink and the object-store sink (the Delta
//! table on a Garage server on loopback), so the object store's cost is a ratio of one run.
//!
//! `cargo bench --bench ingest` (add `-- --quick` for a short run). Writes
//! `target/samos-bench/ingest.md` and `ingest.json`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "../samos/tests/e2e/common/garage.rs"]
mod garage;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Samos;

use mqttbytes::QoS;
use samos_tools::loadgen::{self, LoadSpec, NodeMode};

fn start(dir: &Path) -> Samos {
    let data = dir.join("data");
    Samos::start(
        dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    )
}

/// `publishers` sensor nodes of network `bench` joining and publishing `per` readings each.
fn node_load(
    addr: SocketAddr,
    publishers: usize,
    per: usize,
    inflight: usize,
    qos: QoS,
) -> LoadSpec {
    LoadSpec {
        addr,
        tls: None,
        credentials: None,
        publishers,
        messages_per_publisher: per,
        qos,
        inflight,
        payload_bytes: 0,
        topic_prefix: String::new(),
        subscriber: false,
        idle_timeout: Duration::from_secs(10),
        deadline: Duration::from_secs(120),
        as_nodes: Some(NodeMode {
            network: "bench".into(),
            server_id: "SN".into(),
            wave: false,
        }),
        stored_metrics: None,
        progress: false,
    }
}

/// Ten dashboards on the API listener until `stop`: the bytes their streams received.
fn dashboards(api: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..10)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let received = Arc::new(AtomicU64::new(0));
                let path = if i < 5 {
                    format!(
                        "/api/v1/live?network=bench&node={}",
                        samos_schemas::fleet::node_id(i)
                    )
                } else {
                    "/api/v1/live".to_string()
                };
                let mut live = std::net::TcpStream::connect(api).unwrap();
                live.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                write!(live, "GET {path} HTTP/1.1\r\nHost: {api}\r\n\r\n").unwrap();
                let mut buf = [0u8; 16 * 1024];
                let mut last_list = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = live.read(&mut buf) {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if i >= 5 && last_list.elapsed() >= Duration::from_secs(5) {
                        last_list = Instant::now();
                        let mut s = std::net::TcpStream::connect(api).unwrap();
                        write!(s, "GET /api/v1/network HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n").unwrap();
                        let mut body = Vec::new();
                        let _ = s.read_to_end(&mut body);
                    }
                }
                received.load(Ordering::Relaxed)
            })
        })
        .collect()
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim().parse().unwrap_or(0.0))
        })
        .unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 5 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // (label, publishers, messages each, in flight, QoS, live dashboards)
    let scenarios = [
        (
            "paper style: 1 publisher, 1 in flight",
            1,
            2_000 * scale,
            1,
            QoS::ExactlyOnce,
            0,
        ),
        (
            "100 pipelined publishers",
            100,
            2_000 * scale,
            10,
            QoS::ExactlyOnce,
            0,
        ),
        (
            "100 pipelined publishers, 10 live dashboards",
            100,
            2_000 * scale,
            10,
            QoS::ExactlyOnce,
            10,
        ),
        (
            "100 pipelined publishers",
            100,
            2_000 * scale,
            10,
            QoS::AtLeastOnce,
            0,
        ),
        (
            "half load: 100 publishers, 2 in flight",
            100,
            1_000 * scale,
            2,
            QoS::ExactlyOnce,
            0,
        ),
    ];
    let mut md = String::from(
        "Durable ingest: publishers join as sensor nodes and publish readings; a PUBACK/PUBREC \
         leaves only after the reading's WAL batch is fsync'd.\n\n\
         | scenario | QoS | readings | durable readings/s | WAL batches | mean batch | ack p50 ms | ack p99 ms |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut json = Vec::new();
    let mut without_dashboards = None;
    for (label, publishers, per, inflight, qos, live) in scenarios {
        let dir = tempfile::tempdir().unwrap();
        let samos = start(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let viewers = if live > 0 {
            dashboards(samos.addr("api"), &stop)
        } else {
            Vec::new()
        };
        let spec = node_load(samos.addr("mqtt"), publishers, per, inflight, qos);
        let r = rt.block_on(loadgen::run(spec)).expect("load run");
        stop.store(true, Ordering::Relaxed);
        let streamed: u64 = viewers.into_iter().map(|t| t.join().unwrap()).sum();
        let committed = metric(samos.addr("metrics"), "samos_readings_committed_total ");
        let batches = metric(samos.addr("metrics"), "samos_wal_batches_total ");
        let rate = r.acknowledged_per_second();
        if live > 0 {
            let base: f64 = without_dashboards.expect("the run without dashboards comes first");
            eprintln!(
                "{live} dashboards received {streamed} bytes of live stream; durable rate {:.3} of the run without",
                rate / base
            );
            assert!(streamed > 0, "the dashboards received nothing");
        } else if publishers == 100 && qos == QoS::ExactlyOnce && inflight == 10 {
            without_dashboards = Some(rate);
        }
        eprintln!(
            "{label} qos{}: {} acknowledged ({} committed) at {rate:.0}/s, p99 {:.2} ms",
            qos as u8, r.acknowledged, committed, r.ack_latency_ms[2]
        );
        assert!(
            committed >= r.acknowledged as f64,
            "acknowledged more than committed"
        );
        md.push_str(&format!(
            "| {label} | {} | {} | {rate:.0} | {batches:.0} | {:.1} | {:.2} | {:.2} |\n",
            qos as u8,
            r.acknowledged,
            committed / batches.max(1.0),
            r.ack_latency_ms[0],
            r.ack_latency_ms[2],
        ));
        json.push(serde_json::json!({
            "scenario": label, "qos": qos as u8, "publishers": publishers, "inflight": inflight,
            "live_dashboards": live,
            "report": r, "durable_per_second": rate, "wal_batches": batches, "committed": committed,
        }));
    }
    if garage::find_garage().is_some() {
        md.push_str(&object_store_pairs(&rt, scale, &mut json));
    } else {
        eprintln!("object store: no Garage binary (scripts/setup.sh builds one); pairs skipped");
    }
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("ingest.md"), &md).unwrap();
    std::fs::write(
        out.join("ingest.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}

/// The pipelined QoS 2 load against the local sink and the object-store sink, alternating,
/// four pairs (one with `--quick`): a Markdown table of the rates, their ratios and the median
/// ratio.
fn object_store_pairs(
    rt: &tokio::runtime::Runtime,
    scale: usize,
    json: &mut Vec<serde_json::Value>,
) -> String {
    let server = garage::Garage::start();
    let mut md = String::from(
        "\nObject-store sink (Delta table on Garage, loopback) against the local Parquet sink, \
         100 pipelined publishers, QoS 2, alternating:\n\n\
         | pair | local durable readings/s | object store durable readings/s | ratio | files committed |\n\
         |---|---:|---:|---:|---:|\n",
    );
    let pairs = if scale == 1 { 1 } else { 4 };
    let mut ratios = Vec::new();
    for pair in 1..=pairs {
        let mut rates = [0.0; 2];
        let mut files = 0.0;
        for (i, lake) in [false, true].into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let config = dir.path().join("samos.toml");
            let storage = if lake {
                server.storage_toml(&format!("bench-{pair}"))
            } else {
                String::new()
            };
            std::fs::write(
                &config,
                format!(
                    "data_dir = {:?}\n[storage]\n{storage}",
                    data.display().to_string()
                ),
            )
            .unwrap();
            let samos = Samos::with_config(dir.path(), &config);
            let spec = node_load(samos.addr("mqtt"), 100, 2_000 * scale, 10, QoS::ExactlyOnce);
            let r = rt.block_on(loadgen::run(spec)).expect("load run");
            rates[i] = r.acknowledged_per_second();
            if lake {
                // Everything acknowledged reaches the table (rotation: 10 s).
                let deadline = Instant::now() + Duration::from_secs(120);
                while metric(samos.addr("metrics"), "samos_lake_rows_total ")
                    < r.acknowledged as f64
                {
                    assert!(Instant::now() < deadline, "the table did not catch up");
                    std::thread::sleep(Duration::from_millis(200));
                }
                files = metric(samos.addr("metrics"), "samos_lake_files_total ");
            }
            eprintln!(
                "pair {pair}, {} sink: {} acknowledged at {:.0}/s",
                if lake { "object-store" } else { "local" },
                r.acknowledged,
                rates[i]
            );
            json.push(serde_json::json!({
                "scenario": format!("object-store pair {pair}"), "sink": if lake { "object-store" } else { "local" },
                "report": r, "durable_per_second": rates[i],
            }));
        }
        md.push_str(&format!(
            "| {pair} | {:.0} | {:.0} | {:.2} | {files:.0} |\n",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        ));
        ratios.push(rates[1] / rates[0]);
    }
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[(ratios.len() - 1) / 2] + ratios[ratios.len() / 2]) / 2.0;
    md.push_str(&format!(
        "\nMedian ratio object store / local: {median:.2} (target ≥ 0.90).\n"
    ));
    md
}
