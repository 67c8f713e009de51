//! The CPU backend: multi-threaded, in f64.
//!
//! The matrix profile walks the distance matrix along its diagonals: on a diagonal the dot
//! product of window pairs (i, j) and (i+1, j+1) differ by one product leaving and one
//! entering, so each pair costs O(1) instead of O(m). The running dot product is recomputed
//! from scratch every [`RESEED`] steps so rounding cannot drift, and the series is centered on
//! its mean first so the products stay small. Window means and deviations are computed per
//! window with two passes (exact, O(n·m), negligible beside the O(n²) join). Diagonals are
//! dealt to the threads in interleaved blocks so each gets long and short ones; each thread
//! keeps its own profile and they are merged at the end.

use std::num::NonZeroUsize;

use arrow::array::Float64Array;

use crate::{
    Backend, MatrixProfile, MiningError, Progress, WindowSpec, WindowStats, check_window,
    diagonal_pairs, exclusion_zone, values,
};

/// Steps along a diagonal between recomputations of the dot product.
pub const RESEED: usize = 256;
/// Diagonals handed to a thread at a time.
const BLOCK: usize = 64;

/// The CPU backend.
#[derive(Debug, Clone)]
pub struct Cpu {
    threads: usize,
    progress: Option<Progress>,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu::new(
            std::thread::available_parallelism()
                .map(NonZeroUsize::get)
                .unwrap_or(1),
        )
    }
}

impl Cpu {
    pub fn new(threads: usize) -> Cpu {
        Cpu {
            threads: threads.max(1),
            progress: None,
        }
    }

    /// Reports pairs compared to `progress` as diagonals complete.
    pub fn with_progress(mut self, progress: Progress) -> Cpu {
        self.progress = Some(progress);
        self
    }

    fn started(&self, total: u64) {
        if let Some(p) = &self.progress {
            p.start(total);
        }
    }

    fn advanced(&self, pairs: u64) {
        if let Some(p) = &self.progress {
            p.add(pairs);
        }
    }
}

/// Per-window moments of a centered series.
pub(crate) struct Windows {
    pub(crate) t: Vec<f64>,
    pub(crate) mean: Vec<f64>,
    /// 1/σ, or 0 for a constant window.
    pub(crate) inv_sd: Vec<f64>,
    /// The window holds a gap.
    pub(crate) gap: Vec<bool>,
    pub(crate) constant: Vec<bool>,
    /// Gap or constant: the pair needs the slow path.
    special: Vec<bool>,
    /// The first window at or after each one that is special (`len()` where none is): a band
    /// of lanes starting at `j` holds one exactly when `next_special[j] < j + LANES`.
    next_special: Vec<usize>,
    /// m · mean.
    scaled_mean: Vec<f64>,
}

impl Windows {
    pub(crate) fn new(raw: &[f64], m: usize, center: f64) -> Windows {
        let t: Vec<f64> = raw
            .iter()
            .map(|v| if v.is_finite() { v - center } else { 0.0 })
            .collect();
        let l = raw.len() + 1 - m;
        let mut last_gap: Option<usize> = None;
        let mut gap = Vec::with_capacity(l);
        for (i, v) in raw.iter().enumerate() {
            if !v.is_finite() {
                last_gap = Some(i);
            }
            if i + 1 >= m {
                gap.push(last_gap.is_some_and(|g| g + m > i));
            }
        }
        let mut mean = vec![0.0; l];
        let mut inv_sd = vec![0.0; l];
        let mut constant = vec![false; l];
        for i in 0..l {
            let w = &t[i..i + m];
            let mu = w.iter().sum::<f64>() / m as f64;
            let var = w.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / m as f64;
            mean[i] = mu;
            constant[i] = w.iter().all(|v| *v == w[0]);
            inv_sd[i] = if constant[i] { 0.0 } else { 1.0 / var.sqrt() };
        }
        let special: Vec<bool> = gap.iter().zip(&constant).map(|(g, c)| *g || *c).collect();
        let mut next_special = vec![l; l];
        for i in (0..l).rev() {
            next_special[i] = if special[i] {
                i
            } else {
                next_special.get(i + 1).copied().unwrap_or(l)
            };
        }
        let scaled_mean = mean.iter().map(|mu| mu * m as f64).collect();
        Windows {
            t,
            mean,
            inv_sd,
            gap,
            constant,
            special,
            next_special,
            scaled_mean,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.mean.len()
    }
}

/// Below this squared distance the dot-product form has cancelled away most of its digits
/// (d² = 2(m − corr) with corr ≈ m), so the pair is recomputed from the windows themselves.
/// Only near-identical windows get here: rare, and then exact.
pub const REFINE_BELOW: f64 = 1e-6;

/// Squared z-normalized distance of windows `i` of `a` and `j` of `b`, computed directly.
#[cold]
pub(crate) fn exact_dist2(a: &Windows, b: &Windows, i: usize, j: usize, m: usize) -> f64 {
    let (ma, mb) = (a.mean[i], b.mean[j]);
    let (sa, sb) = (a.inv_sd[i], b.inv_sd[j]);
    a.t[i..i + m]
        .iter()
        .zip(&b.t[j..j + m])
        .map(|(x, y)| {
            let d = (x - ma) * sa - (y - mb) * sb;
            d * d
        })
        .sum()
}

/// Squared distance of windows `i` of `a` and `j` of `b` where one of them is constant.
#[inline(never)]
pub(crate) fn special_dist2(a: &Windows, b: &Windows, i: usize, j: usize, m: f64) -> f64 {
    if a.constant[i] && b.constant[j] {
        0.0
    } else {
        m
    }
}

/// One dot product (a lone diagonal's seed, the last steps of a band's lanes), summed in eight
/// interleaved partial sums: one running sum is a chain of dependent additions (a 128-term dot
/// product waits ~4 cycles on each). A band's seeds are [`seed_band`]'s.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut sums = [0.0f64; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            sums[k] += x[k] * y[k];
        }
    }
    let tail: f64 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    ((sums[0] + sums[4]) + (sums[1] + sums[5])) + ((sums[2] + sums[6]) + (sums[3] + sums[7])) + tail
}

/// The dot products of window `i` with the [`LANES`] windows from `j0`, all at once: for each
/// term of window `i`, one multiply-add into every lane (the lanes' terms lie side by side in
/// the series, so a step is a few vector instructions), in two interleaved sums per lane so
/// the chains of dependent additions are half as long. Seeding the 16 dot products one by one
/// ([`dot`]) ran 16 short reductions, each ending in a horizontal sum.
#[inline(always)]
fn seed_band<const FMA: bool>(t: &[f64], i: usize, j0: usize, m: usize, qt: &mut [f64; LANES]) {
    let (mut even, mut odd) = ([0.0f64; LANES], [0.0f64; LANES]);
    let a = &t[i..i + m];
    let b = &t[j0..j0 + m + LANES - 1];
    let mut p = 0;
    while p + 1 < m {
        let (x0, x1) = (a[p], a[p + 1]);
        let (b0, b1) = (&b[p..p + LANES], &b[p + 1..p + 1 + LANES]);
        for d in 0..LANES {
            if FMA {
                even[d] = x0.mul_add(b0[d], even[d]);
                odd[d] = x1.mul_add(b1[d], odd[d]);
            } else {
                even[d] += x0 * b0[d];
                odd[d] += x1 * b1[d];
            }
        }
        p += 2;
    }
    if p < m {
        let (x, bp) = (a[p], &b[p..p + LANES]);
        for d in 0..LANES {
            even[d] += x * bp[d];
        }
    }
    for d in 0..LANES {
        qt[d] = even[d] + odd[d];
    }
}

/// A profile under construction: squared distances (ties go to the lower index).
pub(crate) struct Partial {
    d2: Vec<f64>,
    index: Vec<i64>,
}

impl Partial {
    pub(crate) fn new(l: usize) -> Partial {
        Partial {
            d2: vec![f64::INFINITY; l],
            index: vec![-1; l],
        }
    }

    #[inline]
    pub(crate) fn offer(&mut self, i: usize, d2: f64, j: usize) {
        if d2 < self.d2[i] || (d2 == self.d2[i] && (j as i64) < self.index[i]) {
            self.d2[i] = d2;
            self.index[i] = j as i64;
        }
    }

    fn merge(mut self, other: Partial) -> Partial {
        for i in 0..self.d2.len() {
            if other.index[i] >= 0 {
                self.offer(i, other.d2[i], other.index[i] as usize);
            }
        }
        self
    }

    pub(crate) fn finish(self, m: usize) -> MatrixProfile {
        MatrixProfile {
            window: m,
            profile: self.d2.iter().map(|d| d.sqrt()).collect(),
            index: self.index,
        }
    }
}

/// Walks diagonal `k` (pairs (i, i + k) for k ≥ 0, (i − k, i) for k < 0) of `a` × `b`,
/// offering each pair to `a`'s profile (and `b`'s when `both`).
fn walk_diagonal(a: &Windows, b: &Windows, k: isize, m: usize, both: bool, out: &mut Partial) {
    let (i0, j0) = if k >= 0 {
        (0usize, k as usize)
    } else {
        ((-k) as usize, 0usize)
    };
    let steps = (a.len() - i0).min(b.len() - j0);
    let mf = m as f64;
    let mut chunk = 0;
    while chunk < steps {
        // Re-seed: the dot product of the chunk's first pair, computed whole.
        let mut qt = dot(
            &a.t[i0 + chunk..i0 + chunk + m],
            &b.t[j0 + chunk..j0 + chunk + m],
        );
        for s in chunk..(chunk + RESEED).min(steps) {
            let (i, j) = (i0 + s, j0 + s);
            if s > chunk {
                qt += a.t[i + m - 1] * b.t[j + m - 1] - a.t[i - 1] * b.t[j - 1];
            }
            let d2 = if a.special[i] | b.special[j] {
                if a.gap[i] || b.gap[j] {
                    continue;
                }
                special_dist2(a, b, i, j, mf)
            } else {
                let corr = (qt - a.scaled_mean[i] * b.mean[j]) * a.inv_sd[i] * b.inv_sd[j];
                let d2 = (2.0 * (mf - corr)).clamp(0.0, 4.0 * mf);
                if d2 < REFINE_BELOW {
                    exact_dist2(a, b, i, j, m)
                } else {
                    d2
                }
            };
            out.offer(i, d2, j);
            if both {
                out.offer(j, d2, i);
            }
        }
        chunk += RESEED;
    }
}

/// Adjacent diagonals a self-join walks together.
const LANES: usize = 16;

/// The squared distance of one pair given its dot product, through the careful paths (gaps,
/// constant windows, near-identical windows); `None` for a gap.
#[inline]
fn pair_dist2(a: &Windows, b: &Windows, i: usize, j: usize, qt: f64, m: usize) -> Option<f64> {
    let mf = m as f64;
    if a.special[i] || b.special[j] {
        if a.gap[i] || b.gap[j] {
            return None;
        }
        return Some(special_dist2(a, b, i, j, mf));
    }
    let corr = (qt - a.scaled_mean[i] * b.mean[j]) * a.inv_sd[i] * b.inv_sd[j];
    let d2 = (2.0 * (mf - corr)).clamp(0.0, 4.0 * mf);
    Some(if d2 < REFINE_BELOW {
        exact_dist2(a, b, i, j, m)
    } else {
        d2
    })
}

/// Walks a band of diagonals ([`walk_band_body`]) with the widest vectors the CPU has: the
/// body compiled for AVX2 with fused multiply-adds (four f64 per instruction, the dot-product
/// update and the centring one rounding each instead of two: 5–8 % faster at n = 2^14–2^16)
/// where the processor has both, else for the baseline (SSE2, two, separate multiply and add).
/// The two differ in the last bits, never beyond the documented bound (the property tests run
/// whichever this machine has).
fn walk_band(w: &Windows, k0: usize, m: usize, out: &mut Partial) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the processor supports AVX2 and FMA (checked just above).
        unsafe { walk_band_avx2(w, k0, m, out) };
        return;
    }
    walk_band_body::<false>(w, k0, m, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn walk_band_avx2(w: &Windows, k0: usize, m: usize, out: &mut Partial) {
    walk_band_body::<true>(w, k0, m, out);
}

/// Walks the self-join's diagonals `k0 .. k0 + LANES` in lockstep: independent running dot
/// products (no chain of dependent additions), one profile update for row `i` per step, and
/// contiguous slices the compiler can vectorize. Gaps, constant and near-identical windows
/// drop a step to [`pair_dist2`] (whether a band holds a gap or constant window is one lookup,
/// `next_special`). `FMA`: fuse the multiply-adds (only where the target has them).
#[inline(always)]
fn walk_band_body<const FMA: bool>(w: &Windows, k0: usize, m: usize, out: &mut Partial) {
    let l = w.len();
    if l - k0 < LANES {
        for k in k0..l {
            walk_diagonal(w, w, k as isize, m, true, out);
        }
        return;
    }
    // Steps on which every lane is inside the matrix; the shorter lanes end right after.
    let full = l - k0 - (LANES - 1);
    let mf = m as f64;
    let mut qt = [0.0f64; LANES];
    let mut chunk = 0;
    while chunk < full {
        seed_band::<FMA>(&w.t, chunk, chunk + k0, m, &mut qt);
        let end = (chunk + RESEED).min(full);
        for i in chunk..end {
            let j0 = i + k0;
            if i > chunk {
                let (leaving, entering) = (w.t[i - 1], w.t[i + m - 1]);
                let out_j = &w.t[j0 - 1..j0 - 1 + LANES];
                let in_j = &w.t[j0 + m - 1..j0 + m - 1 + LANES];
                for d in 0..LANES {
                    qt[d] = if FMA {
                        entering.mul_add(in_j[d], (-leaving).mul_add(out_j[d], qt[d]))
                    } else {
                        qt[d] + (entering * in_j[d] - leaving * out_j[d])
                    };
                }
            }
            let (smi, invi) = (w.scaled_mean[i], w.inv_sd[i]);
            let (mean_j, inv_j) = (&w.mean[j0..j0 + LANES], &w.inv_sd[j0..j0 + LANES]);
            let mut d2 = [0.0f64; LANES];
            for d in 0..LANES {
                let centred = if FMA {
                    (-smi).mul_add(mean_j[d], qt[d])
                } else {
                    qt[d] - smi * mean_j[d]
                };
                let corr = centred * invi * inv_j[d];
                d2[d] = (2.0 * (mf - corr)).max(0.0).min(4.0 * mf);
            }
            let careful = w.special[i]
                | (w.next_special[j0] < j0 + LANES)
                | d2.iter().fold(false, |a, x| a | (*x < REFINE_BELOW));
            if careful {
                for (d, q) in qt.iter().enumerate() {
                    if let Some(v) = pair_dist2(w, w, i, j0 + d, *q, m) {
                        out.offer(i, v, j0 + d);
                        out.offer(j0 + d, v, i);
                    }
                }
                continue;
            }
            let (mut best, mut at) = (d2[0], 0);
            for (d, v) in d2.iter().enumerate().skip(1) {
                if *v < best {
                    (best, at) = (*v, d);
                }
            }
            out.offer(i, best, j0 + at);
            let (pd, pi) = (&mut out.d2[j0..j0 + LANES], &mut out.index[j0..j0 + LANES]);
            for d in 0..LANES {
                if d2[d] < pd[d] {
                    pd[d] = d2[d];
                    pi[d] = i as i64;
                }
            }
        }
        chunk = end;
    }
    // The last steps of the longer lanes (at most LANES − 1 each), dot products whole.
    for d in 0..LANES - 1 {
        for i in full..l - k0 - d {
            let j = i + k0 + d;
            let q = dot(&w.t[i..i + m], &w.t[j..j + m]);
            if let Some(v) = pair_dist2(w, w, i, j, q, m) {
                out.offer(i, v, j);
                out.offer(j, v, i);
            }
        }
    }
}

impl Cpu {
    /// Runs `walk` over `diagonals` on the backend's threads and merges the profiles.
    fn run(
        &self,
        l: usize,
        diagonals: Vec<isize>,
        walk: impl Fn(isize, &mut Partial) + Sync,
    ) -> Partial {
        let threads = self.threads.min(diagonals.len().div_ceil(BLOCK)).max(1);
        let blocks: Vec<&[isize]> = diagonals.chunks(BLOCK).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let blocks = &blocks;
                    let walk = &walk;
                    scope.spawn(move || {
                        let mut partial = Partial::new(l);
                        for block in blocks.iter().skip(t).step_by(threads) {
                            for &k in *block {
                                walk(k, &mut partial);
                            }
                        }
                        partial
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("mining thread"))
                .reduce(Partial::merge)
                .unwrap_or_else(|| Partial::new(l))
        })
    }
}

/// Mean of the finite values (0 when there are none): the series is centered on it.
pub(crate) fn finite_mean(t: &[f64]) -> f64 {
    let (sum, n) = t
        .iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The windows of one series for a self-join, centred on its mean.
pub(crate) fn self_windows(series: &Float64Array, m: usize) -> Result<Windows, MiningError> {
    let t = values(series);
    check_window(m, t.len())?;
    Ok(Windows::new(&t, m, finite_mean(&t)))
}

/// The windows of two series for an AB-join, centred on one mean so their products share an
/// origin.
pub(crate) fn ab_windows(
    query: &Float64Array,
    target: &Float64Array,
    m: usize,
) -> Result<(Windows, Windows), MiningError> {
    let (q, t) = (values(query), values(target));
    check_window(m, q.len())?;
    check_window(m, t.len())?;
    let both: Vec<f64> = q.iter().chain(&t).copied().collect();
    let center = finite_mean(&both);
    Ok((Windows::new(&q, m, center), Windows::new(&t, m, center)))
}

impl Backend for Cpu {
    fn describe(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }

    fn self_join(&self, series: &Float64Array, m: usize) -> Result<MatrixProfile, MiningError> {
        let w = self_windows(series, m)?;
        let l = w.len();
        let first = exclusion_zone(m) + 1;
        let bands: Vec<isize> = (first..l).step_by(LANES).map(|k| k as isize).collect();
        let band_pairs = |k0: isize| -> u64 {
            (k0..(k0 + LANES as isize).min(l as isize))
                .map(|k| diagonal_pairs(l, l, k))
                .sum()
        };
        self.started(bands.iter().map(|k| band_pairs(*k)).sum());
        let partial = self.run(l, bands, |k0, out| {
            walk_band(&w, k0 as usize, m, out);
            self.advanced(band_pairs(k0));
        });
        Ok(partial.finish(m))
    }

    fn ab_join(
        &self,
        query: &Float64Array,
        target: &Float64Array,
        m: usize,
    ) -> Result<MatrixProfile, MiningError> {
        let (wq, wt) = ab_windows(query, target, m)?;
        let diagonals: Vec<isize> = (-(wq.len() as isize) + 1..wt.len() as isize).collect();
        let (la, lb) = (wq.len(), wt.len());
        self.started(diagonals.iter().map(|k| diagonal_pairs(la, lb, *k)).sum());
        let partial = self.run(la, diagonals, |k, out| {
            walk_diagonal(&wq, &wt, k, m, false, out);
            self.advanced(diagonal_pairs(la, lb, k));
        });
        Ok(partial.finish(m))
    }

    fn window_stats(
        &self,
        series: &[&Float64Array],
        spec: WindowSpec,
    ) -> Result<Vec<WindowStats>, MiningError> {
        spec.check()?;
        Ok(series.iter().map(|s| stats_of(&values(s), spec)).collect())
    }
}

/// Window statistics of one series, one pass over each window.
fn stats_of(t: &[f64], spec: WindowSpec) -> WindowStats {
    let mut out = WindowStats::default();
    let mut start = 0;
    while start + spec.window <= t.len() {
        let w = &t[start..start + spec.window];
        let (mut n, mut sum, mut min, mut max) = (0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        let mut sx = 0.0;
        for (x, v) in w.iter().enumerate() {
            if v.is_finite() {
                n += 1.0;
                sum += v;
                sx += x as f64;
                min = min.min(*v);
                max = max.max(*v);
            }
        }
        if n == 0.0 {
            out.push_gap();
        } else {
            let (mean, mx) = (sum / n, sx / n);
            let (mut ss, mut sxx, mut sxy) = (0.0, 0.0, 0.0);
            for (x, v) in w.iter().enumerate() {
                if v.is_finite() {
                    let (dx, dv) = (x as f64 - mx, v - mean);
                    ss += dv * dv;
                    sxx += dx * dx;
                    sxy += dx * dv;
                }
            }
            out.min.push(min);
            out.max.push(max);
            out.mean.push(mean);
            out.std.push((ss / n).sqrt());
            out.slope.push(if sxx > 0.0 { sxy / sxx } else { f64::NAN });
        }
        start += spec.step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use proptest::prelude::*;

    fn column(v: &[f64]) -> Float64Array {
        Float64Array::from(v.to_vec())
    }

    /// Profiles agree within `tol`; where distances tie the indices may differ, so an index
    /// is checked by the distance it points at.
    fn assert_close(fast: &MatrixProfile, slow: &MatrixProfile, tol: f64) {
        assert_eq!(fast.profile.len(), slow.profile.len());
        for i in 0..fast.profile.len() {
            let (a, b) = (fast.profile[i], slow.profile[i]);
            if b.is_infinite() {
                assert!(a.is_infinite(), "window {i}: {a} vs none");
                assert_eq!(fast.index[i], -1);
                continue;
            }
            assert!((a - b).abs() <= tol, "window {i}: {a} vs {b}");
        }
    }

    fn series() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![
                20 => -100.0..100.0f64,
                1 => Just(f64::NAN),
                1 => Just(5.0),
            ],
            8..160,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn self_join_matches_brute_force(t in series(), m in 3usize..12, threads in 1usize..4) {
            prop_assume!(m <= t.len());
            let fast = Cpu::new(threads).self_join(&column(&t), m).unwrap();
            let slow = reference::matrix_profile(&t, &t, m, true);
            assert_close(&fast, &slow, 1e-9);
            // The index points at a window that far away.
            for i in 0..fast.index.len() {
                if fast.index[i] >= 0 {
                    let j = fast.index[i] as usize;
                    let d = reference::matrix_profile(&t[i..i + m], &t[j..j + m], m, false).profile[0];
                    prop_assert!((d - fast.profile[i]).abs() <= 1e-9);
                }
            }
        }

        #[test]
        fn ab_join_matches_brute_force(a in series(), b in series(), m in 3usize..10) {
            prop_assume!(m <= a.len() && m <= b.len());
            let fast = Cpu::new(2).ab_join(&column(&a), &column(&b), m).unwrap();
            assert_close(&fast, &reference::matrix_profile(&a, &b, m, false), 1e-9);
        }

        #[test]
        fn window_stats_match_the_definitions(t in series(), window in 1usize..20, step in 1usize..20) {
            let stats = &Cpu::new(1).window_stats(&[&column(&t)], WindowSpec { window, step }).unwrap()[0];
            let mut start = 0;
            let mut w = 0;
            while start + window <= t.len() {
                let want = reference::window_stats(&t[start..start + window]);
                let got = [stats.min[w], stats.max[w], stats.mean[w], stats.std[w], stats.slope[w]];
                for (g, e) in got.iter().zip(want) {
                    prop_assert!((g.is_nan() && e.is_nan()) || (g - e).abs() <= 1e-9 * (1.0 + e.abs()), "{got:?} vs {want:?}");
                }
                start += step;
                w += 1;
            }
            prop_assert_eq!(stats.mean.len(), w);
        }
    }

    #[test]
    fn a_planted_motif_and_a_planted_discord_are_found() {
        // A slow wave with noise; one shape planted twice, one spike once.
        let mut state = 7u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.6
        };
        let mut t: Vec<f64> = (0..2000)
            .map(|i| (f64::from(i) / 40.0).sin() + noise())
            .collect();
        let shape: Vec<f64> = (0..50).map(|i| f64::from((i * i) % 17) - 8.0).collect();
        for (k, v) in shape.iter().enumerate() {
            t[300 + k] = *v;
            t[1400 + k] = *v + 0.01 * noise();
        }
        let mp = Cpu::default().self_join(&column(&t), 50).unwrap();
        let motif = &mp.motifs(1)[0];
        assert_eq!((motif.first, motif.second), (300, 1400), "{motif:?}");

        // A clean wave with a short zig-zag burst: the burst is the discord.
        let mut t: Vec<f64> = (0..2000)
            .map(|i| (f64::from(i) / 10.0).sin() + 0.05 * noise())
            .collect();
        for (k, v) in t[900..910].iter_mut().enumerate() {
            *v += if k % 2 == 0 { 1.5 } else { -1.5 };
        }
        let mp = Cpu::default().self_join(&column(&t), 50).unwrap();
        let discord = &mp.discords(1)[0];
        assert!((860..=910).contains(&discord.start), "{discord:?}");
    }

    #[test]
    fn progress_counts_every_pair_once() {
        let t: Vec<f64> = (0..900).map(|i| (f64::from(i) * 0.37).sin()).collect();
        let progress = Progress::new();
        let cpu = Cpu::new(3).with_progress(progress.clone());
        cpu.self_join(&column(&t), 20).unwrap();
        assert_eq!(progress.get().0, progress.get().1);
        assert_eq!(progress.get().1 as f64, crate::self_join_pairs(900, 20));
        cpu.ab_join(&column(&t[..300]), &column(&t), 20).unwrap();
        assert_eq!(progress.get(), (281 * 881, 281 * 881));
    }

    #[test]
    fn the_pair_count_is_what_a_self_join_compares() {
        for (n, m) in [(100, 8), (30, 10), (12, 9), (5, 6)] {
            let l = if n >= m { n - m + 1 } else { 0 };
            let zone = exclusion_zone(m);
            let counted = (0..l)
                .flat_map(|i| (i + 1..l).map(move |j| j - i))
                .filter(|d| *d > zone)
                .count();
            assert_eq!(crate::self_join_pairs(n, m), counted as f64, "n {n} m {m}");
        }
    }

    #[test]
    fn bad_windows_are_refused() {
        let c = Cpu::new(1);
        assert!(matches!(
            c.self_join(&column(&[1.0; 5]), 6),
            Err(MiningError::Window { .. })
        ));
        assert!(matches!(
            c.self_join(&column(&[1.0; 5]), 2),
            Err(MiningError::Window { .. })
        ));
        assert!(
            c.window_stats(&[], WindowSpec { window: 0, step: 1 })
                .is_err()
        );
    }
}
