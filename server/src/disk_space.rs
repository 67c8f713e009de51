//! Disk-full episodes: which of the server's writers is waiting for space, and since when.
//!
//! A writer that meets ENOSPC (or EDQUOT) on a *write* reports [`DiskSpace::full`] and waits;
//! when a later attempt succeeds it reports [`DiskSpace::freed`]. An episode is logged once
//! when it starts and once when it ends, however many attempts fail in between; it shows in
//! `/metrics` (`samos_disk_full{writer}`, `samos_disk_full_episodes_total{writer}`) and in
//! `$SYS/broker/disk_full` (the writers waiting, or `none`).
//!
//! What each writer does meanwhile is its own module's business (see README, "Failure
//! behaviour"): the WAL holds the batch and retries it, so the queue fills and publishers
//! pause; the Parquet sink drops its unfinished file and rewrites it from the WAL; the node
//! registry stays in memory and is saved at the next tick. An fsync error is never a
//! disk-full episode: it is handled as the failure it is (the WAL's policy: exit and recover).

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tracing::{info, warn};

/// A writer of the data directory that waits out a full disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Wal,
    Parquet,
    Registry,
}

impl Writer {
    pub const ALL: [Writer; 3] = [Writer::Wal, Writer::Parquet, Writer::Registry];

    /// The label of the metrics and `$SYS`.
    pub const fn label(self) -> &'static str {
        match self {
            Writer::Wal => "wal",
            Writer::Parquet => "parquet",
            Writer::Registry => "registry",
        }
    }

    /// What waits while this writer does, for the log.
    const fn consequence(self) -> &'static str {
        match self {
            Writer::Wal => {
                "nothing new is acknowledged; publishers are paused (MQTT 5 readings refused with 0x97 Quota exceeded) until space is freed"
            }
            Writer::Parquet => {
                "the rows stay in the WAL; the unfinished Parquet file is rewritten from it once space is freed"
            }
            Writer::Registry => {
                "the node registry stays in memory and is saved once space is freed"
            }
        }
    }
}

pub use samos_store::file::is_no_space;

/// How long a writer waits before it tries again: 100 ms at first, then at most a second.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(4)).min(Duration::from_secs(1))
}

/// The disk-full state of every writer (held by [`crate::metrics::Metrics`]).
#[derive(Debug, Default)]
pub struct DiskSpace {
    /// When each writer's current episode started (`None`: not waiting).
    since: [Mutex<Option<Instant>>; Writer::ALL.len()],
    episodes: [AtomicU64; Writer::ALL.len()],
}

impl DiskSpace {
    /// `writer` could not write for lack of space; logs and counts the episode if it starts now.
    pub fn full(&self, writer: Writer, error: &dyn std::fmt::Display) {
        let mut since = self.since[writer as usize].lock().expect("disk state");
        if since.is_none() {
            *since = Some(Instant::now());
            self.episodes[writer as usize].fetch_add(1, Relaxed);
            warn!(writer = writer.label(), %error, "disk full: {}", writer.consequence());
        }
    }

    /// `writer` wrote again; logs the end of its episode, if it had one.
    pub fn freed(&self, writer: Writer) {
        let started = self.since[writer as usize]
            .lock()
            .expect("disk state")
            .take();
        if let Some(t) = started {
            info!(
                writer = writer.label(),
                waited_ms = t.elapsed().as_millis() as u64,
                "disk space freed: writing again"
            );
        }
    }

    /// Whether `writer` is waiting for space now.
    pub fn is_full(&self, writer: Writer) -> bool {
        self.since[writer as usize]
            .lock()
            .expect("disk state")
            .is_some()
    }

    /// The writers waiting for space, comma separated, or `none` (for `$SYS/broker/disk_full`).
    pub fn summary(&self) -> String {
        let full: Vec<&str> = Writer::ALL
            .iter()
            .filter(|w| self.is_full(**w))
            .map(|w| w.label())
            .collect();
        if full.is_empty() {
            "none".into()
        } else {
            full.join(",")
        }
    }

    /// The Prometheus lines.
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP samos_disk_full 1 while the writer waits for disk space (ENOSPC or quota).\n# TYPE samos_disk_full gauge"
        );
        for w in Writer::ALL {
            let _ = writeln!(
                o,
                "samos_disk_full{{writer=\"{}\"}} {}",
                w.label(),
                u8::from(self.is_full(w))
            );
        }
        let _ = writeln!(
            o,
            "# HELP samos_disk_full_episodes_total Times a writer started waiting for disk space.\n# TYPE samos_disk_full_episodes_total counter"
        );
        for w in Writer::ALL {
            let _ = writeln!(
                o,
                "samos_disk_full_episodes_total{{writer=\"{}\"}} {}",
                w.label(),
                self.episodes[w as usize].load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_is_counted_once_however_many_attempts_fail() {
        let d = DiskSpace::default();
        let e = std::io::Error::from_raw_os_error(28);
        assert!(is_no_space(&e));
        assert!(!is_no_space(&std::io::Error::from_raw_os_error(5)));
        d.full(Writer::Wal, &e);
        d.full(Writer::Wal, &e);
        assert!(d.is_full(Writer::Wal));
        assert_eq!(d.summary(), "wal");
        d.freed(Writer::Wal);
        d.freed(Writer::Wal);
        d.full(Writer::Parquet, &e);
        let mut text = String::new();
        d.render(&mut text);
        assert!(text.contains("samos_disk_full{writer=\"wal\"} 0"), "{text}");
        assert!(
            text.contains("samos_disk_full{writer=\"parquet\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("samos_disk_full_episodes_total{writer=\"wal\"} 1"),
            "{text}"
        );
        assert_eq!(d.summary(), "parquet");
    }

    #[test]
    fn retries_back_off_to_a_second() {
        assert_eq!(retry_delay(0), Duration::from_millis(100));
        assert_eq!(retry_delay(3), Duration::from_millis(800));
        assert_eq!(retry_delay(30), Duration::from_secs(1));
    }
}
