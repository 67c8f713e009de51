//! The node registry: every node that asked to join, its configuration, functional and
//! severity mode, last contact and counters. Persisted as `nodes.json` in the data directory
//! (written to a temporary file, fsync'd and renamed), so it survives restarts.
//!
//! Lookups on the reading path take no shared lock: the map is an `ArcSwap` replaced when a
//! node is added (rare); each node's mutable state sits behind its own mutex, which only that
//! node's connection touches in practice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use samos_schemas::payload::{FunctionalMode, Severity};
use serde::{Deserialize, Serialize};

use samos_schemas::node_config::{NodeConfig, ValidationError};
use samos_store::layout;

/// `(network, node id)`.
pub type NodeKey = (String, String);

/// What is known about one node; this is also its on-disk form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub network: String,
    pub node_id: String,
    pub functional_mode: FunctionalMode,
    pub severity: Severity,
    /// The configuration as sent (XML) and as read (with the JSON form inside), once valid.
    pub config_xml: Option<String>,
    pub config: Option<Arc<NodeConfig>>,
    /// Why the last join was refused.
    pub refusal: Vec<ValidationError>,
    /// Milliseconds since the Unix epoch.
    pub joined_at_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub address: Option<String>,
    pub readings_accepted: u64,
    pub readings_rejected: u64,
    /// The server's own assessment from the node's readings.
    pub assessed_severity: Severity,
    /// Client id of the session that sent the node's last join, when nodes are bound to the
    /// session that joined them (`protocol.node_identity = "auto"` without credentials).
    /// Absent (a node that never joined that way): the node id itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_client: Option<String>,
    /// The operator who blocked the node (dashboard or API); a join does not unblock it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// A configuration an operator sent over the air that the node has not joined with yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_config: Option<PushedConfig>,
}

/// A configuration sent to a node with `SET_CN_CONFIG_FILE`, awaiting its join.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushedConfig {
    pub document: String,
    pub by: String,
    pub time_ms: i64,
}

impl NodeRecord {
    /// The client id this node's topics are bound to when bound to a session.
    pub fn bound_client(&self) -> &str {
        self.bound_client.as_deref().unwrap_or(&self.node_id)
    }

    pub fn new(network: &str, node_id: &str) -> NodeRecord {
        NodeRecord {
            network: network.into(),
            node_id: node_id.into(),
            functional_mode: FunctionalMode::Init,
            severity: Severity::Normal,
            config_xml: None,
            config: None,
            refusal: Vec::new(),
            joined_at_ms: None,
            last_seen_ms: None,
            address: None,
            readings_accepted: 0,
            readings_rejected: 0,
            assessed_severity: Severity::Normal,
            bound_client: None,
            blocked_by: None,
            pushed_config: None,
        }
    }
}

/// A node in memory: its record plus live state.
#[derive(Debug)]
pub struct Node {
    pub record: Mutex<NodeRecord>,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// Client id of the connection currently speaking for the node.
    pub session: Mutex<Option<Arc<str>>>,
    pub severity_window: Mutex<samos_schemas::severity::Window>,
    /// Its accepted readings, for the dashboard pages watching it.
    pub live: Arc<crate::live::NodeReadings>,
    /// The latest numeric reading of each declared sensor (by index), for alert rules.
    pub latest: Mutex<Vec<Option<Latest>>>,
    /// The live matrix profile of each declared sensor (by index), `[[stream_profile]]`.
    pub profiles: Mutex<Vec<super::discords::Slot>>,
}

/// A sensor's latest numeric reading and the one before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latest {
    pub value: f64,
    pub time_ms: i64,
    /// The previous reading's value and time.
    pub previous: Option<(f64, i64)>,
}

impl Node {
    pub(crate) fn new(record: NodeRecord) -> Node {
        Node {
            accepted: AtomicU64::new(record.readings_accepted),
            rejected: AtomicU64::new(record.readings_rejected),
            record: Mutex::new(record),
            session: Mutex::new(None),
            severity_window: Mutex::new(Default::default()),
            live: Arc::default(),
            latest: Mutex::default(),
            profiles: Mutex::default(),
        }
    }

    /// Remembers `value` as the latest reading of sensor `index`.
    pub fn remember(&self, index: usize, value: f64, time_ms: i64) {
        let mut latest = self.latest.lock().expect("latest readings");
        if latest.len() <= index {
            latest.resize(index + 1, None);
        }
        let previous = latest[index].map(|l| (l.value, l.time_ms));
        latest[index] = Some(Latest {
            value,
            time_ms,
            previous,
        });
    }

    /// A copy of the record with the live counters folded in.
    pub fn snapshot(&self) -> NodeRecord {
        let mut r = self.record.lock().expect("node record").clone();
        r.readings_accepted = self.accepted.load(Relaxed);
        r.readings_rejected = self.rejected.load(Relaxed);
        r
    }
}

/// Why the registry could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read node registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node registry {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write node registry {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Whether a save failed for lack of space (the next save may succeed).
    pub fn is_no_space(&self) -> bool {
        matches!(self, RegistryError::Write { source, .. } if samos_store::file::is_no_space(source))
    }
}

/// All nodes, keyed by network and node id.
#[derive(Debug)]
pub struct NodeRegistry {
    nodes: ArcSwap<HashMap<NodeKey, Arc<Node>>>,
    path: PathBuf,
    dirty: AtomicBool,
    /// Serialises writers of the map and of the file.
    write: Mutex<()>,
}

impl NodeRegistry {
    /// Opens `dir/nodes.json`, or starts empty.
    pub fn open(dir: &Path) -> Result<NodeRegistry, RegistryError> {
        let path = dir.join(layout::NODES_FILE);
        let records: Vec<NodeRecord> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        let map = records
            .into_iter()
            .map(|r| {
                (
                    (r.network.clone(), r.node_id.clone()),
                    Arc::new(Node::new(r)),
                )
            })
            .collect();
        Ok(NodeRegistry {
            nodes: ArcSwap::from_pointee(map),
            path,
            dirty: AtomicBool::new(false),
            write: Mutex::new(()),
        })
    }

    pub fn get(&self, network: &str, node_id: &str) -> Option<Arc<Node>> {
        self.nodes
            .load()
            .get(&(network.to_string(), node_id.to_string()))
            .cloned()
    }

    /// The node, created in INIT mode if new.
    pub fn get_or_insert(&self, network: &str, node_id: &str) -> Arc<Node> {
        if let Some(n) = self.get(network, node_id) {
            return n;
        }
        let _guard = self.write.lock().expect("registry writer");
        let current = self.nodes.load();
        let key = (network.to_string(), node_id.to_string());
        if let Some(n) = current.get(&key) {
            return n.clone();
        }
        let node = Arc::new(Node::new(NodeRecord::new(network, node_id)));
        let mut next = HashMap::clone(&current);
        next.insert(key, node.clone());
        self.nodes.store(Arc::new(next));
        self.mark_dirty();
        node
    }

    /// Calls `f` on every node, in no particular order: for a count or a search, without the
    /// sorting and key copies of [`NodeRegistry::all`] (a disconnect made both, for every node,
    /// while a thousand others were publishing).
    pub fn each(&self, mut f: impl FnMut(&Arc<Node>)) {
        for node in self.nodes.load().values() {
            f(node);
        }
    }

    /// Every node, ordered by network and node id.
    pub fn all(&self) -> Vec<Arc<Node>> {
        let mut v: Vec<Arc<Node>> = self.nodes.load().values().cloned().collect();
        v.sort_by_cached_key(|n| {
            let r = n.record.lock().expect("node record");
            (r.network.clone(), r.node_id.clone())
        });
        v
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Relaxed);
    }

    /// Writes the registry if anything changed since the last save.
    pub fn save_if_dirty(&self) -> Result<(), RegistryError> {
        if self.dirty.swap(false, Relaxed)
            && let Err(e) = self.save()
        {
            self.dirty.store(true, Relaxed);
            return Err(e);
        }
        Ok(())
    }

    /// Writes `nodes.json` atomically.
    pub fn save(&self) -> Result<(), RegistryError> {
        let _guard = self.write.lock().expect("registry writer");
        let records: Vec<NodeRecord> = self.all().iter().map(|n| n.snapshot()).collect();
        let werr = |source| RegistryError::Write {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&records).expect("records serialize");
        samos_store::file::write_atomically(&self.path, &json).map_err(werr)
    }

    /// Reads the registry file of a data directory without opening it for writing.
    pub fn read_records(dir: &Path) -> Result<Vec<NodeRecord>, RegistryError> {
        Ok(Self::open(dir)?
            .all()
            .iter()
            .map(|n| n.snapshot())
            .collect())
    }
}

/// An append-only JSON-lines file (`events.jsonl`, `rejected.jsonl`), one record per line,
/// flushed per write. Stands in for the `events` and `rejected` tables until the durable
/// ingest path stores them in Parquet.
#[derive(Debug)]
pub struct JsonLines {
    file: Mutex<std::fs::File>,
    pub path: PathBuf,
}

impl JsonLines {
    pub fn open(path: PathBuf) -> std::io::Result<JsonLines> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(JsonLines {
            file: Mutex::new(file),
            path,
        })
    }

    pub fn append(&self, record: &serde_json::Value) -> std::io::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(record).expect("json value");
        line.push(b'\n');
        self.file.lock().expect("jsonl file").write_all(&line)
    }

    /// Every record of a file (for tests and tools).
    pub fn read(path: &Path) -> std::io::Result<Vec<serde_json::Value>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// Milliseconds since the Unix epoch, now.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let reg = NodeRegistry::open(dir.path()).unwrap();
        let n = reg.get_or_insert("net", "CN1");
        {
            let mut r = n.record.lock().unwrap();
            r.functional_mode = FunctionalMode::Active;
            r.severity = Severity::Warning;
        }
        n.accepted.fetch_add(5, Relaxed);
        reg.save_if_dirty().unwrap();
        reg.save().unwrap();
        let again = NodeRegistry::open(dir.path()).unwrap();
        let r = again.get("net", "CN1").unwrap().snapshot();
        assert_eq!(r.functional_mode, FunctionalMode::Active);
        assert_eq!(r.severity, Severity::Warning);
        assert_eq!(r.readings_accepted, 5);
        assert!(again.get("net", "CN2").is_none());
    }

    #[test]
    fn a_corrupt_registry_is_an_error_not_an_empty_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodes.json"), "{not json").unwrap();
        let e = NodeRegistry::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
    }
}
