//! Matrix-profile self-join throughput (criterion): the CPU backend, the GPU backend, stumpy and
//! SCAMP's CPU kernel (pyscamp) on the same series in one invocation, n = 2^14 and 2^16,
//! m = 128, reported as pairwise comparisons per second (pairs outside the exclusion zone,
//! each counted once).
//!
//! The series is a seeded random walk (the cost of the join does not depend on the values).
//! stumpy (PyPI; numba on all cores, as the CPU backend uses its threads) and pyscamp (PyPI's
//! source package, built here with CMake; all cores) each run in a Python process the bench
//! keeps open, timed inside Python, so interpreter start and numba's compilation (during
//! criterion's warm-up) are not counted. A peer that is not installed is installed with pip
//! first (`SAMOS_BENCH_NO_INSTALL=1`: left out instead, and said so). The GPU backend runs on whatever
//! adapter wgpu finds; on a software one (lavapipe) only n = 2^14, which already takes
//! seconds. After criterion's report the CPU backend and the peers run again in turns
//! ([`ROUNDS`] rounds per size, each turn at least one run and a second): criterion measures
//! one engine after another, and on a shared machine the minutes between them moved the
//! ratios by a quarter. The bench prints criterion's medians and the ratios of the medians of
//! the turns (those are judged against the targets) and writes them to
//! `target/samos-bench/mining.json`. Where criterion's filter left an engine out, there are no
//! turns.
//!
//! `cargo bench --bench mining` (`-- --quick` for criterion's quick mode).
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::Float64Array;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use samos_offload::Backend;
use samos_offload::cpu::Cpu;
use samos_offload::gpu::Gpu;

const M: usize = 128;
const SIZES: [usize; 2] = [1 << 14, 1 << 16];
/// The targets: the CPU backend at least this many times stumpy's and SCAMP's rates.
const STUMPY_TARGET: f64 = 3.0;
const PYSCAMP_TARGET: f64 = 1.0;
/// Rounds of turns (CPU backend, then each peer) per size for the ratios.
const ROUNDS: usize = 3;

/// One engine's turn: runs `run` (which returns its seconds) at least once and until a second
/// has passed (at most 100 times); every run's seconds.
fn turn(mut run: impl FnMut() -> f64) -> Vec<f64> {
    let start = Instant::now();
    let mut runs = Vec::new();
    while runs.is_empty() || (start.elapsed() < Duration::from_secs(1) && runs.len() < 100) {
        runs.push(run());
    }
    runs
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let k = v.len() / 2;
    if v.len() % 2 == 1 {
        v[k]
    } else {
        (v[k - 1] + v[k]) / 2.0
    }
}

/// A Python matrix-profile library in a long-lived process: one line in (`path iterations`),
/// seconds out.
struct PythonPeer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    version: String,
}

/// A peer the bench compares against: how to import it, describe it and run one self-join of
/// `t` (a NumPy array) with window `M`, and how it is installed where it is missing.
struct Peer {
    name: &'static str,
    import: &'static str,
    describe: &'static str,
    call: &'static str,
    /// `pip install` argument lists, run in order.
    install: &'static [&'static [&'static str]],
}

const PEERS: [Peer; 2] = [
    Peer {
        name: "stumpy",
        import: "import numba, stumpy",
        describe: "f'stumpy {stumpy.__version__} ({numba.get_num_threads()} numba threads)'",
        call: "stumpy.stump(t, M)",
        install: &[&["numpy", "stumpy"]],
    },
    Peer {
        // SCAMP's CPU kernel, built from PyPI's source package (CMake from PyPI; without a
        // CUDA toolkit it builds the CPU path only). Double precision: its CPU build has no
        // other.
        name: "pyscamp",
        import: "import os, pyscamp",
        describe: "f'pyscamp {__import__(\"importlib.metadata\").metadata.version(\"pyscamp\")} (SCAMP CPU, {os.cpu_count()} threads, double)'",
        call: "pyscamp.selfjoin(t, M, threads=os.cpu_count(), precision='double')",
        install: &[
            &["numpy", "cmake", "wheel", "setuptools", "setuptools_scm"],
            &["--no-build-isolation", "pyscamp"],
        ],
    },
];

impl PythonPeer {
    /// The peer's process, installing the library first where it is missing (unless
    /// `SAMOS_BENCH_NO_INSTALL` is set).
    fn start(peer: &Peer) -> Result<PythonPeer, String> {
        let importable = Command::new("python3")
            .args(["-c", &format!("import numpy; {}", peer.import)])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !importable && std::env::var_os("SAMOS_BENCH_NO_INSTALL").is_none() {
            println!("{}: not installed; installing it from PyPI", peer.name);
            for args in peer.install {
                let ok = Command::new("python3")
                    .args(["-m", "pip", "install", "-q"])
                    .args(*args)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!("pip install {} failed", args.join(" ")));
                }
            }
        }
        let script = format!(
            r#"
import sys, time
import numpy as np
{import}
M = {M}
print({describe}, flush=True)
series = {{}}
for line in sys.stdin:
    path, iters = line.split()
    t = series.setdefault(path, np.loadtxt(path))
    s = time.perf_counter()
    for _ in range(int(iters)):
        {call}
    print(time.perf_counter() - s, flush=True)
"#,
            import = peer.import,
            describe = peer.describe,
            call = peer.call,
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
        Ok(PythonPeer {
            child,
            input,
            output,
            version: version.trim().to_string(),
        })
    }

    fn time(&mut self, path: &Path, iters: u64) -> Duration {
        writeln!(self.input, "{} {iters}", path.display()).expect("peer process");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("peer process");
        Duration::from_secs_f64(line.trim().parse().expect("the peer's time"))
    }
}

impl Drop for PythonPeer {
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
    let mut peers: Vec<(&Peer, PythonPeer)> = PEERS
        .iter()
        .filter_map(|peer| match PythonPeer::start(peer) {
            Ok(p) => Some((peer, p)),
            Err(e) => {
                println!("{} not measured: {e}", peer.name);
                None
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let inputs: Vec<(usize, Float64Array, PathBuf)> = SIZES
        .into_iter()
        .map(|n| {
            let t = samos_offload::reference::random_walk(n, 0x5a40_5a40);
            let path = dir.path().join(format!("walk-{n}.txt"));
            let text: String = t.iter().map(|v| format!("{v}\n")).collect();
            std::fs::write(&path, text).unwrap();
            (n, Float64Array::from(t), path)
        })
        .collect();
    let mut group = c.benchmark_group("mining");
    group.sampling_mode(SamplingMode::Flat);
    for (n, column, path) in &inputs {
        let n = *n;
        let pairs = samos_offload::self_join_pairs(n, M);
        group.throughput(Throughput::Elements(pairs as u64));
        group.bench_with_input(BenchmarkId::new("cpu", n), column, |b, col| {
            b.iter(|| cpu.self_join(col, M).unwrap());
        });
        if let Some(gpu) = &gpu
            && (!gpu.is_software() || n <= 1 << 14)
        {
            group.bench_with_input(BenchmarkId::new("gpu", n), column, |b, col| {
                b.iter(|| gpu.self_join(col, M).unwrap());
            });
        }
        for (peer, process) in &mut peers {
            group.bench_function(BenchmarkId::new(peer.name, n), |b| {
                b.iter_custom(|iters| process.time(path, iters));
            });
        }
    }
    group.finish();
    c.final_summary();

    let mut rows = Vec::new();
    println!("\nself-join, m = {M}, medians of this run:");
    for (n, column, path) in &inputs {
        let n = *n;
        let pairs = samos_offload::self_join_pairs(n, M);
        let mut row = serde_json::json!({"n": n, "m": M, "pairs": pairs});
        let mut line = format!("n = 2^{}:", n.trailing_zeros());
        let mut backends = vec![
            ("cpu", cpu.describe()),
            (
                "gpu",
                gpu.as_ref().map(Backend::describe).unwrap_or_default(),
            ),
        ];
        backends.extend(peers.iter().map(|(peer, p)| (peer.name, p.version.clone())));
        for (name, label) in backends {
            if let Some(s) = median(name, n, started) {
                line += &format!("  {label} {s:.3} s ({:.2e} pairs/s);", pairs / s);
                row[name] = serde_json::json!({"backend": label, "seconds": s, "pairs_per_second": pairs / s});
            }
        }
        // The turns: only where criterion measured the CPU backend and every peer.
        let turns = median("cpu", n, started).is_some()
            && peers
                .iter()
                .all(|(peer, _)| median(peer.name, n, started).is_some());
        let mut alternating: Vec<(&str, Vec<f64>)> = vec![("cpu", Vec::new())];
        alternating.extend(peers.iter().map(|(peer, _)| (peer.name, Vec::new())));
        for _ in 0..if turns { ROUNDS } else { 0 } {
            alternating[0].1.extend(turn(|| {
                let start = Instant::now();
                cpu.self_join(column, M).unwrap();
                start.elapsed().as_secs_f64()
            }));
            for (k, (_, process)) in peers.iter_mut().enumerate() {
                alternating[k + 1]
                    .1
                    .extend(turn(|| process.time(path, 1).as_secs_f64()));
            }
        }
        let alternating: Vec<(&str, f64, usize)> = alternating
            .into_iter()
            .filter(|(_, runs)| !runs.is_empty())
            .map(|(name, runs)| {
                let count = runs.len();
                (name, median_of(runs), count)
            })
            .collect();
        if !alternating.is_empty() {
            line += &format!("\n  in turns ({ROUNDS} rounds, medians of every run):");
            for (name, s, count) in &alternating {
                line += &format!(" {name} {s:.3} s ({count} runs);");
                row[format!("{name}_in_turns_seconds")] = (*s).into();
            }
        }
        let in_turns = |name: &str| {
            alternating
                .iter()
                .find(|(k, ..)| *k == name)
                .map(|(_, s, _)| *s)
        };
        for (peer, target) in [("stumpy", STUMPY_TARGET), ("pyscamp", PYSCAMP_TARGET)] {
            let (ours, theirs) = match (in_turns("cpu"), in_turns(peer)) {
                (Some(ours), Some(theirs)) => (Some(ours), Some(theirs)),
                _ => (median("cpu", n, started), median(peer, n, started)),
            };
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                let ratio = theirs / ours;
                line += &format!(
                    "  CPU backend {ratio:.2}× {peer} (target ≥ {target}×: {})",
                    if ratio >= target { "met" } else { "MISSED" }
                );
                row[format!("cpu_over_{peer}")] = ratio.into();
            }
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
