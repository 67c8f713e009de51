//! The sensor-network protocol of the paper, run by the server itself: node admission by XSD
//! validation, functional and severity modes on the control topic, readings checked against
//! each node's declared sensors, node isolation, `$SYS` state, and a server-side cross-check
//! of each node's severity.
//!
//! Connections call [`Protocol::inspect`] for every PUBLISH before acknowledging it, so a
//! refused reading is answered with an MQTT 5 reason code and never routed or stored. An
//! accepted reading comes back as an [`AcceptedReading`] for the ingest queue.
//!
//! Files: this one (inspection of readings, identity binding, the severity cross-check),
//! `join` (the control topic: joins and severity reports), `answer` (refusals, events,
//! `$SYS`, publishing through the router), [`registry`] (nodes, `nodes.json`, the JSON-lines
//! logs), [`peers`] (what the other instances of a shared dataset know of the nodes).

mod answer;
pub mod discords;
mod join;
pub mod operator;
pub mod peers;
pub mod registry;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mqttbytes::QoS;
use samos_schemas::node_config as validate;
use samos_schemas::payload::{self, FunctionalMode};
use samos_schemas::severity::SensorKind;
use samos_schemas::topic::{self, Location, TopicKind};
use samos_store::layout;
use serde_json::json;
use tracing::warn;

use crate::broker::RouterHandle;
use crate::clock::now_ms;
use crate::config::{NodeIdentity, ProtocolConfig};
use crate::disk_space::Writer;
pub use crate::ingest::AcceptedReading;
use crate::live::LiveFeed;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use join::status_word;
use registry::{JsonLines, Node, NodeRegistry, RegistryError};

/// The server's own place in the network, for `$SYS` topics and join checks.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub network: String,
    pub server_id: String,
    pub location: Location,
}

/// Who sent a PUBLISH.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub client_id: &'a Arc<str>,
    pub username: Option<&'a str>,
    /// The user name was verified (password file or client certificate), not just claimed.
    pub authenticated: bool,
    pub peer: SocketAddr,
}

/// How a refused PUBLISH is answered to an MQTT 5 client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// 0x87: unknown, blocked or foreign node, or a server-only topic.
    NotAuthorized,
    /// 0x99: the payload breaks the node's declared contract or the control grammar.
    PayloadFormatInvalid,
}

/// What to do with a PUBLISH.
#[derive(Debug)]
pub enum Verdict {
    /// Not a sensor-network topic: ordinary MQTT.
    Pass,
    /// A valid control message: route it.
    Accept,
    /// A valid reading: store it and route it.
    Reading(AcceptedReading),
    /// Refused (already logged, counted and quarantined): acknowledge with `code`, do not route.
    Refuse { code: RefuseCode, reason: Refusal },
}

/// Why the protocol layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot open {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
    #[error("server configuration {path}: {message}")]
    ServerConfig { path: String, message: String },
}

/// The protocol service shared by all connections.
#[derive(Debug)]
pub struct Protocol {
    pub identity: ServerIdentity,
    node_identity: NodeIdentity,
    pub registry: NodeRegistry,
    events: JsonLines,
    rejected: JsonLines,
    metrics: Arc<Metrics>,
    router: RouterHandle,
    /// (client id, node id) pairs already told that the client may not speak for the node,
    /// so a refused stream of readings is answered once per connection, not per reading.
    answered: Mutex<HashSet<(Arc<str>, String)>>,
    /// Events, refusals and mining progress for the dashboard's live streams (readings go
    /// through each node's own feed, `Node::live`).
    pub live: LiveFeed,
    /// The other instances' records of the nodes (empty unless the dataset is shared).
    pub peers: peers::Peers,
    /// Keep each sensor's latest reading (`Node::latest`): set by alerting, the only reader,
    /// so without rules an accepted reading pays one relaxed load for it.
    pub track_latest: std::sync::atomic::AtomicBool,
    /// `[[stream_profile]]`: the sensors whose left matrix profile is kept live.
    streams: discords::Streams,
}

impl Protocol {
    /// Opens the registry and logs in `data_dir` and reads the server's own configuration.
    pub fn open(
        config: &ProtocolConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
        router: RouterHandle,
    ) -> Result<Protocol, ProtocolError> {
        let identity = match &config.server_config {
            Some(path) => {
                let err = |message: String| ProtocolError::ServerConfig {
                    path: path.display().to_string(),
                    message,
                };
                let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                let c = validate::validate(&text).map_err(|e| {
                    err(e
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "))
                })?;
                ServerIdentity {
                    network: c.network,
                    server_id: c.node_id,
                    location: c.location,
                }
            }
            None => ServerIdentity {
                network: config.network.clone(),
                server_id: config.server_id.clone(),
                location: config.location.clone(),
            },
        };
        let log = |name: &str| {
            let path = data_dir.join(name);
            JsonLines::open(path.clone()).map_err(|source| ProtocolError::Log {
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Protocol {
            registry: NodeRegistry::open(data_dir)?,
            events: log(layout::EVENTS_FILE)?,
            rejected: log(layout::REJECTED_FILE)?,
            identity,
            node_identity: config.node_identity,
            metrics,
            router,
            answered: Mutex::new(HashSet::new()),
            live: LiveFeed::default(),
            track_latest: std::sync::atomic::AtomicBool::new(false),
            peers: peers::Peers::default(),
            streams: discords::Streams::default(),
        })
    }

    /// Keeps the left matrix profile of the sensors `rules` name (`[[stream_profile]]`).
    pub fn with_stream_profiles(
        mut self,
        rules: &[crate::config::StreamProfileConfig],
        data_dir: &Path,
    ) -> Protocol {
        self.streams = discords::Streams::new(rules.to_vec(), data_dir);
        let started = std::time::Instant::now();
        match self.restore_stream_state() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                series = n,
                ms = started.elapsed().as_millis() as u64,
                "stream profiles restored from the last shutdown"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "stream profiles not restored: they warm up again");
            }
        }
        self
    }

    /// Keeps [`Protocol::peers`] current from the other instances' registry files.
    pub fn follow_peers(
        self: &Arc<Self>,
        mut registries: tokio::sync::watch::Receiver<crate::ingest::PeerRegistries>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let current = registries.borrow_and_update().clone();
                me.peers.update(&current);
                if registries.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Publishes the retained `$SYS` state and starts the periodic tasks.
    pub fn start(self: &Arc<Self>, sys_interval: Duration, listeners: Vec<SocketAddr>) {
        let ips: Vec<String> = listeners.iter().map(|a| a.ip().to_string()).collect();
        self.sys("networkStatus", "online".into());
        self.sys("ipAddress", ips.join(","));
        self.publish_connected_count();
        for node in self.registry.all() {
            let r = node.snapshot();
            self.node_sys(&r.node_id, "status", status_word(r.functional_mode, false));
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sys_interval);
            loop {
                tick.tick().await;
                me.sys(
                    "localDateTime",
                    chrono::Local::now()
                        .format("%Y-%m-%dT%H:%M:%S%:z")
                        .to_string(),
                );
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let m = me.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    // Logged where it fails; retried at the next tick.
                    let _ = m.save_stream_profiles();
                    m.registry.save_if_dirty()
                })
                .await;
                match saved {
                    Ok(Ok(())) => me.metrics.disk.freed(Writer::Registry),
                    Ok(Err(e)) if e.is_no_space() => me.metrics.disk.full(Writer::Registry, &e),
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot save the node registry"),
                    Err(_) => {}
                }
            }
        });
    }

    /// Decides about one PUBLISH from a client.
    pub fn inspect(
        self: &Arc<Self>,
        from: Sender<'_>,
        topic_name: &str,
        payload: &Bytes,
    ) -> Verdict {
        let normalized = topic::normalize(topic_name);
        let mut levels = normalized.split('/');
        if levels.nth(1) == Some("alerts") && normalized.split('/').count() == 3 {
            return self.refuse(
                from,
                topic_name,
                payload,
                RefuseCode::NotAuthorized,
                Refusal::ServerTopic,
                "alert topics are written by the server alone".into(),
            );
        }
        let Some(t) = topic::parse(topic_name) else {
            return Verdict::Pass;
        };
        let binding = self.binding(from);
        let fixed = match binding {
            Binding::Anyone | Binding::Session => None,
            Binding::User => Some(from.username),
            Binding::ClientId => Some(Some(&**from.client_id)),
        };
        if let Some(identity) = fixed
            && identity != Some(t.node_id)
        {
            let (what, option) = if binding == Binding::User {
                ("user name", "the password file or client certificate")
            } else {
                ("client id", "protocol.node_identity = \"client_id\"")
            };
            let detail = format!(
                "{} may not speak for node {}: nodes are bound to the {what} ({option})",
                identity.unwrap_or("an anonymous client"),
                t.node_id,
            );
            return self.refuse_speaker(
                from,
                topic_name,
                &t,
                payload,
                Refusal::ForeignNode,
                detail,
            );
        }
        let session = (binding == Binding::Session).then_some(&**from.client_id);
        match t.kind {
            TopicKind::Control => self.control(from, session, topic_name, t, payload),
            TopicKind::Data { sensor } => {
                self.reading(from, session, topic_name, t, sensor, payload)
            }
        }
    }

    /// Which identity a node's topics are bound to for this sender.
    fn binding(&self, from: Sender<'_>) -> Binding {
        match self.node_identity {
            NodeIdentity::None => Binding::Anyone,
            NodeIdentity::Username => Binding::User,
            NodeIdentity::ClientId => Binding::ClientId,
            NodeIdentity::Auto if from.authenticated => Binding::User,
            NodeIdentity::Auto => Binding::Session,
        }
    }

    /// The node, when it is active and (bound to a session) `session` speaks for it.
    fn active_node(
        &self,
        network: &str,
        node_id: &str,
        session: Option<&str>,
    ) -> Result<Arc<Node>, (Refusal, String)> {
        let not_joined = || {
            (
                Refusal::NodeNotActive,
                format!("node {node_id} has not joined"),
            )
        };
        let node = self.registry.get(network, node_id).ok_or_else(not_joined)?;
        {
            let r = node.record.lock().expect("node record");
            if let Some(client) = session
                && r.bound_client() != client
            {
                return Err((
                    Refusal::ForeignNode,
                    foreign_session(node_id, r.bound_client(), client),
                ));
            }
            if r.functional_mode != FunctionalMode::Active {
                return Err(not_joined());
            }
        }
        Ok(node)
    }

    fn reading(
        self: &Arc<Self>,
        from: Sender<'_>,
        session: Option<&str>,
        topic_name: &str,
        t: topic::NodeTopic<'_>,
        sensor: &str,
        raw: &Bytes,
    ) -> Verdict {
        let Some(node) = self.registry.get(t.network, t.node_id) else {
            let detail = format!(
                "node {} has never joined: send PUB_CONFIG_FILE on its control topic first",
                t.node_id
            );
            return self.refuse_speaker(from, topic_name, &t, raw, Refusal::UnknownNode, detail);
        };
        let accepted = match check_reading(&node, session, t, sensor, raw) {
            Ok(a) => a,
            Err((code, reason, detail)) => {
                node.rejected.fetch_add(1, Relaxed);
                if code == RefuseCode::NotAuthorized {
                    return self.refuse_speaker(from, topic_name, &t, raw, reason, detail);
                }
                return self.refuse(from, topic_name, raw, code, reason, detail);
            }
        };
        node.accepted.fetch_add(1, Relaxed);
        self.registry.mark_dirty();
        self.touch(&node, from);
        if let Some(v) = accepted.value.as_f64() {
            if self.track_latest.load(Relaxed) {
                node.remember(accepted.sensor, v, now_ms());
            }
            let sensor = &accepted.config.sensors[accepted.sensor].name;
            self.cross_check(&node, sensor, v);
            if !self.streams.is_empty() {
                self.stream_profile(&node, accepted.sensor, sensor, v);
            }
        }
        if node.live.watched() {
            let value = match &accepted.value {
                payload::Value::Text(t) => json!(t),
                v => json!(v.as_f64()),
            };
            node.live.publish(json!({
                "time_ms": now_ms(), "network": t.network, "node_id": t.node_id,
                "sensor": accepted.config.sensors[accepted.sensor].name, "value": value,
            }));
        }
        Verdict::Reading(accepted)
    }

    /// Records contact from the node's connection.
    fn touch(&self, node: &Arc<Node>, from: Sender<'_>) {
        let newly = {
            let mut s = node.session.lock().expect("session");
            let newly = s.as_deref() != Some(&**from.client_id);
            if newly {
                *s = Some(from.client_id.clone());
            }
            newly
        };
        let ip = from.peer.ip();
        let moved = {
            let mut r = node.record.lock().expect("node record");
            r.last_seen_ms = Some(now_ms());
            // Compared parsed, so the common case (same address) allocates nothing.
            let same = r.address.as_deref().and_then(|a| a.parse().ok()) == Some(ip);
            (!same).then(|| {
                r.address = Some(ip.to_string());
                r.node_id.clone()
            })
        };
        if let Some(id) = moved {
            self.registry.mark_dirty();
            self.node_sys(&id, "ipAddress", ip.to_string());
        }
        if newly {
            self.publish_connected_count();
        }
    }

    fn cross_check(&self, node: &Arc<Node>, sensor: &str, value: f64) {
        let kind = SensorKind::of(sensor);
        if kind == SensorKind::Other {
            return;
        }
        let (assessed, raise) = {
            let mut w = node.severity_window.lock().expect("severity window");
            let declared = node.record.lock().expect("node record").severity;
            w.push_sample(kind, declared, value);
            let assessed = w.assess();
            let raise = assessed > declared && w.alerted.is_none_or(|a| assessed > a);
            if raise {
                w.alerted = Some(assessed);
            } else if assessed <= declared {
                w.alerted = None;
            }
            (assessed, raise.then(|| (declared, w.slope())))
        };
        let (network, node_id) = {
            let mut r = node.record.lock().expect("node record");
            r.assessed_severity = assessed;
            (r.network.clone(), r.node_id.clone())
        };
        if let Some((declared, slope)) = raise {
            warn!(node = %node_id, declared = declared.as_str(), assessed = assessed.as_str(), "alert: readings are more severe than the node's mode");
            let detail = json!({
                "declared": declared.as_str(), "assessed": assessed.as_str(),
                "sensor": sensor, "value": value, "slope_per_minute": slope,
            });
            self.event("alert", &network, &node_id, detail.clone());
            self.publish(
                topic::alert_topic(&network, &node_id),
                detail.to_string(),
                QoS::AtLeastOnce,
                false,
            );
            self.metrics.alerts_raised.fetch_add(1, Relaxed);
        }
    }

    /// A client went away: its nodes are offline.
    pub fn client_disconnected(&self, client_id: &str) {
        self.answered
            .lock()
            .expect("answered senders")
            .retain(|(c, _)| &**c != client_id);
        let mut left = Vec::new();
        self.registry.each(|node| {
            let mut s = node.session.lock().expect("session");
            if s.as_deref() == Some(client_id) {
                *s = None;
                left.push(node.clone());
            }
        });
        for node in &left {
            let r = node.snapshot();
            self.node_sys(&r.node_id, "status", status_word(r.functional_mode, false));
        }
        if !left.is_empty() {
            self.publish_connected_count();
        }
    }

    fn publish_connected_count(&self) {
        let mut n = 0usize;
        self.registry.each(|node| {
            if node.session.lock().expect("session").is_some()
                && node.record.lock().expect("node record").functional_mode
                    == FunctionalMode::Active
            {
                n += 1;
            }
        });
        self.sys("numOfConnectedNodes", n.to_string());
    }

    /// Saves the registry and announces the server going away.
    pub fn shutdown(&self) {
        self.sys("networkStatus", "offline".into());
        if let Err(e) = self.registry.save() {
            tracing::error!(error = %e, "cannot save the node registry");
        }
        match self.save_stream_state() {
            Ok(0) => {}
            Ok(n) => tracing::info!(series = n, "stream profiles saved for the next start"),
            Err(e) => {
                tracing::error!(error = %e, "cannot save the stream profiles: they warm up again after the restart");
            }
        }
    }
}

/// A refused reading: how a v5 client is answered, why, and the logged detail.
type RefusedReading = (RefuseCode, Refusal, String);

/// Checks a reading of an existing node against its state and its declared contract.
/// `session`: the sender's client id when nodes are bound to the session that joined them.
fn check_reading(
    node: &Node,
    session: Option<&str>,
    t: topic::NodeTopic<'_>,
    sensor: &str,
    raw: &Bytes,
) -> Result<AcceptedReading, RefusedReading> {
    let (config, index, severity) = {
        let r = node.record.lock().expect("node record");
        if let Some(client) = session
            && r.bound_client() != client
        {
            let detail = foreign_session(t.node_id, r.bound_client(), client);
            return Err((RefuseCode::NotAuthorized, Refusal::ForeignNode, detail));
        }
        if r.functional_mode != FunctionalMode::Active {
            let detail = format!("node {} is {}", t.node_id, r.functional_mode.as_str());
            return Err((RefuseCode::NotAuthorized, Refusal::NodeNotActive, detail));
        }
        let config = r
            .config
            .as_ref()
            .expect("active nodes have a configuration");
        if config.location.levels() != t.location {
            let detail = "topic location differs from the node's configuration".to_string();
            return Err((RefuseCode::NotAuthorized, Refusal::LocationMismatch, detail));
        }
        let Some(index) = config.sensor_index(sensor) else {
            let detail = format!("node {} declared no sensor {sensor:?}", t.node_id);
            return Err((
                RefuseCode::PayloadFormatInvalid,
                Refusal::UndeclaredSensor,
                detail,
            ));
        };
        (config.clone(), index, r.severity)
    };
    let value = payload::check_reading(&config.sensors[index], raw).map_err(|e| {
        (
            RefuseCode::PayloadFormatInvalid,
            Refusal::from(&e),
            e.to_string(),
        )
    })?;
    Ok(AcceptedReading {
        config,
        sensor: index,
        value,
        severity,
    })
}

/// Why a client may not speak for a node bound to another session.
fn foreign_session(node_id: &str, bound: &str, client: &str) -> String {
    format!(
        "client {client} may not speak for node {node_id}, which is bound to client {bound}: a \
         node without credentials belongs to the session that sent its accepted \
         PUB_CONFIG_FILE (protocol.node_identity = \"auto\"); join again from this client, or \
         set a password_file to bind nodes to user names"
    )
}

/// Which identity a node's topics are bound to, for one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// `node_identity = "none"`.
    Anyone,
    /// The verified user name (or certificate CN) must be the node id.
    User,
    /// The MQTT client id must be the node id.
    ClientId,
    /// The node belongs to the session that sent its accepted join.
    Session,
}
