//! The FPGA backend: a host driver for the mining kernel of `hw/` (register map 1.x) over a
//! [`Device`] — the Verilator model of the RTL (`fpga-sim`) or an XDMA card.
//!
//! What runs on the card: the exact integer sums of every statistics window, and the
//! matrix-profile update along diagonals (one window pair per clock per lane) that picks, for
//! each query window, the target window of highest correlation among windows with spread. What
//! the host does: quantization (see [`format`]), the per-window tables, tiling series larger
//! than card memory into blocks, and the exact f64 distance of every chosen pair; pairs with a
//! constant window (distance 0 or √m by convention), and windows whose values fall on a single
//! integer step, are resolved on the host as well.
//!
//! Error bound of a join (`format` derives it): with quantization steps δ_q, δ_t of the two
//! series and σ the population standard deviation of a window, the correlation the card
//! compares is within Δρ(i, j) = δ_q/σ_i + δ_t/σ_j of the exact one, and the key's rounding
//! adds at most [`format::KEY_RHO_ERROR`]. The neighbour j' reported for window i therefore
//! satisfies d²(i, j') − d²(i, j*) ≤ 2m·(Δρ(i, j') + Δρ(i, j*) + 2·KEY_RHO_ERROR) against the
//! true nearest j*, and the distance reported is the exact distance of (i, j').

pub mod device;
pub mod format;
pub mod model;
pub mod regs;
#[cfg(samos_fpga_sim)]
mod sim;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::Float64Array;

use crate::cpu::{Partial, Windows, ab_windows, exact_dist2, self_windows, special_dist2};
use crate::{
    Backend, MatrixProfile, MiningError, Progress, WindowSpec, WindowStats, diagonal_pairs,
    exclusion_zone, values,
};
use device::{Device, DeviceError, SimDevice, XdmaDevice};
use format::{Quantizer, StatsSums, WindowTables};

/// Input words per STATS operation: bounds the host's buffers for sliding windows.
const STATS_BATCH_WORDS: usize = 1 << 22;
/// Window pairs per JOIN operation: how often progress moves.
const JOIN_PIECE_PAIRS: u64 = 1 << 22;
/// Cycles a JOIN waits after its last group for the pipeline to drain (at most 12 + log2 of
/// 64 lanes), rounded up.
const JOIN_DRAIN_CYCLES: u64 = 32;

/// The FPGA backend over one card.
pub struct Fpga {
    device: Mutex<Box<dyn Device>>,
    name: String,
    /// Words in each card memory (2^MEM_AW from CAPS).
    capacity: usize,
    /// JOIN lanes (CAPS 31:24; a map 1.0 kernel has one and reads 0 there).
    lanes: u32,
    join_cycles: AtomicU64,
    progress: Option<Progress>,
}

impl Fpga {
    /// The Verilator model of the RTL with the most lanes built, in this process.
    pub fn sim() -> Result<Fpga, MiningError> {
        let device = SimDevice::new().map_err(device_error)?;
        Fpga::open(Box::new(device))
    }

    /// The Verilator model with `lanes` JOIN lanes (one of [`SimDevice::lane_counts`]).
    pub fn sim_with_lanes(lanes: u32) -> Result<Fpga, MiningError> {
        let device = SimDevice::with_lanes(lanes).map_err(device_error)?;
        Fpga::open(Box::new(device))
    }

    /// A card behind XDMA device files with this prefix (e.g. `/dev/xdma0`).
    pub fn xdma(prefix: &str) -> Result<Fpga, MiningError> {
        let device = XdmaDevice::open(prefix).map_err(device_error)?;
        Fpga::open(Box::new(device))
    }

    /// Checks the kernel's identity and version and reads its capacity.
    pub fn open(mut device: Box<dyn Device>) -> Result<Fpga, MiningError> {
        let id = device.read_reg(regs::ID).map_err(device_error)?;
        let version = device.read_reg(regs::VERSION).map_err(device_error)?;
        if id != regs::ID_VALUE || version >> 16 != regs::VERSION_MAJOR {
            return Err(fpga_error(format!(
                "{} is not a Samos mining kernel of register map {}.x (ID {id:#010x}, \
                 VERSION {version:#010x})",
                device.describe(),
                regs::VERSION_MAJOR
            )));
        }
        let caps = device.read_reg(regs::CAPS).map_err(device_error)?;
        if caps & 0xFF != format::SAMPLE_BITS {
            return Err(fpga_error(format!(
                "the kernel takes {}-bit samples, this driver {}",
                caps & 0xFF,
                format::SAMPLE_BITS
            )));
        }
        let capacity = 1usize << ((caps >> 8) & 0xFF);
        let lanes = (caps >> 24).max(1);
        device
            .write_reg(regs::STATUS, regs::STATUS_CLEAR)
            .and_then(|_| device.write_reg(regs::IRQ_ENABLE, regs::IRQ_ALL))
            .map_err(device_error)?;
        let name = format!(
            "fpga ({}, map {}.{}, {} words per memory, {lanes} JOIN lane{})",
            device.describe(),
            version >> 16,
            version & 0xFFFF,
            capacity,
            if lanes == 1 { "" } else { "s" }
        );
        Ok(Fpga {
            device: Mutex::new(device),
            name,
            capacity,
            lanes,
            join_cycles: AtomicU64::new(0),
            progress: None,
        })
    }

    /// JOIN lanes: window pairs the kernel compares per clock.
    pub fn lanes(&self) -> u32 {
        self.lanes
    }

    /// Kernel clock cycles of every JOIN so far (the CYCLES register after each): with the
    /// clock a bitstream reaches, the card's time for the joins.
    pub fn join_cycles(&self) -> u64 {
        self.join_cycles.load(Ordering::Relaxed)
    }

    /// The CYCLES register: clock cycles of the last operation.
    fn last_cycles(&self) -> Result<u64, MiningError> {
        let mut dev = self
            .device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lo = dev.read_reg(regs::CYCLES_LO).map_err(device_error)?;
        let hi = dev.read_reg(regs::CYCLES_HI).map_err(device_error)?;
        Ok(u64::from(hi) << 32 | u64::from(lo))
    }

    /// Reports join progress to `progress`.
    pub fn with_progress(mut self, progress: Progress) -> Fpga {
        self.progress = Some(progress);
        self
    }

    /// Uses at most `words` of each card memory, so tests can exercise tiling on short series.
    pub fn with_capacity_limit(mut self, words: usize) -> Fpga {
        self.capacity = self.capacity.min(words);
        self
    }

    /// Runs one operation: registers, start, the streams, completion, status.
    fn run(
        &self,
        setup: &[(u32, u32)],
        op: u32,
        input: &[u32],
        output_words: usize,
        cycles: u64,
    ) -> Result<Vec<u32>, MiningError> {
        let mut dev = self
            .device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (out, status) = (|| {
            for &(reg, value) in setup {
                dev.write_reg(reg, value)?;
            }
            dev.write_reg(regs::CTRL, regs::CTRL_START | (op << 4))?;
            // A refused operation moves no data: streaming into it would only hang until a
            // timeout, so a refusal already visible (or one that explains a stalled stream)
            // is reported as such.
            let mut status = dev.read_reg(regs::STATUS)?;
            let mut out = Vec::new();
            if status & regs::STATUS_ERROR == 0 {
                match dev.stream(input, output_words) {
                    Ok(words) => out = words,
                    Err(e) => {
                        status = dev.read_reg(regs::STATUS)?;
                        if status & regs::STATUS_ERROR == 0 {
                            return Err(e);
                        }
                    }
                }
                if status & regs::STATUS_ERROR == 0 {
                    dev.wait_done(cycles + (input.len() + output_words) as u64)?;
                    status = dev.read_reg(regs::STATUS)?;
                }
            }
            dev.write_reg(regs::STATUS, regs::STATUS_CLEAR)?;
            Ok::<_, DeviceError>((out, status))
        })()
        .map_err(device_error)?;
        if status & regs::STATUS_ERROR != 0 {
            let code = (status >> 8) & 0xFF;
            return Err(fpga_error(format!(
                "the kernel refused operation {op}: {} (code {code})",
                regs::error_name(code)
            )));
        }
        Ok(out)
    }

    fn load(&self, region: u32, offset: usize, words: &[u32]) -> Result<(), MiningError> {
        let setup = [
            (regs::ADDR, regs::addr(region, offset)),
            (regs::LEN, words.len() as u32),
        ];
        self.run(&setup, regs::OP_LOAD, words, 0, 0).map(|_| ())
    }

    fn read(&self, region: u32, offset: usize, len: usize) -> Result<Vec<u32>, MiningError> {
        let setup = [
            (regs::ADDR, regs::addr(region, offset)),
            (regs::LEN, len as u32),
        ];
        self.run(&setup, regs::OP_READ, &[], len, 2 * len as u64)
    }

    /// Loads one series' tables at `base` of the sample, sum and norm memories.
    fn load_tables(&self, t: &WindowTables, base: usize) -> Result<(), MiningError> {
        self.load(regs::REGION_SAMPLES, base, &t.samples)?;
        self.load(regs::REGION_SUMS, base, &t.sums)?;
        self.load(regs::REGION_NORMS, base, &t.norms)
    }

    /// The neighbour indices of query windows `q0..q0+lq` among target windows `t0..t0+lt`
    /// (both already within the loaded tables), leaving out global diagonals within
    /// `exclude` of 0; card-local indices, [`regs::NO_INDEX`] for none.
    #[allow(clippy::too_many_arguments)]
    fn join_block(
        &self,
        m: usize,
        q_base: usize,
        lq: usize,
        t_base: usize,
        lt: usize,
        shift: isize,
        exclude: Option<usize>,
    ) -> Result<Vec<u32>, MiningError> {
        // Local diagonal k pairs local rows i with i + k; globally that is k + shift.
        let (skip_lo, skip_hi) = match exclude {
            Some(zone) => (-(zone as isize) - shift, zone as isize - shift),
            None => (1, 0),
        };
        let first = -(lq as isize - 1);
        let end = lt as isize;
        let mut k = first;
        let mut accumulate = false;
        while k < end {
            // A piece of consecutive diagonals worth about JOIN_PIECE_PAIRS pairs. `work`
            // bounds the kernel's cycles for the completion timeout as if it had one lane (a
            // diagonal of n rows: n + m + 3 cycles; hw/README.md §6), plus the final drain.
            let (mut stop, mut pairs, mut work) = (k, 0u64, JOIN_DRAIN_CYCLES);
            while stop < end && pairs < JOIN_PIECE_PAIRS {
                let n = diagonal_pairs(lq, lt, stop);
                if (skip_lo..=skip_hi).contains(&stop) {
                    work += 4;
                } else {
                    pairs += n;
                    work += n + m as u64 + 3;
                }
                stop += 1;
            }
            let setup = [
                (regs::WINDOW, m as u32),
                (regs::Q_BASE, q_base as u32),
                (regs::Q_WINDOWS, lq as u32),
                (regs::T_BASE, t_base as u32),
                (regs::T_WINDOWS, lt as u32),
                (regs::DIAG_FIRST, k as i32 as u32),
                (regs::DIAG_END, stop as i32 as u32),
                (regs::SKIP_LO, skip_lo as i32 as u32),
                (regs::SKIP_HI, skip_hi as i32 as u32),
                (
                    regs::FLAGS,
                    if accumulate { regs::FLAG_ACCUMULATE } else { 0 },
                ),
            ];
            let clear = if accumulate { 0 } else { lq as u64 };
            self.run(&setup, regs::OP_JOIN, &[], 0, work + clear)?;
            self.join_cycles
                .fetch_add(self.last_cycles()?, Ordering::Relaxed);
            if let Some(p) = &self.progress {
                p.add(pairs);
            }
            accumulate = true;
            k = stop;
        }
        self.read(regs::REGION_PROFILE, 0, lq)
    }

    /// For each window of `a`, its nearest window of `b` (`self_join`: a = b, exclusion zone).
    fn join(
        &self,
        a: &Windows,
        a_raw: &[f64],
        b: &Windows,
        b_raw: &[f64],
        m: usize,
        self_join: bool,
    ) -> Result<MatrixProfile, MiningError> {
        if m > format::MAX_JOIN_WINDOW {
            return Err(fpga_error(format!(
                "window {m} is longer than the kernel's {}",
                format::MAX_JOIN_WINDOW
            )));
        }
        let (la, lb) = (a_raw.len() + 1 - m, b_raw.len() + 1 - m);
        // Two blocks side by side in card memory, each `block` windows plus m − 1 samples.
        let block = (self.capacity / 2).saturating_sub(m - 1);
        if block == 0 {
            return Err(fpga_error(format!(
                "window {m} does not fit card memory of {} words",
                self.capacity
            )));
        }
        let qa = Quantizer::for_series(a_raw);
        let qb = Quantizer::for_series(b_raw);
        let ta = format::window_tables(a_raw, &qa, m);
        let tb = format::window_tables(b_raw, &qb, m);
        let zone = self_join.then(|| exclusion_zone(m));

        let mut best = Partial::new(la);
        let blocks = |l: usize| (0..l).step_by(block).map(move |s| (s, (l - s).min(block)));
        if let Some(p) = &self.progress {
            let mut total = 0;
            for (q0, lq) in blocks(la) {
                for (t0, lt) in blocks(lb) {
                    let shift = t0 as isize - q0 as isize;
                    for k in -(lq as isize - 1)..lt as isize {
                        if zone.is_none_or(|z| (k + shift).unsigned_abs() > z) {
                            total += diagonal_pairs(lq, lt, k);
                        }
                    }
                }
            }
            p.start(total);
        }
        for (q0, lq) in blocks(la) {
            self.load_tables(&slice_tables(&ta, q0, lq, m), 0)?;
            let t_base = block + m - 1;
            for (t0, lt) in blocks(lb) {
                self.load_tables(&slice_tables(&tb, t0, lt, m), t_base)?;
                let shift = t0 as isize - q0 as isize;
                let index = self.join_block(m, 0, lq, t_base, lt, shift, zone)?;
                for (i, &j) in index.iter().enumerate() {
                    if j != regs::NO_INDEX {
                        let (i, j) = (q0 + i, t0 + j as usize);
                        best.offer(i, exact_dist2(a, b, i, j, m), j);
                    }
                }
            }
        }
        resolve_on_host(&mut best, a, &ta.class, b, &tb.class, m, zone);
        Ok(best.finish(m))
    }
}

/// The tables of windows `start..start + len` (samples up to the last window's end).
fn slice_tables(t: &WindowTables, start: usize, len: usize, m: usize) -> WindowTables {
    WindowTables {
        samples: t.samples[start..start + len + m - 1].to_vec(),
        sums: t.sums[start..start + len].to_vec(),
        norms: t.norms[start..start + len].to_vec(),
        class: t.class[start..start + len].to_vec(),
    }
}

/// The pairs the card does not compare: those with a constant window (distance 0 between
/// two, √m with a varying one: one eligible partner of each kind is enough) and those with a
/// window below one quantization step (compared exactly, one by one).
fn resolve_on_host(
    best: &mut Partial,
    a: &Windows,
    a_class: &[u32],
    b: &Windows,
    b_class: &[u32],
    m: usize,
    zone: Option<usize>,
) {
    use format::{CLASS_BELOW_STEP, CLASS_CONSTANT, CLASS_GAP};
    let mf = m as f64;
    let eligible = |i: usize, j: usize| zone.is_none_or(|z| i.abs_diff(j) > z);
    // First and last target window of a kind: some window of that kind lies outside i's
    // exclusion zone exactly when one of these two does.
    let ends = |pick: &dyn Fn(u32) -> bool| {
        let first = b_class.iter().position(|c| pick(*c));
        let last = b_class.iter().rposition(|c| pick(*c));
        first.zip(last)
    };
    let constant = ends(&|c| c == CLASS_CONSTANT);
    let varying = ends(&|c| c != CLASS_CONSTANT && c != CLASS_GAP);
    let partner = |i: usize, ends: Option<(usize, usize)>| {
        ends.and_then(|(f, l)| [f, l].into_iter().find(|&j| eligible(i, j)))
    };
    let below_step: Vec<usize> = (0..b_class.len())
        .filter(|&j| b_class[j] == CLASS_BELOW_STEP)
        .collect();
    for (i, &class) in a_class.iter().enumerate() {
        match class {
            CLASS_GAP => {}
            CLASS_CONSTANT => {
                if let Some(j) = partner(i, constant) {
                    best.offer(i, 0.0, j);
                } else if let Some(j) = partner(i, varying) {
                    best.offer(i, mf, j);
                }
            }
            _ => {
                if let Some(j) = partner(i, constant) {
                    best.offer(i, special_dist2(a, b, i, j, mf), j);
                }
                let targets: Box<dyn Iterator<Item = usize>> = if class == CLASS_BELOW_STEP {
                    Box::new(0..b_class.len())
                } else {
                    Box::new(below_step.iter().copied())
                };
                for j in targets {
                    let c = b_class[j];
                    if eligible(i, j) && c != CLASS_GAP && c != CLASS_CONSTANT {
                        best.offer(i, exact_dist2(a, b, i, j, m), j);
                    }
                }
            }
        }
    }
}

fn device_error(e: DeviceError) -> MiningError {
    fpga_error(e.to_string())
}

fn fpga_error(message: String) -> MiningError {
    MiningError::Device {
        backend: "fpga".into(),
        message,
    }
}

impl Backend for Fpga {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn self_join(&self, series: &Float64Array, m: usize) -> Result<MatrixProfile, MiningError> {
        let w = self_windows(series, m)?;
        let raw = values(series);
        self.join(&w, &raw, &w, &raw, m, true)
    }

    fn ab_join(
        &self,
        query: &Float64Array,
        target: &Float64Array,
        m: usize,
    ) -> Result<MatrixProfile, MiningError> {
        let (a, b) = ab_windows(query, target, m)?;
        self.join(&a, &values(query), &b, &values(target), m, false)
    }

    fn window_stats(
        &self,
        series: &[&Float64Array],
        spec: WindowSpec,
    ) -> Result<Vec<WindowStats>, MiningError> {
        spec.check()?;
        if spec.window > format::MAX_STATS_WINDOW {
            return Err(fpga_error(format!(
                "window {} is longer than the kernel's {}",
                spec.window,
                format::MAX_STATS_WINDOW
            )));
        }
        let per_batch = (STATS_BATCH_WORDS / spec.window).max(1);
        let mut out = Vec::with_capacity(series.len());
        for column in series {
            let raw = values(column);
            let quantizer = Quantizer::for_series(&raw);
            let words: Vec<u32> = raw
                .iter()
                .map(|v| format::sample_word(quantizer.quantize(*v)))
                .collect();
            let starts: Vec<usize> = (0..)
                .map(|w| w * spec.step)
                .take_while(|s| s + spec.window <= raw.len())
                .collect();
            let mut stats = WindowStats::default();
            for batch in starts.chunks(per_batch) {
                // Overlapping windows are sent once per window: the kernel keeps no history.
                let input: Vec<u32> = batch
                    .iter()
                    .flat_map(|&s| words[s..s + spec.window].iter().copied())
                    .collect();
                let setup = [
                    (regs::WINDOW, spec.window as u32),
                    (regs::LEN, batch.len() as u32),
                ];
                let result = self.run(
                    &setup,
                    regs::OP_STATS,
                    &input,
                    batch.len() * regs::STATS_WORDS,
                    0,
                )?;
                for (&s, words) in batch.iter().zip(result.chunks_exact(regs::STATS_WORDS)) {
                    let valid: Vec<bool> = raw[s..s + spec.window]
                        .iter()
                        .map(|v| v.is_finite())
                        .collect();
                    format::finish_window(
                        &mut stats,
                        &StatsSums::from_words(words),
                        &valid,
                        &quantizer,
                    );
                }
            }
            out.push(stats);
        }
        Ok(out)
    }
}

#[cfg(all(test, samos_fpga_sim))]
mod tests {
    use super::*;

    /// Operations the kernel refuses come back with its error code, not as a stalled stream,
    /// and the card works on afterwards.
    #[test]
    fn refusals_carry_the_kernels_error_code() {
        let fpga = Fpga::sim().unwrap();
        let past_end = fpga.capacity - 1;
        let err = fpga
            .load(regs::REGION_SAMPLES, past_end, &[1, 2, 3])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("address range outside card memory (code 2)"),
            "{err}"
        );
        let setup = [(regs::WINDOW, 0), (regs::LEN, 1)];
        let err = fpga
            .run(&setup, regs::OP_STATS, &[1, 2, 3], regs::STATS_WORDS, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("window out of range (code 3)"), "{err}");
        fpga.load(regs::REGION_SAMPLES, 0, &[5, 6]).unwrap();
        assert_eq!(fpga.read(regs::REGION_SAMPLES, 0, 2).unwrap(), vec![5, 6]);
    }

    /// The driver reads the lane count from CAPS; a lane count no model was built for is
    /// refused with the ones that were.
    #[test]
    fn models_report_their_lanes_and_unknown_lane_counts_are_refused() {
        for lanes in SimDevice::lane_counts() {
            let fpga = Fpga::sim_with_lanes(lanes).unwrap();
            assert_eq!(fpga.lanes(), lanes);
            assert!(fpga.describe().contains(&format!("{lanes} JOIN lane")));
        }
        let err = Fpga::sim_with_lanes(5).err().unwrap().to_string();
        assert!(
            err.contains("no Verilator model with 5 lanes (built: [1, 4, 9])"),
            "{err}"
        );
    }
}
