//! The other instances' view of the nodes, where several instances share one object-store
//! dataset behind a load balancer: a node whose instance died reconnects to another one, and
//! that one must carry on with what the first knew — the severity mode the node last
//! reported, an operator's block, a configuration pushed over the air and not yet applied,
//! the session the node is bound to. The node sends its configuration again at its join.
//!
//! Every instance mirrors its registry, cut to [`CARRIED_FIELDS`], to the dataset (every
//! second while small; a second per megabyte when large) and reads the others' every second
//! (see `ingest::lake_sink`); this module keeps, per node, the most recently seen record
//! among the other instances. At a join, a peer's record newer than the local one (by the
//! node's last contact) is taken over before the join is judged, and the takeover is an
//! event. What a node reported in the second or two before its instance died may not have
//! reached the store: the instance uploads it when it starts again, but by then the node
//! has moved on, so its next report wins.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use samos_schemas::payload::Severity;
use serde::Deserialize;

use super::registry::{Node, NodeKey, NodeRecord, PushedConfig};
pub use crate::ingest::PEER_FIELDS as CARRIED_FIELDS;

/// A node as another instance records it ([`CARRIED_FIELDS`] of its `NodeRecord`).
#[derive(Debug, Clone, Deserialize)]
pub struct PeerRecord {
    pub network: String,
    pub node_id: String,
    pub severity: Severity,
    pub assessed_severity: Severity,
    #[serde(default)]
    pub blocked_by: Option<String>,
    #[serde(default)]
    pub pushed_config: Option<PushedConfig>,
    #[serde(default)]
    pub bound_client: Option<String>,
    pub joined_at_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

/// A node as another instance last recorded it.
#[derive(Debug, Clone)]
pub struct PeerNode {
    pub instance: String,
    pub record: PeerRecord,
}

impl PeerNode {
    /// When the instance last heard from the node.
    fn seen(&self) -> i64 {
        let r = &self.record;
        r.last_seen_ms.max(r.joined_at_ms).unwrap_or(i64::MIN)
    }
}

fn last_contact(r: &NodeRecord) -> i64 {
    r.last_seen_ms.max(r.joined_at_ms).unwrap_or(i64::MIN)
}

/// The newest record of each node among the other instances.
#[derive(Debug, Default)]
pub struct Peers {
    nodes: ArcSwap<HashMap<NodeKey, PeerNode>>,
}

impl Peers {
    /// Replaces the view with the instances' registry files (unreadable ones are logged and
    /// left out).
    pub fn update(&self, registries: &[(String, bytes::Bytes)]) {
        let mut nodes: HashMap<NodeKey, PeerNode> = HashMap::new();
        for (instance, bytes) in registries {
            let records: Vec<PeerRecord> = match serde_json::from_slice(bytes) {
                Ok(records) => records,
                Err(e) => {
                    warn!(%instance, error = %e, "another instance's registry is unreadable; left out");
                    continue;
                }
            };
            for record in records {
                let peer = PeerNode {
                    instance: instance.clone(),
                    record,
                };
                let key = (peer.record.network.clone(), peer.record.node_id.clone());
                match nodes.get(&key) {
                    Some(known) if known.seen() >= peer.seen() => {}
                    _ => {
                        nodes.insert(key, peer);
                    }
                }
            }
        }
        self.nodes.store(Arc::new(nodes));
    }

    /// The newest other instance's record of a node.
    pub fn get(&self, network: &str, node_id: &str) -> Option<PeerNode> {
        self.nodes
            .load()
            .get(&(network.to_owned(), node_id.to_owned()))
            .cloned()
    }

    /// Takes over what another instance knew of `node` when its record there is newer than
    /// this instance's; returns the instance it came from.
    pub fn carry_over(&self, node: &Node) -> Option<PeerNode> {
        let mut r = node.record.lock().expect("node record");
        let peer = self.get(&r.network, &r.node_id)?;
        if peer.seen() <= last_contact(&r) {
            return None;
        }
        let p = &peer.record;
        r.severity = p.severity;
        r.assessed_severity = p.assessed_severity;
        r.blocked_by.clone_from(&p.blocked_by);
        r.pushed_config.clone_from(&p.pushed_config);
        if p.bound_client.is_some() {
            r.bound_client.clone_from(&p.bound_client);
        }
        r.last_seen_ms = p.last_seen_ms;
        info!(node = %r.node_id, network = %r.network, from = %peer.instance,
            severity = r.severity.as_str(), blocked = r.blocked_by.is_some(),
            "node moved here from another instance; its state carried over");
        Some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records as another instance publishes them: cut to the carried fields.
    fn registry(records: &[NodeRecord]) -> bytes::Bytes {
        let full: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(&serde_json::to_vec(records).unwrap()).unwrap();
        let cut: Vec<_> = full
            .into_iter()
            .map(|mut r| {
                r.retain(|k, _| CARRIED_FIELDS.contains(&k.as_str()));
                r
            })
            .collect();
        serde_json::to_vec(&cut).unwrap().into()
    }

    fn record(node: &str, seen: i64, severity: Severity) -> NodeRecord {
        let mut r = NodeRecord::new("net", node);
        r.last_seen_ms = Some(seen);
        r.severity = severity;
        r
    }

    #[test]
    fn the_newest_record_among_instances_is_carried_over_once() {
        let peers = Peers::default();
        let mut blocked = record("CN1", 200, Severity::Danger);
        blocked.blocked_by = Some("admin".into());
        peers.update(&[
            (
                "a".into(),
                registry(&[record("CN1", 100, Severity::Warning)]),
            ),
            ("b".into(), registry(&[blocked])),
            ("c".into(), bytes::Bytes::from_static(b"{not json")),
        ]);
        assert_eq!(peers.get("net", "CN1").unwrap().instance, "b");
        assert!(peers.get("net", "CN2").is_none());

        let node = Node::new(record("CN1", 50, Severity::Normal));
        let from = peers.carry_over(&node).unwrap();
        assert_eq!(from.instance, "b");
        let r = node.snapshot();
        assert_eq!(r.severity, Severity::Danger);
        assert_eq!(r.blocked_by.as_deref(), Some("admin"));
        // Now as new as the peer's: nothing more to take.
        assert!(peers.carry_over(&node).is_none());
        // A node this instance heard from more recently keeps its own state.
        let fresh = Node::new(record("CN1", 300, Severity::Normal));
        assert!(peers.carry_over(&fresh).is_none());
        assert_eq!(fresh.snapshot().severity, Severity::Normal);
    }
}
