//! What a client sends once connected, other than acknowledgements of our messages: PUBLISH
//! (topic aliases, ACL, the sensor-network protocol's verdict, the hand-off to ingest with a
//! ticket, routing) and SUBSCRIBE / UNSUBSCRIBE (recorded first for a persistent session).
//! Every acknowledgement goes through the connection's [`AckQueue`](super::AckQueue), so
//! none overtakes one still waiting for durability.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mqttbytes::QoS;
use mqttbytes::v5::{
    DisconnectReasonCode, Packet, PubRecReason, Publish, SubAck, Subscribe, SubscribeReasonCode,
    UnsubAck, UnsubAckReason, Unsubscribe,
};
use samos_mqtt::topic;
use tokio::sync::oneshot;
use tracing::warn;

use super::{Connection, End, router_gone, storage_stopped};
use crate::auth::Access;
use crate::broker::durable::{DurableSubscription, SessionOp};
use crate::broker::{Message, Request, SubOptions};
use crate::config::Durability;
use crate::ingest::{AcceptedReading, Origin};
use crate::link::ack_queue::{Ack, ack_packet};
use crate::link::aliases::AliasError;
use crate::protocol::{RefuseCode, Sender, Verdict};
use crate::refusal::Refusal;

impl Connection {
    /// A PUBLISH from the client: its topic resolved and checked, QoS 2 duplicates and limits,
    /// then [`Connection::admit_publish`]'s verdict; an accepted message is routed with the
    /// read's batch and, when it is a reading, handed to ingest with a ticket its
    /// acknowledgement waits on.
    pub(super) async fn on_publish(&mut self, mut p: Publish) -> Result<(), End> {
        let arrived = Instant::now();
        self.resolve_topic(&mut p)?;
        self.shared.metrics.messages_received[p.qos as usize].fetch_add(1, Relaxed);
        if p.qos == QoS::ExactlyOnce {
            if self.incoming_qos2.contains_key(&p.pkid) {
                // A resend of a message already routed: acknowledge, do not route again.
                self.ack_after(p.pkid, p.qos, PubRecReason::Success, arrived, None);
                return Ok(());
            }
            if self.incoming_qos2.len() >= self.shared.config.mqtt.receive_maximum as usize {
                self.shared.metrics.refuse(Refusal::ReceiveMaximumExceeded);
                return Err(End::Refused {
                    reason: DisconnectReasonCode::ReceiveMaximumExceeded,
                    why: "more unacknowledged QoS 2 messages than Receive Maximum".into(),
                });
            }
        }
        if self.refuse_while_disk_full(&p) {
            self.ack_after(p.pkid, p.qos, PubRecReason::QuotaExceeded, arrived, None);
            return Ok(());
        }
        let reading = match self.admit_publish(&mut p) {
            Ok(reading) => reading,
            Err(refused) => {
                if p.qos == QoS::ExactlyOnce && self.version.is_v3() {
                    // 3.x: acknowledged as usual (the client cannot be told); the id is
                    // remembered so a resend is not taken for a new message.
                    self.incoming_qos2.insert(p.pkid, false);
                }
                self.ack_after(p.pkid, p.qos, refused, arrived, None);
                return Ok(());
            }
        };
        if self.routable(p.retain) {
            self.batch.push(self.message(&mut p, arrived));
        }
        let stored_qos2 = p.qos == QoS::ExactlyOnce && self.durable_session && reading.is_some();
        if p.qos == QoS::ExactlyOnce {
            self.incoming_qos2.insert(p.pkid, stored_qos2);
        }
        let mut durable_after = None;
        if let (Some(reading), Some(ingest)) = (reading, self.shared.ingest.clone()) {
            let durable_ack =
                p.qos != QoS::AtMostOnce && ingest.durability == Durability::AckAfterCommit;
            let ticket = durable_ack.then(|| self.acks.ticket());
            durable_after = ticket.as_ref().map(|t| t.seq);
            let origin = Origin {
                client_id: self.client_id.clone(),
                qos: p.qos as u8,
                qos2_pkid: stored_qos2.then_some(p.pkid),
            };
            ingest
                .push(reading, origin, ticket, &self.shared.metrics)
                .await
                .map_err(storage_stopped)?;
        }
        self.ack_after(p.pkid, p.qos, PubRecReason::Success, arrived, durable_after);
        Ok(())
    }

    /// Applies a v5 topic alias (§3.3.2.3.4) and checks the topic name; a failure ends the
    /// connection.
    fn resolve_topic(&mut self, p: &mut Publish) -> Result<(), End> {
        if let Some(alias) = p.properties.as_ref().and_then(|pr| pr.topic_alias)
            && let Err(e) = self.alias_in.resolve(alias, &mut p.topic)
        {
            let (label, reason) = match e {
                AliasError::OutOfRange(_) => (
                    Refusal::TopicAliasInvalid,
                    DisconnectReasonCode::TopicAliasInvalid,
                ),
                AliasError::Unknown(_) => (
                    Refusal::TopicAliasUnknown,
                    DisconnectReasonCode::ProtocolError,
                ),
            };
            self.shared.metrics.refuse(label);
            return Err(End::Refused {
                reason,
                why: e.to_string(),
            });
        }
        if !topic::valid_topic_name(&p.topic) {
            self.shared.metrics.refuse(Refusal::TopicInvalid);
            return Err(End::Refused {
                reason: DisconnectReasonCode::TopicNameInvalid,
                why: format!("invalid topic name {:?}", p.topic),
            });
        }
        Ok(())
    }

    /// Whether a reading is refused at once because the WAL is waiting for disk space: only
    /// an MQTT 5 client's QoS 1/2 reading, which 0x97 Quota exceeded tells to hold and send
    /// again later. A 3.x client cannot be told, so its reading waits in the queue (the
    /// publisher is paused) and is acknowledged once stored. Nothing refused is stored.
    fn refuse_while_disk_full(&self, p: &Publish) -> bool {
        let refuse = !self.version.is_v3()
            && p.qos != QoS::AtMostOnce
            && self.shared.ingest.is_some()
            && self
                .shared
                .metrics
                .disk
                .is_full(crate::disk_space::Writer::Wal)
            && self.shared.protocol.is_some()
            && samos_schemas::topic::parse(&p.topic)
                .is_some_and(|t| matches!(t.kind, samos_schemas::topic::TopicKind::Data { .. }));
        if refuse {
            self.shared.metrics.refuse(Refusal::DiskFull);
            tracing::debug!(client_id = %self.client_id, topic = %p.topic, "reading refused (0x97): the disk is full");
        }
        refuse
    }

    /// Whether the message may be routed: the ACL, the sensor-network protocol's verdict (an
    /// accepted reading comes back), and a v5 payload that claims UTF-8. `Err` carries the
    /// reason code its acknowledgement reports; every refusal is counted and logged.
    fn admit_publish(&self, p: &mut Publish) -> Result<Option<AcceptedReading>, PubRecReason> {
        let allowed = self.shared.acl.allowed(
            Access::Publish,
            self.username.as_deref(),
            &self.client_id,
            &p.topic,
        );
        if !allowed {
            self.shared.metrics.refuse(Refusal::PublishNotAuthorized);
            warn!(client_id = %self.client_id, topic = %p.topic, "publish denied by ACL");
            return Err(PubRecReason::NotAuthorized);
        }
        let mut reading = None;
        if let Some(protocol) = &self.shared.protocol {
            let from = Sender {
                client_id: &self.client_id,
                username: self.username.as_deref(),
                authenticated: self.authenticated,
                peer: self.peer,
            };
            match protocol.inspect(from, &p.topic, &p.payload) {
                Verdict::Reading(r) => reading = Some(r),
                Verdict::Refuse { code, .. } => {
                    return Err(match code {
                        RefuseCode::NotAuthorized => PubRecReason::NotAuthorized,
                        RefuseCode::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
                    });
                }
                Verdict::Pass | Verdict::Accept => {}
            }
        }
        let claims_utf8 = p
            .properties
            .as_ref()
            .and_then(|pr| pr.payload_format_indicator)
            == Some(1);
        if claims_utf8 && std::str::from_utf8(&p.payload).is_err() {
            self.shared.metrics.refuse(Refusal::PayloadFormatInvalid);
            warn!(client_id = %self.client_id, topic = %p.topic, "payload is not the UTF-8 it claims");
            return Err(PubRecReason::PayloadFormatInvalid);
        }
        Ok(reading)
    }

    /// The routed form of an admitted PUBLISH: its properties without the alias and
    /// subscription ids (those are per hop), its expiry as a deadline.
    fn message(&self, p: &mut Publish, arrived: Instant) -> Arc<Message> {
        let expires_at = p
            .properties
            .as_ref()
            .and_then(|pr| pr.message_expiry_interval)
            .map(|s| arrived + Duration::from_secs(s.into()));
        let properties = p.properties.take().map(|mut pr| {
            pr.topic_alias = None;
            pr.subscription_identifiers.clear();
            pr
        });
        Arc::new(Message {
            topic: std::mem::take(&mut p.topic),
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            properties,
            publisher: Some(self.client_id.clone()),
            expires_at,
            recipient: None,
        })
    }

    /// Queues the acknowledgement of a PUBLISH until this connection's sequence `after` is
    /// durable (`None`: nothing to wait for but the acknowledgements before it).
    pub(super) fn ack_after(
        &mut self,
        pkid: u16,
        qos: QoS,
        reason: PubRecReason,
        arrived: Instant,
        after: Option<u64>,
    ) {
        if qos == QoS::AtMostOnce {
            return;
        }
        self.acks
            .push(Ack::Publish { pkid, qos, reason }, after, arrived);
        self.release_acks();
    }

    /// Records a change of this persistent session and sends `reply` once it is durable.
    pub(super) async fn record_then(&mut self, op: SessionOp, reply: Packet) -> Result<(), End> {
        self.record_all_then(vec![op], reply).await
    }

    /// Records changes of this persistent session (none: `reply` goes out as usual) and sends
    /// `reply` once they are durable.
    pub(super) async fn record_all_then(
        &mut self,
        ops: Vec<SessionOp>,
        reply: Packet,
    ) -> Result<(), End> {
        let Some(ingest) = self.shared.ingest.clone().filter(|_| !ops.is_empty()) else {
            self.send(&reply);
            return Ok(());
        };
        let wait = ingest.durability == Durability::AckAfterCommit;
        let last = ops.len() - 1;
        let mut after = None;
        for (i, op) in ops.into_iter().enumerate() {
            let ticket = (wait && i == last).then(|| self.acks.ticket());
            after = ticket.as_ref().map(|t| t.seq).or(after);
            ingest
                .record_session(op, ticket, &self.shared.metrics)
                .await
                .map_err(storage_stopped)?;
        }
        self.acks
            .push(Ack::Packet(Box::new(reply)), after, Instant::now());
        self.release_acks();
        Ok(())
    }

    /// Sends the held acknowledgements that are due, in order.
    pub(super) fn release_acks(&mut self) {
        while let Some((ack, arrived)) = self.acks.next_due() {
            let publish = matches!(ack, Ack::Publish { .. });
            if let Some(packet) = ack_packet(self.version, ack) {
                self.send(&packet);
            }
            if publish {
                self.shared
                    .metrics
                    .publish_ack_latency
                    .observe(arrived.elapsed());
            }
        }
    }

    pub(super) async fn on_subscribe(&mut self, s: Subscribe) -> Result<(), End> {
        let v5 = !self.version.is_v3();
        let sub_id = s.properties.as_ref().and_then(|p| p.id);
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut accepted = Vec::new();
        // Where each accepted filter's code is in `codes`.
        let mut accepted_at = Vec::new();
        for f in &s.filters {
            let shared_filter = topic::parse_shared(&f.path);
            let valid = shared_filter
                .as_ref()
                .is_some_and(|sf| topic::valid_topic_filter(sf.filter))
                && !(f.nolocal && shared_filter.as_ref().is_some_and(|sf| sf.group.is_some()));
            if !valid {
                self.shared.metrics.refuse(Refusal::TopicFilterInvalid);
                warn!(client_id = %self.client_id, filter = %f.path, "invalid topic filter");
                codes.push(if v5 {
                    SubscribeReasonCode::TopicFilterInvalid
                } else {
                    SubscribeReasonCode::Unspecified
                });
                continue;
            }
            let inner = shared_filter.expect("valid").filter;
            let allowed = self.shared.acl.allowed(
                Access::Subscribe,
                self.username.as_deref(),
                &self.client_id,
                inner,
            );
            if !allowed {
                self.shared.metrics.refuse(Refusal::SubscribeNotAuthorized);
                warn!(client_id = %self.client_id, filter = %f.path, "subscription denied by ACL");
                codes.push(if v5 {
                    SubscribeReasonCode::NotAuthorized
                } else {
                    SubscribeReasonCode::Unspecified
                });
                continue;
            }
            accepted_at.push(codes.len());
            codes.push(match f.qos {
                QoS::AtMostOnce => SubscribeReasonCode::QoS0,
                QoS::AtLeastOnce => SubscribeReasonCode::QoS1,
                QoS::ExactlyOnce => SubscribeReasonCode::QoS2,
            });
            accepted.push((
                f.path.clone(),
                SubOptions {
                    qos: f.qos,
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    retain_handling: match f.retain_forward_rule {
                        mqttbytes::v5::RetainForwardRule::OnEverySubscribe => 0,
                        mqttbytes::v5::RetainForwardRule::OnNewSubscribe => 1,
                        mqttbytes::v5::RetainForwardRule::Never => 2,
                    },
                    subscription_id: sub_id,
                },
            ));
        }
        if !accepted.is_empty() {
            let (tx, rx) = oneshot::channel();
            self.router(Request::Subscribe {
                client_id: self.client_id.clone(),
                filters: accepted.clone(),
                reply: tx,
            })
            .await?;
            let stored = rx.await.map_err(|_| router_gone())?;
            let mut kept = Vec::with_capacity(accepted.len());
            for ((filter, options), (stored, at)) in accepted
                .into_iter()
                .zip(stored.into_iter().zip(accepted_at))
            {
                if stored {
                    kept.push((filter, options));
                } else {
                    self.shared.metrics.refuse(Refusal::SubscriptionQuota);
                    warn!(client_id = %self.client_id, %filter, limit = self.shared.config.mqtt.max_subscriptions_per_client,
                        "subscription refused: mqtt.max_subscriptions_per_client reached");
                    codes[at] = if v5 {
                        SubscribeReasonCode::QuotaExceeded
                    } else {
                        SubscribeReasonCode::Unspecified
                    };
                }
            }
            accepted = kept;
        }
        let mut ops = Vec::new();
        if self.durable_session {
            ops.extend(accepted.iter().map(|(filter, o)| SessionOp::Subscribe {
                client: self.client_id.clone(),
                filter: filter.clone(),
                options: DurableSubscription {
                    qos: o.qos as u8,
                    no_local: o.no_local,
                    retain_as_published: o.retain_as_published,
                    retain_handling: o.retain_handling,
                    subscription_id: o.subscription_id.map(|id| id as u32),
                },
            }));
        }
        self.record_all_then(ops, Packet::SubAck(SubAck::new(s.pkid, codes)))
            .await
    }

    pub(super) async fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), End> {
        let (tx, rx) = oneshot::channel();
        let req = Request::Unsubscribe {
            client_id: self.client_id.clone(),
            filters: u.filters.clone(),
            reply: tx,
        };
        self.router(req).await?;
        let removed = rx.await.map_err(|_| router_gone())?;
        let mut ops: Vec<SessionOp> = Vec::new();
        if self.durable_session {
            ops.extend(u.filters.iter().map(|f| SessionOp::Unsubscribe {
                client: self.client_id.clone(),
                filter: f.clone(),
            }));
        }
        let reasons = removed
            .into_iter()
            .map(|r| {
                if r {
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
                }
            })
            .collect();
        let ack = UnsubAck {
            pkid: u.pkid,
            reasons,
            properties: None,
        };
        self.record_all_then(ops, Packet::UnsubAck(ack)).await
    }
}
