//! Pattern mining over stored series: the matrix profile (motifs — repeated shapes — and
//! discords — anomalies) and windowed statistics, behind one [`Backend`] trait so the CPU, a
//! GPU or an FPGA can do the work.
//!
//! Backends take whole Arrow columns and return owned results: a device that receives a column
//! by DMA and hands results back fits the same trait. Nulls and non-finite values are gaps: a
//! window holding one has no profile entry (distance ∞, index −1) and is never a neighbour.
//!
//! Distances are z-normalized Euclidean: two constant windows are 0 apart, a constant and a
//! varying one √m (stumpy's and SCRIMP's convention). A self-join leaves out neighbours closer
//! than the exclusion zone ⌈m/4⌉ (trivial matches of a window with itself shifted a little).
//!
//! This crate depends on no other Samos crate and does no file or network I/O beyond its
//! devices (a GPU through wgpu, an FPGA's device files): it takes Arrow arrays and returns
//! results. `samos mine` loads the series and stores what it finds.

pub mod cpu;
pub mod fpga;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod reference;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::Float64Array;

/// Why mining could not run.
#[derive(Debug, thiserror::Error)]
pub enum MiningError {
    #[error(
        "window {window} does not fit a series of {len} values (at least 3 and at most the length)"
    )]
    Window { window: usize, len: usize },
    #[error(
        "window statistics need a window and a step of at least 1 (window {window}, step {step})"
    )]
    WindowSpec { window: usize, step: usize },
    #[error(
        "a streamed profile compares each window with earlier ones beyond the exclusion zone: history {history} must exceed ⌈{window}/4⌉"
    )]
    History { window: usize, history: usize },
    #[error("{backend} backend: {message}")]
    Device { backend: String, message: String },
}

/// The exclusion zone of a self-join with window `m`: ⌈m/4⌉.
pub fn exclusion_zone(m: usize) -> usize {
    m.div_ceil(4)
}

/// Window pairs a self-join of `n` values compares: |i − j| beyond the exclusion zone, each
/// pair once (the unit of throughput figures).
pub fn self_join_pairs(n: usize, m: usize) -> f64 {
    if n < m {
        return 0.0;
    }
    let l = (n - m + 1) as f64;
    let k = (exclusion_zone(m) + 1) as f64;
    if l < k {
        return 0.0;
    }
    (l - k) * (l - k + 1.0) / 2.0
}

/// Pairs compared so far by a running join, shared with whoever displays progress. A backend
/// given one (`with_progress`) sets the total when a join starts and adds as work completes.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    /// A join of `total` pairs begins.
    pub fn start(&self, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add(&self, pairs: u64) {
        self.done.fetch_add(pairs, Ordering::Relaxed);
    }

    /// (pairs done, pairs in all).
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// Pairs on diagonal `k` (pairs (i, i + k)) of `la` windows against `lb`.
pub fn diagonal_pairs(la: usize, lb: usize, k: isize) -> u64 {
    let first = if k < 0 { (-k) as usize } else { 0 };
    let end = if k < 0 {
        la.min(lb + first)
    } else {
        la.min(lb.saturating_sub(k as usize))
    };
    end.saturating_sub(first) as u64
}

/// For each window of a series, the distance to its nearest neighbour and where that starts.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixProfile {
    pub window: usize,
    /// Distance to the nearest neighbour; ∞ where the window has no neighbour (a gap).
    pub profile: Vec<f64>,
    /// Start of the nearest neighbour, −1 where there is none.
    pub index: Vec<i64>,
}

/// A pair of windows that are each other's closest match: a repeated shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Motif {
    pub first: usize,
    pub second: usize,
    pub distance: f64,
}

/// A window far from every other: an anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct Discord {
    pub start: usize,
    pub distance: f64,
}

impl MatrixProfile {
    /// The `k` closest pairs, no two within an exclusion zone of an earlier pick.
    pub fn motifs(&self, k: usize) -> Vec<Motif> {
        let zone = exclusion_zone(self.window);
        let mut order: Vec<usize> = (0..self.profile.len())
            .filter(|&i| self.profile[i].is_finite() && self.index[i] >= 0)
            .collect();
        order.sort_by(|&a, &b| self.profile[a].total_cmp(&self.profile[b]).then(a.cmp(&b)));
        let mut taken: Vec<usize> = Vec::new();
        let mut out = Vec::new();
        for i in order {
            if out.len() == k {
                break;
            }
            let j = self.index[i] as usize;
            if taken
                .iter()
                .any(|&t| t.abs_diff(i) <= zone || t.abs_diff(j) <= zone)
            {
                continue;
            }
            taken.extend([i, j]);
            out.push(Motif {
                first: i.min(j),
                second: i.max(j),
                distance: self.profile[i],
            });
        }
        out
    }

    /// The `k` windows farthest from their nearest neighbour, none within an exclusion zone
    /// of an earlier pick.
    pub fn discords(&self, k: usize) -> Vec<Discord> {
        let zone = exclusion_zone(self.window);
        let mut order: Vec<usize> = (0..self.profile.len())
            .filter(|&i| self.profile[i].is_finite())
            .collect();
        order.sort_by(|&a, &b| self.profile[b].total_cmp(&self.profile[a]).then(a.cmp(&b)));
        let mut out: Vec<Discord> = Vec::new();
        for i in order {
            if out.len() == k {
                break;
            }
            if out.iter().any(|d| d.start.abs_diff(i) <= zone) {
                continue;
            }
            out.push(Discord {
                start: i,
                distance: self.profile[i],
            });
        }
        out
    }
}

/// Sliding (step < window) or tumbling (step = window) windows over each series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub window: usize,
    pub step: usize,
}

impl WindowSpec {
    /// Refuses a zero window or step.
    pub fn check(&self) -> Result<(), MiningError> {
        if self.window == 0 || self.step == 0 {
            return Err(MiningError::WindowSpec {
                window: self.window,
                step: self.step,
            });
        }
        Ok(())
    }
}

/// Statistics of consecutive windows of one series; entry `w` covers values
/// `w·step .. w·step + window`. Gaps are left out; a window of gaps only is NaN throughout.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowStats {
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub mean: Vec<f64>,
    /// Population standard deviation.
    pub std: Vec<f64>,
    /// Least-squares slope per sample (the paper's severity logic uses it per minute).
    pub slope: Vec<f64>,
}

impl WindowStats {
    /// Appends a window that held only gaps: NaN throughout.
    pub fn push_gap(&mut self) {
        for col in [
            &mut self.min,
            &mut self.max,
            &mut self.mean,
            &mut self.std,
            &mut self.slope,
        ] {
            col.push(f64::NAN);
        }
    }
}

/// A pattern-mining backend.
pub trait Backend: Send + Sync {
    /// What runs the work, e.g. `cpu (2 threads)` or the GPU adapter's name.
    fn describe(&self) -> String;

    /// The matrix profile of `series` against itself with window `m`.
    fn self_join(&self, series: &Float64Array, m: usize) -> Result<MatrixProfile, MiningError>;

    /// For each window of `query`, its nearest window of `target` (e.g. two sensors of one
    /// room).
    fn ab_join(
        &self,
        query: &Float64Array,
        target: &Float64Array,
        m: usize,
    ) -> Result<MatrixProfile, MiningError>;

    /// Window statistics of many series at once.
    fn window_stats(
        &self,
        series: &[&Float64Array],
        spec: WindowSpec,
    ) -> Result<Vec<WindowStats>, MiningError>;
}

/// The values of a column, nulls as NaN.
pub fn values(column: &Float64Array) -> Vec<f64> {
    column.iter().map(|v| v.unwrap_or(f64::NAN)).collect()
}

/// Checks that windows of `m` fit a series of `len` values.
pub fn check_window(m: usize, len: usize) -> Result<(), MiningError> {
    if m < 3 || m > len {
        return Err(MiningError::Window { window: m, len });
    }
    Ok(())
}
