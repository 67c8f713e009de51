//! Wall-clock time, in one place: the server stamps readings, events and session closes with
//! it. Durations and timeouts use `Instant`/tokio time, never this clock.

/// Milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
