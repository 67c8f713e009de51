//! One client connection: CONNECT and authentication, then the session loop that reads
//! packets, talks to the router, and writes acknowledgements and deliveries.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v5::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode,
    Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason, Publish, PublishProperties, SubAck, SubscribeReasonCode, UnsubAck,
    UnsubAckReason,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::Shared;
use crate::auth::{Access, ReadDenied};
use crate::broker::{
    Delivery, Kick, Message, OutPhase, Outbox, Request, SessionState, SubOptions, Will,
};
use crate::ingest::sessions::{DurableSubscription, SessionOp};
use crate::mqtt::codec::{Codec, CodecError, OutgoingPublish, ProtocolVersion};
use crate::mqtt::topic;

/// Stop reading from a client whose unsent output exceeds this (it is not reading ours).
const WRITE_HIGH_WATER: usize = 1 << 20;

/// What a listener tells its connections.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    pub allow_anonymous: bool,
    pub use_identity_as_username: bool,
    pub tls: bool,
}

/// Why a session loop ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `keep_will` for v5 reason 0x04.
    Graceful {
        keep_will: bool,
    },
    /// The socket closed or failed.
    Closed,
    /// We end it, telling a v5 client why.
    Refused {
        reason: DisconnectReasonCode,
        why: String,
    },
    Kicked(Kick),
}

/// Runs one connection to completion.
pub async fn run<S>(
    stream: S,
    peer: SocketAddr,
    cert_identity: Option<String>,
    listener: Arc<ListenerContext>,
    shared: Arc<Shared>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(4096);
    let max = shared.config.mqtt.max_packet_size;
    let timeout = Duration::from_secs(shared.config.mqtt.connect_timeout_secs);

    let first = tokio::time::timeout(timeout, async {
        loop {
            match Codec::decode_connect(&mut rbuf, max) {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            match reader.read_buf(&mut rbuf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => {
                    shared.metrics.bytes_received.fetch_add(n as u64, Relaxed);
                }
            }
        }
    })
    .await;

    let (version, connect) = match first {
        Err(_) => {
            shared.metrics.refuse("connect_timeout");
            info!(%peer, "no CONNECT within {}s, closing", timeout.as_secs());
            return;
        }
        Ok(Ok(None)) => {
            debug!(%peer, "closed before CONNECT");
            return;
        }
        Ok(Err(e)) => {
            shared.metrics.refuse(e.reason());
            warn!(%peer, error = %e, "refused connection");
            if let CodecError::UnsupportedProtocol { .. } = &e {
                // 3.1.1 §3.2.2.3: "unacceptable protocol version" in the 3.x form, which every
                // client generation can read (5.0 §3.1.2.2 allows this answer too).
                let _ = writer.write_all(&[0x20, 2, 0, 1]).await;
            }
            let _ = writer.shutdown().await;
            return;
        }
        Ok(Ok(Some(c))) => c,
    };
    shared.metrics.packets_received[1].fetch_add(1, Relaxed);

    let mut conn = Connection::new(
        version,
        connect,
        peer,
        cert_identity,
        listener,
        shared.clone(),
    );
    let Some(grant_state) = conn.admit(&mut writer).await else {
        let _ = writer.shutdown().await;
        linger(&mut reader).await;
        return;
    };
    shared.metrics.connections_total.fetch_add(1, Relaxed);
    shared.metrics.connections_current.fetch_add(1, Relaxed);
    conn.resume(grant_state);

    let end = conn.session(&mut reader, &mut writer, rbuf).await;
    shared.metrics.connections_current.fetch_sub(1, Relaxed);
    let server_closed = !matches!(end, End::Graceful { .. } | End::Closed);
    conn.finish(end, &mut writer).await;
    if server_closed {
        linger(&mut reader).await;
    }
}

/// How long a connection the server closed keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Reads and discards until the client closes (at most [`LINGER`]). Closing a socket that has
/// unread input makes the kernel answer with a reset, and a reset destroys what the client has
/// not read yet: the DISCONNECT that says why (a busy client then sees a broken pipe instead
/// of, say, 0x93 Receive Maximum exceeded).
async fn linger<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = reader.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

struct Connection {
    version: ProtocolVersion,
    codec: Codec,
    connect: Connect,
    peer: SocketAddr,
    listener: Arc<ListenerContext>,
    shared: Arc<Shared>,
    client_id: Arc<str>,
    assigned_id: bool,
    /// Topics this client may not receive (ACL `deny_subscribe`), checked at delivery.
    read_denied: ReadDenied,
    /// Common Name of a verified client certificate.
    identity: Option<String>,
    /// The user name was verified by the password file or a client certificate.
    authenticated: bool,
    username: Option<String>,
    keepalive: u16,
    session_expiry: u32,
    connection: u64,
    outbox: Arc<Outbox>,
    wbuf: BytesMut,
    /// Outgoing QoS 1/2 messages awaiting acknowledgement, in sending order.
    inflight: VecDeque<(u16, Delivery, OutPhase)>,
    /// Packet ids in `inflight`, one bit each, so allocation is O(1) whatever the window.
    pkids_in_use: Box<[u64; 1024]>,
    /// Restored from a previous connection; sent before anything new.
    backlog: VecDeque<Delivery>,
    window: usize,
    next_pkid: u16,
    /// Incoming QoS 2 packet ids not yet released, each with whether it is in the WAL.
    incoming_qos2: HashMap<u16, bool>,
    /// This connection's session is persistent and recorded in the WAL.
    durable_session: bool,
    alias_in: HashMap<u16, String>,
    alias_out: HashMap<String, u16>,
    alias_out_max: u16,
    max_outgoing: usize,
    will: Option<Will>,
    scratch: Vec<Delivery>,
    /// PUBLISHes decoded from the current read, handed to the router together. Their
    /// acknowledgements wait in `wbuf`, which is not written before the batch is handed over.
    batch: Vec<Arc<Message>>,
    /// Acknowledgements waiting for their readings to be durable (and those queued behind them).
    held_acks: VecDeque<HeldAck>,
    /// Advanced by the batcher as this connection's readings become durable.
    ack_cursor: Arc<crate::ingest::AckCursor>,
    next_reading_seq: u64,
}

/// An acknowledgement not yet sent.
#[derive(Debug)]
struct HeldAck {
    /// This connection's sequence (reading or session change) that must be durable first
    /// (0: none).
    seq: u64,
    ack: Held,
    arrived: Instant,
}

#[derive(Debug)]
enum Held {
    /// PUBACK or PUBREC.
    Publish {
        pkid: u16,
        qos: QoS,
        reason: PubRecReason,
    },
    /// PUBCOMP, SUBACK, UNSUBACK of a persistent session.
    Packet(Box<Packet>),
}

impl Connection {
    fn new(
        version: ProtocolVersion,
        connect: Connect,
        peer: SocketAddr,
        identity: Option<String>,
        listener: Arc<ListenerContext>,
        shared: Arc<Shared>,
    ) -> Connection {
        let props = connect.properties.as_ref();
        let mqtt = &shared.config.mqtt;
        let receive_max = props
            .and_then(|p| p.receive_maximum)
            .map_or(usize::MAX, usize::from);
        let max_outgoing = props
            .and_then(|p| p.max_packet_size)
            .map_or(usize::MAX, |m| m as usize);
        let alias_out_max = props.and_then(|p| p.topic_alias_max).unwrap_or(0);
        Connection {
            version,
            codec: Codec {
                version,
                max_incoming: mqtt.max_packet_size,
                max_outgoing,
            },
            peer,
            client_id: Arc::from(connect.client_id.as_str()),
            assigned_id: false,
            read_denied: ReadDenied::default(),
            identity,
            authenticated: false,
            username: None,
            keepalive: connect.keep_alive,
            session_expiry: 0,
            connection: 0,
            outbox: Outbox::new(mqtt.max_queued_messages),
            wbuf: BytesMut::with_capacity(4096),
            inflight: VecDeque::new(),
            pkids_in_use: Box::new([0; 1024]),
            backlog: VecDeque::new(),
            window: receive_max.min(mqtt.max_inflight_messages as usize),
            next_pkid: 0,
            incoming_qos2: HashMap::new(),
            durable_session: false,
            alias_in: HashMap::new(),
            alias_out: HashMap::new(),
            alias_out_max,
            max_outgoing,
            will: None,
            scratch: Vec::new(),
            batch: Vec::new(),
            held_acks: VecDeque::new(),
            ack_cursor: Arc::new(crate::ingest::AckCursor::default()),
            next_reading_seq: 0,
            connect,
            listener,
            shared,
        }
    }

    /// Authenticates the client, registers it with the router and sends CONNACK.
    /// `None` when the connection was refused (CONNACK already sent).
    async fn admit<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) -> Option<SessionState> {
        let shared = self.shared.clone();
        let mqtt = &shared.config.mqtt;
        let v5 = !self.version.is_v3();

        if self.connect.client_id.is_empty() {
            if !v5 && (!self.connect.clean_session || self.version == ProtocolVersion::V3_1) {
                return self
                    .refuse(
                        writer,
                        ConnectReturnCode::ClientIdentifierNotValid,
                        "empty client id",
                    )
                    .await;
            }
            let id = format!("samos-{:016x}", rand::random::<u64>());
            self.client_id = Arc::from(id.as_str());
            self.assigned_id = true;
        }

        if let Some(code) = self.authenticate().await {
            return self.refuse(writer, code, "authentication failed").await;
        }
        self.read_denied = shared
            .acl
            .read_denied(self.username.as_deref(), &self.client_id);

        if let Some(w) = &self.connect.last_will {
            if !topic::valid_topic_name(&w.topic) {
                return self
                    .refuse(
                        writer,
                        ConnectReturnCode::TopicNameInvalid,
                        "invalid will topic",
                    )
                    .await;
            }
            if !shared.acl.allowed(
                Access::Publish,
                self.username.as_deref(),
                &self.client_id,
                &w.topic,
            ) {
                return self
                    .refuse(
                        writer,
                        ConnectReturnCode::NotAuthorized,
                        "will topic denied",
                    )
                    .await;
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
        }

        self.session_expiry = if v5 {
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
        let capped_expiry = mqtt
            .max_session_expiry_secs
            .filter(|max| self.session_expiry > *max);
        if let Some(max) = capped_expiry {
            self.session_expiry = max;
        }

        let (reply_tx, reply_rx) = oneshot::channel();
        let request = Request::Connect {
            client_id: self.client_id.clone(),
            clean_start: self.connect.clean_session,
            session_expiry: self.session_expiry,
            outbox: self.outbox.clone(),
            reply: reply_tx,
        };
        if shared.router.tx.send(request).await.is_err() {
            return self
                .refuse(
                    writer,
                    ConnectReturnCode::ServerUnavailable,
                    "router stopped",
                )
                .await;
        }
        let Ok(grant) = reply_rx.await else {
            return self
                .refuse(
                    writer,
                    ConnectReturnCode::ServerUnavailable,
                    "superseded by a newer connection",
                )
                .await;
        };
        self.connection = grant.connection;
        if let Some(ingest) = shared.ingest.clone() {
            let op = if self.session_expiry > 0 {
                self.durable_session = true;
                Some(SessionOp::Open {
                    client: self.client_id.clone(),
                    clean: self.connect.clean_session,
                    expiry_secs: self.session_expiry,
                })
            } else if grant.discarded_session || ingest.has_durable_session(&self.client_id) {
                Some(SessionOp::End {
                    client: self.client_id.clone(),
                })
            } else {
                None
            };
            if let Some(op) = op {
                // Discarding a stored session is durable before CONNACK says it is gone.
                let discards = matches!(
                    op,
                    SessionOp::End { .. } | SessionOp::Open { clean: true, .. }
                );
                let ack = discards.then(|| {
                    self.next_reading_seq += 1;
                    (self.ack_cursor.clone(), self.next_reading_seq)
                });
                let wanted = self.next_reading_seq;
                let failure = if ingest
                    .record_session(op, ack, &shared.metrics)
                    .await
                    .is_err()
                {
                    Some("storage stopped")
                } else if discards
                    && self.wait_durable(wanted, Duration::from_secs(30)).await < wanted
                {
                    // CONNACK would say the old session is gone while a crash could still
                    // bring it back: refuse instead, the client retries.
                    Some("storage did not record the end of the old session in time")
                } else {
                    None
                };
                if let Some(why) = failure {
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
                    return self
                        .refuse(writer, ConnectReturnCode::ServerUnavailable, why)
                        .await;
                }
            }
        }

        let mut connack = ConnAck::new(ConnectReturnCode::Success, grant.session_present);
        let mut server_keepalive = None;
        if v5
            && mqtt.max_keepalive != 0
            && (self.keepalive == 0 || self.keepalive > mqtt.max_keepalive)
        {
            self.keepalive = mqtt.max_keepalive;
            server_keepalive = Some(mqtt.max_keepalive);
        }
        if v5 {
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

    /// `None` when the client may connect, else the CONNACK code refusing it.
    async fn authenticate(&mut self) -> Option<ConnectReturnCode> {
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

    async fn refuse<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        code: ConnectReturnCode,
        why: &'static str,
    ) -> Option<SessionState> {
        let reason = match code {
            ConnectReturnCode::BadUserNamePassword => "bad_credentials",
            ConnectReturnCode::NotAuthorized => "not_authorized",
            ConnectReturnCode::ClientIdentifierNotValid => "client_id_invalid",
            ConnectReturnCode::TopicNameInvalid => "will_topic_invalid",
            _ => "connect_refused",
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

    /// Takes over what the previous connection left: resend in-flight messages with DUP.
    fn resume(&mut self, state: SessionState) {
        self.next_pkid = state.next_pkid;
        self.incoming_qos2 = state.incoming_qos2;
        self.backlog = state.pending;
        for (pkid, delivery, phase) in state.inflight {
            match phase {
                OutPhase::Published => {
                    self.send_publish(&delivery, pkid, true, false);
                }
                OutPhase::Released => self.send(&Packet::PubRel(PubRel::new(pkid))),
            }
            self.track_inflight(pkid, delivery, phase);
        }
    }

    async fn session<R, W>(&mut self, reader: &mut R, writer: &mut W, mut rbuf: BytesMut) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let keepalive =
            (self.keepalive > 0).then(|| Duration::from_millis(u64::from(self.keepalive) * 1500));
        let mut deadline = keepalive.map(|k| tokio::time::Instant::now() + k);
        // Packets that arrived with CONNECT.
        if let Err(end) = self.process(&mut rbuf).await {
            return end;
        }
        loop {
            if self.outbox.kicked() != Kick::None {
                return End::Kicked(self.outbox.kicked());
            }
            self.release_acks();
            self.pump();
            let reading = self.wbuf.len() < WRITE_HIGH_WATER;
            let holding = !self.held_acks.is_empty();
            let cursor = self.ack_cursor.clone();
            tokio::select! {
                r = writer.write(&self.wbuf), if !self.wbuf.is_empty() => match r {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => {
                        let _ = self.wbuf.split_to(n);
                        self.shared.metrics.bytes_sent.fetch_add(n as u64, Relaxed);
                        if self.wbuf.is_empty() {
                            let _ = writer.flush().await;
                        }
                    }
                },
                r = read_some(reader, &mut rbuf), if reading => match r {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => {
                        self.shared.metrics.bytes_received.fetch_add(n as u64, Relaxed);
                        if let (Some(k), Some(d)) = (keepalive, deadline.as_mut()) {
                            *d = tokio::time::Instant::now() + k;
                        }
                        if let Err(end) = self.process(&mut rbuf).await {
                            return end;
                        }
                    }
                },
                _ = self.outbox.notify.notified() => {}
                _ = cursor.notify.notified(), if holding => {}
                _ = sleep_until(deadline) => {
                    return End::Refused {
                        reason: DisconnectReasonCode::KeepAliveTimeout,
                        why: format!("no packet within 1.5 × keep-alive ({} s)", self.keepalive),
                    };
                }
            }
        }
    }

    /// Handles every complete packet in `rbuf`.
    async fn process(&mut self, rbuf: &mut BytesMut) -> Result<(), End> {
        loop {
            let packet = match self.codec.decode(rbuf) {
                Ok(Some(p)) => p,
                Ok(None) => return self.flush_batch().await,
                Err(e) => {
                    self.shared.metrics.refuse(e.reason());
                    return Err(End::Refused {
                        reason: e.disconnect_reason(),
                        why: e.to_string(),
                    });
                }
            };
            self.shared.metrics.packets_received[packet_type(&packet)].fetch_add(1, Relaxed);
            self.handle(packet).await?;
        }
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), End> {
        match packet {
            Packet::Publish(p) => self.on_publish(p).await?,
            Packet::PubAck(a) => {
                if let Some(i) = self.find_inflight(a.pkid, OutPhase::Published) {
                    self.untrack_inflight(i);
                }
            }
            Packet::PubRec(r) => match self.find_inflight(r.pkid, OutPhase::Published) {
                Some(i) if (r.reason as u8) >= 0x80 => {
                    self.untrack_inflight(i);
                }
                Some(i) => {
                    self.inflight[i].2 = OutPhase::Released;
                    self.send(&Packet::PubRel(PubRel::new(r.pkid)));
                }
                None => {
                    let mut rel = PubRel::new(r.pkid);
                    if !self.version.is_v3() {
                        rel.reason = PubRelReason::PacketIdentifierNotFound;
                    }
                    self.send(&Packet::PubRel(rel));
                }
            },
            Packet::PubComp(c) => {
                if let Some(i) = self.find_inflight(c.pkid, OutPhase::Released) {
                    self.untrack_inflight(i);
                }
            }
            Packet::PubRel(r) => {
                let known = self.incoming_qos2.remove(&r.pkid);
                let mut comp = PubComp::new(r.pkid);
                if known.is_none() && !self.version.is_v3() {
                    comp.reason = PubCompReason::PacketIdentifierNotFound;
                }
                if known == Some(true) && self.durable_session {
                    // The id may be reused once PUBCOMP is out: its release must be durable
                    // first, or a restart would take the next message for a resend.
                    let op = SessionOp::Released {
                        client: self.client_id.clone(),
                        pkid: r.pkid,
                    };
                    self.record_then(op, Packet::PubComp(comp)).await?;
                } else {
                    self.send(&Packet::PubComp(comp));
                }
            }
            Packet::Subscribe(s) => self.on_subscribe(s).await?,
            Packet::Unsubscribe(u) => {
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
                let mut ack = UnsubAck {
                    pkid: u.pkid,
                    reasons: Vec::new(),
                    properties: None,
                };
                ack.reasons = removed
                    .into_iter()
                    .map(|r| {
                        if r {
                            UnsubAckReason::Success
                        } else {
                            UnsubAckReason::NoSubscriptionExisted
                        }
                    })
                    .collect();
                self.record_all_then(ops, Packet::UnsubAck(ack)).await?;
            }
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(expiry) = d
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval)
                {
                    if self.session_expiry == 0 && expiry != 0 {
                        // §3.14.2.2.2: the session stays at 0 and ends with this connection.
                        self.shared
                            .metrics
                            .refuse("session_expiry_raised_from_zero");
                        return Err(End::Refused {
                            reason: DisconnectReasonCode::ProtocolError,
                            why: "session expiry set on DISCONNECT after 0 on CONNECT".into(),
                        });
                    }
                    let max = self.shared.config.mqtt.max_session_expiry_secs;
                    self.session_expiry = max.map_or(expiry, |max| expiry.min(max));
                }
                return Err(End::Graceful {
                    keep_will: d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
                });
            }
            other => {
                return Err(End::Refused {
                    reason: DisconnectReasonCode::ProtocolError,
                    why: format!("unexpected packet {other:?}"),
                });
            }
        }
        Ok(())
    }

    /// Hands the PUBLISHes gathered so far to the router.
    async fn flush_batch(&mut self) -> Result<(), End> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.router(Request::Publish(batch)).await
    }

    /// Sends a request, after the PUBLISHes that came before it.
    async fn router(&mut self, req: Request) -> Result<(), End> {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.send_to_router(Request::Publish(batch)).await?;
        }
        self.send_to_router(req).await
    }

    async fn send_to_router(&self, req: Request) -> Result<(), End> {
        self.shared
            .router
            .tx
            .send(req)
            .await
            .map_err(|_| router_gone())
    }

    async fn on_publish(&mut self, mut p: Publish) -> Result<(), End> {
        let arrived = Instant::now();
        let v5 = !self.version.is_v3();
        // Topic aliases (v5 §3.3.2.3.4).
        if let Some(alias) = p.properties.as_ref().and_then(|pr| pr.topic_alias) {
            if alias == 0 || alias > self.shared.config.mqtt.topic_alias_maximum {
                self.shared.metrics.refuse("topic_alias_invalid");
                return Err(End::Refused {
                    reason: DisconnectReasonCode::TopicAliasInvalid,
                    why: format!("topic alias {alias} out of range"),
                });
            }
            if p.topic.is_empty() {
                match self.alias_in.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        self.shared.metrics.refuse("topic_alias_unknown");
                        return Err(End::Refused {
                            reason: DisconnectReasonCode::ProtocolError,
                            why: format!("unknown topic alias {alias}"),
                        });
                    }
                }
            } else {
                self.alias_in.insert(alias, p.topic.clone());
            }
        }
        if !topic::valid_topic_name(&p.topic) {
            self.shared.metrics.refuse("topic_invalid");
            return Err(End::Refused {
                reason: DisconnectReasonCode::TopicNameInvalid,
                why: format!("invalid topic name {:?}", p.topic),
            });
        }
        self.shared.metrics.messages_received[p.qos as usize].fetch_add(1, Relaxed);

        if p.qos == QoS::ExactlyOnce {
            if self.incoming_qos2.contains_key(&p.pkid) {
                // A resend of a message already routed: acknowledge, do not route again.
                self.ack_after(&p, PubRecReason::Success, arrived, 0);
                return Ok(());
            }
            if self.incoming_qos2.len() >= self.shared.config.mqtt.receive_maximum as usize {
                self.shared.metrics.refuse("receive_maximum_exceeded");
                return Err(End::Refused {
                    reason: DisconnectReasonCode::ReceiveMaximumExceeded,
                    why: "more unacknowledged QoS 2 messages than Receive Maximum".into(),
                });
            }
        }

        let allowed = self.shared.acl.allowed(
            Access::Publish,
            self.username.as_deref(),
            &self.client_id,
            &p.topic,
        );
        if !allowed {
            self.shared.metrics.refuse("publish_not_authorized");
            warn!(client_id = %self.client_id, topic = %p.topic, "publish denied by ACL");
            if p.qos == QoS::ExactlyOnce && !v5 {
                // 3.x: acknowledge as usual (the client cannot be told), remember the id.
                self.incoming_qos2.insert(p.pkid, false);
            }
            self.ack_after(&p, PubRecReason::NotAuthorized, arrived, 0);
            return Ok(());
        }
        let mut reading = None;
        if let Some(protocol) = &self.shared.protocol {
            let from = crate::protocol::Sender {
                client_id: &self.client_id,
                username: self.username.as_deref(),
                authenticated: self.authenticated,
                peer: self.peer,
            };
            let verdict = protocol.inspect(from, &p.topic, &p.payload);
            if let crate::protocol::Verdict::Reading(r) = verdict {
                reading = Some(r);
            } else if let crate::protocol::Verdict::Refuse { code, .. } = verdict {
                if p.qos == QoS::ExactlyOnce && !v5 {
                    self.incoming_qos2.insert(p.pkid, false);
                }
                let reason = match code {
                    crate::protocol::RefuseCode::NotAuthorized => PubRecReason::NotAuthorized,
                    crate::protocol::RefuseCode::PayloadFormatInvalid => {
                        PubRecReason::PayloadFormatInvalid
                    }
                };
                self.ack_after(&p, reason, arrived, 0);
                return Ok(());
            }
        }
        let props = p.properties.take();
        if props.as_ref().and_then(|pr| pr.payload_format_indicator) == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            self.shared.metrics.refuse("payload_format_invalid");
            warn!(client_id = %self.client_id, topic = %p.topic, "payload is not the UTF-8 it claims");
            self.ack_after(&p, PubRecReason::PayloadFormatInvalid, arrived, 0);
            return Ok(());
        }
        let expires_at = props
            .as_ref()
            .and_then(|pr| pr.message_expiry_interval)
            .map(|s| arrived + Duration::from_secs(s.into()));
        let properties = props.map(|mut pr| {
            pr.topic_alias = None;
            pr.subscription_identifiers.clear();
            pr
        });
        let message = Arc::new(Message {
            topic: std::mem::take(&mut p.topic),
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            properties,
            publisher: Some(self.client_id.clone()),
            expires_at,
            recipient: None,
        });
        self.batch.push(message);
        let stored_qos2 = p.qos == QoS::ExactlyOnce && self.durable_session && reading.is_some();
        if p.qos == QoS::ExactlyOnce {
            self.incoming_qos2.insert(p.pkid, stored_qos2);
        }
        let mut wait_for = 0;
        if let (Some(r), Some(ingest)) = (reading, self.shared.ingest.clone()) {
            let durable_ack = p.qos != QoS::AtMostOnce
                && ingest.durability == crate::config::Durability::AckAfterCommit;
            if durable_ack {
                self.next_reading_seq += 1;
                wait_for = self.next_reading_seq;
            }
            let reading = crate::ingest::Reading {
                ingest_time_ms: crate::protocol::registry::now_ms(),
                config: r.config,
                sensor: r.sensor,
                value: r.value,
                severity: r.severity,
                qos: p.qos as u8,
                client_id: self.client_id.clone(),
                ack: durable_ack.then(|| (self.ack_cursor.clone(), wait_for)),
                qos2_pkid: stored_qos2.then_some(p.pkid),
            };
            if ingest.push(reading, &self.shared.metrics).await.is_err() {
                return Err(End::Refused {
                    reason: DisconnectReasonCode::ServerBusy,
                    why: "storage stopped".into(),
                });
            }
        }
        self.ack_after(&p, PubRecReason::Success, arrived, wait_for);
        Ok(())
    }

    /// Queues the acknowledgement of `p` until this connection's reading `seq` is durable
    /// (0: no reading to wait for). Acknowledgements leave in the order of their PUBLISHes.
    fn ack_after(&mut self, p: &Publish, reason: PubRecReason, arrived: Instant, seq: u64) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
        if seq == 0 && self.held_acks.is_empty() {
            return self.ack(p, reason, arrived);
        }
        self.held_acks.push_back(HeldAck {
            seq,
            ack: Held::Publish {
                pkid: p.pkid,
                qos: p.qos,
                reason,
            },
            arrived,
        });
        self.release_acks();
    }

    /// Records a change of this persistent session and sends `reply` once it is durable.
    async fn record_then(&mut self, op: SessionOp, reply: Packet) -> Result<(), End> {
        self.record_all_then(vec![op], reply).await
    }

    /// Records changes of this persistent session (none: `reply` goes out as usual) and sends
    /// `reply` once they are durable.
    async fn record_all_then(&mut self, ops: Vec<SessionOp>, reply: Packet) -> Result<(), End> {
        let Some(ingest) = self.shared.ingest.clone().filter(|_| !ops.is_empty()) else {
            self.send(&reply);
            return Ok(());
        };
        let wait = ingest.durability == crate::config::Durability::AckAfterCommit;
        let last = ops.len() - 1;
        for (i, op) in ops.into_iter().enumerate() {
            let ack = (wait && i == last).then(|| {
                self.next_reading_seq += 1;
                (self.ack_cursor.clone(), self.next_reading_seq)
            });
            if ingest
                .record_session(op, ack, &self.shared.metrics)
                .await
                .is_err()
            {
                return Err(End::Refused {
                    reason: DisconnectReasonCode::ServerBusy,
                    why: "storage stopped".into(),
                });
            }
        }
        self.held_acks.push_back(HeldAck {
            seq: if wait { self.next_reading_seq } else { 0 },
            ack: Held::Packet(Box::new(reply)),
            arrived: Instant::now(),
        });
        self.release_acks();
        Ok(())
    }

    /// Sends the held acknowledgements whose readings are now durable, in order.
    fn release_acks(&mut self) {
        let durable = self
            .ack_cursor
            .durable
            .load(std::sync::atomic::Ordering::Acquire);
        while let Some(h) = self.held_acks.front() {
            if h.seq > durable {
                break;
            }
            let h = self.held_acks.pop_front().expect("front exists");
            match h.ack {
                Held::Publish { pkid, qos, reason } => {
                    let p = Publish {
                        dup: false,
                        qos,
                        retain: false,
                        topic: String::new(),
                        pkid,
                        properties: None,
                        payload: bytes::Bytes::new(),
                    };
                    self.ack(&p, reason, h.arrived);
                }
                Held::Packet(packet) => self.send(&packet),
            }
        }
    }

    /// PUBACK or PUBREC for `p` with `reason` (v5 only; 3.x acknowledges plainly).
    fn ack(&mut self, p: &Publish, reason: PubRecReason, arrived: Instant) {
        let v5 = !self.version.is_v3();
        match p.qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => {
                let mut a = PubAck::new(p.pkid);
                if v5 {
                    a.reason = puback_reason(reason);
                }
                self.send(&Packet::PubAck(a));
            }
            QoS::ExactlyOnce => {
                let mut r = PubRec::new(p.pkid);
                if v5 {
                    r.reason = reason;
                }
                self.send(&Packet::PubRec(r));
            }
        }
        self.shared
            .metrics
            .publish_ack_latency
            .observe(arrived.elapsed());
    }

    async fn on_subscribe(&mut self, s: mqttbytes::v5::Subscribe) -> Result<(), End> {
        let v5 = !self.version.is_v3();
        let sub_id = s.properties.as_ref().and_then(|p| p.id);
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut accepted = Vec::new();
        for f in &s.filters {
            let shared_filter = topic::parse_shared(&f.path);
            let valid = shared_filter
                .as_ref()
                .is_some_and(|sf| topic::valid_topic_filter(sf.filter))
                && !(f.nolocal && shared_filter.as_ref().is_some_and(|sf| sf.group.is_some()));
            if !valid {
                self.shared.metrics.refuse("topic_filter_invalid");
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
                self.shared.metrics.refuse("subscribe_not_authorized");
                warn!(client_id = %self.client_id, filter = %f.path, "subscription denied by ACL");
                codes.push(if v5 {
                    SubscribeReasonCode::NotAuthorized
                } else {
                    SubscribeReasonCode::Unspecified
                });
                continue;
            }
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
        if !accepted.is_empty() {
            let (tx, rx) = oneshot::channel();
            self.router(Request::Subscribe {
                client_id: self.client_id.clone(),
                filters: accepted,
                reply: tx,
            })
            .await?;
            rx.await.map_err(|_| router_gone())?;
        }
        self.record_all_then(ops, Packet::SubAck(SubAck::new(s.pkid, codes)))
            .await
    }

    fn find_inflight(&self, pkid: u16, phase: OutPhase) -> Option<usize> {
        self.inflight
            .iter()
            .position(|(id, _, ph)| *id == pkid && *ph == phase)
    }

    /// Moves deliveries from the backlog and the outbox into the write buffer, as far as the
    /// in-flight window and the write buffer allow.
    fn pump(&mut self) {
        let now = Instant::now();
        while self.wbuf.len() < WRITE_HIGH_WATER {
            let room = self.window.saturating_sub(self.inflight.len());
            let delivery = match self.backlog.front() {
                Some(d) if d.qos != QoS::AtMostOnce && room == 0 => return,
                Some(_) => self.backlog.pop_front().expect("front exists"),
                None => {
                    if self.scratch.is_empty() {
                        let mut batch = std::mem::take(&mut self.scratch);
                        self.outbox.take(room, &mut batch);
                        if batch.is_empty() {
                            self.scratch = batch;
                            return;
                        }
                        batch.reverse();
                        self.scratch = batch;
                    }
                    self.scratch.pop().expect("non-empty")
                }
            };
            if delivery.message.expired(now) {
                self.shared.metrics.messages_expired.fetch_add(1, Relaxed);
                continue;
            }
            if !self.read_denied.is_empty() && self.read_denied.denies(&delivery.message.topic) {
                self.shared.metrics.refuse("delivery_not_authorized");
                debug!(client_id = %self.client_id, topic = %delivery.message.topic, "delivery denied by ACL");
                continue;
            }
            let pkid = if delivery.qos == QoS::AtMostOnce {
                0
            } else {
                self.allocate_pkid()
            };
            if !self.send_publish(&delivery, pkid, false, true) {
                continue;
            }
            self.shared.metrics.messages_sent[delivery.qos as usize].fetch_add(1, Relaxed);
            if delivery.qos != QoS::AtMostOnce {
                self.track_inflight(pkid, delivery, OutPhase::Published);
            }
        }
    }

    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            let id = self.next_pkid;
            if id != 0 && self.pkids_in_use[usize::from(id >> 6)] & (1 << (id & 63)) == 0 {
                return id;
            }
        }
    }

    fn track_inflight(&mut self, pkid: u16, delivery: Delivery, phase: OutPhase) {
        self.pkids_in_use[usize::from(pkid >> 6)] |= 1 << (pkid & 63);
        self.inflight.push_back((pkid, delivery, phase));
    }

    fn untrack_inflight(&mut self, index: usize) {
        if let Some((pkid, _, _)) = self.inflight.remove(index) {
            self.pkids_in_use[usize::from(pkid >> 6)] &= !(1 << (pkid & 63));
        }
    }

    /// Writes the PUBLISH for a delivery; `false` when it exceeds the client's maximum packet
    /// size (v5 §3.1.2.11.4: such a message is discarded, never sent).
    fn send_publish(&mut self, d: &Delivery, pkid: u16, dup: bool, use_alias: bool) -> bool {
        let m = &d.message;
        let v5 = !self.version.is_v3();
        let mut topic = m.topic.as_str();
        let mut topic_alias = None;
        if v5 && use_alias && self.alias_out_max > 0 {
            if let Some(a) = self.alias_out.get(&m.topic) {
                topic_alias = Some(*a);
                topic = "";
            } else if self.alias_out.len() < self.alias_out_max as usize {
                let a = self.alias_out.len() as u16 + 1;
                self.alias_out.insert(m.topic.clone(), a);
                topic_alias = Some(a);
            }
        }
        let publish = OutgoingPublish {
            topic,
            payload: &m.payload,
            qos: d.qos,
            retain: d.retain,
            dup,
            pkid,
            properties: m.properties.as_ref(),
            message_expiry: m.expires_at.map(|at| {
                let left = at.saturating_duration_since(Instant::now());
                left.as_secs().max(1) as u32
            }),
            topic_alias,
            subscription_ids: &d.subscription_ids,
        };
        if publish.frame_len(self.version) > self.max_outgoing {
            self.shared.metrics.messages_dropped.fetch_add(1, Relaxed);
            self.shared
                .metrics
                .refuse("exceeds_client_maximum_packet_size");
            debug!(client_id = %self.client_id, topic = %m.topic, "message larger than the client accepts, discarded");
            return false;
        }
        self.codec.encode_publish(&publish, &mut self.wbuf);
        self.shared.metrics.packets_sent[3].fetch_add(1, Relaxed);
        true
    }

    fn send(&mut self, packet: &Packet) {
        match self.codec.encode(packet, &mut self.wbuf) {
            Ok(()) => {
                self.shared.metrics.packets_sent[packet_type(packet)].fetch_add(1, Relaxed);
            }
            Err(e) => warn!(client_id = %self.client_id, error = %e, "cannot encode packet"),
        }
    }

    async fn flush<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) -> std::io::Result<()> {
        let n = self.wbuf.len();
        writer.write_all(&self.wbuf).await?;
        writer.flush().await?;
        self.wbuf.clear();
        self.shared.metrics.bytes_sent.fetch_add(n as u64, Relaxed);
        Ok(())
    }

    /// Waits (at most `limit`) until this connection's sequence `wanted` is durable; returns
    /// how far it is.
    async fn wait_durable(&self, wanted: u64, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.ack_cursor.notify.notified();
            let durable = self
                .ack_cursor
                .durable
                .load(std::sync::atomic::Ordering::Acquire);
            if durable >= wanted || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return durable;
            }
        }
    }

    /// Says goodbye where the protocol allows, and hands the session back to the router.
    async fn finish<W: AsyncWrite + Unpin>(mut self, end: End, writer: &mut W) {
        // PUBLISHes read before the end (a DISCONNECT, an error) were acknowledged in `wbuf`:
        // route them before anything is written.
        let _ = self.flush_batch().await;
        if let Some(protocol) = &self.shared.protocol {
            protocol.client_disconnected(&self.client_id);
        }
        let publish_will = match &end {
            End::Graceful { keep_will } => *keep_will,
            _ => true,
        };
        let disconnect = match &end {
            End::Graceful { .. } => {
                info!(client_id = %self.client_id, "client disconnected");
                None
            }
            End::Closed => {
                info!(client_id = %self.client_id, "connection closed by peer");
                None
            }
            End::Refused { reason, why } => {
                warn!(client_id = %self.client_id, peer = %self.peer, reason = ?reason, "closing connection: {why}");
                Some(*reason)
            }
            End::Kicked(Kick::SessionTakenOver) => Some(DisconnectReasonCode::SessionTakenOver),
            End::Kicked(_) => Some(DisconnectReasonCode::ServerShuttingDown),
        };
        if let Some(reason) = disconnect
            && !self.version.is_v3()
        {
            let mut d = Disconnect::new();
            d.reason_code = reason;
            self.send(&Packet::Disconnect(d));
        }
        if !matches!(end, End::Closed) && !self.wbuf.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.flush(writer)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;

        // A QoS 2 packet id handed to the next connection means "already stored": resends of it
        // are acknowledged without storing. So wait (bounded) for this connection's readings to
        // be durable; any still pending after that are forgotten, so their resends are stored.
        let durable = self
            .wait_durable(self.next_reading_seq, Duration::from_secs(10))
            .await;
        for h in &self.held_acks {
            if let Held::Publish {
                pkid,
                qos: QoS::ExactlyOnce,
                ..
            } = h.ack
                && h.seq > durable
            {
                self.incoming_qos2.remove(&pkid);
            }
        }
        if self.durable_session
            && let Some(ingest) = &self.shared.ingest
        {
            let op = SessionOp::Closed {
                client: self.client_id.clone(),
                at_ms: crate::protocol::registry::now_ms(),
                expiry_secs: self.session_expiry,
            };
            let _ = ingest.record_session(op, None, &self.shared.metrics).await;
        }

        let mut pending: VecDeque<Delivery> = self.scratch.drain(..).rev().collect();
        pending.extend(self.backlog.drain(..));
        let state = SessionState {
            inflight: self.inflight.drain(..).collect(),
            pending,
            incoming_qos2: std::mem::take(&mut self.incoming_qos2),
            next_pkid: self.next_pkid,
        };
        let _ = self
            .shared
            .router
            .tx
            .send(Request::Disconnected {
                client_id: self.client_id.clone(),
                connection: self.connection,
                state,
                will: if publish_will { self.will.take() } else { None },
                session_expiry: self.session_expiry,
            })
            .await;
    }
}

fn router_gone() -> End {
    End::Refused {
        reason: DisconnectReasonCode::ServerShuttingDown,
        why: "router stopped".into(),
    }
}

/// Reads into `buf`, first making room for a large read so that a busy client costs few
/// system calls.
async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(64 * 1024);
    }
    reader.read_buf(buf).await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn puback_reason(r: PubRecReason) -> PubAckReason {
    match r {
        PubRecReason::Success => PubAckReason::Success,
        PubRecReason::NoMatchingSubscribers => PubAckReason::NoMatchingSubscribers,
        PubRecReason::NotAuthorized => PubAckReason::NotAuthorized,
        PubRecReason::TopicNameInvalid => PubAckReason::TopicNameInvalid,
        PubRecReason::PacketIdentifierInUse => PubAckReason::PacketIdentifierInUse,
        PubRecReason::QuotaExceeded => PubAckReason::QuotaExceeded,
        PubRecReason::PayloadFormatInvalid => PubAckReason::PayloadFormatInvalid,
        PubRecReason::ImplementationSpecificError => PubAckReason::ImplementationSpecificError,
        PubRecReason::UnspecifiedError => PubAckReason::UnspecifiedError,
    }
}

/// The control packet type number, for per-type counters.
pub fn packet_type(p: &Packet) -> usize {
    match p {
        Packet::Connect(_) => 1,
        Packet::ConnAck(_) => 2,
        Packet::Publish(_) => 3,
        Packet::PubAck(_) => 4,
        Packet::PubRec(_) => 5,
        Packet::PubRel(_) => 6,
        Packet::PubComp(_) => 7,
        Packet::Subscribe(_) => 8,
        Packet::SubAck(_) => 9,
        Packet::Unsubscribe(_) => 10,
        Packet::UnsubAck(_) => 11,
        Packet::PingReq => 12,
        Packet::PingResp => 13,
        Packet::Disconnect(_) => 14,
    }
}
