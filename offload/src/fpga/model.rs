//! The kernel's JOIN to the bit, in software: the oracle the RTL is tested against at every
//! lane count (`offload/tests/rtl.rs`, `offload/tests/fpga.rs`).
//!
//! The card compares, for each query window i, the key of every pair (i, j) on the wanted
//! diagonals whose two windows both have spread (class 0):
//! key = ⌊(m·QT(i, j) − S_i·S_j) · M_j / 2^e_j⌋, kept to 56 bits, where QT is the exact dot
//! product of the two windows' samples, S the window sums and (e_j, M_j) the target window's
//! norm word. A key replaces the row's best only when it is strictly larger, diagonals are
//! taken in increasing order and, within a diagonal, whatever order rows come in: so a row
//! keeps the largest key, and among equal keys the one of the lowest diagonal. That is what
//! one lane does walking one diagonal at a time, and what several lanes do side by side
//! (hw/README.md, "Lanes"); this model computes it directly.

use std::ops::Range;

use super::format::{CLASS_SPREAD, WindowTables};
use super::regs::NO_INDEX;

/// One JOIN operation's diagonals: `diagonals` pair query row i with target window i + k;
/// those in `skip` (inclusive, empty when start > end) are left out.
#[derive(Debug, Clone)]
pub struct JoinRange {
    pub diagonals: Range<i64>,
    pub skip: (i64, i64),
}

/// The profile READ returns after `ranges` were joined in order (the first clearing, the
/// others accumulating), and the PAIRS register after each operation.
pub fn join(
    query: &WindowTables,
    target: &WindowTables,
    m: usize,
    ranges: &[JoinRange],
) -> (Vec<u32>, Vec<u64>) {
    let (lq, lt) = (query.sums.len() as i64, target.sums.len() as i64);
    let sample = |t: &WindowTables, u: usize| i64::from(((t.samples[u] << 12) as i32) >> 12);
    let key = |i: usize, j: usize| {
        let qt: i64 = (0..m)
            .map(|u| sample(query, i + u) * sample(target, j + u))
            .sum();
        let num = m as i128 * i128::from(qt)
            - i128::from(query.sums[i] as i32) * i128::from(target.sums[j] as i32);
        let norm = target.norms[j];
        let (exponent, mantissa) = ((norm >> 24) & 0x3F, i128::from(norm & 0xFF_FFFF));
        let shifted = (num * mantissa) >> exponent;
        // the low 56 bits, sign-extended
        ((shifted << 72) >> 72) as i64
    };
    let mut best: Vec<Option<(i64, u32)>> = vec![None; lq as usize];
    let mut pairs = Vec::with_capacity(ranges.len());
    for range in ranges {
        let mut compared = 0u64;
        for k in range.diagonals.clone() {
            if (range.skip.0..=range.skip.1).contains(&k) {
                continue;
            }
            for i in 0.max(-k)..lq.min(lt - k) {
                let (iu, ju) = (i as usize, (i + k) as usize);
                if query.class[iu] != CLASS_SPREAD || target.class[ju] != CLASS_SPREAD {
                    continue;
                }
                compared += 1;
                let key = key(iu, ju);
                if best[iu].is_none_or(|(b, _)| key > b) {
                    best[iu] = Some((key, ju as u32));
                }
            }
        }
        pairs.push(compared);
    }
    let profile = best
        .iter()
        .map(|b| b.map_or(NO_INDEX, |(_, j)| j))
        .collect();
    (profile, pairs)
}
