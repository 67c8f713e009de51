//! The router task: sessions, subscriptions, retained messages, wills and `$SYS`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mqttbytes::QoS;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::subscriptions::SubscriptionTable;
use super::{
    ConnectGrant, Delivery, Kick, Message, Outbox, Request, RequestSender, SessionState,
    SubOptions, Timer, Will,
};
use crate::broker::durable::DurableSession;
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use samos_mqtt::topic;

/// Router limits, from the `[mqtt]` configuration.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub max_queued_messages: usize,
    pub queue_qos0_offline: bool,
    pub max_session_expiry: Option<u32>,
    pub sys_interval: Option<Duration>,
    pub queue_capacity: usize,
    pub version: String,
    /// `$SYS/broker/instance_id`.
    pub instance_id: String,
    /// Most filters one session may hold (0: no limit).
    pub max_subscriptions: usize,
}

struct PendingConnect {
    clean_start: bool,
    session_expiry: u32,
    outbox: Arc<Outbox>,
    reply: oneshot::Sender<ConnectGrant>,
}

#[derive(Default)]
struct Session {
    subscriptions: HashMap<String, SubOptions>,
    online: Option<(u64, Arc<Outbox>)>,
    offline: SessionState,
    /// Set from the router's counter at every connect and disconnect, so stale timers do
    /// nothing — also timers of an earlier session of the same client id, which a clean start
    /// replaced (a per-session count would start again and could match them).
    epoch: u64,
    delayed_will: Option<Will>,
    pending_connect: Option<PendingConnect>,
}

#[cfg(test)]
impl RouterConfig {
    /// Small limits for unit tests: 100 queued messages, a queue of 16 requests.
    pub(crate) fn for_tests() -> RouterConfig {
        RouterConfig {
            max_queued_messages: 100,
            queue_qos0_offline: false,
            max_session_expiry: None,
            sys_interval: None,
            queue_capacity: 16,
            version: "test".into(),
            instance_id: "test".into(),
            max_subscriptions: 0,
        }
    }
}

/// A cheap handle for sending requests to the router.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    pub tx: RequestSender,
}

/// Owns all routing state; runs as one task.
pub struct Router {
    rx: mpsc::Receiver<Request>,
    tx: RequestSender,
    config: RouterConfig,
    metrics: Arc<Metrics>,
    sessions: HashMap<Arc<str>, Session>,
    subscriptions: SubscriptionTable,
    retained: HashMap<String, Arc<Message>>,
    next_connection: u64,
    /// The last epoch handed to a session (see `Session::epoch`).
    epoch: u64,
    drop_warned_at: Option<Instant>,
    /// Deliveries to online clients gathered while routing a batch, pushed per client at once.
    staged: Vec<(Arc<str>, Arc<Outbox>, Vec<Delivery>)>,
    match_buf: Vec<super::subscriptions::Match>,
}

impl Router {
    pub fn new(config: RouterConfig, metrics: Arc<Metrics>) -> (Router, RouterHandle) {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let router = Router {
            rx,
            tx: tx.clone(),
            config,
            metrics,
            sessions: HashMap::new(),
            subscriptions: SubscriptionTable::default(),
            retained: HashMap::new(),
            next_connection: 1,
            epoch: 1,
            drop_warned_at: None,
            staged: Vec::new(),
            match_buf: Vec::new(),
        };
        (router, RouterHandle { tx })
    }

    /// Recreates persistent sessions recovered from the WAL, offline: their subscriptions
    /// receive messages again, their QoS 2 packet ids are known, and they expire as usual.
    pub fn restore(&mut self, sessions: Vec<(Arc<str>, DurableSession)>, now_ms: i64) {
        for (client_id, durable) in sessions {
            let session = Session {
                offline: SessionState {
                    incoming_qos2: durable.qos2_received.iter().map(|p| (*p, true)).collect(),
                    ..SessionState::default()
                },
                epoch: 1,
                ..Session::default()
            };
            self.sessions.insert(client_id.clone(), session);
            self.metrics.sessions.fetch_add(1, Relaxed);
            let filters = durable
                .subscriptions
                .into_iter()
                .map(|(filter, s)| {
                    let options = SubOptions {
                        qos: match s.qos {
                            0 => QoS::AtMostOnce,
                            1 => QoS::AtLeastOnce,
                            _ => QoS::ExactlyOnce,
                        },
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling: s.retain_handling,
                        subscription_id: s.subscription_id.map(|id| id as usize),
                    };
                    (filter, options)
                })
                .collect();
            self.subscribe(&client_id, filters);
            let expiry = self
                .config
                .max_session_expiry
                .map_or(durable.expiry_secs, |max| durable.expiry_secs.min(max));
            if expiry != u32::MAX {
                let gone_ms = now_ms.saturating_sub(durable.closed_at_ms.unwrap_or(now_ms));
                let left = (u64::from(expiry) * 1000).saturating_sub(gone_ms.max(0) as u64);
                self.schedule(
                    Duration::from_millis(left),
                    Timer::Expiry {
                        client_id,
                        epoch: 1,
                    },
                );
            }
        }
    }

    /// Runs until every handle is dropped.
    pub async fn run(mut self) {
        let mut sys = self
            .config
            .sys_interval
            .map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
        self.publish_sys_static();
        loop {
            tokio::select! {
                req = self.rx.recv() => {
                    let Some(req) = req else { break };
                    self.handle(req);
                    // Drain what is already queued before polling timers again.
                    for _ in 0..256 {
                        match self.rx.try_recv() {
                            Ok(req) => self.handle(req),
                            Err(_) => break,
                        }
                    }
                    self.metrics.router_queue_depth.store(self.rx.len() as u64, Relaxed);
                }
                _ = async { sys.as_mut().expect("guarded").tick().await }, if sys.is_some() => {
                    self.publish_sys();
                }
            }
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Publish(batch) => {
                for m in batch {
                    self.route(m);
                }
                self.flush_staged();
            }
            Request::Connect {
                client_id,
                clean_start,
                session_expiry,
                outbox,
                reply,
            } => self.connect(
                client_id,
                PendingConnect {
                    clean_start,
                    session_expiry,
                    outbox,
                    reply,
                },
            ),
            Request::Subscribe {
                client_id,
                filters,
                reply,
            } => {
                let stored = self.subscribe(&client_id, filters);
                let _ = reply.send(stored);
            }
            Request::Unsubscribe {
                client_id,
                filters,
                reply,
            } => {
                let result = self.unsubscribe(&client_id, filters);
                let _ = reply.send(result);
            }
            Request::Disconnected {
                client_id,
                connection,
                state,
                will,
                session_expiry,
            } => self.disconnected(client_id, connection, state, will, session_expiry),
            Request::Timer(t) => self.timer(t),
            Request::Kick { client_id, reply } => {
                let online = self
                    .sessions
                    .get(&client_id)
                    .and_then(|s| s.online.as_ref());
                if let Some((_, outbox)) = online {
                    outbox.kick(Kick::Administrative);
                }
                let _ = reply.send(online.is_some());
            }
        }
    }

    fn connect(&mut self, client_id: Arc<str>, pending: PendingConnect) {
        if let Some(session) = self.sessions.get_mut(&client_id)
            && let Some((_, old)) = &session.online
        {
            info!(client_id = %client_id, "session taken over by a new connection");
            old.kick(Kick::SessionTakenOver);
            // A still older pending connect loses: dropping its reply refuses it.
            session.pending_connect = Some(pending);
            return;
        }
        self.complete_connect(client_id, pending);
    }

    fn complete_connect(&mut self, client_id: Arc<str>, p: PendingConnect) {
        let mut session_present = false;
        let mut discarded_session = false;
        if let Some(mut old) = self.sessions.remove(&client_id) {
            if p.clean_start {
                discarded_session = true;
                // The old session ends now: a will still waiting for its delay goes out.
                if let Some(will) = old.delayed_will.take() {
                    self.publish(will.message);
                }
                self.drop_subscriptions(&client_id, &old);
            } else {
                session_present = true;
                old.delayed_will = None;
                self.sessions.insert(client_id.clone(), old);
            }
        }
        let connection = self.next_connection;
        self.next_connection += 1;
        let is_new = !self.sessions.contains_key(&client_id);
        let session = self.sessions.entry(client_id.clone()).or_default();
        if is_new {
            self.metrics.sessions.fetch_add(1, Relaxed);
        }
        self.epoch += 1;
        session.epoch = self.epoch;
        let state = std::mem::take(&mut session.offline);
        self.metrics
            .queued_messages
            .fetch_sub(state.pending.len() as u64, Relaxed);
        session.online = Some((connection, p.outbox));
        let grant = ConnectGrant {
            session_present,
            discarded_session,
            state,
            connection,
        };
        if let Err(grant) = p.reply.send(grant) {
            // The connection went away while waiting: keep its state for the next one.
            debug!(client_id = %client_id, "connection closed before its CONNACK");
            self.disconnected(client_id, connection, grant.state, None, p.session_expiry);
        }
    }

    fn drop_subscriptions(&mut self, client_id: &str, session: &Session) {
        for filter in session.subscriptions.keys() {
            if self.subscriptions.remove(client_id, filter) {
                self.metrics.subscriptions.fetch_sub(1, Relaxed);
            }
        }
        self.metrics
            .queued_messages
            .fetch_sub(session.offline.pending.len() as u64, Relaxed);
        self.metrics.sessions.fetch_sub(1, Relaxed);
    }

    fn disconnected(
        &mut self,
        client_id: Arc<str>,
        connection: u64,
        mut state: SessionState,
        will: Option<Will>,
        session_expiry: u32,
    ) {
        let Some(session) = self.sessions.get_mut(&client_id) else {
            return;
        };
        match &session.online {
            Some((c, outbox)) if *c == connection => {
                state.pending.extend(outbox.drain());
            }
            _ => {
                // Not the current connection (its grant was never delivered); nothing to keep.
                if let Some(will) = will {
                    self.publish(will.message);
                }
                return;
            }
        }
        session.online = None;
        self.epoch += 1;
        session.epoch = self.epoch;
        let epoch = session.epoch;
        self.metrics
            .queued_messages
            .fetch_add(state.pending.len() as u64, Relaxed);
        session.offline = state;
        let expiry = self
            .config
            .max_session_expiry
            .map_or(session_expiry, |max| session_expiry.min(max));

        if let Some(will) = will {
            if will.delay_secs == 0 || expiry == 0 {
                self.publish(will.message);
            } else {
                let delay = will.delay_secs.min(expiry);
                session.delayed_will = Some(will);
                self.schedule(
                    Duration::from_secs(delay.into()),
                    Timer::Will {
                        client_id: client_id.clone(),
                        epoch,
                    },
                );
            }
        }

        let session = self.sessions.get_mut(&client_id).expect("present above");
        // A connection that took over waits for this one to end; the session it finds is what
        // this end leaves behind, so an expiry of 0 ends the session first (MQTT 5 §3.1.2.11.2:
        // a client that reconnects at once after DISCONNECT with expiry 0 has no session).
        let pending = session.pending_connect.take();
        if expiry == 0 {
            let session = self.remove_session(&client_id).expect("present above");
            self.drop_subscriptions(&client_id, &session);
        } else if pending.is_none() && expiry != u32::MAX {
            self.schedule(
                Duration::from_secs(expiry.into()),
                Timer::Expiry {
                    client_id: client_id.clone(),
                    epoch,
                },
            );
        }
        if let Some(pending) = pending {
            self.complete_connect(client_id, pending);
        }
    }

    /// Removes a session that ends. A crowd of connections leaves the table sized for its
    /// peak (about 300 bytes a slot, 10 MiB after 20,000), so it shrinks once three quarters
    /// of it are empty; growing back costs one rehash per doubling, as before.
    fn remove_session(&mut self, client_id: &str) -> Option<Session> {
        let session = self.sessions.remove(client_id);
        if self.sessions.capacity() > 1024 && self.sessions.len() * 4 < self.sessions.capacity() {
            self.sessions.shrink_to(self.sessions.len() * 2);
        }
        session
    }

    fn schedule(&self, after: Duration, timer: Timer) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Request::Timer(timer)).await;
        });
    }

    fn timer(&mut self, timer: Timer) {
        match timer {
            Timer::Will { client_id, epoch } => {
                let will = self
                    .sessions
                    .get_mut(&client_id)
                    .filter(|s| s.epoch == epoch)
                    .and_then(|s| s.delayed_will.take());
                if let Some(will) = will {
                    debug!(client_id = %client_id, "publishing delayed will");
                    self.publish(will.message);
                }
            }
            Timer::Expiry { client_id, epoch } => {
                let expired = self
                    .sessions
                    .get(&client_id)
                    .is_some_and(|s| s.epoch == epoch && s.online.is_none());
                if expired {
                    let mut session = self.remove_session(&client_id).expect("checked");
                    debug!(client_id = %client_id, "session expired");
                    if let Some(will) = session.delayed_will.take() {
                        self.publish(will.message);
                    }
                    self.drop_subscriptions(&client_id, &session);
                }
            }
        }
    }

    /// Routes one message and delivers it at once (wills, `$SYS`, retained replays).
    fn publish(&mut self, message: Arc<Message>) {
        self.route(message);
        self.flush_staged();
    }

    /// Routes one message; online deliveries wait in `staged` until [`Self::flush_staged`].
    fn route(&mut self, message: Arc<Message>) {
        if message.retain {
            if message.payload.is_empty() {
                if self.retained.remove(&message.topic).is_some() {
                    self.metrics.retained_messages.fetch_sub(1, Relaxed);
                }
            } else if self
                .retained
                .insert(message.topic.clone(), message.clone())
                .is_none()
            {
                self.metrics.retained_messages.fetch_add(1, Relaxed);
            }
        }
        let mut matches = std::mem::take(&mut self.match_buf);
        self.subscriptions
            .matches_into(&message.topic, message.publisher.as_deref(), &mut matches);
        for m in matches.drain(..) {
            if message.recipient.as_ref().is_some_and(|r| *r != m.client) {
                continue;
            }
            let delivery = Delivery {
                qos: min_qos(message.qos, m.qos),
                retain: message.retain && m.retain_as_published,
                subscription_ids: m.subscription_ids,
                message: message.clone(),
            };
            self.stage(&m.client, delivery);
        }
        self.match_buf = matches;
    }

    fn stage(&mut self, client: &Arc<str>, delivery: Delivery) {
        let Some(session) = self.sessions.get_mut(client) else {
            return;
        };
        let queued = match &session.online {
            Some((_, outbox)) => {
                match self.staged.iter_mut().find(|(c, _, _)| c == client) {
                    Some((_, _, ds)) => ds.push(delivery),
                    None => self
                        .staged
                        .push((client.clone(), outbox.clone(), vec![delivery])),
                }
                true
            }
            None => {
                if delivery.qos == QoS::AtMostOnce && !self.config.queue_qos0_offline {
                    return;
                }
                if session.offline.pending.len() < self.config.max_queued_messages {
                    session.offline.pending.push_back(delivery);
                    self.metrics.queued_messages.fetch_add(1, Relaxed);
                    true
                } else {
                    false
                }
            }
        };
        if !queued {
            self.dropped(client, 1);
        }
    }

    /// Hands staged deliveries to their outboxes, one lock and one wake-up per client.
    fn flush_staged(&mut self) {
        let mut staged = std::mem::take(&mut self.staged);
        for (client, outbox, mut ds) in staged.drain(..) {
            let dropped = outbox.push_many(&mut ds);
            if dropped > 0 {
                self.dropped(&client, dropped);
            }
        }
        self.staged = staged;
    }

    fn dropped(&mut self, client: &Arc<str>, n: usize) {
        self.metrics.messages_dropped.fetch_add(n as u64, Relaxed);
        self.metrics
            .refuse_n(Refusal::SubscriberQueueFull, n as u64);
        let now = Instant::now();
        if self
            .drop_warned_at
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(5))
        {
            self.drop_warned_at = Some(now);
            warn!(
                client_id = %client,
                limit = self.config.max_queued_messages,
                total_dropped = self.metrics.messages_dropped.load(Relaxed),
                "subscriber queue full, message dropped (raise mqtt.max_queued_messages?)"
            );
        }
    }

    /// Stores the filters of one SUBSCRIBE; returns, for each, whether it was stored (not:
    /// a new filter past `max_subscriptions`).
    fn subscribe(&mut self, client_id: &Arc<str>, filters: Vec<(String, SubOptions)>) -> Vec<bool> {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return vec![false; filters.len()];
        };
        let limit = self.config.max_subscriptions;
        let mut stored = Vec::with_capacity(filters.len());
        let mut retained_for = Vec::new();
        for (filter, options) in filters {
            let full = limit > 0 && session.subscriptions.len() >= limit;
            if full && !session.subscriptions.contains_key(&filter) {
                stored.push(false);
                continue;
            }
            stored.push(true);
            let replaced = self
                .subscriptions
                .insert(client_id, &filter, options.clone());
            if !replaced {
                self.metrics.subscriptions.fetch_add(1, Relaxed);
            }
            session
                .subscriptions
                .insert(filter.clone(), options.clone());
            let shared = filter.starts_with("$share/");
            let send_retained = match options.retain_handling {
                0 => true,
                1 => !replaced,
                _ => false,
            };
            if send_retained && !shared {
                retained_for.push((filter, options));
            }
        }
        let now = Instant::now();
        for (filter, options) in retained_for {
            let mut expired = Vec::new();
            let mut hits: Vec<Arc<Message>> = Vec::new();
            for (t, m) in &self.retained {
                if m.expired(now) {
                    expired.push(t.clone());
                } else if topic::matches(&filter, t) {
                    hits.push(m.clone());
                }
            }
            for t in expired {
                self.retained.remove(&t);
                self.metrics.retained_messages.fetch_sub(1, Relaxed);
                self.metrics.messages_expired.fetch_add(1, Relaxed);
            }
            hits.sort_by(|a, b| a.topic.cmp(&b.topic));
            for message in hits {
                let delivery = Delivery {
                    qos: min_qos(message.qos, options.qos),
                    retain: true,
                    subscription_ids: options.subscription_id.into_iter().collect(),
                    message,
                };
                self.stage(client_id, delivery);
            }
        }
        self.flush_staged();
        stored
    }

    fn unsubscribe(&mut self, client_id: &Arc<str>, filters: Vec<String>) -> Vec<bool> {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return vec![false; filters.len()];
        };
        filters
            .iter()
            .map(|f| {
                session.subscriptions.remove(f);
                let removed = self.subscriptions.remove(client_id, f);
                if removed {
                    self.metrics.subscriptions.fetch_sub(1, Relaxed);
                }
                removed
            })
            .collect()
    }

    fn sys_message(&self, topic: &str, value: String) -> Arc<Message> {
        Arc::new(Message {
            topic: format!("$SYS/broker/{topic}"),
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: None,
            publisher: None,
            expires_at: None,
            recipient: None,
        })
    }

    fn publish_sys_static(&mut self) {
        if self.config.sys_interval.is_none() {
            return;
        }
        let m = self.sys_message("version", format!("samos {}", self.config.version));
        self.publish(m);
        let m = self.sys_message("instance_id", self.config.instance_id.clone());
        self.publish(m);
    }

    fn publish_sys(&mut self) {
        let m = &self.metrics;
        let sum = |a: &[std::sync::atomic::AtomicU64]| a.iter().map(|c| c.load(Relaxed)).sum();
        let values: Vec<(&str, u64)> = vec![
            ("clients/connected", m.connections_current.load(Relaxed)),
            ("clients/total", m.sessions.load(Relaxed)),
            (
                "clients/disconnected",
                m.sessions
                    .load(Relaxed)
                    .saturating_sub(m.connections_current.load(Relaxed)),
            ),
            ("messages/received", sum(&m.messages_received)),
            ("messages/sent", sum(&m.messages_sent)),
            ("messages/dropped", m.messages_dropped.load(Relaxed)),
            ("publish/messages/received", sum(&m.messages_received)),
            ("publish/messages/sent", sum(&m.messages_sent)),
            ("bytes/received", m.bytes_received.load(Relaxed)),
            ("bytes/sent", m.bytes_sent.load(Relaxed)),
            ("retained messages/count", m.retained_messages.load(Relaxed)),
            ("subscriptions/count", m.subscriptions.load(Relaxed)),
            ("store/messages/count", m.queued_messages.load(Relaxed)),
        ];
        for (topic, v) in values {
            let msg = self.sys_message(topic, v.to_string());
            self.publish(msg);
        }
        let msg = self.sys_message("disk_full", self.metrics.disk.summary());
        self.publish(msg);
        let uptime = format!("{} seconds", self.metrics.uptime().as_secs());
        let msg = self.sys_message("uptime", uptime);
        self.publish(msg);
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if a as u8 <= b as u8 { a } else { b }
}

#[cfg(test)]
mod tests;
