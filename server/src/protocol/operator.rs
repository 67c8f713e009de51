//! What an operator does to the network from outside MQTT (the dashboard and the HTTP API):
//! block or unblock a node, send it a new configuration over the air, acknowledge an alert. Each action is an event in `events.jsonl`
//! naming who took it, and reaches the node the way the paper's server speaks to it: a
//! `SET_CN_FUNCTIONAL_MODE` on its control topic.
//!
//! A node blocked by an operator stays blocked when it joins again (its join is answered
//! `blocked` with the operator's name) until an operator unblocks it; a node blocked by its
//! own invalid configuration is unblocked by a valid join, as before.

use mqttbytes::QoS;
use samos_schemas::node_config::{self as validate, ValidationError};
use samos_schemas::payload::{self, FunctionalMode};
use samos_schemas::topic;
use serde_json::json;
use tracing::info;

use super::Protocol;
use super::join::status_word;
use super::registry::PushedConfig;
use crate::clock::now_ms;

/// Why an operator action was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OperatorError {
    #[error("no node {node_id} in network {network}")]
    UnknownNode { network: String, node_id: String },
    #[error("node {0} has no valid configuration to run with: it must join again")]
    NoConfiguration(String),
    #[error("an operator sets a node active or blocked, not {0}")]
    Mode(String),
    #[error("node {0} is not active: a configuration goes to an active node")]
    NotActive(String),
    #[error("the configuration is refused: {0}")]
    InvalidConfiguration(String),
}

impl Protocol {
    /// Blocks or unblocks a node on an operator's word. Blocking an active node takes effect
    /// on its next message (refused as `node_not_active`, quarantined); unblocking needs the
    /// configuration of its last valid join. Setting the mode a node already has is a no-op.
    pub fn set_functional_mode(
        &self,
        network: &str,
        node_id: &str,
        mode: FunctionalMode,
        by: &str,
    ) -> Result<(), OperatorError> {
        let unknown = || OperatorError::UnknownNode {
            network: network.into(),
            node_id: node_id.into(),
        };
        let node = self.registry.get(network, node_id).ok_or_else(unknown)?;
        let (control, reply) = {
            let mut r = node.record.lock().expect("node record");
            let reply = match mode {
                FunctionalMode::Blocked => {
                    if r.blocked_by.is_some() {
                        return Ok(());
                    }
                    r.blocked_by = Some(by.to_string());
                    payload::functional_mode_reply(mode, &format!("blocked by operator {by}"))
                }
                FunctionalMode::Active => {
                    if r.config.is_none() {
                        return Err(OperatorError::NoConfiguration(node_id.into()));
                    }
                    if r.functional_mode == FunctionalMode::Active && r.blocked_by.is_none() {
                        return Ok(());
                    }
                    r.blocked_by = None;
                    payload::functional_mode_reply(mode, r.severity.wire())
                }
                other => return Err(OperatorError::Mode(other.as_str().into())),
            };
            r.functional_mode = mode;
            let control = r
                .config
                .as_ref()
                .map(|c| topic::control_topic(network, node_id, &c.location));
            (control, reply)
        };
        self.registry.mark_dirty();
        info!(
            node = node_id,
            network,
            mode = mode.as_str(),
            by,
            "operator set the node's mode"
        );
        if let Some(control) = control {
            self.publish(control, reply, QoS::AtLeastOnce, false);
        }
        let connected = node.session.lock().expect("session").is_some();
        self.node_sys(node_id, "status", status_word(mode, connected));
        let kind = match mode {
            FunctionalMode::Blocked => "blocked",
            _ => "unblocked",
        };
        self.event(
            kind,
            network,
            node_id,
            json!({"mode": mode.as_str(), "by": by}),
        );
        Ok(())
    }

    /// Sends an active node a new configuration (`SET_CN_CONFIG_FILE`), after the checks a
    /// join gets: valid under the XSD, and naming this node, its location and this server. The
    /// push is tracked: the node's next join with exactly this document applies it (event
    /// `config_applied`), or is refused (`config_refused`). Validation runs libxml2: call this
    /// off the async threads.
    pub fn push_configuration(
        &self,
        network: &str,
        node_id: &str,
        document: &str,
        by: &str,
    ) -> Result<(), OperatorError> {
        let node =
            self.registry
                .get(network, node_id)
                .ok_or_else(|| OperatorError::UnknownNode {
                    network: network.into(),
                    node_id: node_id.into(),
                })?;
        let location = {
            let r = node.record.lock().expect("node record");
            if r.functional_mode != FunctionalMode::Active {
                return Err(OperatorError::NotActive(node_id.into()));
            }
            r.config
                .as_ref()
                .map(|c| c.location.clone())
                .ok_or_else(|| OperatorError::NoConfiguration(node_id.into()))?
        };
        let refused = |errors: Vec<ValidationError>| {
            OperatorError::InvalidConfiguration(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        let config = validate::validate(document).map_err(refused)?;
        self.consistent(network, node_id, &location, config)
            .map_err(refused)?;
        let time_ms = now_ms();
        node.record.lock().expect("node record").pushed_config = Some(PushedConfig {
            document: document.to_string(),
            by: by.to_string(),
            time_ms,
        });
        self.registry.mark_dirty();
        info!(
            node = node_id,
            network, by, "configuration sent over the air"
        );
        self.publish(
            topic::control_topic(network, node_id, &location),
            payload::config_file_command(document),
            QoS::AtLeastOnce,
            false,
        );
        self.event(
            "config_pushed",
            network,
            node_id,
            json!({"by": by, "bytes": document.len()}),
        );
        Ok(())
    }

    /// The nodes a client speaks for now, as (network, node id).
    pub fn nodes_spoken_for(&self, client_id: &str) -> Vec<(String, String)> {
        self.registry
            .all()
            .iter()
            .filter(|n| n.session.lock().expect("session").as_deref() == Some(client_id))
            .map(|n| {
                let r = n.record.lock().expect("node record");
                (r.network.clone(), r.node_id.clone())
            })
            .collect()
    }

    /// Records that `by` disconnected a client: an event on each node it spoke for (taken
    /// before the disconnect), or on the client alone when it spoke for none.
    pub fn record_client_disconnect(&self, client_id: &str, nodes: &[(String, String)], by: &str) {
        let detail = json!({"client_id": client_id, "by": by});
        if nodes.is_empty() {
            self.event(
                "client_disconnected",
                &self.identity.network,
                "",
                detail.clone(),
            );
        }
        for (network, node_id) in nodes {
            self.event("client_disconnected", network, node_id, detail.clone());
        }
    }

    /// Records that `by` acknowledged the alert raised for a node at `alert_time_ms`.
    pub fn acknowledge_alert(
        &self,
        network: &str,
        node_id: &str,
        alert_time_ms: i64,
        by: &str,
    ) -> Result<(), OperatorError> {
        if self.registry.get(network, node_id).is_none() {
            return Err(OperatorError::UnknownNode {
                network: network.into(),
                node_id: node_id.into(),
            });
        }
        info!(
            node = node_id,
            network, alert_time_ms, by, "alert acknowledged"
        );
        self.event(
            "alert_acknowledged",
            network,
            node_id,
            json!({"alert_time_ms": alert_time_ms, "by": by}),
        );
        Ok(())
    }
}
