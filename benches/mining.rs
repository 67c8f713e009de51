//! Matrix-profile self-join throughput against stumpy, in one run on the same series and cores:
//! n = 2^14 and 2^16, m = 128, reported as pairwise comparisons per second (pairs outside the
//! exclusion zone, each counted once).
//!
//! The series is a seeded random walk (the cost of the join does not depend on the values).
//! Each side runs once to warm up (numba compiles stumpy's kernels then), then `RUNS` times;
//! medians are compared. stumpy (PyPI) uses numba on all cores, as the CPU backend uses its
//! threads. `cargo bench --bench mining` (`-- --quick`: n = 2^14 only); writes
//! `target/samos-bench/mining.json`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arrow::array::Float64Array;
use samos_offload::Backend;
use samos_offload::cpu::Cpu;

const M: usize = 128;
const RUNS: usize = 3;
/// The target: the CPU backend at least this many times stumpy's rate.
const TARGET_RATIO: f64 = 2.0;

fn random_walk(n: usize) -> Vec<f64> {
    let mut state = 0x5a40_5a40u64;
    let mut v = 0.0;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v += (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            v
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// stumpy's median seconds on `path` (one value a line), or why it could not run.
fn stumpy(path: &Path) -> Result<(f64, String), String> {
    let script = format!(
        r#"
import json, statistics, time
import numpy as np, numba, stumpy
t = np.loadtxt({path:?})
stumpy.stump(t[:1024], {M})
times = []
for _ in range({RUNS}):
    s = time.perf_counter(); mp = stumpy.stump(t, {M}); times.append(time.perf_counter() - s)
print(json.dumps({{"median": statistics.median(times), "version": stumpy.__version__,
                  "threads": numba.get_num_threads(), "min": float(mp[:, 0].min())}}))
"#,
        path = path.display().to_string()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok((
        v["median"].as_f64().ok_or("no median")?,
        format!("stumpy {} ({} numba threads)", v["version"], v["threads"]),
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let sizes: &[usize] = if args.iter().any(|a| a == "--quick") {
        &[1 << 14]
    } else {
        &[1 << 14, 1 << 16]
    };
    let cpu = Cpu::default();
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for &n in sizes {
        let t = random_walk(n);
        let column = Float64Array::from(t.clone());
        let _ = cpu.self_join(&column, M).unwrap();
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let s = Instant::now();
            std::hint::black_box(cpu.self_join(&column, M).unwrap());
            times.push(s.elapsed().as_secs_f64());
        }
        let ours = median(times);
        let rate = samos_offload::self_join_pairs(n, M) / ours;
        println!(
            "n = {n}, m = {M}: {} {ours:.3} s, {rate:.3e} pairs/s",
            cpu.describe()
        );
        let path = dir.path().join(format!("walk-{n}.txt"));
        std::fs::write(
            &path,
            t.iter().map(|v| format!("{v}\n")).collect::<String>(),
        )
        .unwrap();
        let mut row = serde_json::json!({
            "n": n, "m": M, "backend": cpu.describe(), "seconds": ours, "pairs_per_second": rate,
        });
        match stumpy(&path) {
            Ok((theirs, version)) => {
                let ratio = theirs / ours;
                println!(
                    "           {version} {theirs:.3} s, {:.3e} pairs/s → CPU backend {ratio:.2}× stumpy (target ≥ {TARGET_RATIO}×: {})",
                    samos_offload::self_join_pairs(n, M) / theirs,
                    if ratio >= TARGET_RATIO {
                        "met"
                    } else {
                        "MISSED"
                    }
                );
                row["stumpy_seconds"] = theirs.into();
                row["stumpy"] = version.into();
                row["ratio"] = ratio.into();
            }
            Err(e) => println!("           stumpy unavailable (pip install stumpy): {e}"),
        }
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
