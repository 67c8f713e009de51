//! The FPGA backend co-simulated: the host driver talks to the Verilator model of
//! hw/rtl/samos_mine.v through the register map and the two streams, and every result is
//! checked against the brute-force reference within the documented error bound.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use arrow::array::Float64Array;
use proptest::prelude::*;
use samos_offload::cpu::Cpu;
use samos_offload::fpga::Fpga;
use samos_offload::fpga::format::{KEY_RHO_ERROR, Quantizer, stats_bound};
use samos_offload::{Backend, MatrixProfile, WindowSpec, exclusion_zone, reference};

fn column(v: &[f64]) -> Float64Array {
    Float64Array::from(v.to_vec())
}

/// Population standard deviation of each window; `None` for a gap, 0 for a constant window.
fn sigmas(t: &[f64], m: usize) -> Vec<Option<f64>> {
    (0..=t.len() - m)
        .map(|i| {
            let w = &t[i..i + m];
            if w.iter().any(|v| !v.is_finite()) {
                return None;
            }
            if w.iter().all(|v| *v == w[0]) {
                return Some(0.0);
            }
            let mean = w.iter().sum::<f64>() / m as f64;
            Some((w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64).sqrt())
        })
        .collect()
}

/// z-normalized distance of window i of a and j of b, straight from the definition.
fn distance(a: &[f64], b: &[f64], i: usize, j: usize, m: usize) -> f64 {
    reference::matrix_profile(&a[i..i + m], &b[j..j + m], m, false).profile[0]
}

/// Checks `got` against the brute-force profile: the same windows have neighbours, every
/// reported distance is the exact distance of the reported pair, and it exceeds the true
/// nearest distance by no more than the documented bound.
fn check_join(a: &[f64], b: &[f64], m: usize, self_join: bool, got: &MatrixProfile) {
    let want = reference::matrix_profile(a, b, m, self_join);
    let (qa, qb) = (Quantizer::for_series(a), Quantizer::for_series(b));
    let (sa, sb) = (sigmas(a, m), sigmas(b, m));
    // Pairs with a constant window or one below a quantization step are compared exactly.
    let drho = |i: usize, j: usize| match (sa[i], sb[j]) {
        (Some(si), Some(sj)) if si > 0.0 && sj > 0.0 => qa.step / si + qb.step / sj + KEY_RHO_ERROR,
        _ => 0.0,
    };
    let mf = m as f64;
    for i in 0..want.profile.len() {
        let (d, j) = (got.profile[i], got.index[i]);
        let (dstar, jstar) = (want.profile[i], want.index[i]);
        if !dstar.is_finite() {
            assert!(!d.is_finite() && j < 0, "window {i}: {d} at {j}, want none");
            continue;
        }
        assert!(j >= 0, "window {i}: no neighbour, want {dstar} at {jstar}");
        let j = j as usize;
        if self_join {
            assert!(
                i.abs_diff(j) > exclusion_zone(m),
                "window {i}: trivial match {j}"
            );
        }
        let exact = distance(a, b, i, j, m);
        assert!(
            (d - exact).abs() <= 1e-9 * (1.0 + exact),
            "window {i}: reported {d} for {j}, exact {exact}"
        );
        assert!(
            d >= dstar - 1e-9,
            "window {i}: {d} beats the true nearest {dstar}"
        );
        let bound = 2.0 * mf * (drho(i, j) + drho(i, jstar as usize)) + 1e-9 * (1.0 + mf);
        assert!(
            d * d - dstar * dstar <= bound,
            "window {i}: {d} at {j} vs nearest {dstar} at {jstar}, bound on d² {bound}"
        );
    }
}

/// A wave with noise, flat stretches (constant windows) and gaps.
fn series() -> impl Strategy<Value = Vec<f64>> {
    (
        prop::collection::vec(-100.0f64..100.0, 40..260),
        0.0f64..1.0,
        any::<u64>(),
    )
        .prop_map(|(mut t, smooth, seed)| {
            for i in 1..t.len() {
                t[i] = smooth * t[i - 1] + (1.0 - smooth) * t[i];
            }
            if seed % 3 == 0 {
                let at = (seed as usize / 3) % (t.len() - 12);
                t[at..at + 12].iter_mut().for_each(|v| *v = 5.0);
            }
            if seed % 5 == 0 {
                let at = (seed as usize / 5) % t.len();
                t[at] = f64::NAN;
            }
            t
        })
}

fn sim() -> Fpga {
    Fpga::sim().expect("the Verilator model is built with the crate (scripts/setup.sh)")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn self_join_is_within_the_bound(t in series(), m in 3usize..24) {
        prop_assume!(m <= t.len());
        let got = sim().self_join(&column(&t), m).unwrap();
        check_join(&t, &t, m, true, &got);
    }

    #[test]
    fn ab_join_is_within_the_bound(a in series(), b in series(), m in 3usize..24) {
        prop_assume!(m <= a.len() && m <= b.len());
        let got = sim().ab_join(&column(&a), &column(&b), m).unwrap();
        check_join(&a, &b, m, false, &got);
    }

    #[test]
    fn window_stats_are_within_half_a_step(t in series(), window in 1usize..40, step in 1usize..40) {
        let spec = WindowSpec { window, step };
        let got = &sim().window_stats(&[&column(&t)], spec).unwrap()[0];
        let want = &Cpu::new(1).window_stats(&[&column(&t)], spec).unwrap()[0];
        let quantizer = Quantizer::for_series(&t);
        prop_assert_eq!(got.mean.len(), want.mean.len());
        for w in 0..want.mean.len() {
            let valid: Vec<bool> = t[w * step..w * step + window].iter().map(|v| v.is_finite()).collect();
            let bound = stats_bound(&valid, &quantizer);
            let g = [got.min[w], got.max[w], got.mean[w], got.std[w], got.slope[w]];
            let e = [want.min[w], want.max[w], want.mean[w], want.std[w], want.slope[w]];
            for k in 0..5 {
                let ok = (g[k].is_nan() && e[k].is_nan())
                    || (g[k] - e[k]).abs() <= bound[k] + 1e-9 * (1.0 + e[k].abs());
                prop_assert!(ok, "window {} stat {}: {} vs {} (bound {})", w, k, g[k], e[k], bound[k]);
            }
        }
    }
}

#[test]
fn series_larger_than_card_memory_are_joined_in_blocks() {
    let t: Vec<f64> = (0..900)
        .map(|i| (f64::from(i) / 13.0).sin() * 10.0 + f64::from((i * 7919) % 61) * 0.05)
        .collect();
    let b: Vec<f64> = (0..500).map(|i| (f64::from(i) / 7.0).cos() * 3.0).collect();
    // 256 words per memory: blocks of 128 − (m − 1) windows, several in each direction.
    let fpga = sim().with_capacity_limit(256);
    check_join(&t, &t, 20, true, &fpga.self_join(&column(&t), 20).unwrap());
    check_join(
        &t,
        &b,
        20,
        false,
        &fpga.ab_join(&column(&t), &column(&b), 20).unwrap(),
    );
}

#[test]
fn progress_counts_every_pair_the_card_compares() {
    let t: Vec<f64> = (0..400).map(|i| (f64::from(i) * 0.37).sin()).collect();
    let progress = samos_offload::Progress::new();
    let fpga = sim().with_progress(progress.clone());
    fpga.self_join(&column(&t), 16).unwrap();
    let (done, total) = progress.get();
    assert_eq!(done, total);
    // Both directions of each pair outside the exclusion zone.
    let l = 400 - 16 + 1;
    assert_eq!(total as f64, 2.0 * samos_offload::self_join_pairs(400, 16));
    assert!(total > 0 && total < (l * l) as u64);
}

#[test]
fn windows_the_kernel_cannot_take_are_refused_clearly() {
    let t: Vec<f64> = (0..5000).map(|i| f64::from(i).sin()).collect();
    let err = sim().self_join(&column(&t), 4097).unwrap_err().to_string();
    assert!(err.contains("longer than the kernel's 4096"), "{err}");
}

/// Real data: four weeks of NAB's machine temperature (5-minute readings, the first failure
/// included), co-simulated with a 64-sample window and with the day-long 288-sample window.
#[test]
fn nab_machine_temperature_matches_the_reference_within_the_bound() {
    let (_, values) = common::nab();
    let slice = &values[..2500];
    for m in [64usize, 288] {
        let got = sim().self_join(&column(slice), m).unwrap();
        check_join(slice, slice, m, true, &got);
        let cpu = Cpu::default().self_join(&column(slice), m).unwrap();
        let worst = got
            .profile
            .iter()
            .zip(&cpu.profile)
            .map(|(g, c)| g - c)
            .fold(0.0f64, f64::max);
        println!("m = {m}: largest excess over the CPU profile {worst:.3e}");
        assert_eq!(
            got.discords(3).iter().map(|d| d.start).collect::<Vec<_>>(),
            cpu.discords(3).iter().map(|d| d.start).collect::<Vec<_>>()
        );
    }
    let spec = WindowSpec {
        window: 288,
        step: 288,
    };
    let got = &sim().window_stats(&[&column(&values)], spec).unwrap()[0];
    let want = &Cpu::default()
        .window_stats(&[&column(&values)], spec)
        .unwrap()[0];
    let step = Quantizer::for_series(&values).step;
    for w in 0..want.mean.len() {
        assert!((got.mean[w] - want.mean[w]).abs() <= step / 2.0 + 1e-9);
        assert!((got.std[w] - want.std[w]).abs() <= step / 2.0 + 1e-9);
    }
}

/// Every lane count built (1, 4 and 9) gives the same profile to the bit — indices and
/// distances, for a self-join tiled over a small card memory and an AB-join — within the
/// bound of the brute-force reference, and the lanes cut the kernel's clock cycles: for a
/// series of 1,200 values the join's cycles fall close to 1/lanes of one lane's.
#[test]
fn every_lane_count_gives_the_same_profile_in_fewer_cycles() {
    let lanes = samos_offload::fpga::device::SimDevice::lane_counts();
    assert_eq!(lanes, [1, 4, 9], "the models build.rs builds");
    let t: Vec<f64> = (0..1200)
        .map(|i| (f64::from(i) / 17.0).sin() * 8.0 + f64::from((i * 7919) % 53) * 0.04)
        .collect();
    let b: Vec<f64> = (0..700).map(|i| (f64::from(i) / 9.0).cos() * 3.0).collect();
    let m = 24;
    let mut one_lane: Option<(MatrixProfile, MatrixProfile, u64)> = None;
    for &n in &lanes {
        let fpga = Fpga::sim_with_lanes(n).unwrap();
        assert_eq!(fpga.lanes(), n);
        let self_join = fpga.self_join(&column(&t), m).unwrap();
        let cycles = fpga.join_cycles();
        let ab = fpga.ab_join(&column(&t), &column(&b), m).unwrap();
        let tiled = Fpga::sim_with_lanes(n)
            .unwrap()
            .with_capacity_limit(512)
            .self_join(&column(&t), m)
            .unwrap();
        check_join(&t, &t, m, true, &self_join);
        check_join(&t, &b, m, false, &ab);
        assert_eq!(tiled.index, self_join.index, "{n} lanes: tiling");
        let (first_self, first_ab, first_cycles) =
            one_lane.get_or_insert_with(|| (self_join.clone(), ab.clone(), cycles));
        assert_eq!(self_join.index, first_self.index, "{n} lanes");
        assert_eq!(self_join.profile, first_self.profile, "{n} lanes");
        assert_eq!(ab.index, first_ab.index, "{n} lanes");
        assert_eq!(ab.profile, first_ab.profile, "{n} lanes");
        let ratio = cycles as f64 / *first_cycles as f64;
        println!("{n} lanes: {cycles} cycles, {ratio:.3} of one lane's");
        assert!(
            ratio <= 1.0 / f64::from(n) + 0.03,
            "{n} lanes took {ratio:.3} of one lane's cycles"
        );
    }
}
