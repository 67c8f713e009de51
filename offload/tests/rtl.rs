//! Test benches of the RTL in Icarus Verilog (hw/tb/tb_script.v), driven by transaction
//! scripts whose expected answers come from the CPU reference: exact window sums, and the
//! brute-force nearest neighbour of every window where it is unambiguous under the documented
//! error bound. Plus Verilator's lint of the kernel.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use samos_offload::fpga::format::{
    self, CLASS_SPREAD, KEY_RHO_ERROR, Quantizer, StatsSums, WindowTables, sample_word,
};
use samos_offload::fpga::{model, regs};
use samos_offload::{exclusion_zone, reference};

fn hw() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hw")
}

/// Card memory of the test bench build (MEM_AW = 14).
const TB_WORDS: usize = 1 << 14;

/// A script for the test bench built with `lanes` JOIN lanes.
struct Script {
    text: String,
    lanes: u32,
}

impl Script {
    fn new(lanes: u32) -> Script {
        let mut s = Script {
            text: String::new(),
            lanes,
        };
        s.read(regs::ID, regs::ID_VALUE, u32::MAX);
        s.read(regs::VERSION, regs::VERSION_MAJOR << 16, 0xFFFF_0000);
        // CAPS: 20-bit samples, MEM_AW 14, the lanes.
        s.read(regs::CAPS, lanes << 24 | 14 << 8 | 20, 0xFF00_FFFF);
        s
    }
    fn write(&mut self, reg: u32, value: u32) {
        writeln!(self.text, "W {reg:02x} {value:08x}").unwrap();
    }
    fn read(&mut self, reg: u32, expect: u32, mask: u32) {
        writeln!(self.text, "R {reg:02x} {expect:08x} {mask:08x}").unwrap();
    }
    fn start(&mut self, op: u32) {
        self.write(regs::CTRL, regs::CTRL_START | op << 4);
    }
    fn push(&mut self, word: u32) {
        writeln!(self.text, "S {word:08x}").unwrap();
    }
    fn expect(&mut self, word: Option<u32>) {
        match word {
            Some(w) => writeln!(self.text, "E {w:08x}").unwrap(),
            None => writeln!(self.text, "X").unwrap(),
        }
    }
    fn done(&mut self, code: u32) {
        writeln!(self.text, "D {code:x}").unwrap();
    }
    fn load(&mut self, region: u32, offset: usize, words: &[u32]) {
        self.write(regs::ADDR, regs::addr(region, offset));
        self.write(regs::LEN, words.len() as u32);
        self.start(regs::OP_LOAD);
        for w in words {
            self.push(*w);
        }
        self.done(0);
    }
    /// Loads one series' tables at `base` of the sample, sum and norm memories.
    fn load_tables(&mut self, t: &WindowTables, base: usize) {
        self.load(regs::REGION_SAMPLES, base, &t.samples);
        self.load(regs::REGION_SUMS, base, &t.sums);
        self.load(regs::REGION_NORMS, base, &t.norms);
    }
    /// One JOIN of `range`'s diagonals over `lq` query windows at `q_base` and `lt` target
    /// windows at `t_base`; `accumulate` keeps the bests of earlier JOINs.
    fn join(
        &mut self,
        m: usize,
        (q_base, lq): (usize, usize),
        (t_base, lt): (usize, usize),
        range: &model::JoinRange,
        accumulate: bool,
    ) {
        for (reg, value) in [
            (regs::WINDOW, m as u32),
            (regs::Q_BASE, q_base as u32),
            (regs::Q_WINDOWS, lq as u32),
            (regs::T_BASE, t_base as u32),
            (regs::T_WINDOWS, lt as u32),
            (regs::DIAG_FIRST, range.diagonals.start as u32),
            (regs::DIAG_END, range.diagonals.end as u32),
            (regs::SKIP_LO, range.skip.0 as u32),
            (regs::SKIP_HI, range.skip.1 as u32),
            (
                regs::FLAGS,
                if accumulate { regs::FLAG_ACCUMULATE } else { 0 },
            ),
        ] {
            self.write(reg, value);
        }
        self.start(regs::OP_JOIN);
        self.done(0);
    }
    fn finish(mut self) -> (String, u32) {
        self.text.push_str("Q\n");
        (self.text, self.lanes)
    }
}

/// Runs one script through the test bench built with the script's lane count; returns the
/// number of checks that passed.
fn run(name: &str, (script, lanes): (String, u32)) -> usize {
    let dir = std::env::temp_dir().join(format!("samos-rtl-{}-{name}-{lanes}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (tb, script_path) = (dir.join("tb"), dir.join("script.txt"));
    std::fs::write(&script_path, script).unwrap();
    let built = Command::new("iverilog")
        .args(["-g2012", "-Wall"])
        .arg(format!("-Ptb_script.LANES={lanes}"))
        .arg("-o")
        .arg(&tb)
        .arg(hw().join("tb/tb_script.v"))
        .arg(hw().join("rtl/samos_mine.v"))
        .output()
        .expect("iverilog is installed (bash scripts/setup.sh)");
    assert!(
        built.status.success(),
        "iverilog: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new("vvp")
        .arg("-n")
        .arg(&tb)
        .arg(format!("+script={}", script_path.display()))
        .output()
        .expect("vvp runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = std::fs::remove_dir_all(&dir);
    let pass = text.lines().find_map(|l| l.strip_prefix("PASS "));
    let Some(checks) = pass else {
        panic!("{name}: the test bench failed:\n{text}");
    };
    checks.trim().parse().unwrap()
}

/// A deterministic test series: a wave, noise, a flat stretch and a gap.
fn series(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut t: Vec<f64> = (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (i as f64 / 6.0).sin() * 20.0 + ((state >> 11) as f64 / (1u64 << 53) as f64) * 4.0
        })
        .collect();
    t[n / 3..n / 3 + 10].iter_mut().for_each(|v| *v = 1.5);
    t[2 * n / 3] = f64::NAN;
    t
}

#[test]
fn stats_sums_match_the_reference_word_for_word() {
    let t = series(300, 1);
    let quantizer = Quantizer::for_series(&t);
    let q: Vec<Option<i32>> = t.iter().map(|v| quantizer.quantize(*v)).collect();
    let mut s = Script::new(1);
    for (window, step) in [(16usize, 16usize), (7, 3), (1, 1), (40, 5)] {
        let starts: Vec<usize> = (0..)
            .map(|w| w * step)
            .take_while(|x| x + window <= t.len())
            .collect();
        s.write(regs::WINDOW, window as u32);
        s.write(regs::LEN, starts.len() as u32);
        s.start(regs::OP_STATS);
        for &x in &starts {
            for v in &q[x..x + window] {
                s.push(sample_word(*v));
            }
            for w in StatsSums::of(&q[x..x + window]).to_words() {
                s.expect(Some(w));
            }
        }
        s.done(0);
    }
    assert!(run("stats", s.finish()) > 1000);
}

#[test]
fn join_picks_the_reference_neighbour_wherever_it_is_unambiguous() {
    let (a, b, m) = (series(150, 2), series(110, 3), 8usize);
    let mut checked = 0;
    for (name, query, target, self_join, lanes) in [
        ("self", &a, &a, true, 1),
        ("ab", &a, &b, false, 1),
        ("self", &a, &a, true, 4),
    ] {
        let (qq, qt) = (Quantizer::for_series(query), Quantizer::for_series(target));
        let (tq, tt) = (
            format::window_tables(query, &qq, m),
            format::window_tables(target, &qt, m),
        );
        let (lq, lt) = (tq.sums.len(), tt.sums.len());
        let t_base = TB_WORDS / 2;
        let mut s = Script::new(lanes);
        s.load_tables(&tq, 0);
        s.load_tables(&tt, t_base);
        let zone = exclusion_zone(m) as i64;
        let skip = if self_join { (-zone, zone) } else { (1, 0) };
        // Two operations over halves of the diagonals: the second accumulates.
        let mid = (lt as i64 - lq as i64) / 2;
        for (diagonals, accumulate) in [(-(lq as i64 - 1)..mid, false), (mid..lt as i64, true)] {
            let range = model::JoinRange { diagonals, skip };
            s.join(m, (0, lq), (t_base, lt), &range, accumulate);
        }
        // Expected neighbours from the brute-force reference.
        let sigma = |t: &[f64], i: usize| {
            let w = &t[i..i + m];
            let mean = w.iter().sum::<f64>() / m as f64;
            (w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64).sqrt()
        };
        let dist = |i: usize, j: usize| {
            reference::matrix_profile(&query[i..i + m], &target[j..j + m], m, false).profile[0]
        };
        s.write(regs::ADDR, regs::addr(regs::REGION_PROFILE, 0));
        s.write(regs::LEN, lq as u32);
        s.start(regs::OP_READ);
        for i in 0..lq {
            if tq.class[i] != CLASS_SPREAD {
                s.expect(Some(regs::NO_INDEX));
                continue;
            }
            let mut cands: Vec<(f64, usize)> = (0..lt)
                .filter(|&j| tt.class[j] == CLASS_SPREAD)
                .filter(|&j| !self_join || i.abs_diff(j) > zone as usize)
                .map(|j| (dist(i, j), j))
                .collect();
            cands.sort_by(|x, y| x.0.total_cmp(&y.0));
            let drho = |j: usize| qq.step / sigma(query, i) + qt.step / sigma(target, j);
            let clear = cands.len() >= 2 && {
                let ((d1, j1), (d2, j2)) = (cands[0], cands[1]);
                d2 * d2 - d1 * d1 > 2.0 * m as f64 * (drho(j1) + drho(j2) + 2.0 * KEY_RHO_ERROR)
            };
            if clear {
                checked += 1;
                s.expect(Some(cands[0].1 as u32));
            } else {
                s.expect(None);
            }
        }
        s.done(0);
        run(name, s.finish());
    }
    assert!(
        checked > 100,
        "only {checked} rows had a clear nearest neighbour"
    );
}

/// The kernel's profile and PAIRS equal its integer model (`fpga::model`) to the bit at 1, 2,
/// 3, 4 and 9 lanes: every row, over joins cut into pieces that start and end anywhere (not at
/// multiples of the lane count), with an exclusion zone narrower than a group of lanes,
/// pieces reaching past the diagonals that exist, unaligned bases and the shortest window;
/// and ties (a series repeating every 3 samples: equal keys on diagonals 3 apart, in one group
/// of lanes and across groups), which go to the lowest diagonal.
#[test]
fn join_equals_the_integer_model_at_every_lane_count() {
    let (a, b) = (series(97, 5), series(83, 6));
    let periodic: Vec<f64> = (0..90)
        .map(|i| {
            [0.0, 5.0, 2.0][i % 3]
                + if (40..55).contains(&i) {
                    (i as f64).sin()
                } else {
                    0.0
                }
        })
        .collect();
    for lanes in [1u32, 2, 3, 4, 9] {
        for (m, query, target, self_join) in [
            (3usize, &a, &a, true),
            (8, &a, &b, false),
            (4, &periodic, &periodic, true),
        ] {
            let (tq, tt) = (
                format::window_tables(query, &Quantizer::for_series(query), m),
                format::window_tables(target, &Quantizer::for_series(target), m),
            );
            let (lq, lt) = (tq.sums.len() as i64, tt.sums.len() as i64);
            let (q_base, t_base) = (3usize, 5000usize);
            let skip = if self_join { (-2, 2) } else { (1, 0) };
            let cuts = [-lq - 4, -37, 5, 6, lt + 7];
            let ranges: Vec<model::JoinRange> = cuts
                .windows(2)
                .map(|w| model::JoinRange {
                    diagonals: w[0]..w[1],
                    skip,
                })
                .collect();
            let (profile, pairs) = model::join(&tq, &tt, m, &ranges);
            let mut s = Script::new(lanes);
            s.load_tables(&tq, q_base);
            s.load_tables(&tt, t_base);
            let (qs, ts) = ((q_base, lq as usize), (t_base, lt as usize));
            for (n, (range, pairs)) in ranges.iter().zip(&pairs).enumerate() {
                s.join(m, qs, ts, range, n > 0);
                s.read(regs::PAIRS_LO, *pairs as u32, u32::MAX);
            }
            s.write(regs::ADDR, regs::addr(regs::REGION_PROFILE, 0));
            s.write(regs::LEN, lq as u32);
            s.start(regs::OP_READ);
            for j in &profile {
                s.expect(Some(*j));
            }
            s.done(0);
            let found = profile.iter().filter(|&&j| j != regs::NO_INDEX).count();
            assert!(found > 40, "only {found} rows have a neighbour");
            assert!(run(&format!("model-{m}"), s.finish()) > profile.len());
        }
    }
}

#[test]
fn refusals_carry_their_error_codes() {
    let mut s = Script::new(3);
    s.start(7);
    s.done(1); // unknown operation
    s.write(regs::ADDR, regs::addr(regs::REGION_SAMPLES, TB_WORDS - 2));
    s.write(regs::LEN, 3);
    s.start(regs::OP_LOAD);
    s.done(2); // past the end of card memory
    s.write(regs::ADDR, regs::addr(regs::REGION_PROFILE, 0));
    s.write(regs::LEN, 1);
    s.start(regs::OP_LOAD);
    s.done(2); // the profile is read-only
    s.write(regs::WINDOW, 2);
    s.write(regs::Q_WINDOWS, 1);
    s.write(regs::T_WINDOWS, 1);
    s.start(regs::OP_JOIN);
    s.done(3); // window below 3
    s.write(regs::WINDOW, 0);
    s.start(regs::OP_STATS);
    s.done(3);
    // The kernel still works after refusals.
    s.load(regs::REGION_SAMPLES, 5, &[1, 2, 3]);
    s.write(regs::ADDR, regs::addr(regs::REGION_SAMPLES, 5));
    s.write(regs::LEN, 3);
    s.start(regs::OP_READ);
    for w in [1, 2, 3] {
        s.expect(Some(w));
    }
    s.done(0);
    assert!(run("errors", s.finish()) >= 10);
}

#[test]
fn the_kernel_is_lint_clean_at_every_lane_count() {
    for lanes in [1, 2, 3, 4, 9, 64] {
        let out = Command::new("verilator")
            .args(["--lint-only", "-Wall"])
            .arg(format!("-GLANES={lanes}"))
            .arg(hw().join("rtl/samos_mine.v"))
            .output()
            .expect("verilator is installed (bash scripts/setup.sh)");
        assert!(
            out.status.success(),
            "{lanes} lanes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
