//! What happens, as it happens: node changes, alerts, refused readings and (for pages that ask)
//! accepted readings, fanned out to the dashboard's live streams.
//!
//! Invariants: publishing never blocks and never waits for a reader. The feed is a bounded
//! `tokio::sync::broadcast` ring: a reader that falls behind loses the oldest entries and is
//! told so (`Lagged`), and the writer — the protocol, on the publish path — only ever pays a
//! ring slot and an `Arc`. Readings are published only while some stream watches readings
//! (`watch_readings`), so with no node page open an accepted reading costs one relaxed load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use serde_json::Value;
use tokio::sync::broadcast;

/// One entry of the feed: an SSE event name and its JSON data.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// `event`, `refused` or `reading`.
    pub kind: &'static str,
    /// For `reading` (and every node-scoped entry): the node it concerns, for filtering.
    pub node_id: Option<String>,
    pub data: Value,
}

#[derive(Debug, Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    reading_watchers: Arc<AtomicUsize>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed::new(4096)
    }
}

impl LiveFeed {
    /// A feed keeping the last `capacity` entries for slow readers.
    pub fn new(capacity: usize) -> LiveFeed {
        LiveFeed {
            tx: broadcast::channel(capacity.max(1)).0,
            reading_watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Publishes an entry; without readers it is dropped at once.
    pub fn publish(&self, kind: &'static str, node_id: Option<&str>, data: Value) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.tx.send(Arc::new(LiveEvent {
            kind,
            node_id: node_id.map(str::to_string),
            data,
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Whether any stream wants accepted readings (checked before building one).
    pub fn readings_watched(&self) -> bool {
        self.reading_watchers.load(Relaxed) > 0
    }

    /// Registers a stream that wants readings, until the guard is dropped.
    pub fn watch_readings(&self) -> ReadingWatch {
        self.reading_watchers.fetch_add(1, Relaxed);
        ReadingWatch(self.reading_watchers.clone())
    }
}

/// Keeps readings flowing into the feed while it lives.
#[derive(Debug)]
pub struct ReadingWatch(Arc<AtomicUsize>);

impl Drop for ReadingWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_slow_reader_loses_the_oldest_entries_and_the_writer_never_waits() {
        let feed = LiveFeed::new(4);
        feed.publish("event", None, json!(0));
        let mut rx = feed.subscribe();
        for i in 1..=10 {
            feed.publish("event", None, json!(i));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(6))
        ));
        assert_eq!(rx.recv().await.unwrap().data, json!(7));
    }

    #[test]
    fn readings_are_watched_while_a_guard_lives() {
        let feed = LiveFeed::default();
        assert!(!feed.readings_watched());
        let a = feed.watch_readings();
        let b = feed.watch_readings();
        drop(a);
        assert!(feed.readings_watched());
        drop(b);
        assert!(!feed.readings_watched());
    }
}
