//! `[alerts]`: alert rules and the actions their notifications go to (see `crate::alerts`).

use std::path::PathBuf;

use serde::Deserialize;

/// Alerting (`[alerts]`): rules, and the actions their notifications go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often every rule is evaluated, in milliseconds.
    pub eval_interval_ms: u64,
    /// Actions the built-in severity cross-check (`severity_cross_check`) notifies; empty:
    /// the cross-check only raises its `alert` event and MQTT message, as always.
    pub cross_check_actions: Vec<String>,
    /// Actions the built-in discord rule (`discord`: a streamed sensor's window far from
    /// every earlier one, see `[[stream_profile]]`) notifies; empty: discords only raise their
    /// `discord` event and MQTT message.
    pub discord_actions: Vec<String>,
    /// `[[alerts.rule]]`.
    #[serde(rename = "rule")]
    pub rules: Vec<AlertRuleConfig>,
    /// `[[alerts.webhook]]`.
    #[serde(rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
    /// `[[alerts.email]]`.
    #[serde(rename = "email")]
    pub emails: Vec<EmailConfig>,
    /// `[[alerts.mqtt]]`.
    pub mqtt: Vec<MqttActionConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            eval_interval_ms: 1000,
            cross_check_actions: Vec::new(),
            discord_actions: Vec::new(),
            rules: Vec::new(),
            webhooks: Vec::new(),
            emails: Vec::new(),
            mqtt: Vec::new(),
        }
    }
}

/// One alert rule: a SQL condition over `live` (one row per sensor of every node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    /// Unique; part of every alert id.
    pub name: String,
    /// A boolean SQL expression over `live`'s columns, e.g. `value > 45`, `silent_secs > 600`.
    pub when: String,
    /// How long the condition must hold before the alert fires.
    #[serde(default)]
    pub for_secs: u64,
    /// `info`, `warning` or `critical`.
    #[serde(default = "default_alert_severity")]
    pub severity: String,
    /// Names of the actions (`[[alerts.webhook]]`, `[[alerts.mqtt]]`) notified.
    #[serde(default)]
    pub actions: Vec<String>,
}

fn default_alert_severity() -> String {
    "warning".into()
}

/// An HTTP endpoint alert notifications are POSTed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    /// Signs each request (`X-Samos-Signature`, HMAC-SHA256) when set.
    pub secret: Option<String>,
    /// A PEM CA to trust besides the built-in roots (an `https://` receiver with a private
    /// certificate).
    pub ca_file: Option<PathBuf>,
    /// One attempt's time limit.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
}

fn default_webhook_timeout() -> u64 {
    10_000
}

/// An SMTP server alert notifications are mailed through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: String,
    /// The SMTP server's host name (checked against its certificate).
    pub server: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (required), `implicit` (TLS from the first byte, port 465) or `none` (a
    /// relay on loopback only).
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    /// A PEM CA to trust besides the built-in roots (a private mail server).
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_tls() -> String {
    "starttls".into()
}

/// An MQTT topic alert notifications are published on, through this server's broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttActionConfig {
    pub name: String,
    /// With `{rule}`, `{network}`, `{node_id}`, `{sensor}`, `{event}` replaced.
    pub topic: String,
}

impl AlertsConfig {
    /// Names unique, actions known, severities known.
    pub(super) fn check(&self) -> Result<(), String> {
        let mut actions = std::collections::BTreeSet::new();
        for name in self
            .webhooks
            .iter()
            .map(|w| &w.name)
            .chain(self.emails.iter().map(|e| &e.name))
            .chain(self.mqtt.iter().map(|m| &m.name))
        {
            if !actions.insert(name.as_str()) {
                return Err(format!("alerts: two actions are named {name:?}"));
            }
        }
        for e in &self.emails {
            if e.to.is_empty() {
                return Err(format!("alerts.email {:?}: to names no one", e.name));
            }
            if e.tls == "none" && e.server != "localhost" && !e.server.starts_with("127.") {
                return Err(format!(
                    "alerts.email {:?}: tls = \"none\" only for a relay on loopback",
                    e.name
                ));
            }
        }
        let mut rules = std::collections::BTreeSet::new();
        for r in &self.rules {
            if !rules.insert(r.name.as_str()) || r.name == "severity_cross_check" {
                return Err(format!("alerts.rule {:?}: the name is taken", r.name));
            }
            if r.name.is_empty() || r.name.contains(['/', '#']) {
                return Err(format!(
                    "alerts.rule {:?}: a name is not empty and has no '/' or '#'",
                    r.name
                ));
            }
            if !["info", "warning", "critical"].contains(&r.severity.as_str()) {
                return Err(format!(
                    "alerts.rule {:?}: severity is info, warning or critical, not {:?}",
                    r.name, r.severity
                ));
            }
        }
        for (owner, names) in self
            .rules
            .iter()
            .map(|r| (format!("alerts.rule {:?}", r.name), &r.actions))
            .chain([
                (
                    "alerts.cross_check_actions".to_owned(),
                    &self.cross_check_actions,
                ),
                ("alerts.discord_actions".to_owned(), &self.discord_actions),
            ])
        {
            if let Some(unknown) = names.iter().find(|a| !actions.contains(a.as_str())) {
                return Err(format!("{owner}: no action is named {unknown:?}"));
            }
        }
        Ok(())
    }
}
