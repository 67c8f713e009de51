//! The control topic: a node's join (`PUB_CONFIG_FILE`: XSD validation on a blocking thread,
//! the document checked against the topic it came on, the node bound to its speaker) and its
//! severity reports, answered with `SET_CN_FUNCTIONAL_MODE`.

use std::sync::Arc;

use bytes::Bytes;
use mqttbytes::QoS;
use samos_schemas::node_config::{self as validate, NodeConfig, ValidationError};
use samos_schemas::payload::{self, Control, FunctionalMode};
use samos_schemas::topic::{self, Location};
use serde_json::json;
use tracing::{info, warn};

use super::registry::Node;
use super::{Protocol, RefuseCode, Sender, Verdict};
use crate::clock::now_ms;
use crate::refusal::Refusal;

impl Protocol {
    /// `session`: the sender's client id when nodes are bound to the session that joined them.
    pub(super) fn control(
        self: &Arc<Self>,
        from: Sender<'_>,
        session: Option<&str>,
        topic_name: &str,
        t: topic::NodeTopic<'_>,
        raw: &Bytes,
    ) -> Verdict {
        let control = match payload::parse_control(raw) {
            Ok(c) => c,
            Err(e) => {
                return self.refuse(
                    from,
                    topic_name,
                    raw,
                    RefuseCode::PayloadFormatInvalid,
                    Refusal::ControlMalformed,
                    e.to_string(),
                );
            }
        };
        match control {
            Control::PubConfigFile { document } => {
                let node = self.registry.get_or_insert(t.network, t.node_id);
                if let Some(peer) = self.peers.carry_over(&node) {
                    self.registry.mark_dirty();
                    self.event(
                        "moved",
                        t.network,
                        t.node_id,
                        json!({"from_instance": peer.instance}),
                    );
                }
                if let Some(client) = session {
                    let speaking = node.session.lock().expect("session").clone();
                    if let Some(other) = speaking.filter(|s| **s != *client) {
                        let detail = format!(
                            "node {} is bound to client {other}, which is connected: a node \
                             without credentials belongs to the session that joined it \
                             (protocol.node_identity = \"auto\"); set a password_file to bind \
                             nodes to user names",
                            t.node_id
                        );
                        return self.refuse_speaker(
                            from,
                            topic_name,
                            &t,
                            raw,
                            Refusal::ForeignNode,
                            detail,
                        );
                    }
                    let mut r = node.record.lock().expect("node record");
                    if r.bound_client() != client {
                        info!(
                            node = t.node_id,
                            from = r.bound_client(),
                            to = client,
                            "node bound to a new session"
                        );
                        r.bound_client = Some(client.to_string());
                    }
                }
                *node.session.lock().expect("session") = Some(from.client_id.clone());
                let job = Join {
                    document: document.to_string(),
                    topic: topic_name.to_string(),
                    network: t.network.to_string(),
                    node_id: t.node_id.to_string(),
                    location: Location::from_levels(t.location),
                    address: from.peer.ip().to_string(),
                };
                let me = self.clone();
                tokio::spawn(async move { me.join(node, job).await });
                Verdict::Accept
            }
            Control::PubSeverityMode { mode } => {
                let node = match self.active_node(t.network, t.node_id, session) {
                    Ok(node) => node,
                    Err((reason, detail)) => {
                        return self.refuse_speaker(from, topic_name, &t, raw, reason, detail);
                    }
                };
                let previous = {
                    let mut r = node.record.lock().expect("node record");
                    std::mem::replace(&mut r.severity, mode)
                };
                self.registry.mark_dirty();
                self.touch(&node, from);
                self.event(
                    "severity",
                    t.network,
                    t.node_id,
                    json!({"from": previous.as_str(), "to": mode.as_str()}),
                );
                info!(
                    node = t.node_id,
                    from = previous.as_str(),
                    to = mode.as_str(),
                    "severity mode changed"
                );
                Verdict::Accept
            }
            Control::SetFunctionalMode => self.refuse(
                from,
                topic_name,
                raw,
                RefuseCode::NotAuthorized,
                Refusal::ServerCommand,
                "SET_CN_FUNCTIONAL_MODE is sent by the server alone".into(),
            ),
            Control::SetConfigFile { .. } => self.refuse(
                from,
                topic_name,
                raw,
                RefuseCode::NotAuthorized,
                Refusal::ServerCommand,
                "SET_CN_CONFIG_FILE is sent by the server alone".into(),
            ),
            Control::Unknown { command } => {
                let detail = format!("unknown command {command:?}");
                self.refuse(
                    from,
                    topic_name,
                    raw,
                    RefuseCode::PayloadFormatInvalid,
                    Refusal::UnknownCommand,
                    detail,
                )
            }
        }
    }

    pub(super) async fn join(self: Arc<Self>, node: Arc<Node>, job: Join) {
        let document = job.document.clone();
        let verdict = tokio::task::spawn_blocking(move || validate::validate(&document))
            .await
            .unwrap_or_else(|e| {
                Err(vec![ValidationError {
                    line: None,
                    message: format!("validation failed: {e}"),
                }])
            });
        let verdict =
            verdict.and_then(|c| self.consistent(&job.network, &job.node_id, &job.location, c));
        let mut pushed = None;
        let mut sensors_changed = false;
        let (mode, reply) = {
            let mut r = node.record.lock().expect("node record");
            r.config_xml = Some(job.document.clone());
            r.address = Some(job.address.clone());
            r.joined_at_ms = Some(now_ms());
            r.last_seen_ms = r.joined_at_ms;
            let verdict = match &r.blocked_by {
                Some(by) => Err(vec![ValidationError {
                    line: None,
                    message: format!("blocked by operator {by}: an admin must unblock the node"),
                }]),
                None => verdict,
            };
            // The join that answers an over-the-air configuration carries its document.
            if r.pushed_config
                .as_ref()
                .is_some_and(|p| p.document == job.document)
            {
                pushed = r.pushed_config.take();
            }
            match verdict {
                Ok(config) => {
                    r.functional_mode = FunctionalMode::Active;
                    let names = |c: &NodeConfig| -> Vec<String> {
                        c.sensors.iter().map(|s| s.name.clone()).collect()
                    };
                    sensors_changed = r.config.as_deref().map(names) != Some(names(&config));
                    r.config = Some(Arc::new(config));
                    r.refusal.clear();
                    (
                        FunctionalMode::Active,
                        payload::functional_mode_reply(FunctionalMode::Active, r.severity.wire()),
                    )
                }
                Err(errors) => {
                    r.functional_mode = FunctionalMode::Blocked;
                    r.refusal = errors.clone();
                    let first = errors.first().map(ToString::to_string).unwrap_or_default();
                    (
                        FunctionalMode::Blocked,
                        payload::functional_mode_reply(FunctionalMode::Blocked, &first),
                    )
                }
            }
        };
        if sensors_changed {
            // What is kept per sensor is by its index in the configuration: a new list of
            // sensors starts afresh (no latest value or live profile carried to another sensor).
            node.latest.lock().expect("latest readings").clear();
            node.profiles.lock().expect("stream profiles").clear();
        }
        self.registry.mark_dirty();
        let record = node.snapshot();
        match mode {
            FunctionalMode::Active => {
                info!(node = %job.node_id, network = %job.network, severity = record.severity.as_str(), "node joined: active");
                self.event(
                    "join",
                    &job.network,
                    &job.node_id,
                    json!({"mode": "active", "severity": record.severity.as_str()}),
                );
            }
            _ => {
                self.metrics.refuse(Refusal::NodeBlocked);
                warn!(node = %job.node_id, network = %job.network, errors = ?record.refusal, "node blocked: invalid configuration");
                self.event(
                    "blocked",
                    &job.network,
                    &job.node_id,
                    json!({"mode": "blocked", "errors": record.refusal}),
                );
            }
        }
        if let Some(p) = pushed {
            let (kind, detail) = match mode {
                FunctionalMode::Active => (
                    "config_applied",
                    json!({"by": p.by, "pushed_at_ms": p.time_ms}),
                ),
                _ => (
                    "config_refused",
                    json!({"by": p.by, "pushed_at_ms": p.time_ms, "errors": record.refusal}),
                ),
            };
            info!(node = %job.node_id, network = %job.network, by = %p.by, "{kind}");
            self.event(kind, &job.network, &job.node_id, detail);
        }
        self.publish(job.topic.clone(), reply, QoS::AtLeastOnce, false);
        self.node_sys(&job.node_id, "status", status_word(mode, true));
        self.node_sys(&job.node_id, "ipAddress", job.address.clone());
        self.publish_connected_count();
    }

    /// A valid document must describe the node that sent it, where it sent it from.
    pub(super) fn consistent(
        &self,
        network: &str,
        node_id: &str,
        location: &Location,
        c: NodeConfig,
    ) -> Result<NodeConfig, Vec<ValidationError>> {
        let mut errors = Vec::new();
        let mut check = |what: &str, doc: &str, topic: &str| {
            if doc != topic {
                errors.push(ValidationError {
                    line: None,
                    message: format!(
                        "{what} {doc:?} in the document differs from {topic:?} in the topic"
                    ),
                });
            }
        };
        check("network", &c.network, network);
        check("node ID", &c.node_id, node_id);
        check("location", &c.location.path(), &location.path());
        if c.server_id != self.identity.server_id {
            errors.push(ValidationError {
                line: None,
                message: format!(
                    "serverID {:?} is not this server ({:?})",
                    c.server_id, self.identity.server_id
                ),
            });
        }
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors)
        }
    }
}

pub(super) struct Join {
    document: String,
    topic: String,
    network: String,
    node_id: String,
    location: Location,
    address: String,
}

pub(super) fn status_word(mode: FunctionalMode, connected: bool) -> &'static str {
    match (mode, connected) {
        (FunctionalMode::Blocked, _) => "blocked",
        (_, false) => "offline",
        (FunctionalMode::Active, true) => "active",
        (FunctionalMode::Init, true) => "init",
    }
}
