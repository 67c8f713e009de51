//! Wall-clock time, in one place: the server stamps readings, events and session closes with
//! it. Durations and timeouts use `Instant`/tokio time, never this clock.
//!
//! The wall clock may step (NTP, an operator, a VM resumed): nothing ordered depends on it.
//! The WAL sequence orders readings; keep-alives, retries and a running server's session
//! expiry use the monotonic clock. A step changes the times readings are stamped with (and so
//! the date partition they are filed under), the day retention counts from, and, across a
//! restart, how long a closed session is taken to have been gone (README, "Failure
//! behaviour").
//!
//! Test hook: with `SAMOS_CLOCK_OFFSET_FILE` set, the milliseconds in that file (re-read
//! every 50 ms) are added to the system clock, so a test steps this server's clock without
//! touching the machine's.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

/// Added to the system clock (the test hook; 0 otherwise).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + OFFSET_MS.load(Relaxed)
}

/// Starts following `SAMOS_CLOCK_OFFSET_FILE`, if set (see the module header).
pub fn follow_offset_file() {
    let Some(path) = std::env::var_os("SAMOS_CLOCK_OFFSET_FILE") else {
        return;
    };
    let read = move || {
        if let Some(ms) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            OFFSET_MS.store(ms, Relaxed);
        }
    };
    read();
    let _ = std::thread::Builder::new()
        .name("samos-clock-offset".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                read();
            }
        });
}
