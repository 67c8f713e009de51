//! The durable outbox of alert notifications: at least once, across crashes.
//!
//! Each notification (one transition of one alert, for one action) is a file
//! `{seq:020}.json` under `data/alerts/outbox/`, published whole (`write_atomically`: written,
//! fsync'd, renamed, directory fsync'd) *before* any attempt to deliver it, and removed only
//! after the action confirmed it (a 2xx answer, an accepted mail, a queued MQTT message). A
//! crash in between leaves the file, and the next start delivers it again: at least once. The
//! receiver deduplicates by the delivery id, which names the alert, the change and the action
//! and so is the same on every attempt. A notification the action refuses for good (an HTTP 4xx
//! other than 408/429, a rejected address) moves to `outbox/failed/` for an operator to see,
//! and is counted.
//!
//! Invariants: sequence numbers only grow (the next one is past every file present at start),
//! so deliveries of one action are attempted in the order they were raised.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{Alert, Change};

/// One notification to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `{alert id}#{change}#{action}`: the receiver's deduplication key.
    pub id: String,
    /// The action (a name from the configuration) that delivers it.
    pub action: String,
    pub change: Change,
    pub alert: Alert,
    /// The instance that raised it.
    pub instance: String,
}

impl Delivery {
    pub fn new(action: &str, change: Change, alert: Alert, instance: &str) -> Delivery {
        Delivery {
            id: format!("{}#{}#{action}", alert.id, change.as_str()),
            action: action.to_owned(),
            change,
            alert,
            instance: instance.to_owned(),
        }
    }
}

/// A delivery as stored: its file's sequence number and content.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: u64,
    pub delivery: Delivery,
}

/// The outbox directory.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    next: std::sync::atomic::AtomicU64,
}

impl Outbox {
    /// Opens (creating) `dir` and returns what is still to deliver, oldest first. Files that do
    /// not parse move to `failed/` (logged), never block the rest.
    pub fn open(dir: &Path) -> std::io::Result<(Outbox, Vec<Pending>)> {
        std::fs::create_dir_all(dir.join("failed"))?;
        let mut pending = Vec::new();
        let mut last = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            last = last.max(seq);
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Delivery>(&b).ok())
            {
                Some(delivery) => pending.push(Pending { seq, delivery }),
                None => {
                    tracing::error!(path = %path.display(), "unreadable alert notification moved to failed/");
                    let _ =
                        std::fs::rename(&path, dir.join("failed").join(format!("{seq:020}.json")));
                }
            }
        }
        pending.sort_by_key(|p| p.seq);
        Ok((
            Outbox {
                dir: dir.to_path_buf(),
                next: std::sync::atomic::AtomicU64::new(last + 1),
            },
            pending,
        ))
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Stores `delivery` durably; returns it with its sequence number.
    pub fn put(&self, delivery: Delivery) -> std::io::Result<Pending> {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bytes = serde_json::to_vec(&delivery).map_err(std::io::Error::other)?;
        samos_store::file::write_atomically(&self.path(seq), &bytes)?;
        Ok(Pending { seq, delivery })
    }

    /// Forgets a delivered notification.
    pub fn done(&self, seq: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(seq)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => samos_store::file::sync_parent(&self.path(seq)),
        }
    }

    /// Sets a notification aside for good, in `failed/`.
    pub fn failed(&self, seq: u64) -> std::io::Result<()> {
        std::fs::rename(
            self.path(seq),
            self.dir.join("failed").join(format!("{seq:020}.json")),
        )?;
        samos_store::file::sync_parent(&self.path(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::Series;
    use super::*;

    fn alert(n: i64) -> Alert {
        Alert {
            id: format!("hot/net/a/temp/{n}"),
            rule: "hot".into(),
            severity: "warning".into(),
            series: Series {
                network: "net".into(),
                node_id: "a".into(),
                sensor: "temp".into(),
            },
            value: Some(50.0),
            started_ms: n,
            resolved_ms: None,
            acknowledged_by: None,
            summary: "hot".into(),
        }
    }

    #[test]
    fn what_was_put_and_not_done_survives_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let outbox_dir = dir.path().join("outbox");
        let (outbox, pending) = Outbox::open(&outbox_dir).unwrap_or_else(|_| unreachable!());
        assert!(pending.is_empty());
        let a = outbox
            .put(Delivery::new("ops", Change::Firing, alert(1), "i1"))
            .unwrap_or_else(|_| unreachable!());
        let b = outbox
            .put(Delivery::new("ops", Change::Resolved, alert(1), "i1"))
            .unwrap_or_else(|_| unreachable!());
        let c = outbox
            .put(Delivery::new("mail", Change::Firing, alert(2), "i1"))
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(a.delivery.id, "hot/net/a/temp/1#firing#ops");
        outbox.done(a.seq).unwrap_or_else(|_| unreachable!());
        outbox.failed(c.seq).unwrap_or_else(|_| unreachable!());
        std::fs::write(outbox_dir.join("00000000000000000099.json"), b"not json")
            .unwrap_or_else(|_| unreachable!());
        drop(outbox);

        let (outbox, pending) = Outbox::open(&outbox_dir).unwrap_or_else(|_| unreachable!());
        assert_eq!(pending, vec![b]);
        assert!(outbox_dir.join("failed/00000000000000000003.json").exists());
        assert!(outbox_dir.join("failed/00000000000000000099.json").exists());
        let d = outbox
            .put(Delivery::new("ops", Change::Firing, alert(3), "i1"))
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(
            d.seq, 100,
            "past every file seen, the unreadable one included"
        );
        drop(outbox);
        let (_, pending) = Outbox::open(&outbox_dir).unwrap_or_else(|_| unreachable!());
        assert_eq!(pending.len(), 2, "b and d wait");
    }
}
