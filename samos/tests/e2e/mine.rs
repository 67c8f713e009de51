//! `samos mine` on readings a real server stored and on a CSV file: motifs, discords and window
//! statistics found, stored, and queryable with `samos sql`; a plot drawn.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

const NET: &str = "Karlovasi_IoT_network";
const LOC: &str = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";

fn samos(args: &[&str]) -> std::process::Output {
    let out = run(
        Command::new(samos_bin()).args(args),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "samos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A wave with one shape planted twice (at 100 and 400) and a zig-zag burst at 250.
fn planted(n: usize) -> Vec<f64> {
    let mut state = 99u64;
    let mut t: Vec<f64> = (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            30.0 + 5.0 * (i as f64 / 6.0).sin() + noise
        })
        .collect();
    for k in 0..20 {
        let v = 30.0 + ((k * k) % 11) as f64;
        t[100 + k] = v;
        t[400 + k] = v + 0.001 * k as f64;
    }
    for (k, v) in t[250..258].iter_mut().enumerate() {
        *v += if k % 2 == 0 { 9.0 } else { -9.0 };
    }
    t
}

#[test]
fn mining_a_csv_stores_queryable_results_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("series.csv");
    let body: String = planted(600)
        .iter()
        .enumerate()
        .map(|(i, v)| format!("2026-01-01T00:{:02}:{:02}Z,{v}\n", i / 60, i % 60))
        .collect();
    std::fs::write(&csv, format!("time,temperature\n{body}")).unwrap();
    let plot = dir.path().join("plot.svg");
    let out = samos(&[
        "mine",
        "--file",
        csv.to_str().unwrap(),
        "--column",
        "temperature",
        "--time-column",
        "time",
        "--window",
        "20",
        "--top",
        "1",
        "--backend",
        "cpu",
        "--data-dir",
        data.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(text.contains("motifs:"), "{text}");
    let q = |sql: &str| {
        stdout(&samos(&[
            "sql",
            "--data-dir",
            data.to_str().unwrap(),
            "--format",
            "csv",
            sql,
        ]))
    };
    assert_eq!(
        q("SELECT rank, first_index, second_index, first_time FROM motifs"),
        "rank,first_index,second_index,first_time\n1,100,400,2026-01-01T00:01:40Z\n"
    );
    let discord = q("SELECT start_index FROM discords");
    let start: usize = discord.lines().nth(1).unwrap().parse().unwrap();
    assert!((231..=257).contains(&start), "{discord}");
    assert_eq!(
        q("SELECT count(*) AS n, min(start_index) AS first, max(window) AS w FROM window_stats"),
        "n,first,w\n30,0,20\n"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("motif 1") && svg.contains("discord 1"));

    // A second run is a second set of rows.
    samos(&[
        "mine",
        "--file",
        csv.to_str().unwrap(),
        "--column",
        "temperature",
        "--window",
        "30",
        "--top",
        "2",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(
        q("SELECT count(DISTINCT run) AS runs, count(*) AS n FROM motifs"),
        "runs,n\n2,3\n"
    );
}

#[test]
fn mining_stored_readings_and_refusals() {
    let s = TestServer::start();
    let mut c = join_paper_node(&s, "CN1");
    let topic = format!("{NET}/CN1/{LOC}/indoorTemperatureSensor");
    for (i, v) in planted(600).iter().enumerate() {
        let payload = format!("float,0-70,{v:.3}");
        assert_eq!(
            c.publish_qos1(&topic, payload.as_bytes(), (i % 60000) as u16 + 10),
            0
        );
    }
    drop(c);
    let data = s.data_dir();
    let d = data.to_str().unwrap();
    // While the server runs: the readings are read through SQL, unflushed ones included.
    samos(&[
        "mine",
        "--node",
        "CN1",
        "--sensor",
        "indoorTemperatureSensor",
        "--window",
        "20",
        "--top",
        "1",
        "--data-dir",
        d,
    ]);
    let q = |sql: &str| stdout(&samos(&["sql", "--data-dir", d, "--format", "csv", sql]));
    assert_eq!(
        q("SELECT node_id, sensor, first_index, second_index FROM motifs"),
        "node_id,sensor,first_index,second_index\nCN1,indoorTemperatureSensor,100,400\n"
    );
    assert_eq!(q("SELECT count(*) AS n FROM window_stats"), "n\n30\n");

    let fails = |args: &[&str]| {
        let out = run(
            Command::new(samos_bin()).args(args),
            Duration::from_secs(60),
        );
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = fails(&[
        "mine",
        "--node",
        "CN9",
        "--sensor",
        "x",
        "--window",
        "20",
        "--data-dir",
        d,
    ]);
    assert!(e.contains("no values for CN9/x"), "{e}");
    let e = fails(&[
        "mine",
        "--node",
        "CN1",
        "--sensor",
        "indoorTemperatureSensor",
        "--window",
        "5000",
        "--data-dir",
        d,
    ]);
    assert!(
        e.contains("window 5000 does not fit a series of 600"),
        "{e}"
    );
    let e = fails(&[
        "mine",
        "--node",
        "CN1",
        "--sensor",
        "indoorTemperatureSensor",
        "--window",
        "20",
        "--plot",
        "plot.pdf",
        "--data-dir",
        d,
    ]);
    assert!(e.contains("give a file name ending in .svg or .png"), "{e}");
}

/// A CSV of the planted series, and the arguments that mine it with window 20.
fn planted_csv(dir: &std::path::Path) -> std::path::PathBuf {
    let csv = dir.join("series.csv");
    let body: String = planted(600).iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&csv, format!("value\n{body}")).unwrap();
    csv
}

#[test]
fn the_gpu_backend_finds_what_the_cpu_finds_and_draws_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let csv = planted_csv(dir.path());
    let data = dir.path().join("data");
    let plot = dir.path().join("plot.png");
    let out = samos(&[
        "mine",
        "--file",
        csv.to_str().unwrap(),
        "--window",
        "20",
        "--top",
        "1",
        "--backend",
        "gpu",
        "--data-dir",
        data.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend gpu: gpu ("), "{err}");
    let q = |sql: &str| {
        let d = data.to_str().unwrap();
        stdout(&samos(&["sql", "--data-dir", d, "--format", "csv", sql]))
    };
    assert_eq!(
        q("SELECT first_index, second_index, backend LIKE 'gpu (%' AS on_gpu FROM motifs"),
        "first_index,second_index,on_gpu\n100,400,true\n"
    );
    let png = std::fs::read(&plot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn without_an_adapter_auto_falls_back_and_gpu_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let csv = planted_csv(dir.path());
    let data = dir.path().join("data");
    let mine = |backend: &str| {
        run(
            Command::new(samos_bin())
                .args(["mine", "--file", csv.to_str().unwrap(), "--window", "20"])
                .args(["--backend", backend, "--data-dir", data.to_str().unwrap()])
                // No Vulkan driver, and no GL fallback: no adapter at all.
                .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
                .env("WGPU_BACKEND", "vulkan"),
            Duration::from_secs(60),
        )
    };
    let auto = mine("auto");
    let err = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "{err}");
    assert!(
        err.contains("backend auto: no GPU") && err.contains("using cpu ("),
        "{err}"
    );
    let gpu = mine("gpu");
    let err = String::from_utf8_lossy(&gpu.stderr);
    assert!(!gpu.status.success());
    assert!(
        err.contains("--backend gpu: no GPU adapter") && err.contains("--backend cpu"),
        "{err}"
    );
}

/// Real data through the co-simulated FPGA kernel: the first 3,000 readings of NAB's machine
/// temperature (the first labelled failure included), window 64. The discords start where the
/// CPU's do, their distances are no shorter than the CPU's and within 0.05 of them (the full
/// per-window bound is checked in offload/tests/fpga.rs), and the window statistics are within
/// half a quantization step of the CPU's.
#[test]
fn the_fpga_sim_backend_matches_the_cpu_on_real_data() {
    let dir = tempfile::tempdir().unwrap();
    let nab = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../datasets/nab/machine_temperature_system_failure.csv"),
    )
    .unwrap();
    let slice: String = nab.lines().take(3001).map(|l| format!("{l}\n")).collect();
    let csv = dir.path().join("nab.csv");
    std::fs::write(&csv, slice).unwrap();
    let values: Vec<f64> = nab
        .lines()
        .skip(1)
        .take(3000)
        .map(|l| l.split_once(',').unwrap().1.parse().unwrap())
        .collect();
    let mine = |backend: &str| {
        let data = dir.path().join(backend);
        let out = samos(&[
            "mine",
            "--file",
            csv.to_str().unwrap(),
            "--time-column",
            "timestamp",
            "--window",
            "64",
            "--backend",
            backend,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        let q = |sql: &str| {
            let d = data.to_str().unwrap();
            stdout(&samos(&["sql", "--data-dir", d, "--format", "csv", sql]))
        };
        (
            String::from_utf8_lossy(&out.stderr).to_string(),
            q("SELECT start_index FROM discords ORDER BY rank"),
            q("SELECT distance FROM discords ORDER BY rank"),
            q("SELECT mean, std FROM window_stats ORDER BY start_index"),
        )
    };
    let (err, fpga_starts, fpga_dist, fpga_stats) = mine("fpga-sim");
    assert!(
        err.contains("backend fpga-sim: fpga (Verilator model of hw/rtl/samos_mine.v"),
        "{err}"
    );
    let (_, cpu_starts, cpu_dist, cpu_stats) = mine("cpu");
    assert_eq!(fpga_starts, cpu_starts);
    let numbers = |csv: &str| -> Vec<f64> {
        csv.lines()
            .skip(1)
            .flat_map(|l| {
                l.split(',')
                    .map(|v| v.parse::<f64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for (f, c) in numbers(&fpga_dist).iter().zip(numbers(&cpu_dist)) {
        assert!(
            *f >= c - 1e-9 && *f - c <= 0.05,
            "discord distance {f} vs {c}"
        );
    }
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let half_step = (hi - lo) / 2.0 / f64::from((1 << 19) - 1) / 2.0;
    let (f, c) = (numbers(&fpga_stats), numbers(&cpu_stats));
    assert_eq!(f.len(), c.len());
    for (a, b) in f.iter().zip(&c) {
        assert!((a - b).abs() <= half_step + 1e-9, "{a} vs {b}");
    }
}

#[test]
fn the_fpga_backend_without_a_card_says_which_files_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = planted_csv(dir.path());
    let out = run(
        Command::new(samos_bin()).args([
            "mine",
            "--file",
            csv.to_str().unwrap(),
            "--window",
            "20",
            "--backend",
            "fpga",
            "--fpga-device",
            dir.path().join("xdma9").to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fpga backend: cannot open") && err.contains("xdma9_user"),
        "{err}"
    );
}
