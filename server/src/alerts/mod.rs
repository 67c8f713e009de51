//! Alerting: rules over the live state of every sensor, alert states, and notifications that
//! reach the operator at least once, through a crash.
//!
//! ```text
//! protocol (latest reading per sensor, in memory)
//!   └─▶ every eval_interval_ms: `live` rows ─▶ rules.rs (SQL conditions) ─▶ state.rs (pending,
//!       firing, acknowledged, resolved) ─▶ events.jsonl + live feed (the dashboard)
//!                                       └─▶ outbox.rs (a file per notification, fsync'd)
//!                                            └─▶ deliver.rs (one task per action: webhook, email, MQTT)
//! ```
//!
//! The paper's severity cross-check is a built-in rule, `severity_cross_check`
//! (`severity_exceeded`), evaluated like the others when `alerts.cross_check_actions` names
//! actions to deliver it to (the protocol's own `alert` event and MQTT message stay as they
//! are). The firing set is saved (`data/alerts/firing.json`, atomically) after each change
//! and restored at start, so a restart neither notifies an ongoing alert again nor forgets to
//! resolve it.
//!
//! Invariants: a notification is in the outbox, durably, before any attempt to deliver it;
//! an alert's notifications to one action are attempted in the order raised; evaluation never
//! waits on a delivery.

pub mod deliver;
pub mod outbox;
pub mod rules;
pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::config::AlertsConfig;
use crate::metrics::Metrics;
use crate::protocol::Protocol;
use crate::protocol::discords::Slot;
use outbox::{Delivery, Outbox, Pending};
use rules::{Conditions, SeriesRow};
use state::{Alert, RuleSpec, Series, Tracker, Transition};

/// The built-in rule of the paper's cross-check.
pub const CROSS_CHECK_RULE: &str = "severity_cross_check";

/// The built-in rule of the streamed matrix profiles' discords.
pub const DISCORD_RULE: &str = "discord";

/// Why alerting could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Rule(#[from] rules::RuleError),
    #[error("alerts: {0}")]
    Setup(String),
    #[error("alerts: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A configured rule with the actions it notifies.
struct Rule {
    spec: RuleSpec,
    actions: Vec<String>,
}

/// The running alerting of one server.
pub struct Alerts {
    rules: Vec<Rule>,
    conditions: Conditions,
    tracker: Mutex<Tracker>,
    outbox: Arc<Outbox>,
    queues: HashMap<String, mpsc::UnboundedSender<Pending>>,
    protocol: Arc<Protocol>,
    firing_file: PathBuf,
    instance: String,
    metrics: Arc<Metrics>,
    /// When this process started alerting.
    started_ms: i64,
    /// When the previous evaluation ran (a discord that opened and closed since is still seen).
    evaluated_ms: std::sync::atomic::AtomicI64,
}

impl Alerts {
    /// Checks the rules, restores the firing set, starts one delivery task per action (with
    /// what the outbox still holds) and the evaluation loop.
    pub async fn start(
        config: &AlertsConfig,
        protocol: Arc<Protocol>,
        publish: deliver::Publisher,
        data_dir: &Path,
        instance: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Alerts>, AlertError> {
        let mut rules: Vec<Rule> = config
            .rules
            .iter()
            .map(|r| Rule {
                spec: RuleSpec {
                    name: r.name.clone(),
                    severity: r.severity.clone(),
                    for_ms: i64::try_from(r.for_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
                    when: r.when.clone(),
                },
                actions: r.actions.clone(),
            })
            .collect();
        if !config.cross_check_actions.is_empty() {
            rules.push(Rule {
                spec: RuleSpec {
                    name: CROSS_CHECK_RULE.into(),
                    severity: "warning".into(),
                    for_ms: 0,
                    when: "severity_exceeded".into(),
                },
                actions: config.cross_check_actions.clone(),
            });
        }
        if !config.discord_actions.is_empty() {
            rules.push(Rule {
                spec: RuleSpec {
                    name: DISCORD_RULE.into(),
                    severity: "warning".into(),
                    for_ms: 0,
                    when: "discord".into(),
                },
                actions: config.discord_actions.clone(),
            });
        }
        let conditions = Conditions::compile(
            &rules
                .iter()
                .map(|r| (r.spec.name.clone(), r.spec.when.clone()))
                .collect::<Vec<_>>(),
        )
        .await?;

        let dir = data_dir.join("alerts");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AlertError::Io { path, source }
        };
        let (outbox, pending) = Outbox::open(&dir.join("outbox")).map_err(io(&dir))?;
        let outbox = Arc::new(outbox);
        let firing_file = dir.join("firing.json");
        let restored: Vec<Alert> = match std::fs::read(&firing_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| AlertError::Setup(format!("{}: {e}", firing_file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&firing_file)(e)),
        };
        let mut tracker = Tracker::restore(restored);
        let specs: Vec<RuleSpec> = rules.iter().map(|r| r.spec.clone()).collect();
        let gone = tracker.retain_rules(&specs, now_ms());

        let mut queues = HashMap::new();
        let mut actions: Vec<(String, deliver::Action)> = Vec::new();
        for w in &config.webhooks {
            let hook = deliver::Webhook::new(
                w.url.clone(),
                w.secret.clone(),
                Duration::from_millis(w.timeout_ms),
                w.ca_file.as_deref(),
            )
            .map_err(|e| AlertError::Setup(format!("webhook {}: {e}", w.name)))?;
            actions.push((w.name.clone(), deliver::Action::Webhook(hook)));
        }
        for e in &config.emails {
            let mail = deliver::Email::new(e)
                .map_err(|why| AlertError::Setup(format!("email {}: {why}", e.name)))?;
            actions.push((e.name.clone(), deliver::Action::Email(Box::new(mail))));
        }
        for m in &config.mqtt {
            actions.push((
                m.name.clone(),
                deliver::Action::Mqtt(deliver::MqttPublish::new(m.topic.clone(), publish.clone())),
            ));
        }
        for (name, action) in actions {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(deliver::run(
                name.clone(),
                Arc::new(action),
                outbox.clone(),
                rx,
                metrics.clone(),
            ));
            queues.insert(name, tx);
        }
        let waiting = pending.len();
        for p in pending {
            match queues.get(&p.delivery.action) {
                Some(q) => {
                    let _ = q.send(p);
                }
                None => {
                    warn!(action = %p.delivery.action, delivery = %p.delivery.id, "a notification for an action no longer configured: kept in alerts/outbox/failed/");
                    let _ = outbox.failed(p.seq);
                }
            }
        }
        info!(rules = rules.len(), waiting, "alerting on");
        protocol
            .track_latest
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let alerts = Arc::new(Alerts {
            rules,
            conditions,
            tracker: Mutex::new(tracker),
            outbox,
            queues,
            protocol,
            firing_file,
            instance: instance.to_owned(),
            metrics,
            started_ms: now_ms(),
            evaluated_ms: std::sync::atomic::AtomicI64::new(now_ms()),
        });
        alerts.notify(gone);
        let interval = Duration::from_millis(config.eval_interval_ms.max(100));
        let running = alerts.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                running.evaluate().await;
            }
        });
        Ok(alerts)
    }

    /// One evaluation of every rule.
    async fn evaluate(&self) {
        if self.rules.is_empty() {
            return;
        }
        let now = now_ms();
        let since = self
            .evaluated_ms
            .swap(now, std::sync::atomic::Ordering::Relaxed);
        let rows = live_rows(&self.protocol, now, since);
        let results = match self.conditions.evaluate(&rows).await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "alert rules could not be evaluated");
                return;
            }
        };
        // Series without a reading since this process started (the latest readings live in
        // memory): a firing alert on them is kept until one arrives.
        let unknown: BTreeSet<Series> = rows
            .iter()
            .filter(|r| r.time_ms.is_none_or(|t| t < self.started_ms))
            .map(|r| Series {
                network: r.network.clone(),
                node_id: r.node_id.clone(),
                sensor: r.sensor.clone(),
            })
            .collect();
        let mut transitions = Vec::new();
        {
            let mut tracker = self.tracker.lock().expect("alert tracker");
            for (rule, (_, matching)) in self.rules.iter().zip(results) {
                transitions.extend(tracker.step(&rule.spec, now, &matching, &unknown));
            }
        }
        // A resolved alert tells the value it resolved at.
        for t in &mut transitions {
            if t.change == state::Change::Resolved
                && let Some(row) = rows.iter().find(|r| {
                    r.network == t.alert.series.network
                        && r.node_id == t.alert.series.node_id
                        && r.sensor == t.alert.series.sensor
                })
            {
                t.alert.value = row.value;
            }
        }
        self.notify(transitions);
    }

    /// Records, saves and queues `transitions`.
    fn notify(&self, transitions: Vec<Transition>) {
        if transitions.is_empty() {
            return;
        }
        let firing = self.tracker.lock().expect("alert tracker").snapshot();
        match serde_json::to_vec_pretty(&firing) {
            Ok(bytes) => {
                if let Err(e) = samos_store::file::write_atomically(&self.firing_file, &bytes) {
                    error!(error = %e, path = %self.firing_file.display(), "cannot save the firing alerts");
                }
            }
            Err(e) => error!(error = %e, "cannot encode the firing alerts"),
        }
        for t in transitions {
            let kind = format!("alert_{}", t.change.as_str());
            warn!(alert = %t.alert.id, change = t.change.as_str(), value = ?t.alert.value, "{}", t.alert.summary);
            self.metrics.alert_transition(t.change.as_str());
            self.protocol.record_event(
                &kind,
                &t.alert.series.network,
                &t.alert.series.node_id,
                serde_json::to_value(&t.alert).unwrap_or_default(),
            );
            let Some(rule) = self.rules.iter().find(|r| r.spec.name == t.alert.rule) else {
                continue;
            };
            for action in &rule.actions {
                let delivery = Delivery::new(action, t.change, t.alert.clone(), &self.instance);
                match self.outbox.put(delivery) {
                    Ok(p) => {
                        if let Some(q) = self.queues.get(action) {
                            let _ = q.send(p);
                        }
                    }
                    Err(e) => {
                        error!(error = %e, alert = %t.alert.id, %action, "cannot store an alert notification: it is lost");
                        self.metrics.alert_notification("failed");
                    }
                }
            }
        }
    }

    /// `by` acknowledges the firing alert `id`; false when none such fires unacknowledged.
    pub fn acknowledge(&self, id: &str, by: &str) -> bool {
        let t = self
            .tracker
            .lock()
            .expect("alert tracker")
            .acknowledge(id, by);
        let found = t.is_some();
        self.notify(t.into_iter().collect());
        found
    }

    /// The firing alerts, oldest first.
    pub fn firing(&self) -> Vec<Alert> {
        let mut v = self.tracker.lock().expect("alert tracker").snapshot();
        v.sort_by_key(|a| a.started_ms);
        v
    }
}

/// `live`: one row per declared sensor of every node with a configuration; `since`: the
/// previous evaluation.
fn live_rows(protocol: &Protocol, now: i64, since: i64) -> Vec<SeriesRow> {
    let mut rows = Vec::new();
    for node in protocol.registry.all() {
        let record = node.snapshot();
        let Some(config) = record.config.clone() else {
            continue;
        };
        let connected = node.session.lock().expect("session").is_some();
        let latest = node.latest.lock().expect("latest readings").clone();
        let discords: Vec<(bool, Option<f64>)> = node
            .profiles
            .lock()
            .expect("stream profiles")
            .iter()
            .map(|slot| match slot {
                Slot::On(s) => (s.in_discord || s.onset_ms > Some(since), s.score),
                _ => (false, None),
            })
            .collect();
        for (i, sensor) in config.sensors.iter().enumerate() {
            let (discord, discord_score) = discords.get(i).copied().unwrap_or_default();
            let last = latest.get(i).copied().flatten();
            let since = last
                .map(|l| l.time_ms)
                .or(record.joined_at_ms)
                .unwrap_or(now);
            rows.push(SeriesRow {
                network: record.network.clone(),
                node_id: record.node_id.clone(),
                sensor: sensor.name.clone(),
                units: sensor.units.clone(),
                value: last.map(|l| l.value),
                previous_value: last.and_then(|l| l.previous).map(|(v, _)| v),
                rate_per_min: last.and_then(|l| {
                    let (v, t) = l.previous?;
                    let minutes = (l.time_ms - t) as f64 / 60_000.0;
                    (minutes > 0.0).then(|| (l.value - v) / minutes)
                }),
                time_ms: last.map(|l| l.time_ms),
                silent_secs: (now - since).max(0) as f64 / 1000.0,
                mode: record.severity.as_str().to_owned(),
                assessed: record.assessed_severity.as_str().to_owned(),
                severity_exceeded: record.assessed_severity > record.severity,
                blocked: record.blocked_by.is_some(),
                connected,
                discord,
                discord_score,
            });
        }
    }
    rows
}
