//! A WAL sequence number that one writer moves and others wait on, from threads and tasks.
//!
//! They follow the WAL: the batcher's last committed record (the PostgreSQL sink and the
//! bridges wait for it instead of polling the WAL) and each [`Follower`]'s checkpoint (the
//! batcher waits for it when the follower is `max_wal_backlog_batches` behind, WAL segments
//! are kept until every follower is past them, and shutdown waits for PostgreSQL to drain).
//! Waiting is a notification, not a sleep: a waiter wakes when the value moves.
//!
//! Invariants: `set` stores the value before it wakes anyone, and it takes the condition
//! variable's lock between the two, so a blocking waiter that saw the old value under that
//! lock is already waiting when the wake-up comes (no lost wake-up); an async waiter registers
//! its `Notified` before it reads the value, for the same reason. Nothing awaits while holding
//! the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Watermark {
    value: AtomicU64,
    lock: Mutex<()>,
    moved: Condvar,
    moved_async: Notify,
}

impl Watermark {
    pub fn new(value: u64) -> Watermark {
        Watermark {
            value: AtomicU64::new(value),
            ..Watermark::default()
        }
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Sets the value (its single writer decides the order) and wakes every waiter.
    pub fn set(&self, value: u64) {
        self.value.store(value, Ordering::Release);
        drop(self.lock.lock().expect("watermark lock"));
        self.moved.notify_all();
        self.moved_async.notify_waiters();
    }

    /// Blocks until `done(value)` holds or `timeout` passes; returns the last value seen.
    pub fn wait_blocking(&self, done: impl Fn(u64) -> bool, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().expect("watermark lock");
        loop {
            let value = self.get();
            let left = deadline.saturating_duration_since(Instant::now());
            if done(value) || left.is_zero() {
                return value;
            }
            guard = self
                .moved
                .wait_timeout(guard, left)
                .expect("watermark lock")
                .0;
        }
    }

    /// Waits until the value is no longer `seen`; returns it.
    pub async fn changed_from(&self, seen: u64) -> u64 {
        loop {
            let notified = self.moved_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let value = self.get();
            if value != seen {
                return value;
            }
            notified.await;
        }
    }
}

/// A reader of the WAL with its own checkpoint (the PostgreSQL sink, each bridge): the
/// highest sequence it has done with, durably. It never runs ahead of what its reader has
/// made durable elsewhere, since the WAL segments below it may be deleted.
#[derive(Debug, Clone)]
pub struct Follower {
    /// For logs: `PostgreSQL`, `bridge cloud`.
    pub name: String,
    pub checkpoint: Arc<Watermark>,
}

/// The lowest of `seq` and every follower's checkpoint: the WAL must keep what lies above it.
pub fn needed_from(seq: u64, followers: &[Follower]) -> u64 {
    followers
        .iter()
        .map(|f| f.checkpoint.get())
        .fold(seq, u64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_kept_from_the_slowest_follower() {
        let follower = |name: &str, at| Follower {
            name: name.into(),
            checkpoint: Arc::new(Watermark::new(at)),
        };
        assert_eq!(needed_from(9, &[]), 9);
        assert_eq!(needed_from(9, &[follower("a", 12), follower("b", 4)]), 4);
        assert_eq!(needed_from(3, &[follower("a", 12)]), 3);
    }

    #[test]
    fn a_blocking_waiter_wakes_when_the_value_moves_and_gives_up_at_the_limit() {
        let w = Arc::new(Watermark::new(3));
        assert_eq!(w.wait_blocking(|v| v >= 3, Duration::ZERO), 3);
        assert_eq!(w.wait_blocking(|v| v >= 5, Duration::from_millis(20)), 3);
        let writer = {
            let w = w.clone();
            std::thread::spawn(move || {
                for v in 4..=5 {
                    std::thread::sleep(Duration::from_millis(5));
                    w.set(v);
                }
            })
        };
        assert_eq!(w.wait_blocking(|v| v >= 5, Duration::from_secs(30)), 5);
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn an_async_waiter_wakes_on_the_next_set() {
        let w = Arc::new(Watermark::new(7));
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move { w.changed_from(7).await })
        };
        tokio::task::yield_now().await;
        w.set(8);
        let got = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, 8);
        assert_eq!(w.changed_from(7).await, 8, "a moved value returns at once");
    }
}
