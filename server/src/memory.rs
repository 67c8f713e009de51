//! Giving memory back after a crowd leaves. When thousands of connections close, glibc's
//! malloc keeps their pages in its arenas for reuse, so resident memory stays at the crowd's
//! peak (626 MiB after 19,400 connections had left, from 65 MiB before they came). After the
//! number of connections has fallen by half and by at least `MIN_DROP` since its peak, the
//! free pages of every glibc arena are returned to the system (`malloc_trim(0)`, off the async
//! runtime). A later crowd allocates them again.
//!
//! The `samos` binary allocates Rust's memory through jemalloc (`samos/src/allocator.rs`),
//! which returns free pages by itself over its decay time (ten seconds); it registers its
//! purge with [`release_also_with`], so the same moment gives jemalloc's free pages back at
//! once. glibc's trim still matters for the C libraries (aws-lc's handshake state, zstd's
//! contexts) and for an embedding program that keeps the system allocator.
//!
//! Each time, one INFO line gives resident memory before and after. The watcher runs where
//! there is something to give back (glibc, or a registered allocator); the check runs every
//! ten seconds and costs an atomic load.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::metrics::Metrics;

/// Fewer connections than this gone since the peak is not worth a trim.
const MIN_DROP: u64 = 1000;

/// The process allocator's "return free pages now", when it is not glibc's malloc.
static ALLOCATOR_RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers `release` (returns the process allocator's free pages to the system) to run with
/// glibc's trim after a crowd leaves. The first registration wins; call it before starting.
pub fn release_also_with(release: fn()) {
    let _ = ALLOCATOR_RELEASE.set(release);
}

/// Starts the watcher (a tokio task) on the current runtime.
pub fn give_back_after_crowds(metrics: Arc<Metrics>) {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) && ALLOCATOR_RELEASE.get().is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut peak = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let now = metrics.connections_current.load(Relaxed);
            // A crowd may come and go between two looks: connections record their peak.
            peak = peak.max(metrics.connections_peak.swap(now, Relaxed));
            if crowd_left(peak, now) {
                peak = now;
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    });
}

/// Whether enough of the connections seen at `peak` have gone (`now` left) to trim.
fn crowd_left(peak: u64, now: u64) -> bool {
    peak.saturating_sub(now) >= MIN_DROP && now <= peak / 2
}

fn trim() {
    let before = resident_kib();
    if let Some(release) = ALLOCATOR_RELEASE.get() {
        release();
    }
    trim_glibc();
    tracing::info!(
        resident_kib_before = before,
        resident_kib_after = resident_kib(),
        "gave free memory back to the system after a crowd of connections left"
    );
}

/// This process's resident memory (`VmRSS`), where `/proc` has it.
fn resident_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_glibc() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free pages; it is
    // thread-safe (each arena is locked while it is trimmed).
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_glibc() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_crowd_that_mostly_left_is_worth_a_trim() {
        assert!(crowd_left(19_400, 0));
        assert!(crowd_left(4_000, 2_000));
        assert!(!crowd_left(4_000, 2_001), "more than half still there");
        assert!(!crowd_left(900, 0), "too few to matter");
        assert!(!crowd_left(0, 0));
        trim();
    }
}
