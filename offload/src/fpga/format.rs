//! Number formats between the host's f64 series and the kernel's integers.
//!
//! Samples travel as 20-bit two's-complement integers: each series is mapped affinely onto
//! ±(2^19 − 1) over its own finite range, so a value is off by at most half a step
//! (`Quantizer::step`). Everything the kernel computes from them — window sums, sums of
//! squares, the diagonal dot products — is exact integer arithmetic, so quantization is the
//! only error of the window statistics, and the join adds only the rounding of each window's
//! norm to a 24-bit mantissa. Fixed point rather than float: integer adders and DSP multipliers
//! are what an FPGA has plenty of, exact sums never drift along a diagonal (no re-seeding),
//! and z-normalized distances do not care about each series' offset and scale.

use crate::WindowStats;

/// Bits of a sample on the card.
pub const SAMPLE_BITS: u32 = 20;
/// The largest sample magnitude used: the range is symmetric.
pub const SAMPLE_MAX: i64 = (1 << (SAMPLE_BITS - 1)) - 1;
/// Bits of a window norm's mantissa.
pub const MANTISSA_BITS: u32 = 24;
/// The join's own rounding, as an error in correlation: the mantissa (2^−24 relative) and
/// the key's truncation (2^−23.5 of the row's scale) together stay below 2^−22.
pub const KEY_RHO_ERROR: f64 = 1.0 / (1u64 << 22) as f64;
/// The longest window a JOIN accepts (13-bit window register path).
pub const MAX_JOIN_WINDOW: usize = 4096;
/// The longest window STATS accepts (16-bit position counter).
pub const MAX_STATS_WINDOW: usize = 65536;

/// Window classes in the norm table; only class 0 pairs are compared on the card.
pub const CLASS_SPREAD: u32 = 0;
pub const CLASS_CONSTANT: u32 = 1;
pub const CLASS_GAP: u32 = 2;
/// Not constant, but all samples fell on one integer: the host compares it exactly.
pub const CLASS_BELOW_STEP: u32 = 3;

/// The affine map of one series onto the card's integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    pub offset: f64,
    /// The value of one integer step; a sample is within half a step of its integer.
    pub step: f64,
}

impl Quantizer {
    /// Centres the finite range of `values` on 0 and spreads it over ±[`SAMPLE_MAX`].
    pub fn for_series(values: &[f64]) -> Quantizer {
        let (lo, hi) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        if !lo.is_finite() {
            return Quantizer {
                offset: 0.0,
                step: 1.0,
            };
        }
        let offset = lo / 2.0 + hi / 2.0;
        let step = (hi / 2.0 - lo / 2.0) / SAMPLE_MAX as f64;
        Quantizer {
            offset,
            step: if step > 0.0 && step.is_finite() {
                step
            } else {
                1.0
            },
        }
    }

    /// The integer of `v`, `None` for a gap.
    pub fn quantize(&self, v: f64) -> Option<i32> {
        if !v.is_finite() {
            return None;
        }
        let q = ((v - self.offset) / self.step).round();
        Some(q.clamp(-SAMPLE_MAX as f64, SAMPLE_MAX as f64) as i32)
    }

    pub fn value(&self, q: f64) -> f64 {
        self.offset + self.step * q
    }
}

/// A sample as a stream word: the integer in bits 19:0 (two's complement), bit 31 set for a
/// gap.
pub fn sample_word(q: Option<i32>) -> u32 {
    match q {
        Some(q) => q as u32 & 0x000F_FFFF,
        None => 1 << 31,
    }
}

/// The card's tables for the windows of length `m` of one quantized series.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowTables {
    /// Sample words (gaps as 0: their windows are class GAP and never compared).
    pub samples: Vec<u32>,
    /// Σ q over each window.
    pub sums: Vec<u32>,
    /// {class, exponent, mantissa} of 1/√(m·Σq² − (Σq)²) per window.
    pub norms: Vec<u32>,
    pub class: Vec<u32>,
}

/// Builds the tables of `values` (one series) for windows of `m`, in one pass: the window
/// sums slide exactly (integers), and runs of gaps and of equal values give each window's
/// class. "Constant" is the CPU reference's test (all values equal), whatever their integers.
pub fn window_tables(values: &[f64], quantizer: &Quantizer, m: usize) -> WindowTables {
    let q: Vec<Option<i32>> = values.iter().map(|v| quantizer.quantize(*v)).collect();
    let samples = q.iter().map(|v| v.unwrap_or(0) as u32).collect();
    let l = values.len() + 1 - m;
    let mut sums = Vec::with_capacity(l);
    let mut norms = Vec::with_capacity(l);
    let mut class = Vec::with_capacity(l);
    let (mut s, mut ss) = (0i64, 0i128);
    // The last gap seen, and how many values up to here equal this one.
    let (mut last_gap, mut equal_run) = (None::<usize>, 0usize);
    for (end, v) in q.iter().enumerate() {
        let x = i64::from(v.unwrap_or(0));
        s += x;
        ss += i128::from(x) * i128::from(x);
        if v.is_none() {
            last_gap = Some(end);
        }
        equal_run = if end > 0 && values[end] == values[end - 1] {
            equal_run + 1
        } else {
            1
        };
        if end + 1 < m {
            continue;
        }
        let start = end + 1 - m;
        if start > 0 {
            let leaving = i64::from(q[start - 1].unwrap_or(0));
            s -= leaving;
            ss -= i128::from(leaving) * i128::from(leaving);
        }
        let arg = m as i128 * ss - i128::from(s) * i128::from(s);
        let c = if last_gap.is_some_and(|g| g >= start) {
            CLASS_GAP
        } else if equal_run >= m {
            CLASS_CONSTANT
        } else if arg == 0 {
            CLASS_BELOW_STEP
        } else {
            CLASS_SPREAD
        };
        sums.push(if c == CLASS_GAP { 0 } else { s as i32 as u32 });
        norms.push(if c == CLASS_SPREAD {
            norm_word(arg)
        } else {
            c << 30
        });
        class.push(c);
    }
    debug_assert_eq!(class.len(), l);
    WindowTables {
        samples,
        sums,
        norms,
        class,
    }
}

/// 1/√arg as {class 0, exponent e, mantissa M}: 1/√arg ≈ M · 2^−(e + 23), M in [2^23, 2^24).
pub fn norm_word(arg: i128) -> u32 {
    debug_assert!(arg > 0);
    let r = 1.0 / (arg as f64).sqrt();
    // r = 1.f · 2^p with p <= 0 (arg >= 1): e = −p.
    let p = ((r.to_bits() >> 52) & 0x7FF) as i32 - 1023;
    let mut e = -p;
    let mut mant = (r * 2f64.powi(e + MANTISSA_BITS as i32 - 1)).round() as u64;
    if mant >= 1 << MANTISSA_BITS {
        mant >>= 1;
        e -= 1;
    }
    debug_assert!((0..64).contains(&e));
    ((e as u32) << 24) | mant as u32
}

/// The per-window sums a STATS operation returns, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSums {
    pub count: u32,
    pub min: i32,
    pub max: i32,
    pub sum: i64,
    pub sum_sq: i64,
    /// Σ over the window's positions of the running sum of q; Σ position · q (position from 0)
    /// is `positions · sum − running_sums`.
    pub running_sums: i64,
}

impl StatsSums {
    /// Decodes the nine words of one window.
    pub fn from_words(w: &[u32]) -> StatsSums {
        let wide = |lo: u32, hi: u32| (u64::from(hi) << 32 | u64::from(lo)) as i64;
        StatsSums {
            count: w[0],
            min: w[1] as i32,
            max: w[2] as i32,
            sum: wide(w[3], w[4]),
            sum_sq: wide(w[5], w[6]),
            running_sums: wide(w[7], w[8]),
        }
    }

    /// The sums of one window of integers, as the card computes them.
    pub fn of(window: &[Option<i32>]) -> StatsSums {
        let mut s = StatsSums {
            count: 0,
            min: SAMPLE_MAX as i32,
            max: -(SAMPLE_MAX as i32) - 1,
            sum: 0,
            sum_sq: 0,
            running_sums: 0,
        };
        for q in window {
            if let Some(q) = *q {
                s.count += 1;
                s.min = s.min.min(q);
                s.max = s.max.max(q);
                s.sum += i64::from(q);
                s.sum_sq += i64::from(q) * i64::from(q);
            }
            s.running_sums += s.sum;
        }
        s
    }

    /// The nine words the card sends for these sums.
    pub fn to_words(&self) -> [u32; 9] {
        [
            self.count,
            self.min as u32,
            self.max as u32,
            self.sum as u32,
            (self.sum >> 32) as u32,
            self.sum_sq as u32,
            (self.sum_sq >> 32) as u32,
            self.running_sums as u32,
            (self.running_sums >> 32) as u32,
        ]
    }
}

/// Appends the statistics of one window to `out` from its exact sums; `valid` marks the
/// positions that held a sample (the slope's abscissae).
pub fn finish_window(out: &mut WindowStats, s: &StatsSums, valid: &[bool], quantizer: &Quantizer) {
    if s.count == 0 {
        out.push_gap();
        return;
    }
    let n = i128::from(s.count);
    let (mut sx, mut sxx) = (0i128, 0i128);
    for (x, _) in valid.iter().enumerate().filter(|(_, v)| **v) {
        sx += x as i128;
        sxx += (x * x) as i128;
    }
    let sum = i128::from(s.sum);
    let var_num = n * i128::from(s.sum_sq) - sum * sum;
    let sum_pos_q = valid.len() as i128 * sum - i128::from(s.running_sums);
    let sxy = n * sum_pos_q - sx * sum;
    let sxx = n * sxx - sx * sx;
    let step = quantizer.step;
    out.min.push(quantizer.value(f64::from(s.min)));
    out.max.push(quantizer.value(f64::from(s.max)));
    out.mean
        .push(quantizer.value(s.sum as f64 / f64::from(s.count)));
    out.std
        .push(step * (var_num.max(0) as f64).sqrt() / f64::from(s.count));
    out.slope.push(if sxx > 0 {
        step * (sxy as f64 / sxx as f64)
    } else {
        f64::NAN
    });
}

/// How far the card's statistics of one window may be from the exact ones: half a step for
/// min, max, mean and std; for the slope, half a step times Σ|x − x̄| / Σ(x − x̄)² over the
/// window's sample positions.
pub fn stats_bound(valid: &[bool], quantizer: &Quantizer) -> [f64; 5] {
    let half = quantizer.step / 2.0;
    let xs: Vec<f64> = valid
        .iter()
        .enumerate()
        .filter(|(_, v)| **v)
        .map(|(x, _)| x as f64)
        .collect();
    let slope = if xs.len() > 1 {
        let mx = xs.iter().sum::<f64>() / xs.len() as f64;
        let abs: f64 = xs.iter().map(|x| (x - mx).abs()).sum();
        let sq: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
        half * abs / sq
    } else {
        0.0
    };
    [half, half, half, half, slope]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_stays_within_half_a_step() {
        let values: Vec<f64> = (0..1000)
            .map(|i| (f64::from(i) * 0.37).sin() * 40.0 + 75.0)
            .collect();
        let q = Quantizer::for_series(&values);
        for v in &values {
            let back = q.value(f64::from(q.quantize(*v).unwrap()));
            assert!(
                (back - v).abs() <= q.step / 2.0 * (1.0 + 1e-9),
                "{v} {back}"
            );
        }
        assert_eq!(q.quantize(f64::NAN), None);
        assert_eq!(Quantizer::for_series(&[3.0, 3.0]).quantize(3.0), Some(0));
    }

    #[test]
    fn norm_words_round_to_a_24_bit_mantissa() {
        for arg in [2i128, 3, 7, 1 << 20, 123_456_789_012, (1i128 << 62) - 1] {
            let w = norm_word(arg);
            let (e, mant) = ((w >> 24) & 0x3F, w & 0xFF_FFFF);
            assert!((1 << 23..1 << 24).contains(&mant), "{arg}: {mant:x}");
            let r = f64::from(mant) * 2f64.powi(-(e as i32) - 23);
            let want = 1.0 / (arg as f64).sqrt();
            assert!(
                ((r - want) / want).abs() <= 2f64.powi(-24),
                "{arg}: {r} vs {want}"
            );
        }
    }

    #[test]
    fn window_tables_follow_their_definitions() {
        let mut values: Vec<f64> = (0..200).map(|i| f64::from((i * 37) % 23) - 11.0).collect();
        values[40..60].iter_mut().for_each(|v| *v = 2.5);
        values[90] = f64::NAN;
        values[120..126]
            .iter_mut()
            .for_each(|v| *v = 1.0 + 1e-12 * *v);
        let quantizer = Quantizer::for_series(&values);
        let m = 7;
        let t = window_tables(&values, &quantizer, m);
        for i in 0..values.len() + 1 - m {
            let w: Vec<Option<i32>> = values[i..i + m]
                .iter()
                .map(|v| quantizer.quantize(*v))
                .collect();
            let raw = &values[i..i + m];
            let gap = w.iter().any(Option::is_none);
            let s: i64 = w.iter().map(|v| i64::from(v.unwrap_or(0))).sum();
            let ss: i128 = w.iter().map(|v| i128::from(v.unwrap_or(0)).pow(2)).sum();
            let arg = m as i128 * ss - i128::from(s) * i128::from(s);
            let want = if gap {
                CLASS_GAP
            } else if raw.iter().all(|v| *v == raw[0]) {
                CLASS_CONSTANT
            } else if arg == 0 {
                CLASS_BELOW_STEP
            } else {
                CLASS_SPREAD
            };
            assert_eq!(t.class[i], want, "window {i}");
            if !gap {
                assert_eq!(t.sums[i], s as i32 as u32, "window {i}");
            }
            if want == CLASS_SPREAD {
                assert_eq!(t.norms[i], norm_word(arg), "window {i}");
            }
        }
    }

    #[test]
    fn stats_words_round_trip() {
        let w = [Some(-5), None, Some(SAMPLE_MAX as i32), Some(0)];
        let s = StatsSums::of(&w);
        assert_eq!(StatsSums::from_words(&s.to_words()), s);
        assert_eq!((s.count, s.min, s.max), (3, -5, SAMPLE_MAX as i32));
    }
}
