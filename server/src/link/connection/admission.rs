//! Admission: a CONNECT becomes a session or a refusal. In order: client id (assigned when
//! empty and allowed), authentication (password file or verified certificate), the will
//! (valid topic, allowed by the ACL), session expiry (capped), the router's grant (taking
//! over or discarding a previous session), a discarded persistent session made durable
//! before CONNACK says so, then CONNACK with the server's limits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mqttbytes::v5::{ConnAck, ConnAckProperties, ConnectReturnCode, Packet, PublishProperties};
use samos_mqtt::codec::ProtocolVersion;
use samos_mqtt::topic;
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Connection;
use crate::auth::Access;
use crate::broker::durable::SessionOp;
use crate::broker::{ConnectGrant, Message, Request, SessionState, Will};
use crate::refusal::Refusal;

impl Connection {
    /// Authenticates the client, registers it with the router and sends CONNACK.
    /// `None` when the connection was refused (CONNACK already sent).
    pub(super) async fn admit<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
    ) -> Option<SessionState> {
        if let Err((code, why)) = self.check_connect().await {
            return self.refuse(writer, code, why).await;
        }
        let capped_expiry = self.negotiate_session_expiry();
        let grant = match self.register().await {
            Ok(grant) => grant,
            Err(why) => {
                return self
                    .refuse(writer, ConnectReturnCode::ServerUnavailable, why)
                    .await;
            }
        };
        self.send_connack(grant.session_present, capped_expiry);
        info!(
            client_id = %self.client_id,
            peer = %self.peer,
            protocol = %self.version,
            user = self.username.as_deref().unwrap_or("-"),
            tls = self.listener.tls,
            session_present = grant.session_present,
            "client connected"
        );
        Some(grant.state)
    }

    /// The checks before anything is registered: the client id (assigned when empty and the
    /// protocol allows), authentication, the will (a valid topic the client may publish to).
    async fn check_connect(&mut self) -> Result<(), (ConnectReturnCode, &'static str)> {
        if self.connect.client_id.is_empty() {
            if self.version.is_v3()
                && (!self.connect.clean_session || self.version == ProtocolVersion::V3_1)
            {
                return Err((
                    ConnectReturnCode::ClientIdentifierNotValid,
                    "empty client id",
                ));
            }
            let id = format!("samos-{:016x}", rand::random::<u64>());
            self.client_id = Arc::from(id.as_str());
            self.assigned_id = true;
        }
        if let Some(code) = self.authenticate().await {
            return Err((code, "authentication failed"));
        }
        self.read_denied = self
            .shared
            .acl
            .read_denied(self.username.as_deref(), &self.client_id);
        let Some(w) = &self.connect.last_will else {
            return Ok(());
        };
        if !topic::valid_topic_name(&w.topic) {
            return Err((ConnectReturnCode::TopicNameInvalid, "invalid will topic"));
        }
        let allowed = self.shared.acl.allowed(
            Access::Publish,
            self.username.as_deref(),
            &self.client_id,
            &w.topic,
        );
        if !allowed {
            return Err((ConnectReturnCode::NotAuthorized, "will topic denied"));
        }
        let props = w.properties.as_ref();
        let expiry = props.and_then(|p| p.message_expiry_interval);
        self.will = Some(Will {
            delay_secs: props.and_then(|p| p.delay_interval).unwrap_or(0),
            message: Arc::new(Message {
                topic: w.topic.clone(),
                payload: w.message.clone(),
                qos: w.qos,
                retain: w.retain,
                properties: props.map(|p| PublishProperties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: None,
                    response_topic: p.response_topic.clone(),
                    correlation_data: p.correlation_data.clone(),
                    user_properties: p.user_properties.clone(),
                    subscription_identifiers: Vec::new(),
                    content_type: p.content_type.clone(),
                }),
                publisher: Some(self.client_id.clone()),
                expires_at: expiry.map(|s| Instant::now() + Duration::from_secs(s.into())),
                recipient: None,
            }),
        });
        Ok(())
    }

    /// The session expiry asked for (v5 property; 3.x: 0 for a clean session, else never),
    /// capped by `max_session_expiry_secs`; returns the cap when it applied (CONNACK says so).
    fn negotiate_session_expiry(&mut self) -> Option<u32> {
        self.session_expiry = if !self.version.is_v3() {
            self.connect
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .unwrap_or(0)
        } else if self.connect.clean_session {
            0
        } else {
            u32::MAX
        };
        let capped = self
            .shared
            .config
            .mqtt
            .max_session_expiry_secs
            .filter(|max| self.session_expiry > *max);
        if let Some(max) = capped {
            self.session_expiry = max;
        }
        capped
    }

    /// Registers the session with the router (taking over or discarding a previous one) and
    /// records it durably: a persistent session is opened in the WAL, and a discarded one is
    /// ended there before CONNACK may say it is gone. `Err` says why the client must retry.
    async fn register(&mut self) -> Result<ConnectGrant, &'static str> {
        let shared = self.shared.clone();
        let (reply_tx, reply_rx) = oneshot::channel();
        let request = Request::Connect {
            client_id: self.client_id.clone(),
            clean_start: self.connect.clean_session,
            session_expiry: self.session_expiry,
            outbox: self.outbox.clone(),
            reply: reply_tx,
        };
        if shared.router.tx.send(request).await.is_err() {
            return Err("router stopped");
        }
        let Ok(grant) = reply_rx.await else {
            return Err("superseded by a newer connection");
        };
        self.connection = grant.connection;
        let Some(ingest) = shared.ingest.clone() else {
            return Ok(grant);
        };
        let op = if self.session_expiry > 0 {
            self.durable_session = true;
            SessionOp::Open {
                client: self.client_id.clone(),
                clean: self.connect.clean_session,
                expiry_secs: self.session_expiry,
            }
        } else if grant.discarded_session || ingest.has_durable_session(&self.client_id) {
            SessionOp::End {
                client: self.client_id.clone(),
            }
        } else {
            return Ok(grant);
        };
        // Discarding a stored session is durable before CONNACK says it is gone.
        let discards = matches!(
            op,
            SessionOp::End { .. } | SessionOp::Open { clean: true, .. }
        );
        let ack = discards.then(|| self.acks.ticket());
        let wanted = self.acks.issued();
        let failure = if ingest
            .record_session(op, ack, &shared.metrics)
            .await
            .is_err()
        {
            Some("storage stopped")
        } else if discards
            && self
                .acks
                .wait_durable(wanted, Duration::from_secs(30))
                .await
                < wanted
        {
            // CONNACK would say the old session is gone while a crash could still bring it
            // back: refuse instead, the client retries.
            Some("storage did not record the end of the old session in time")
        } else {
            None
        };
        let Some(why) = failure else {
            return Ok(grant);
        };
        // The router counts this connection as the session's: hand it back.
        let _ = shared
            .router
            .tx
            .send(Request::Disconnected {
                client_id: self.client_id.clone(),
                connection: self.connection,
                state: grant.state,
                will: None,
                session_expiry: self.session_expiry,
            })
            .await;
        Err(why)
    }

    /// CONNACK with the server's limits (v5 properties), and the keep-alive the server
    /// imposes when `max_keepalive` caps the client's.
    fn send_connack(&mut self, session_present: bool, capped_expiry: Option<u32>) {
        let mqtt = &self.shared.config.mqtt;
        let mut connack = ConnAck::new(ConnectReturnCode::Success, session_present);
        if !self.version.is_v3() {
            let mut server_keepalive = None;
            if mqtt.max_keepalive != 0
                && (self.keepalive == 0 || self.keepalive > mqtt.max_keepalive)
            {
                self.keepalive = mqtt.max_keepalive;
                server_keepalive = Some(mqtt.max_keepalive);
            }
            connack.properties = Some(ConnAckProperties {
                session_expiry_interval: capped_expiry,
                receive_max: Some(mqtt.receive_maximum),
                max_qos: None,
                retain_available: Some(1),
                max_packet_size: Some(mqtt.max_packet_size as u32),
                assigned_client_identifier: self.assigned_id.then(|| self.client_id.to_string()),
                topic_alias_max: Some(mqtt.topic_alias_maximum),
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(1),
                shared_subscription_available: Some(1),
                server_keep_alive: server_keepalive,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            });
        }
        self.send(&Packet::ConnAck(connack));
    }

    /// `None` when the client may connect, else the CONNACK code refusing it.
    pub(super) async fn authenticate(&mut self) -> Option<ConnectReturnCode> {
        let shared = self.shared.clone();
        if self
            .connect
            .properties
            .as_ref()
            .is_some_and(|p| p.authentication_method.is_some())
        {
            return Some(ConnectReturnCode::BadAuthenticationMethod);
        }
        if self.listener.use_identity_as_username {
            // Set only when the certificate chain verified against the configured CA.
            return match self.identity.take() {
                Some(cn) => {
                    self.username = Some(cn);
                    self.authenticated = true;
                    None
                }
                None => Some(ConnectReturnCode::NotAuthorized),
            };
        }
        match &self.connect.login {
            Some(login) => {
                self.username = Some(login.username.clone());
                if shared.auth.has_passwords() {
                    let ok = shared
                        .auth
                        .verify(&login.username, login.password.as_bytes())
                        .await;
                    self.authenticated = ok;
                    (!ok).then_some(ConnectReturnCode::BadUserNamePassword)
                } else if self.listener.allow_anonymous {
                    None
                } else {
                    Some(ConnectReturnCode::NotAuthorized)
                }
            }
            None if self.listener.allow_anonymous => None,
            None => Some(ConnectReturnCode::NotAuthorized),
        }
    }

    pub(super) async fn refuse<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        code: ConnectReturnCode,
        why: &'static str,
    ) -> Option<SessionState> {
        let reason = match code {
            ConnectReturnCode::BadUserNamePassword => Refusal::BadCredentials,
            ConnectReturnCode::NotAuthorized => Refusal::NotAuthorized,
            ConnectReturnCode::ClientIdentifierNotValid => Refusal::ClientIdInvalid,
            ConnectReturnCode::TopicNameInvalid => Refusal::WillTopicInvalid,
            _ => Refusal::ConnectRefused,
        };
        self.shared.metrics.refuse(reason);
        warn!(
            client_id = %self.connect.client_id,
            peer = %self.peer,
            user = self.connect.login.as_ref().map_or("-", |l| l.username.as_str()),
            code = ?code,
            "refused CONNECT: {why}"
        );
        self.send(&Packet::ConnAck(ConnAck::new(code, false)));
        let _ = self.flush(writer).await;
        None
    }
}
