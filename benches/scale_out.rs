//! Scaling out, measured on one machine (everything on loopback, so the instances, HAProxy,
//! Garage and the load generator share its cores: contention is part of the figures).
//!
//! 1. Durable ingest: 150 sensor nodes publishing QoS 2 (10 in flight each) into one Samos
//!    instance, and through HAProxy (TCP, PROXY v2) into three instances sharing one dataset on
//!    Garage; alternating, two pairs (one with `--quick`). Durable readings/s = acknowledged/s
//!    (acknowledgements leave after the WAL fsync).
//! 2. Distributed SQL: the hourly aggregate over 10M readings in a dataset on the local disk
//!    (`file://`, one Delta table, the layout the server writes), single-process (`samos sql`'s
//!    engine) against a Ballista scheduler with one and with two executors (`samos cluster`,
//!    processes). Medians of five runs after a warm-up.
//!
//! `cargo bench --bench scale_out` (needs Garage and HAProxy for part 1: scripts/setup.sh).
//! Writes `target/samos-bench/scale_out.md` and `scale_out.json`.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "../samos/tests/e2e/common/ballista.rs"]
mod ballista;
#[path = "common/mod.rs"]
mod common;
#[path = "../samos/tests/e2e/common/garage.rs"]
mod garage;
#[path = "../samos/tests/e2e/common/haproxy.rs"]
mod haproxy;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, StringDictionaryBuilder,
    TimestampMillisecondArray, UInt8Array, UInt64Array,
};
use arrow::datatypes::Int32Type;
use common::{Samos, free_port, wait_listening};
use mqttbytes::QoS;
use samos_analytics::{Access, History};
use samos_schemas::readings::{ROWS_PER_BATCH, readings_schema};
use samos_tools::loadgen::{self, LoadSpec, NodeMode};

const NODES: usize = 150;
const RUNS: usize = 5;
const HOURLY: &str = "SELECT date_bin(INTERVAL '1 hour', ingest_time) AS hour, node_id, sensor, \
                      count(*) AS n, avg(value) AS avg FROM readings GROUP BY 1, 2, 3";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut md = String::new();
    let mut json = serde_json::Map::new();
    if garage::find_garage().is_some() && Path::new("/usr/sbin/haproxy").exists() {
        let (table, figures) = ingest(&rt, quick);
        md.push_str(&table);
        json.insert("ingest".into(), figures);
    } else {
        eprintln!("ingest: needs Garage and HAProxy (scripts/setup.sh); skipped");
    }
    let (table, figures) = rt.block_on(sql(if quick { 2_000_000 } else { 10_000_000 }));
    md.push_str(&table);
    json.insert("sql".into(), figures);
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("scale_out.md"), &md).unwrap();
    std::fs::write(
        out.join("scale_out.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
}

/// One instance, then three behind HAProxy, alternating.
fn ingest(rt: &tokio::runtime::Runtime, quick: bool) -> (String, serde_json::Value) {
    let garage = garage::Garage::start();
    let per = if quick { 400 } else { 1_000 };
    let pairs = if quick { 1 } else { 2 };
    let mut md = format!(
        "Durable ingest, {NODES} nodes × {per} readings, QoS 2, 10 in flight each, dataset on \
         Garage (all on one 2-core machine):\n\n\
         | pair | 1 instance, readings/s | 3 instances behind HAProxy, readings/s | ratio |\n\
         |---|---:|---:|---:|\n"
    );
    let mut rows = Vec::new();
    for pair in 1..=pairs {
        let mut rates = [0.0; 2];
        for (i, count) in [1usize, 3].into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let prefix = format!("ingest-{pair}-{count}");
            let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
            let instances: Vec<Samos> = ports
                .iter()
                .enumerate()
                .map(|(n, port)| {
                    let home = dir.path().join(format!("i{n}"));
                    std::fs::create_dir_all(&home).unwrap();
                    let config = home.join("samos.toml");
                    std::fs::write(
                        &config,
                        format!(
                            "data_dir = {:?}\ninstance_id = \"i{n}\"\n\n[[listener]]\n\
                             bind = \"127.0.0.1:{port}\"\nproxy_protocol = {}\n\n[storage]\n{}",
                            home.join("data").display().to_string(),
                            count > 1,
                            garage.storage_toml(&prefix)
                        ),
                    )
                    .unwrap();
                    Samos::start(
                        &home,
                        &[
                            "--config",
                            config.to_str().unwrap(),
                            "--metrics-listen",
                            "127.0.0.1:0",
                        ],
                    )
                })
                .collect();
            let backends: Vec<SocketAddr> = ports
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect();
            let lb = (count > 1).then(|| haproxy::HaProxy::start(&backends));
            let addr = lb.as_ref().map_or(backends[0], haproxy::HaProxy::addr);
            let mut spec = LoadSpec::new(addr);
            spec.publishers = NODES;
            spec.messages_per_publisher = per;
            spec.inflight = 10;
            spec.qos = QoS::ExactlyOnce;
            spec.as_nodes = Some(NodeMode {
                network: "bench".into(),
                server_id: "SN".into(),
                wave: false,
            });
            let r = rt.block_on(loadgen::run(spec)).expect("load run");
            assert_eq!(r.acknowledged, (NODES * per) as u64);
            rates[i] = r.acknowledged_per_second();
            eprintln!(
                "pair {pair}, {count} instance(s): {} acknowledged at {:.0}/s",
                r.acknowledged, rates[i]
            );
            drop(lb);
            drop(instances);
        }
        md.push_str(&format!(
            "| {pair} | {:.0} | {:.0} | {:.2} |\n",
            rates[0],
            rates[1],
            rates[1] / rates[0]
        ));
        rows.push(serde_json::json!({"pair": pair, "one": rates[0], "three": rates[1]}));
    }
    (md, serde_json::Value::Array(rows))
}

/// `samos cluster …` as a process, killed when dropped.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn role(args: &[String]) -> Role {
    Role(
        Command::new(env!("CARGO_BIN_EXE_samos"))
            .arg("cluster")
            .args(args)
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// The hourly aggregate single-process and on Ballista with one and two executors.
async fn sql(rows: usize) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("file://{}", dir.path().join("lake").display());
    let dataset = samos_cluster::Dataset::new(&base, Default::default()).unwrap();
    let t = Instant::now();
    write_dataset(&dataset, dir.path(), rows).await;
    eprintln!(
        "{rows} readings written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();

    let single = History::open_with_lake(&empty, Access::Query, Some(dataset.clone()))
        .await
        .unwrap();
    let (single_s, groups) = time(&single).await;
    eprintln!("single process: median {single_s:.3} s, {groups} groups");
    let mut md = format!(
        "\nThe hourly aggregate over {rows} readings (a Delta table on the local disk; \
         scheduler, executors and client on the same 2-core machine):\n\n\
         | engine | median s | ratio to single-process |\n|---|---:|---:|\n\
         | single-process DataFusion | {single_s:.3} | 1.00 |\n"
    );
    let mut figures = serde_json::json!({"rows": rows, "single_s": single_s});
    for executors in [1usize, 2] {
        let port = free_port();
        let _scheduler = role(&ballista::scheduler_args(port, &base));
        wait_listening(SocketAddr::from(([127, 0, 0, 1], port)));
        let _executors: Vec<Role> = (0..executors)
            .map(|i| {
                let work = dir.path().join(format!("work{executors}-{i}"));
                role(&ballista::executor_args(
                    port,
                    [free_port(), free_port()],
                    &work,
                    &base,
                ))
            })
            .collect();
        // Registration takes a moment; the first query waits for an executor anyway.
        std::thread::sleep(Duration::from_secs(2));
        let ctx = samos_cluster::connect(
            &format!("df://127.0.0.1:{port}"),
            &empty,
            Some(dataset.clone()),
        )
        .await
        .unwrap();
        let history = History::from_context(ctx, Access::Query);
        let (s, g) = time(&history).await;
        assert_eq!(g, groups, "the cluster's groups");
        eprintln!("Ballista, {executors} executor(s): median {s:.3} s");
        md.push_str(&format!(
            "| Ballista, {executors} executor{} | {s:.3} | {:.2} |\n",
            if executors == 1 { "" } else { "s" },
            s / single_s
        ));
        figures[format!("ballista_{executors}_s")] = s.into();
    }
    (md, figures)
}

async fn time(history: &History) -> (f64, usize) {
    let groups = history
        .query(HOURLY)
        .await
        .unwrap()
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        history.query(HOURLY).await.unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[RUNS / 2], groups)
}

/// `rows` readings of 100 nodes × 4 sensors every 10 s, one Parquet file of 864,000 rows at a time
/// committed to one instance's table, as the server's object-store sink would.
async fn write_dataset(dataset: &samos_cluster::Dataset, dir: &Path, rows: usize) {
    // A quarter of a day (8,640 steps × 400 series a day): no file spans two dates.
    const FILE_ROWS: usize = 864_000;
    const SERIES: usize = 400;
    const START_MS: i64 = 1_780_000_000_000 - 1_780_000_000_000 % 86_400_000;
    let mut writer = samos_lake::LakeWriter::open(&dataset.readings("bench"), "bench", 100)
        .await
        .unwrap();
    let dict = |values: &mut dyn Iterator<Item = String>| -> ArrayRef {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        values.for_each(|v| {
            b.append_value(v);
        });
        Arc::new(b.finish())
    };
    let mut seq = 0u64;
    for first in (0..rows).step_by(FILE_ROWS) {
        let n = FILE_ROWS.min(rows - first);
        let time = |r: usize| START_MS + (r / SERIES) as i64 * 10_000;
        let day = samos_store::layout::utc_day(time(first));
        let mut columns: Vec<ArrayRef> = Vec::new();
        for field in readings_schema().fields() {
            let range = first..first + n;
            columns.push(match field.name().as_str() {
                "ingest_time" => Arc::new(
                    TimestampMillisecondArray::from_iter_values(range.map(time))
                        .with_timezone("UTC"),
                ),
                "node_id" | "client_id" => {
                    dict(&mut range.map(|r| format!("N{:03}", (r % SERIES) / 4)))
                }
                "sensor" => dict(&mut range.map(|r| format!("s{}", r % 4))),
                "value" => Arc::new(Float64Array::from_iter_values(
                    range.map(|r| ((r * 7919) % 1000) as f64 / 10.0),
                )),
                "raw" => Arc::new(StringArray::new_null(n)),
                "qos" => Arc::new(UInt8Array::from_iter_values(range.map(|_| 1))),
                "key" => Arc::new(UInt64Array::from_iter_values(
                    (0..n as u64).map(|i| (seq + 1 + i / 65_536) * ROWS_PER_BATCH + i % 65_536),
                )),
                _ => dict(&mut range.map(|_| "x".to_owned())),
            });
        }
        let batch = RecordBatch::try_new(readings_schema(), columns).unwrap();
        let file = dir.join(format!("f{first}.parquet"));
        let mut w = samos_store::parquet::readings_writer(&file).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let last = seq + n.div_ceil(65_536) as u64;
        writer.append(&file, (seq + 1, last), day).await.unwrap();
        std::fs::remove_file(&file).unwrap();
        seq = last;
    }
}
