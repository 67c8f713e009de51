//! What happens, as it happens, fanned out to the dashboard's live streams: node changes,
//! alerts and refused readings through one [`LiveFeed`], and each node's accepted readings
//! through its own [`NodeReadings`], for the node pages that watch it.
//!
//! Invariants: publishing never blocks and never waits for a reader. Both are bounded
//! `tokio::sync::broadcast` rings: a reader that falls behind loses the oldest entries and is
//! told so (`Lagged`), and the writer — the protocol, on the publish path — only ever pays a
//! ring slot and an `Arc`. A node's readings are built and published only while some stream
//! watches that node, so an accepted reading of an unwatched node costs one relaxed load, and
//! a stream receives the readings of the node it watches and no other.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast;

/// One entry of the feed: an SSE event name and its JSON data.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// `event`, `refused` or `mining`.
    pub kind: &'static str,
    /// The node it concerns, if any.
    pub node_id: Option<String>,
    pub data: Value,
}

#[derive(Debug, Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<LiveEvent>>,
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
        }
    }

    /// Whether any stream reads the feed (so an entry is worth building).
    pub fn has_readers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes an entry; without readers it is dropped at once.
    pub fn publish(&self, kind: &'static str, node_id: Option<&str>, data: Value) {
        if !self.has_readers() {
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
}

/// One node's accepted readings, for the streams watching it.
#[derive(Debug, Default)]
pub struct NodeReadings {
    watchers: AtomicUsize,
    tx: Mutex<Option<broadcast::Sender<Arc<Value>>>>,
}

impl NodeReadings {
    /// How many readings a watching stream may fall behind by.
    const CAPACITY: usize = 1024;

    /// Whether any stream watches (checked before a reading is built).
    pub fn watched(&self) -> bool {
        self.watchers.load(Relaxed) > 0
    }

    pub fn publish(&self, reading: Value) {
        if let Some(tx) = &*self.tx.lock().expect("node readings") {
            let _ = tx.send(Arc::new(reading));
        }
    }

    /// Subscribes a stream until the guard is dropped.
    pub fn watch(self: &Arc<Self>) -> (broadcast::Receiver<Arc<Value>>, NodeWatch) {
        self.watchers.fetch_add(1, Relaxed);
        let rx = self
            .tx
            .lock()
            .expect("node readings")
            .get_or_insert_with(|| broadcast::channel(Self::CAPACITY).0)
            .subscribe();
        (rx, NodeWatch(self.clone()))
    }
}

/// Keeps a node's readings flowing while it lives.
#[derive(Debug)]
pub struct NodeWatch(Arc<NodeReadings>);

impl Drop for NodeWatch {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Relaxed);
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

    #[tokio::test]
    async fn a_node_is_watched_while_a_guard_lives_and_only_its_watchers_get_its_readings() {
        let node = Arc::new(NodeReadings::default());
        assert!(!node.watched());
        node.publish(json!(0)); // nobody listens: dropped
        let (mut a, guard_a) = node.watch();
        let (_b, guard_b) = node.watch();
        node.publish(json!(1));
        assert_eq!(*a.recv().await.unwrap(), json!(1));
        drop(guard_a);
        assert!(node.watched());
        drop(guard_b);
        assert!(!node.watched());
    }
}
