//! What the protocol says back and writes down: refusals (counted, logged, quarantined in
//! `rejected.jsonl`, and answered on the node's control topic where the speaker can be told),
//! events (`events.jsonl`), `$SYS` values, and messages it publishes through the router.

use std::sync::Arc;

use bytes::Bytes;
use mqttbytes::QoS;
use samos_schemas::payload::{self, Control, FunctionalMode};
use samos_schemas::topic::{self, TopicKind};
use serde_json::json;
use tracing::warn;

use super::{Protocol, RefuseCode, Sender, Verdict};
use crate::broker::{Message, Request};
use crate::clock::now_ms;
use crate::refusal::Refusal;

impl Protocol {
    pub(super) fn refuse(
        &self,
        from: Sender<'_>,
        topic_name: &str,
        raw: &Bytes,
        code: RefuseCode,
        reason: Refusal,
        detail: String,
    ) -> Verdict {
        self.metrics.refuse(reason);
        self.registry.mark_dirty();
        warn!(client_id = %from.client_id, topic = topic_name, reason = reason.label(), "refused: {detail}");
        let text = String::from_utf8_lossy(&raw[..raw.len().min(1024)]).into_owned();
        let line = json!({
            "time_ms": now_ms(), "client_id": &**from.client_id, "peer": from.peer.to_string(),
            "topic": topic_name, "reason": reason.label(), "detail": detail, "payload": text,
            "payload_bytes": raw.len(),
        });
        if let Err(e) = self.rejected.append(&line) {
            tracing::error!(error = %e, path = %self.rejected.path.display(), "cannot write the quarantine");
        }
        if self.live.has_readers() {
            let node = topic::parse(topic_name).map(|t| t.node_id);
            self.live.publish("refused", node, line);
        }
        Verdict::Refuse { code, reason }
    }

    /// Refuses a PUBLISH whose sender may not speak for the node (not bound to it, or the
    /// node is unknown or not active), and tells that sender — and only it — on the node's
    /// control topic: `SET_CN_FUNCTIONAL_MODE, blocked, <reason>`, once per connection and
    /// node (a join is answered every time). The node's own session never sees the answer.
    pub(super) fn refuse_speaker(
        &self,
        from: Sender<'_>,
        topic_name: &str,
        t: &topic::NodeTopic<'_>,
        raw: &Bytes,
        reason: Refusal,
        detail: String,
    ) -> Verdict {
        let join = t.kind == TopicKind::Control
            && matches!(
                payload::parse_control(raw),
                Ok(Control::PubConfigFile { .. })
            );
        let first = {
            let mut answered = self.answered.lock().expect("answered senders");
            answered.insert((from.client_id.clone(), t.node_id.to_string()))
        };
        if join || first {
            let control = match t.kind {
                TopicKind::Control => topic_name.to_string(),
                TopicKind::Data { .. } => match topic_name.rsplit_once('/') {
                    Some((node_path, _sensor)) => format!("{node_path}/control"),
                    None => topic_name.to_string(),
                },
            };
            let reply = payload::functional_mode_reply(FunctionalMode::Blocked, &detail);
            self.publish_to(control, reply, Some(from.client_id.clone()));
        }
        self.refuse(
            from,
            topic_name,
            raw,
            RefuseCode::NotAuthorized,
            reason,
            detail,
        )
    }

    pub(super) fn event(
        &self,
        kind: &str,
        network: &str,
        node_id: &str,
        detail: serde_json::Value,
    ) {
        let line = json!({"time_ms": now_ms(), "kind": kind, "network": network, "node_id": node_id, "detail": detail});
        if let Err(e) = self.events.append(&line) {
            tracing::error!(error = %e, path = %self.events.path.display(), "cannot write the event log");
        }
        self.live.publish("event", Some(node_id), line);
    }

    /// Records an event for another part of the server (alerting): `events.jsonl` and the
    /// dashboard's live feed.
    pub fn record_event(
        &self,
        kind: &str,
        network: &str,
        node_id: &str,
        detail: serde_json::Value,
    ) {
        self.event(kind, network, node_id, detail);
    }

    /// Publishes `payload` on `topic_name` at QoS 1 through this server's broker.
    pub fn publish_message(&self, topic_name: String, payload: String) {
        self.publish(topic_name, payload, QoS::AtLeastOnce, false);
    }

    pub(super) fn sys(&self, name: &str, value: String) {
        let t = topic::sys_topic(
            &self.identity.network,
            &self.identity.server_id,
            &self.identity.location,
            name,
        );
        self.publish(t, value, QoS::AtMostOnce, true);
    }

    pub(super) fn node_sys(&self, node_id: &str, name: &str, value: impl Into<String>) {
        self.sys(&format!("{node_id}/{name}"), value.into());
    }

    /// Sends `payload` at QoS 1 to the subscriptions of `recipient` alone.
    pub(super) fn publish_to(
        &self,
        topic_name: String,
        payload: String,
        recipient: Option<Arc<str>>,
    ) {
        self.send_message(Message {
            topic: topic_name,
            payload: Bytes::from(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            publisher: None,
            expires_at: None,
            recipient,
        });
    }

    pub(super) fn publish(&self, topic_name: String, payload: String, qos: QoS, retain: bool) {
        self.send_message(Message {
            topic: topic_name,
            payload: Bytes::from(payload),
            qos,
            retain,
            properties: None,
            publisher: None,
            expires_at: None,
            recipient: None,
        });
    }

    pub(super) fn send_message(&self, message: Message) {
        let message = Arc::new(message);
        if self
            .router
            .tx
            .try_send(Request::Publish(vec![message.clone()]))
            .is_err()
        {
            // The router queue is full: deliver from a task instead of blocking a connection.
            let tx = self.router.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(Request::Publish(vec![message])).await;
            });
        }
    }
}
