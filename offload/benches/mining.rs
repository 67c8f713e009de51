//! Matrix-profile self-join throughput (criterion): the CPU backend, the GPU backend and stumpy
//! on the same series in one invocation, n = 2^14 and 2^16, m = 128, reported as pairwise
//! comparisons per second (pairs outside the exclusion zone, each counted once).
//!
//! The series is a seeded random walk (the cost of the join does not depend on the values).
//! stumpy (PyPI; numba on all cores, as the CPU backend uses its threads) runs in one Python
//! process the bench keeps open, timed inside Python, so its interpreter start and numba's
//! compilation (during criterion's warm-up) are not counted. The GPU backend runs on whatever
//! adapter wgpu finds; on a software one (lavapipe) only n = 2^14, which already takes
//! seconds. After criterion's report the bench prints the side-by-side ratios of the medians
//! and writes them to `target/samos-bench/mining.json`.
//!
//! `cargo bench --bench mining` (`-- --quick` for criterion's quick mode).
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime};

use arrow::array::Float64Array;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use samos_offload::Backend;
use samos_offload::cpu::Cpu;
use samos_offload::gpu::Gpu;

const M: usize = 128;
const SIZES: [usize; 2] = [1 << 14, 1 << 16];
/// The target: the CPU backend at least this many times stumpy's rate.
const TARGET_RATIO: f64 = 2.0;

/// stumpy in a long-lived Python process: one line in (`path iterations`), seconds out.
struct Stumpy {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    version: String,
}

impl Stumpy {
    fn start() -> Result<Stumpy, String> {
        let script = format!(
            r#"
import sys, time
import numpy as np, numba, stumpy
print(f"stumpy {{stumpy.__version__}} ({{numba.get_num_threads()}} numba threads)", flush=True)
series = {{}}
for line in sys.stdin:
    path, iters = line.split()
    t = series.setdefault(path, np.loadtxt(path))
    s = time.perf_counter()
    for _ in range(int(iters)):
        stumpy.stump(t, {M})
    print(time.perf_counter() - s, flush=True)
"#
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let input = child.stdin.take().ok_or("no stdin")?;
        let mut output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut version = String::new();
        output.read_line(&mut version).map_err(|e| e.to_string())?;
        if version.is_empty() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            return Err(err.lines().last().unwrap_or("python3 failed").to_string());
        }
        Ok(Stumpy {
            child,
            input,
            output,
            version: version.trim().to_string(),
        })
    }

    fn time(&mut self, path: &Path, iters: u64) -> Duration {
        writeln!(self.input, "{} {iters}", path.display()).expect("stumpy process");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("stumpy process");
        Duration::from_secs_f64(line.trim().parse().expect("stumpy's time"))
    }
}

impl Drop for Stumpy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where criterion may have written its estimates: `CARGO_TARGET_DIR`, the workspace's target
/// directory, or `target` under the working directory (the binary run by hand).
fn criterion_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    dirs.push(PathBuf::from("target"));
    dirs.into_iter().map(|d| d.join("criterion")).collect()
}

/// The median criterion recorded for `mining/{name}/{n}` since `since`, in seconds.
fn median(name: &str, n: usize, since: SystemTime) -> Option<f64> {
    criterion_dirs().into_iter().find_map(|dir| {
        let path = dir.join(format!("mining/{name}/{n}/new/estimates.json"));
        if std::fs::metadata(&path).ok()?.modified().ok()? < since {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        Some(v["median"]["point_estimate"].as_f64()? / 1e9)
    })
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let cpu = Cpu::default();
    let gpu = match Gpu::new() {
        Ok(g) => Some(g),
        Err(e) => {
            println!("GPU backend not measured: {e}");
            None
        }
    };
    let mut stumpy = match Stumpy::start() {
        Ok(s) => Some(s),
        Err(e) => {
            println!("stumpy not measured (pip install stumpy): {e}");
            None
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("mining");
    group.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        let t = samos_offload::reference::random_walk(n, 0x5a40_5a40);
        let column = Float64Array::from(t.clone());
        let pairs = samos_offload::self_join_pairs(n, M);
        group.throughput(Throughput::Elements(pairs as u64));
        group.bench_with_input(BenchmarkId::new("cpu", n), &column, |b, col| {
            b.iter(|| cpu.self_join(col, M).unwrap());
        });
        if let Some(gpu) = &gpu
            && (!gpu.is_software() || n <= 1 << 14)
        {
            group.bench_with_input(BenchmarkId::new("gpu", n), &column, |b, col| {
                b.iter(|| gpu.self_join(col, M).unwrap());
            });
        }
        if let Some(stumpy) = &mut stumpy {
            let path = dir.path().join(format!("walk-{n}.txt"));
            let text: String = t.iter().map(|v| format!("{v}\n")).collect();
            std::fs::write(&path, text).unwrap();
            group.bench_function(BenchmarkId::new("stumpy", n), |b| {
                b.iter_custom(|iters| stumpy.time(&path, iters));
            });
        }
    }
    group.finish();
    c.final_summary();

    let mut rows = Vec::new();
    println!("\nself-join, m = {M}, medians of this run:");
    for n in SIZES {
        let pairs = samos_offload::self_join_pairs(n, M);
        let mut row = serde_json::json!({"n": n, "m": M, "pairs": pairs});
        let mut line = format!("n = 2^{}:", n.trailing_zeros());
        for (name, label) in [
            ("cpu", cpu.describe()),
            (
                "gpu",
                gpu.as_ref().map(Backend::describe).unwrap_or_default(),
            ),
            (
                "stumpy",
                stumpy
                    .as_ref()
                    .map(|s| s.version.clone())
                    .unwrap_or_default(),
            ),
        ] {
            if let Some(s) = median(name, n, started) {
                line += &format!("  {label} {s:.3} s ({:.2e} pairs/s);", pairs / s);
                row[name] = serde_json::json!({"backend": label, "seconds": s, "pairs_per_second": pairs / s});
            }
        }
        if let (Some(ours), Some(theirs)) =
            (median("cpu", n, started), median("stumpy", n, started))
        {
            let ratio = theirs / ours;
            line += &format!(
                "  CPU backend {ratio:.2}× stumpy (target ≥ {TARGET_RATIO}×: {})",
                if ratio >= TARGET_RATIO {
                    "met"
                } else {
                    "MISSED"
                }
            );
            row["cpu_over_stumpy"] = ratio.into();
        }
        if let (Some(g), Some(c)) = (median("gpu", n, started), median("cpu", n, started)) {
            line += &format!("  GPU backend {:.2}× the CPU backend", c / g);
            row["gpu_over_cpu"] = (c / g).into();
        }
        println!("{line}");
        rows.push(row);
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/samos-bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("mining.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
}
