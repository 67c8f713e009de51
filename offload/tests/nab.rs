//! The CPU backend on a real series: NAB's machine temperature (22,695 readings, 5 minutes
//! apart) with a day-long window. Its discords fall inside the failures NAB labels.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use arrow::array::Float64Array;
use samos_offload::Backend;
use samos_offload::cpu::Cpu;

use common::nab;

/// NAB's labelled anomaly windows for this series (datasets/nab/anomaly_windows.json).
const FAILURES: [(&str, &str); 4] = [
    ("2013-12-10 06:25:00", "2013-12-12 05:35:00"),
    ("2013-12-15 17:50:00", "2013-12-17 17:00:00"),
    ("2014-01-27 14:20:00", "2014-01-29 13:30:00"),
    ("2014-02-07 14:55:00", "2014-02-09 14:05:00"),
];

#[test]
fn a_real_slice_matches_brute_force() {
    let (_, values) = nab();
    let slice = &values[2000..3500];
    let fast = Cpu::default()
        .self_join(&Float64Array::from(slice.to_vec()), 64)
        .unwrap();
    let slow = samos_offload::reference::matrix_profile(slice, slice, 64, true);
    for (i, (a, b)) in fast.profile.iter().zip(&slow.profile).enumerate() {
        assert!((a - b).abs() <= 1e-9, "window {i}: {a} vs {b}");
    }
}

#[test]
fn discords_and_motifs_of_the_machine_temperature() {
    let (times, values) = nab();
    let column = Float64Array::from(values);
    let labelled = |start: usize, m: usize| {
        let (from, to) = (&times[start], &times[start + m - 1]);
        FAILURES
            .iter()
            .any(|(a, b)| from.as_str() <= *b && to.as_str() >= *a)
    };
    for m in [64usize, 288] {
        let mp = Cpu::default().self_join(&column, m).unwrap();
        let discords = mp.discords(3);
        for d in &discords {
            println!(
                "m = {m}: discord at {} ({}), distance {:.3}, in a labelled failure: {}",
                d.start,
                times[d.start],
                d.distance,
                labelled(d.start, m)
            );
        }
        for mo in mp.motifs(3) {
            println!(
                "m = {m}: motif {} ({}) ~ {} ({}), distance {:.3}",
                mo.first, times[mo.first], mo.second, times[mo.second], mo.distance
            );
        }
        if m == 64 {
            // With a five-hour window one of the three strongest anomalies is a known failure.
            assert!(
                discords.iter().any(|d| labelled(d.start, m)),
                "{discords:?}"
            );
        }
    }
}

/// The GPU backend (lavapipe in CI) on the whole series: the same profile as the CPU within
/// the documented f32 bound, the same discords, and window statistics within theirs.
#[cfg(feature = "gpu")]
#[test]
fn the_gpu_backend_agrees_with_the_cpu_on_the_machine_temperature() {
    use samos_offload::gpu::{CORRELATION_TOLERANCE, Gpu, STATS_TOLERANCE};
    use samos_offload::{WindowSpec, exclusion_zone};
    let (_, values) = nab();
    let column = Float64Array::from(values.clone());
    let gpu = Gpu::new().unwrap_or_else(|e| panic!("{e}: bash scripts/setup.sh installs lavapipe"));
    for m in [64usize, 288] {
        let cpu = Cpu::default().self_join(&column, m).unwrap();
        let got = gpu.self_join(&column, m).unwrap();
        let mut worst = 0.0f64;
        for (i, (g, c)) in got.profile.iter().zip(&cpu.profile).enumerate() {
            let excess = (g * g - c * c) / (2.0 * m as f64);
            assert!(
                *g >= c - 1e-9 && excess <= 2.0 * CORRELATION_TOLERANCE,
                "m = {m}, window {i}: gpu {g} vs cpu {c}"
            );
            worst = worst.max(excess);
        }
        println!(
            "m = {m}: {} — largest excess over the CPU {worst:.2e} (as a correlation)",
            gpu.describe()
        );
        let (a, b) = (got.discords(3), cpu.discords(3));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                x.start.abs_diff(y.start) <= exclusion_zone(m),
                "{a:?} vs {b:?}"
            );
        }
    }
    let spec = WindowSpec {
        window: 288,
        step: 288,
    };
    let got = &gpu.window_stats(&[&column], spec).unwrap()[0];
    let want = &Cpu::new(1).window_stats(&[&column], spec).unwrap()[0];
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let scale = values.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
    for (g, w) in got
        .mean
        .iter()
        .zip(&want.mean)
        .chain(got.std.iter().zip(&want.std))
    {
        assert!((g - w).abs() <= STATS_TOLERANCE * scale, "{g} vs {w}");
    }
    for (g, w) in got.slope.iter().zip(&want.slope) {
        assert!(
            (g - w).abs() <= STATS_TOLERANCE * scale / 288.0,
            "{g} vs {w}"
        );
    }
}

#[test]
fn the_streamed_left_profile_is_the_batch_one() {
    // The whole machine temperature, day-long windows against the week before each.
    let (_, values) = nab();
    let series = &values[..];
    let (m, history) = (288, 2_016);
    let want = samos_offload::reference::left_matrix_profile(series, m, history);
    let mut live = samos_offload::stream::LeftProfile::new(m, history).unwrap();
    let mut worst = 0.0f64;
    for (j, step) in series.iter().filter_map(|v| live.push(*v)).enumerate() {
        let best = want.profile[j];
        if best.is_infinite() {
            assert!(step.distance.is_infinite(), "window {j}");
            continue;
        }
        let excess = (step.distance * step.distance - best * best).abs();
        worst = worst.max(excess);
        assert!(excess <= 1e-8, "window {j}: {} vs {best}", step.distance);
    }
    println!("largest difference of a squared distance: {worst:e}");
}
