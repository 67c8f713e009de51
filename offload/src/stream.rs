//! The left matrix profile of a live series, one value at a time (STAMPI's idea with SCAMP's
//! update): each new value completes a window, and [`LeftProfile::push`] returns that window's
//! z-normalized distance to its nearest *earlier* window among the last `history` — a discord
//! when it is large, because nothing before looked like it.
//!
//! Design. The newest window `j` meets window `i = j − d` on diagonal `d`; one covariance per
//! diagonal (`d` from the exclusion zone + 1 to `history`) is all the state a step needs,
//! because moving one step along a diagonal is SCAMP's exact update
//! `cov(i + 1, j + 1) = cov(i, j) + df[i]·dg[j] + df[j]·dg[i]` (with `df[k] = (t[k+m] − t[k])/2`
//! and `dg[k] = (t[k+m] − μ[k+1]) + (t[k] − μ[k])`): every diagonal is updated in place and
//! nothing shifts. A window's mean and norm are computed from its `m` values when it completes,
//! so they never drift. The per-window terms live in rings whose runs are at most two slices,
//! so the per-step loops stay plain zips over slices.
//!
//! Cost per value: O(history) for the diagonals plus O(m) for the new window's statistics and
//! the winner's exact distance. Memory: fixed at creation, [`LeftProfile::memory_bytes`]
//! (48 bytes per window of history, 8 per value of the window), whatever the stream's length.
//!
//! Error bound: values are kept less the stream's first, so rounding follows how far the series
//! moves rather than its level. Each covariance carries a bound of the rounding of the updates
//! it took since it was last computed from its values (`drift`: the updates' magnitudes plus
//! the rounding of their df and dg terms, which is relative to the values' magnitude, not to
//! the terms'); its error is a few units in the last place of that sum. Where the sum, scaled
//! by the two windows' inverse norms, passes [`RESEED`] — a quiet window after loud ones, or a
//! diagonal that lived long — the covariance is recomputed from the values (O(m)) before it is
//! used, so a correlation is never off by more than about 2^13 units in the last place
//! (~1e-12). The nearest window is chosen on these correlations and its distance then
//! recomputed exactly from the values: a reported distance is the exact distance of the window
//! named, and exceeds the true minimum only where two candidates lie within that rounding of
//! each other (tested against [`crate::reference::left_matrix_profile`]).
//!
//! Conventions are the batch kernels': two constant windows are 0 apart, a constant and a
//! varying one √m. A value that is not finite is not part of the stream (skipped).

use crate::{MiningError, exclusion_zone};

/// Drift (in units of the two windows' norms) past which a covariance is recomputed from its
/// values: the correlation's rounding stays near 2^13 · 2^-53 ≈ 1e-12.
pub const RESEED: f64 = 8192.0;

/// What one value completed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The window the value completed, counted from the stream's first (starts at value
    /// `window` of the stream).
    pub window: u64,
    /// Z-normalized distance to the nearest earlier window; ∞ while none is far enough back.
    pub distance: f64,
    /// That window's number, when there is one.
    pub neighbour: Option<u64>,
}

/// A ring of `len` entries; a run of consecutive entries is at most two slices.
#[derive(Debug, Clone)]
struct Ring {
    data: Vec<f64>,
}

impl Ring {
    fn new(len: usize) -> Ring {
        Ring {
            data: vec![0.0; len],
        }
    }

    fn at(&self, i: u64) -> usize {
        (i % self.data.len() as u64) as usize
    }

    fn set(&mut self, i: u64, v: f64) {
        let p = self.at(i);
        self.data[p] = v;
    }

    fn get(&self, i: u64) -> f64 {
        self.data[self.at(i)]
    }

    /// Entries `from .. from + n` (n ≤ len, all still held) as two slices in order.
    fn run(&self, from: u64, n: usize) -> (&[f64], &[f64]) {
        let p = self.at(from);
        if p + n <= self.data.len() {
            (&self.data[p..p + n], &[])
        } else {
            (&self.data[p..], &self.data[..p + n - self.data.len()])
        }
    }

    fn iter(&self, from: u64, n: usize) -> impl Iterator<Item = f64> + '_ {
        let (a, b) = self.run(from, n);
        a.iter().chain(b).copied()
    }
}

/// The left matrix profile of one live series with window `m` over the last `history` windows.
#[derive(Debug, Clone)]
pub struct LeftProfile {
    m: usize,
    history: usize,
    zone: usize,
    /// Values seen (finite ones).
    seen: u64,
    /// Values less the stream's first (so rounding is relative to how far the series moves,
    /// not to its level).
    values: Ring,
    origin: f64,
    /// An upper bound of the rounding of any df or dg term, in units in the last place:
    /// 4 · max |value − origin|.
    term_ulps: f64,
    /// The newest window's mean.
    mean: f64,
    /// Per window: 1 / √Σ(t − μ)² (0 for a constant window), and SCAMP's df and dg of the step
    /// from it to the next.
    inv_norm: Ring,
    df: Ring,
    dg: Ring,
    /// Covariance on diagonal `d` at index `d − zone − 1`, as of the newest window.
    cov: Vec<f64>,
    /// A bound, in units in the last place, of the rounding each covariance took along its
    /// updates since it was computed from its values.
    drift: Vec<f64>,
}

impl LeftProfile {
    /// A profile of windows of `m` values against the `history` windows before each; history
    /// must reach past the exclusion zone ⌈m/4⌉.
    pub fn new(m: usize, history: usize) -> Result<LeftProfile, MiningError> {
        let zone = exclusion_zone(m);
        if m < 3 {
            return Err(MiningError::Window {
                window: m,
                len: history,
            });
        }
        if history <= zone {
            return Err(MiningError::History { window: m, history });
        }
        // Windows j − history − 1 ..= j are read (the oldest for its df and dg), and their
        // values j − history − 1 .. j + m.
        let windows = history + 2;
        Ok(LeftProfile {
            m,
            history,
            zone,
            seen: 0,
            values: Ring::new(history + m + 1),
            origin: 0.0,
            term_ulps: 0.0,
            mean: 0.0,
            inv_norm: Ring::new(windows),
            df: Ring::new(windows),
            dg: Ring::new(windows),
            cov: vec![0.0; history - zone],
            drift: vec![0.0; history - zone],
        })
    }

    pub fn window(&self) -> usize {
        self.m
    }

    pub fn history(&self) -> usize {
        self.history
    }

    /// Values taken so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The latest values the profile depends on, oldest first: a fresh profile given them
    /// continues exactly as this one would (its windows numbered from 0 again).
    pub fn recent(&self) -> Vec<f64> {
        let keep = (self.history + self.m) as u64;
        let n = self.seen.min(keep);
        let first = self.seen - n;
        self.values
            .iter(first, n as usize)
            .map(|v| v + self.origin)
            .collect()
    }

    /// Bytes this profile holds, fixed at creation: 48 per window of history and 8 per value
    /// of the window, and the struct.
    pub fn memory_bytes(&self) -> usize {
        let floats = self.values.data.len()
            + self.inv_norm.data.len()
            + self.df.data.len()
            + self.dg.data.len()
            + self.cov.len()
            + self.drift.len();
        size_of::<LeftProfile>() + 8 * floats
    }

    /// Takes the next value; returns the window it completed, if any.
    pub fn push(&mut self, value: f64) -> Option<Step> {
        if !value.is_finite() {
            return None;
        }
        let m = self.m;
        if self.seen == 0 {
            self.origin = value;
        }
        let value = value - self.origin;
        self.term_ulps = self.term_ulps.max(4.0 * value.abs());
        self.values.set(self.seen, value);
        self.seen += 1;
        if self.seen < m as u64 {
            return None;
        }
        let j = self.seen - m as u64;
        let (mean, norm, constant) = self.statistics(j);
        self.inv_norm.set(
            j,
            if constant || norm == 0.0 {
                0.0
            } else {
                1.0 / norm
            },
        );
        if j > 0 {
            let (first, last) = (self.values.get(j - 1), self.values.get(j - 1 + m as u64));
            self.df.set(j - 1, (last - first) / 2.0);
            self.dg.set(j - 1, (last - mean) + (first - self.mean));
        }
        self.mean = mean;
        Some(self.nearest(j))
    }

    /// Moves every diagonal on to window `j` and picks its nearest earlier window.
    fn nearest(&mut self, j: u64) -> Step {
        let first = self.zone + 1;
        let alive = (j.min(self.history as u64) as usize).saturating_sub(self.zone);
        let mut step = Step {
            window: j,
            distance: f64::INFINITY,
            neighbour: None,
        };
        if alive == 0 {
            return step;
        }
        // Diagonals d = first .. first + alive meet window i = j − d. Those born before this
        // step (i ≥ 1, so d < j) move along; d = j starts at window 0, from its values.
        let moving = if j as usize >= first + alive {
            alive
        } else {
            alive - 1
        };
        if moving > 0 {
            let (df_j, dg_j) = (self.df.get(j - 1), self.dg.get(j - 1));
            let scale = self.term_ulps;
            let step_ulps = scale * df_j.abs();
            // Windows i − 1 = j − 1 − d, oldest (d = first + moving − 1) first: the covariances
            // run the other way, from d = first.
            let oldest = j - 1 - (first + moving - 1) as u64;
            let (df_a, df_b) = self.df.run(oldest, moving);
            let (dg_a, dg_b) = self.dg.run(oldest, moving);
            let (cov_near, cov_far) = self.cov[..moving].split_at_mut(df_b.len());
            let (drift_near, drift_far) = self.drift[..moving].split_at_mut(df_b.len());
            for (cov, drift, df, dg) in [
                (cov_near, drift_near, df_b, dg_b),
                (cov_far, drift_far, df_a, dg_a),
            ] {
                for (((c, e), f), g) in cov
                    .iter_mut()
                    .zip(drift.iter_mut())
                    .zip(df.iter().rev())
                    .zip(dg.iter().rev())
                {
                    let (u, v) = (f * dg_j, df_j * g);
                    *c += u + v;
                    *e += u.abs() + v.abs() + step_ulps + scale * f.abs();
                }
            }
        }
        if moving < alive {
            self.cov[moving] = covariance(&self.values, self.m, 0, j, self.mean);
            self.drift[moving] = 0.0;
        }

        let inv_j = self.inv_norm.get(j);
        let oldest = j - (first + alive - 1) as u64;
        let (inv_a, inv_b) = self.inv_norm.run(oldest, alive);
        let split = inv_b.len();
        let m = self.m;
        // The nearest varying window has the largest covariance × its inverse norm (the newest
        // window's norm is common to all); a constant one is √m away, so it wins only over
        // correlations below ½. A constant newest window is the rare case: compared as is.
        let mut best_r = (f64::NEG_INFINITY, usize::MAX);
        let mut constant = None;
        let mut best = (f64::INFINITY, 0);
        for (offset, inv) in [(0, inv_b), (split, inv_a)] {
            let n = inv.len();
            for k in 0..n {
                let at = offset + k;
                let inv_i = inv[n - 1 - k];
                if self.drift[at] * inv_i * inv_j > RESEED {
                    let i = j - (first + at) as u64;
                    self.cov[at] = covariance(&self.values, m, i, j, self.mean);
                    self.drift[at] = 0.0;
                }
                if inv_j == 0.0 {
                    let d2 = pair_distance2(self.cov[at], inv_i, inv_j, m);
                    if d2 < best.0 {
                        best = (d2, at);
                    }
                } else if inv_i == 0.0 {
                    constant.get_or_insert(at);
                } else {
                    let r = self.cov[at] * inv_i;
                    if r > best_r.0 {
                        best_r = (r, at);
                    }
                }
            }
        }
        if inv_j != 0.0 {
            let d2 = if best_r.1 == usize::MAX {
                f64::INFINITY
            } else {
                pair_distance2(best_r.0, 1.0, inv_j, m)
            };
            best = match constant {
                Some(at) if (m as f64) < d2 => (m as f64, at),
                _ => (d2, best_r.1),
            };
        }
        let i = j - (first + best.1) as u64;
        step.distance = self.exact_distance(i, j);
        step.neighbour = Some(i);
        step
    }

    /// Mean, norm √Σ(t − μ)² and constancy of window `i`, from its values.
    fn statistics(&self, i: u64) -> (f64, f64, bool) {
        statistics(&self.values, self.m, i)
    }

    /// The z-normalized distance of window `i` to the newest, `j`, from their values.
    fn exact_distance(&self, i: u64, j: u64) -> f64 {
        let (inv_i, inv_j) = (self.inv_norm.get(i), self.inv_norm.get(j));
        let m = self.m as f64;
        match (inv_i == 0.0, inv_j == 0.0) {
            (true, true) => 0.0,
            (true, false) | (false, true) => m.sqrt(),
            (false, false) => {
                let mi = mean(&self.values, self.m, i);
                let mj = self.mean;
                let (si, sj) = (inv_i * m.sqrt(), inv_j * m.sqrt());
                self.values
                    .iter(i, self.m)
                    .zip(self.values.iter(j, self.m))
                    .map(|(x, y)| {
                        let diff = (x - mi) * si - (y - mj) * sj;
                        diff * diff
                    })
                    .sum::<f64>()
                    .sqrt()
            }
        }
    }
}

/// The mean of window `i` of `values`.
fn mean(values: &Ring, m: usize, i: u64) -> f64 {
    let (a, b) = values.run(i, m);
    (a.iter().sum::<f64>() + b.iter().sum::<f64>()) / m as f64
}

/// Mean, norm √Σ(t − μ)² and constancy of window `i` of `values`.
fn statistics(values: &Ring, m: usize, i: u64) -> (f64, f64, bool) {
    let mean = mean(values, m, i);
    let first = values.get(i);
    let (a, b) = values.run(i, m);
    let (mut sum, mut constant) = (0.0, true);
    for v in a.iter().chain(b) {
        sum += (v - mean) * (v - mean);
        constant &= *v == first;
    }
    (mean, sum.sqrt(), constant)
}

/// Σ (t[i+k] − μ_i)(t[j+k] − μ_j) from the values, `mean_j` given.
fn covariance(values: &Ring, m: usize, i: u64, j: u64, mean_j: f64) -> f64 {
    let mean_i = mean(values, m, i);
    values
        .iter(i, m)
        .zip(values.iter(j, m))
        .map(|(x, y)| (x - mean_i) * (y - mean_j))
        .sum()
}

/// Squared z-normalized distance from a covariance and the windows' inverse norms (0: constant).
#[inline]
fn pair_distance2(cov: f64, inv_i: f64, inv_j: f64, m: usize) -> f64 {
    let m = m as f64;
    match (inv_i == 0.0, inv_j == 0.0) {
        (true, true) => 0.0,
        (true, false) | (false, true) => m,
        (false, false) => (2.0 * m * (1.0 - cov * inv_i * inv_j)).max(0.0),
    }
}

#[cfg(test)]
mod tests;
