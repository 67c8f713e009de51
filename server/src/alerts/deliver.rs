//! Delivering notifications: one task per configured action, taking its notifications from
//! the [`Outbox`] in order, retrying with exponential backoff (1 s doubling to 5 min) until the
//! action confirms, setting aside what it refuses for good.
//!
//! - **webhook**: `POST` of the notification as JSON. Headers: `X-Samos-Delivery` (the
//!   deduplication id, the same on every attempt), `X-Samos-Event` (`firing`,
//!   `acknowledged`, `resolved`) and, with a `secret`, `X-Samos-Signature: t={unix
//!   seconds},v1={hex HMAC-SHA256 of "{t}.{body}"}` (the timestamp is signed so a captured
//!   request cannot be replayed later unnoticed). 2xx: delivered; 408, 429, 5xx, a timeout or a
//!   connection error: retried; any other status: refused for good.
//! - **email**: a text mail over SMTP (lettre: STARTTLS required by default, or implicit TLS,
//!   or plain for a relay on loopback; AUTH with the configured user), its `Message-ID` made
//!   from the delivery id so a repeat threads with the first. Accepted by the server:
//!   delivered; a permanent SMTP reply (5xx): refused for good; anything else: retried.
//! - **mqtt**: a QoS 1 message of the same JSON on a topic made from a template, through this
//!   server's own broker (subscribers, retained-less); delivered once handed to the router.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::outbox::{Delivery, Outbox, Pending};
use crate::metrics::Metrics;

/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why an attempt did not deliver.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt later.
    Retry(String),
    /// Never going to be accepted.
    Permanent(String),
}

/// The JSON every action sends.
pub fn body(d: &Delivery) -> Value {
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    json!({
        "delivery_id": d.id,
        "alert_id": d.alert.id,
        "event": d.change.as_str(),
        "rule": d.alert.rule,
        "severity": d.alert.severity,
        "network": d.alert.series.network,
        "node_id": d.alert.series.node_id,
        "sensor": d.alert.series.sensor,
        "value": d.alert.value,
        "started_at": time(d.alert.started_ms),
        "resolved_at": d.alert.resolved_ms.and_then(time),
        "acknowledged_by": d.alert.acknowledged_by,
        "summary": d.alert.summary,
        "instance": d.instance,
    })
}

/// `X-Samos-Signature` of `body` at `unix_secs`.
pub fn signature(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_secs},v1={hex}")
}

/// A webhook action.
pub struct Webhook {
    pub url: String,
    pub secret: Option<String>,
    client: reqwest::Client,
}

impl Webhook {
    /// `ca_file`: a PEM CA trusted besides the built-in roots.
    pub fn new(
        url: String,
        secret: Option<String>,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Webhook, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("samos/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Webhook {
            url,
            secret,
            client,
        })
    }

    async fn deliver(&self, d: &Delivery) -> Result<(), Failure> {
        let bytes = serde_json::to_vec(&body(d)).map_err(|e| Failure::Permanent(e.to_string()))?;
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-samos-delivery", &d.id)
            .header("x-samos-event", d.change.as_str());
        if let Some(secret) = &self.secret {
            let now = chrono::Utc::now().timestamp();
            request = request.header("x-samos-signature", signature(secret, now, &bytes));
        }
        match request.body(bytes).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let why = format!("{} answered {status}", self.url);
                if status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    Err(Failure::Retry(why))
                } else {
                    Err(Failure::Permanent(why))
                }
            }
            Err(e) => Err(Failure::Retry(format!("{}: {e}", self.url))),
        }
    }
}

/// An email action.
pub struct Email {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
}

impl Email {
    pub fn new(cfg: &crate::config::EmailConfig) -> Result<Email, String> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
        let mut params = TlsParameters::builder(cfg.server.clone());
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            params = params
                .add_root_certificate(Certificate::from_pem(&pem).map_err(|e| e.to_string())?);
        }
        let params = params.build_rustls().map_err(|e| e.to_string())?;
        let tls = match cfg.tls.as_str() {
            "starttls" => Tls::Required(params),
            "implicit" => Tls::Wrapper(params),
            "none" => Tls::None,
            other => return Err(format!("tls is starttls, implicit or none, not {other:?}")),
        };
        let mut builder =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&cfg.server)
                .port(cfg.port)
                .tls(tls)
                .timeout(Some(Duration::from_millis(cfg.timeout_ms)));
        if let Some(user) = &cfg.username {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                cfg.password.clone().unwrap_or_default(),
            ));
        }
        let mailbox = |a: &str| a.parse().map_err(|e| format!("address {a:?}: {e}"));
        Ok(Email {
            transport: builder.build(),
            from: mailbox(&cfg.from)?,
            to: cfg
                .to
                .iter()
                .map(|a| mailbox(a))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The mail of `d`.
    pub fn message(&self, d: &Delivery) -> Result<lettre::Message, String> {
        let a = &d.alert;
        let subject = format!(
            "[samos] {} {}: {} {} on {}",
            d.change.as_str().to_uppercase(),
            a.severity,
            a.rule,
            a.series.sensor,
            a.series.node_id
        );
        let time = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map_or_else(
                || ms.to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        };
        let mut text = format!(
            "{}\n\nalert:     {}\nevent:     {}\nseverity:  {}\nnetwork:   {}\nnode:      {}\nsensor:    {}\nvalue:     {}\nsince:     {}\n",
            a.summary,
            a.id,
            d.change.as_str(),
            a.severity,
            a.series.network,
            a.series.node_id,
            a.series.sensor,
            a.value.map_or_else(|| "-".into(), |v| v.to_string()),
            time(a.started_ms),
        );
        if let Some(t) = a.resolved_ms {
            text.push_str(&format!("resolved:  {}\n", time(t)));
        }
        if let Some(by) = &a.acknowledged_by {
            text.push_str(&format!("acknowledged by: {by}\n"));
        }
        text.push_str(&format!("instance:  {}\ndelivery:  {}\n", d.instance, d.id));
        let digest =
            sha2::Digest::finalize(<Sha256 as sha2::Digest>::new_with_prefix(d.id.as_bytes()));
        let message_id: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{message_id}@samos.alerts>")))
            .header(lettre::message::header::ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.body(text).map_err(|e| e.to_string())
    }

    async fn deliver(&self, d: &Delivery) -> Result<(), Failure> {
        use lettre::AsyncTransport;
        let message = self.message(d).map_err(Failure::Permanent)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
            Err(e) => Err(Failure::Retry(e.to_string())),
        }
    }
}

/// Publishes a message on this server's broker (the protocol's own publishing).
pub type Publisher = Arc<dyn Fn(String, String) + Send + Sync>;

/// An MQTT action.
pub struct MqttPublish {
    /// With `{rule}`, `{network}`, `{node_id}`, `{sensor}`, `{event}` replaced.
    pub topic: String,
    publish: Publisher,
}

impl MqttPublish {
    pub fn new(topic: String, publish: Publisher) -> MqttPublish {
        MqttPublish { topic, publish }
    }

    fn deliver(&self, d: &Delivery) -> Result<(), Failure> {
        let topic = self
            .topic
            .replace("{rule}", &d.alert.rule)
            .replace("{network}", &d.alert.series.network)
            .replace("{node_id}", &d.alert.series.node_id)
            .replace("{sensor}", &d.alert.series.sensor)
            .replace("{event}", d.change.as_str());
        if topic.contains(['+', '#']) || topic.is_empty() {
            return Err(Failure::Permanent(format!("{topic:?} is not a topic name")));
        }
        (self.publish)(topic, body(d).to_string());
        Ok(())
    }
}

/// One configured action.
pub enum Action {
    Webhook(Webhook),
    Email(Box<Email>),
    Mqtt(MqttPublish),
}

impl Action {
    async fn deliver(&self, d: &Delivery) -> Result<(), Failure> {
        match self {
            Action::Webhook(w) => w.deliver(d).await,
            Action::Email(e) => e.deliver(d).await,
            Action::Mqtt(m) => m.deliver(d),
        }
    }
}

/// Runs `action`'s deliveries as they arrive on `queue`, in order, until the queue closes.
pub async fn run(
    name: String,
    action: Arc<Action>,
    outbox: Arc<Outbox>,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    metrics: Arc<Metrics>,
) {
    while let Some(p) = queue.recv().await {
        let mut backoff = Duration::from_secs(1);
        loop {
            match action.deliver(&p.delivery).await {
                Ok(()) => {
                    info!(action = %name, delivery = %p.delivery.id, "alert notification delivered");
                    metrics.alert_notification("delivered");
                    if let Err(e) = outbox.done(p.seq) {
                        warn!(error = %e, "cannot remove a delivered notification: it will be sent again after a restart");
                    }
                    break;
                }
                Err(Failure::Permanent(why)) => {
                    warn!(action = %name, delivery = %p.delivery.id, %why, "alert notification refused for good: kept in alerts/outbox/failed/");
                    metrics.alert_notification("failed");
                    if let Err(e) = outbox.failed(p.seq) {
                        warn!(error = %e, "cannot set a refused notification aside");
                    }
                    break;
                }
                Err(Failure::Retry(why)) => {
                    warn!(action = %name, delivery = %p.delivery.id, %why, retry_in_s = backoff.as_secs(), "alert notification not delivered yet");
                    metrics.alert_notification("retried");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // The integration test checks it with Python's hmac module; here, its parts.
        let sig = signature("s3cret", 1_700_000_000, br#"{"a":1}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap_or_else(|_| unreachable!());
        mac.update(br#"1700000000.{"a":1}"#);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("t=1700000000,v1={hex}"));
        assert_ne!(sig, signature("other", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(sig, signature("s3cret", 1_700_000_001, br#"{"a":1}"#));
    }
}
