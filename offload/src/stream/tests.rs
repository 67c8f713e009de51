use proptest::prelude::*;

use super::*;
use crate::reference::{left_matrix_profile, matrix_profile, random_walk};

/// Streams `t` and checks every step against the brute-force left profile: the squared
/// distance is within `tol` of the minimum's and of the window's it names.
fn agrees(t: &[f64], m: usize, history: usize, tol: f64) -> Result<(), TestCaseError> {
    let want = left_matrix_profile(t, m, history);
    let mut live = LeftProfile::new(m, history).unwrap();
    let steps: Vec<Step> = t.iter().filter_map(|v| live.push(*v)).collect();
    prop_assert_eq!(steps.len(), want.profile.len());
    for (j, s) in steps.iter().enumerate() {
        prop_assert_eq!(s.window, j as u64);
        let best = want.profile[j];
        if best.is_infinite() {
            prop_assert!(
                s.distance.is_infinite() && s.neighbour.is_none(),
                "window {}",
                j
            );
            continue;
        }
        prop_assert!(
            (s.distance * s.distance - best * best).abs() <= tol,
            "window {}: {} vs {}",
            j,
            s.distance,
            best
        );
        let i = s.neighbour.unwrap() as usize;
        prop_assert!(
            i + history >= j && i + exclusion_zone(m) < j,
            "window {} named {}",
            j,
            i
        );
        let named = matrix_profile(&t[j..j + m], &t[i..i + m], m, false).profile[0];
        prop_assert!(
            (s.distance * s.distance - named * named).abs() <= tol,
            "window {} named {}: {} vs {}",
            j,
            i,
            s.distance,
            named
        );
    }
    Ok(())
}

/// Random walks with plateaus (constant windows) and level shifts.
fn series() -> impl Strategy<Value = Vec<f64>> {
    (
        prop::collection::vec((-1.0f64..1.0, 0usize..6, any::<bool>()), 4..260),
        -1e4f64..1e4,
    )
        .prop_map(|(steps, level)| {
            let mut v = level;
            let mut out = Vec::new();
            for (step, hold, jump) in steps {
                v += if jump { step * 50.0 } else { step };
                out.extend(std::iter::repeat_n(v, 1 + hold * usize::from(hold > 3)));
            }
            out
        })
}

proptest! {
    #[test]
    fn every_step_is_the_left_profile(t in series(), m in 3usize..20, extra in 1usize..80) {
        prop_assume!(t.len() >= m);
        let history = exclusion_zone(m) + extra;
        agrees(&t, m, history, 1e-8)?;
    }
}

#[test]
fn a_long_stream_far_from_zero_keeps_the_bound() {
    // 200,000 values around 10^6 with small steps: what rounding along unseeded diagonals
    // would spoil first. The last windows are checked against brute force over their history.
    let (m, history) = (16, 64);
    let t: Vec<f64> = random_walk(200_000, 7).iter().map(|v| 1e6 + v).collect();
    let mut live = LeftProfile::new(m, history).unwrap();
    let steps: Vec<Step> = t.iter().filter_map(|v| live.push(*v)).collect();
    let from = t.len() - 2_000;
    let want = left_matrix_profile(&t[from..], m, history);
    let offset = from as u64;
    for (k, s) in steps
        .iter()
        .filter(|s| s.window >= offset + history as u64)
        .enumerate()
    {
        let j = (s.window - offset) as usize;
        assert!(
            (s.distance - want.profile[j]).abs() <= 1e-8,
            "step {k}: {} vs {}",
            s.distance,
            want.profile[j]
        );
    }
}

#[test]
fn constant_windows_follow_the_batch_conventions() {
    let mut t = vec![5.0; 40];
    t.extend((0..40).map(|i| f64::from(i % 7)));
    agrees(&t, 8, 30, 1e-12).unwrap();
    let mut live = LeftProfile::new(4, 10).unwrap();
    let steps: Vec<Step> = [1.0; 12].iter().filter_map(|v| live.push(*v)).collect();
    assert!(steps[..2].iter().all(|s| s.distance.is_infinite()));
    assert!(steps[2..].iter().all(|s| s.distance == 0.0));
}

#[test]
fn values_that_are_not_finite_are_skipped() {
    let mut live = LeftProfile::new(3, 5).unwrap();
    assert_eq!(live.push(f64::NAN), None);
    assert_eq!(live.push(f64::INFINITY), None);
    assert_eq!(live.seen(), 0);
}

#[test]
fn history_must_reach_past_the_exclusion_zone() {
    assert!(LeftProfile::new(16, 4).is_err());
    assert!(LeftProfile::new(2, 100).is_err());
    assert!(LeftProfile::new(16, 5).is_ok());
}

#[test]
fn memory_is_fixed_at_creation() {
    let mut live = LeftProfile::new(32, 1000).unwrap();
    let before = live.memory_bytes();
    for v in random_walk(5_000, 1) {
        live.push(v);
    }
    assert_eq!(live.memory_bytes(), before);
    assert!(before <= 48 * 1000 + 8 * 32 + 512, "{before} bytes");
}

#[test]
fn a_profile_rebuilt_from_its_recent_values_continues_the_same() {
    let t = random_walk(3_000, 11);
    let (m, history) = (12, 200);
    let mut first = LeftProfile::new(m, history).unwrap();
    for v in &t[..2_000] {
        first.push(*v);
    }
    let recent = first.recent();
    assert_eq!(recent.len(), history + m);
    let mut second = LeftProfile::new(m, history).unwrap();
    for v in &recent {
        second.push(*v);
    }
    for v in &t[2_000..] {
        let (a, b) = (first.push(*v).unwrap(), second.push(*v).unwrap());
        assert!((a.distance - b.distance).abs() <= 1e-9, "{a:?} vs {b:?}");
        assert_eq!(
            a.window - a.neighbour.unwrap(),
            b.window - b.neighbour.unwrap()
        );
    }
    // Fewer values than the profile keeps: all of them.
    let mut short = LeftProfile::new(m, history).unwrap();
    for v in &t[..30] {
        short.push(*v);
    }
    assert_eq!(short.recent(), t[..30].to_vec());
}
