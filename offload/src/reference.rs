//! Brute-force kernels, O(n²·m): the plain definitions every backend is tested against.

use crate::{MatrixProfile, exclusion_zone};

/// The z-normalized window of `t` at `i`, or `None` when it holds a NaN. A constant window
/// (σ = 0) is all zeros.
fn znorm(t: &[f64], i: usize, m: usize) -> Option<Vec<f64>> {
    let w = &t[i..i + m];
    if w.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mean = w.iter().sum::<f64>() / m as f64;
    let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64;
    let sd = var.sqrt();
    Some(
        w.iter()
            .map(|v| if sd > 0.0 { (v - mean) / sd } else { 0.0 })
            .collect(),
    )
}

/// The z-normalized Euclidean distance: 0 between two constant windows, √m between a constant
/// and a varying one (the conventions of stumpy and SCRIMP).
fn distance(a: &[f64], b: &[f64], a_constant: bool, b_constant: bool) -> f64 {
    let m = a.len() as f64;
    match (a_constant, b_constant) {
        (true, true) => 0.0,
        (true, false) | (false, true) => m.sqrt(),
        (false, false) => a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt(),
    }
}

fn windows(t: &[f64], m: usize) -> Vec<Option<(Vec<f64>, bool)>> {
    if m == 0 || t.len() < m {
        return Vec::new();
    }
    (0..=t.len() - m)
        .map(|i| {
            znorm(t, i, m).map(|z| {
                let w = &t[i..i + m];
                let constant = w.iter().all(|v| *v == w[0]);
                (z, constant)
            })
        })
        .collect()
}

/// For each window of `query`, the distance to its nearest window of `target` and where it
/// starts; `self_join` (query = target) leaves out pairs within the exclusion zone.
pub fn matrix_profile(query: &[f64], target: &[f64], m: usize, self_join: bool) -> MatrixProfile {
    let wq = windows(query, m);
    let wt = windows(target, m);
    let zone = exclusion_zone(m);
    let mut profile = vec![f64::INFINITY; wq.len()];
    let mut index = vec![-1i64; wq.len()];
    for (i, x) in wq.iter().enumerate() {
        let Some((x, xc)) = x else { continue };
        for (j, y) in wt.iter().enumerate() {
            let Some((y, yc)) = y else { continue };
            if self_join && i.abs_diff(j) <= zone {
                continue;
            }
            let d = distance(x, y, *xc, *yc);
            if d < profile[i] {
                profile[i] = d;
                index[i] = j as i64;
            }
        }
    }
    MatrixProfile {
        window: m,
        profile,
        index,
    }
}

/// The left matrix profile: for each window `j`, its nearest window `i` with
/// `j − history ≤ i < j − zone` (before it, beyond the exclusion zone, at most `history` back).
pub fn left_matrix_profile(t: &[f64], m: usize, history: usize) -> MatrixProfile {
    let w = windows(t, m);
    let zone = exclusion_zone(m);
    let mut profile = vec![f64::INFINITY; w.len()];
    let mut index = vec![-1i64; w.len()];
    for (j, y) in w.iter().enumerate() {
        let Some((y, yc)) = y else { continue };
        for (i, x) in w
            .iter()
            .enumerate()
            .take(j.saturating_sub(zone))
            .skip(j.saturating_sub(history))
        {
            let Some((x, xc)) = x else { continue };
            let d = distance(x, y, *xc, *yc);
            if d < profile[j] {
                profile[j] = d;
                index[j] = i as i64;
            }
        }
    }
    MatrixProfile {
        window: m,
        profile,
        index,
    }
}

/// Statistics of `t[start..start + len]` over the finite values: min, max, mean, population
/// standard deviation, least-squares slope against the sample index (NaN where undefined).
pub fn window_stats(window: &[f64]) -> [f64; 5] {
    let pts: Vec<(f64, f64)> = window
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| (i as f64, *v))
        .collect();
    if pts.is_empty() {
        return [f64::NAN; 5];
    }
    let n = pts.len() as f64;
    let min = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let mean = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let std = (pts.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - mean)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
    [min, max, mean, std, slope]
}

/// A seeded random walk (steps uniform in [−0.5, 0.5)): the series property tests and the
/// mining benchmark use where the values do not matter, only that they vary.
pub fn random_walk(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
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
