//! Days of uptime, compressed: `samos serve` (its embedded default storage) under the node
//! simulator (`samos simulate`, every node joining and publishing its trace at QoS 1) for a
//! configurable time, sampled every interval into a CSV and an SVG plot:
//!
//! - resident memory (VmRSS) and open file descriptors of the server,
//! - the WAL's size on disk and the data directory's,
//! - readings made durable per second over the interval,
//! - the 99th percentile of the PUBLISH → PUBACK latency over the interval (from the
//!   server's `samos_publish_ack_latency_seconds` histogram: the upper bound of the bucket
//!   holding the 99th percentile of the interval's acknowledgements),
//! - the connected clients.
//!
//! Not a CI job: `cargo bench --bench soak`, with `SOAK_MINUTES` (default 60),
//! `SOAK_SAMPLE_SECS` (60), `SOAK_NODES` (1000) and `SOAK_SPEED` (the simulator's time
//! compression, 600: each node samples every 0.1 s). Writes `target/samos-bench/soak.csv` and
//! `soak.svg`, and prints the drift of memory and descriptors from the first sample to the last.
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Samos, env_or, metric_value as value, metrics_text, open_fds, rss_mib};

/// One sample.
#[derive(Debug, Clone, Copy)]
struct Row {
    minute: f64,
    rss_mib: f64,
    fds: u64,
    wal_mib: f64,
    data_mib: f64,
    readings_per_s: f64,
    p99_ack_ms: f64,
    connections: u64,
}

fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The acknowledgement latency histogram: (upper bound in seconds, cumulative count).
fn ack_buckets(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("samos_publish_ack_latency_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding the 99th percentile of what arrived between two
/// scrapes of the histogram.
fn p99_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> f64 {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, c - b)
        })
        .collect();
    let total = deltas.last().map_or(0.0, |(_, c)| *c);
    if total <= 0.0 {
        return 0.0;
    }
    deltas
        .iter()
        .find(|(_, c)| *c >= 0.99 * total)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

fn main() {
    let minutes: f64 = env_or("SOAK_MINUTES", 60.0);
    let sample = Duration::from_secs(env_or("SOAK_SAMPLE_SECS", 60));
    let nodes: usize = env_or("SOAK_NODES", 1000);
    let speed: f64 = env_or("SOAK_SPEED", 600.0);
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out_dir).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let samos = Samos::start(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let pid = samos.child.id();
    let mqtt = samos.addr("mqtt");
    let metrics = samos.addr("metrics");
    let run_for = Duration::from_secs_f64(minutes * 60.0);
    let mut simulator = Command::new(env!("CARGO_BIN_EXE_samos"))
        .args(["simulate", "--quiet", "--qos", "1"])
        .args(["--server", &mqtt.to_string()])
        .args(["--nodes", &nodes.to_string()])
        .args(["--speed", &speed.to_string()])
        .args(["--duration", &run_for.as_secs_f64().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("samos simulate");
    eprintln!(
        "soak: {nodes} nodes at speed {speed} for {minutes} min, a sample every {} s",
        sample.as_secs()
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut csv =
        String::from("minute,rss_mib,fds,wal_mib,data_mib,readings_per_s,p99_ack_ms,connections\n");
    let started = Instant::now();
    let mut last_text = metrics_text(metrics);
    let mut last_at = Instant::now();
    loop {
        let left = run_for.saturating_sub(started.elapsed());
        std::thread::sleep(sample.min(left.max(Duration::from_millis(1))));
        let text = metrics_text(metrics);
        let now = Instant::now();
        let interval = now.duration_since(last_at).as_secs_f64();
        let committed = value(&text, "samos_readings_committed_total")
            - value(&last_text, "samos_readings_committed_total");
        let row = Row {
            minute: started.elapsed().as_secs_f64() / 60.0,
            rss_mib: rss_mib(pid),
            fds: open_fds(pid) as u64,
            wal_mib: bytes_under(&data.join("wal")) as f64 / 1048576.0,
            data_mib: bytes_under(&data) as f64 / 1048576.0,
            readings_per_s: committed / interval,
            p99_ack_ms: p99_between(&ack_buckets(&last_text), &ack_buckets(&text)) * 1000.0,
            connections: value(&text, "samos_connections") as u64,
        };
        let _ = writeln!(
            csv,
            "{:.2},{:.1},{},{:.1},{:.1},{:.0},{},{}",
            row.minute,
            row.rss_mib,
            row.fds,
            row.wal_mib,
            row.data_mib,
            row.readings_per_s,
            row.p99_ack_ms,
            row.connections
        );
        eprintln!("soak: {row:?}");
        rows.push(row);
        std::fs::write(out_dir.join("soak.csv"), &csv).unwrap();
        last_text = text;
        last_at = now;
        if started.elapsed() >= run_for {
            break;
        }
    }
    let status = simulator.wait().unwrap();
    assert!(status.success(), "the simulator failed: {status}");
    assert!(
        samos.child.id() == pid && std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "the server is still running"
    );
    std::fs::write(out_dir.join("soak.svg"), plot(&rows, nodes, speed)).unwrap();
    let (first, last) = (rows[0], rows[rows.len() - 1]);
    let max_rss = rows.iter().map(|r| r.rss_mib).fold(0.0, f64::max);
    eprintln!(
        "soak: RSS {:.1} → {:.1} MiB (max {max_rss:.1}), fds {} → {}, WAL {:.1} → {:.1} MiB, {:.0} readings/s on average",
        first.rss_mib,
        last.rss_mib,
        first.fds,
        last.fds,
        first.wal_mib,
        last.wal_mib,
        rows.iter().map(|r| r.readings_per_s).sum::<f64>() / rows.len() as f64,
    );
    eprintln!(
        "soak: wrote {} and soak.svg",
        out_dir.join("soak.csv").display()
    );
}

/// One plotted quantity of a sample.
type Metric = fn(&Row) -> f64;

/// Five panels over the run's minutes: memory, descriptors, WAL size, p99 latency, rate.
fn plot(rows: &[Row], nodes: usize, speed: f64) -> String {
    const W: f64 = 720.0;
    const PANEL: f64 = 150.0;
    const LEFT: f64 = 70.0;
    let panels: [(&str, Metric); 5] = [
        ("server RSS (MiB)", |r| r.rss_mib),
        ("open file descriptors", |r| r.fds as f64),
        ("WAL on disk (MiB)", |r| r.wal_mib),
        ("p99 PUBLISH→PUBACK (ms)", |r| r.p99_ack_ms),
        ("durable readings/s", |r| r.readings_per_s),
    ];
    let height = 40.0 + PANEL * panels.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">samos soak: {nodes} simulated nodes, speed {speed}, {:.0} min</text>\n",
        rows.last().map_or(0.0, |r| r.minute)
    );
    let x_max = rows.last().map_or(1.0, |r| r.minute).max(1e-9);
    for (i, (title, f)) in panels.iter().enumerate() {
        let top = 40.0 + PANEL * i as f64;
        let plot_h = PANEL - 40.0;
        let y_max = rows.iter().map(f).fold(0.0, f64::max).max(1e-9) * 1.1;
        let _ = writeln!(
            svg,
            "<text x=\"{LEFT}\" y=\"{}\">{title}</text>\n\
             <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"black\"/>\n\
             <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.1}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0} min</text>",
            top + 12.0,
            top + 18.0,
            top + 18.0 + plot_h,
            top + 18.0 + plot_h,
            W - 20.0,
            top + 18.0 + plot_h,
            LEFT - 6.0,
            top + 28.0,
            y_max / 1.1,
            LEFT - 6.0,
            top + 18.0 + plot_h,
            W - 20.0,
            top + 32.0 + plot_h,
            x_max,
        );
        let points: Vec<String> = rows
            .iter()
            .map(|r| {
                let x = LEFT + (W - 20.0 - LEFT) * r.minute / x_max;
                let y = top + 18.0 + plot_h * (1.0 - f(r) / y_max);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
}
