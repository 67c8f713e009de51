//! One client connection, from its first byte to its goodbye: the CONNECT read here, admitted
//! in [`admission`], then the session loop that reads packets ([`incoming`] handles what the
//! client sends), talks to the router, and writes acknowledgements (held in an [`AckQueue`]
//! until what they answer is durable) and deliveries (the [`Outgoing`] QoS state).
//!
//! The connection task owns its session state (codec, QoS state, held acknowledgements). What
//! it shares with other connections: the router's queue, its own outbox (the router fills it),
//! the ingest queue, and through the protocol the records of the nodes it speaks for (see
//! ARCHITECTURE.md, "Shared state on the publish path").

mod admission;
mod incoming;
mod reads;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v5::{
    Connect, Disconnect, DisconnectReasonCode, Packet, PubComp, PubCompReason, PubRel, PubRelReason,
};
use samos_mqtt::codec::{Codec, CodecError, OutgoingPublish, ProtocolVersion};
use samos_mqtt::reason;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::Shared;
use super::ack_queue::AckQueue;
use super::aliases::IncomingAliases;
use super::outgoing::{Outgoing, PubRecOutcome};
use crate::auth::ReadDenied;
use crate::broker::durable::SessionOp;
use crate::broker::{Delivery, Kick, Message, OutPhase, Outbox, Request, SessionState, Will};
use crate::ingest::StorageStopped;
use crate::refusal::Refusal;
use reads::{READ_MIN, read_some};

/// Stop reading from a client whose unsent output exceeds this (it is not reading ours).
const WRITE_HIGH_WATER: usize = 1 << 20;

/// The write buffer's first allocation. It is given back whenever everything in it has been
/// written, so an idle connection holds none.
const WRITE_INITIAL: usize = 4 * 1024;

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

/// Runs one connection to completion, over the two halves of its stream
/// (`tokio::io::split`). Halves, not the stream: an async fn keeps its arguments for as long
/// as it runs, and a TLS stream is 2.7 KiB that every waiting connection would carry twice.
pub async fn run<R, W>(
    mut reader: R,
    mut writer: W,
    peer: SocketAddr,
    cert_identity: Option<String>,
    listener: Arc<ListenerContext>,
    shared: Arc<Shared>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
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
            shared.metrics.refuse(Refusal::ConnectTimeout);
            info!(%peer, "no CONNECT within {}s, closing", timeout.as_secs());
            return;
        }
        Ok(Ok(None)) => {
            debug!(%peer, "closed before CONNECT");
            return;
        }
        Ok(Err(e)) => {
            shared.metrics.refuse(Refusal::from(&e));
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
    // Admission, packet handling and the goodbye run in boxed futures of their own: the task
    // every connected node holds while it waits keeps only the session's waiting state, not
    // the largest of them (`link/tests.rs` bounds its size).
    let Some(grant_state) = Box::pin(conn.admit(&mut writer)).await else {
        let _ = writer.shutdown().await;
        linger(&mut reader).await;
        return;
    };
    shared.metrics.connections_total.fetch_add(1, Relaxed);
    let open = shared.metrics.connections_current.fetch_add(1, Relaxed) + 1;
    shared.metrics.connections_peak.fetch_max(open, Relaxed);
    conn.resume(grant_state);

    let end = conn.session(&mut reader, &mut writer, rbuf).await;
    shared.metrics.connections_current.fetch_sub(1, Relaxed);
    let server_closed = !matches!(end, End::Graceful { .. } | End::Closed);
    Box::pin(conn.finish(end, &mut writer)).await;
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
    // On the heap: a buffer inside the future would make every connection's task larger.
    let mut sink = vec![0u8; 4096];
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
    /// The CONNECT packet, for admission (boxed: every waiting connection carries this struct).
    connect: Box<Connect>,
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
    /// Bytes not yet written to the client; no allocation while empty (`WRITE_INITIAL`).
    wbuf: BytesMut,
    /// Outgoing QoS state: messages in flight, packet ids, backlog, aliases given.
    out: Outgoing,
    /// Incoming QoS 2 packet ids not yet released, each with whether it is in the WAL.
    incoming_qos2: HashMap<u16, bool>,
    /// This connection's session is persistent and recorded in the WAL.
    durable_session: bool,
    alias_in: IncomingAliases,
    max_outgoing: usize,
    will: Option<Will>,
    /// PUBLISHes decoded from the current read, handed to the router together. Their
    /// acknowledgements wait in `wbuf`, which is not written before the batch is handed over.
    batch: Vec<Arc<Message>>,
    /// Acknowledgements owed, in order, each released once what it answers is durable.
    acks: AckQueue,
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
            wbuf: BytesMut::new(),
            out: Outgoing::new(
                receive_max.min(mqtt.max_inflight_messages as usize),
                alias_out_max,
            ),
            incoming_qos2: HashMap::new(),
            durable_session: false,
            alias_in: IncomingAliases::new(mqtt.topic_alias_maximum),
            max_outgoing,
            will: None,
            batch: Vec::new(),
            acks: AckQueue::default(),
            connect: Box::new(connect),
            listener,
            shared,
        }
    }

    /// Takes over what the previous connection left: resend in-flight messages with DUP.
    fn resume(&mut self, mut state: SessionState) {
        self.incoming_qos2 = std::mem::take(&mut state.incoming_qos2);
        for (pkid, delivery, phase) in self.out.resume(&mut state) {
            match phase {
                OutPhase::Published => {
                    self.send_publish(&delivery, pkid, true, false);
                }
                OutPhase::Released => self.send(&Packet::PubRel(PubRel::new(pkid))),
            }
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
        let mut read_want = READ_MIN;
        // Packets that arrived with CONNECT.
        if let Err(end) = Box::pin(self.process(&mut rbuf)).await {
            return end;
        }
        loop {
            if self.outbox.kicked() != Kick::None {
                return End::Kicked(self.outbox.kicked());
            }
            self.release_acks();
            self.pump();
            let reading = self.wbuf.len() < WRITE_HIGH_WATER;
            let holding = self.acks.is_waiting();
            let cursor = self.acks.cursor().clone();
            tokio::select! {
                r = writer.write(&self.wbuf), if !self.wbuf.is_empty() => match r {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => {
                        let _ = self.wbuf.split_to(n);
                        self.shared.metrics.bytes_sent.fetch_add(n as u64, Relaxed);
                        if self.wbuf.is_empty() {
                            self.wbuf = BytesMut::new();
                            let _ = writer.flush().await;
                        }
                    }
                },
                r = read_some(reader, &mut rbuf, &mut read_want), if reading => match r {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => {
                        self.shared.metrics.bytes_received.fetch_add(n as u64, Relaxed);
                        let buffered = rbuf.len();
                        if let Err(end) = Box::pin(self.process(&mut rbuf)).await {
                            return end;
                        }
                        // Keep-alive counts whole control packets (§3.1.2.10), not bytes: a
                        // client trickling a packet byte by byte is closed all the same.
                        if rbuf.len() < buffered
                            && let (Some(k), Some(d)) = (keepalive, deadline.as_mut())
                        {
                            *d = tokio::time::Instant::now() + k;
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
                    self.shared.metrics.refuse(Refusal::from(&e));
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
            Packet::PubAck(a) => self.out.puback(a.pkid),
            Packet::PubRec(r) => {
                match self.out.pubrec(r.pkid, reason::is_failure(r.reason as u8)) {
                    PubRecOutcome::Refused => {}
                    PubRecOutcome::Release => self.send(&Packet::PubRel(PubRel::new(r.pkid))),
                    PubRecOutcome::Unknown => {
                        let mut rel = PubRel::new(r.pkid);
                        if !self.version.is_v3() {
                            rel.reason = PubRelReason::PacketIdentifierNotFound;
                        }
                        self.send(&Packet::PubRel(rel));
                    }
                }
            }
            Packet::PubComp(c) => self.out.pubcomp(c.pkid),
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
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await?,
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
                            .refuse(Refusal::SessionExpiryRaisedFromZero);
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
        self.send_to_router(Request::Publish(batch)).await
    }

    /// Sends a request, after the PUBLISHes that came before it.
    async fn router(&mut self, req: Request) -> Result<(), End> {
        self.flush_batch().await?;
        self.send_to_router(req).await
    }

    /// Whether routing a PUBLISH can deliver or retain anything. With no subscription
    /// anywhere and nothing to retain it cannot, and the message is not handed to the router
    /// (a node publishing one reading at a time would wake it once a reading). The router
    /// counts a subscription before its SUBACK leaves, so a message that arrives after a
    /// SUBACK is always routed.
    fn routable(&self, retain: bool) -> bool {
        retain || self.shared.metrics.subscriptions.load(Relaxed) > 0
    }

    async fn send_to_router(&self, req: Request) -> Result<(), End> {
        self.shared
            .router
            .tx
            .send(req)
            .await
            .map_err(|_| router_gone())
    }

    /// Moves deliveries from the backlog and the outbox into the write buffer, as far as the
    /// in-flight window and the write buffer allow.
    fn pump(&mut self) {
        let now = Instant::now();
        while self.wbuf.len() < WRITE_HIGH_WATER {
            let Some(delivery) = self.out.next(&self.outbox) else {
                return;
            };
            if delivery.message.expired(now) {
                self.shared.metrics.messages_expired.fetch_add(1, Relaxed);
                continue;
            }
            if !self.read_denied.is_empty() && self.read_denied.denies(&delivery.message.topic) {
                self.shared.metrics.refuse(Refusal::DeliveryNotAuthorized);
                debug!(client_id = %self.client_id, topic = %delivery.message.topic, "delivery denied by ACL");
                continue;
            }
            let pkid = if delivery.qos == QoS::AtMostOnce {
                0
            } else {
                self.out.allocate()
            };
            if !self.send_publish(&delivery, pkid, false, true) {
                continue;
            }
            self.shared.metrics.messages_sent[delivery.qos as usize].fetch_add(1, Relaxed);
            if delivery.qos != QoS::AtMostOnce {
                self.out.track(pkid, delivery);
            }
        }
    }

    /// Writes the PUBLISH for a delivery; `false` when it exceeds the client's maximum packet
    /// size (v5 §3.1.2.11.4: such a message is discarded, never sent).
    fn send_publish(&mut self, d: &Delivery, pkid: u16, dup: bool, use_alias: bool) -> bool {
        let m = &d.message;
        let v5 = !self.version.is_v3();
        let alias = (v5 && use_alias)
            .then(|| self.out.aliases.lookup(&m.topic))
            .flatten();
        let topic = match alias {
            Some((_, false)) => "",
            _ => m.topic.as_str(),
        };
        let topic_alias = alias.map(|(a, _)| a);
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
                .refuse(Refusal::ExceedsClientMaximumPacketSize);
            debug!(client_id = %self.client_id, topic = %m.topic, "message larger than the client accepts, discarded");
            return false;
        }
        let codec = self.codec;
        codec.encode_publish(&publish, self.out_buf());
        if let Some((a, true)) = alias {
            self.out.aliases.define(&m.topic, a);
        }
        self.shared.metrics.packets_sent[3].fetch_add(1, Relaxed);
        true
    }

    /// The write buffer, allocated if it is not.
    fn out_buf(&mut self) -> &mut BytesMut {
        if self.wbuf.capacity() == 0 {
            self.wbuf.reserve(WRITE_INITIAL);
        }
        &mut self.wbuf
    }

    fn send(&mut self, packet: &Packet) {
        let codec = self.codec;
        match codec.encode(packet, self.out_buf()) {
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
            End::Kicked(Kick::Administrative) => {
                info!(client_id = %self.client_id, "disconnected by an admin");
                Some(DisconnectReasonCode::AdministrativeAction)
            }
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
            .acks
            .wait_durable(self.acks.issued(), Duration::from_secs(10))
            .await;
        let undurable: Vec<u16> = self.acks.undurable_qos2(durable).collect();
        for pkid in undurable {
            self.incoming_qos2.remove(&pkid);
        }
        if self.durable_session
            && let Some(ingest) = &self.shared.ingest
        {
            let op = SessionOp::Closed {
                client: self.client_id.clone(),
                at_ms: crate::clock::now_ms(),
                expiry_secs: self.session_expiry,
            };
            let _ = ingest.record_session(op, None, &self.shared.metrics).await;
        }

        let mut state = SessionState {
            incoming_qos2: std::mem::take(&mut self.incoming_qos2),
            ..SessionState::default()
        };
        self.out.into_state(&mut state);
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn storage_stopped(_: StorageStopped) -> End {
    End::Refused {
        reason: DisconnectReasonCode::ServerBusy,
        why: "storage stopped".into(),
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
