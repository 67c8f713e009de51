//! The broker core: what sessions hand to the router and what the router hands back.
//!
//! One router task owns the subscription table, retained messages and offline sessions, so
//! routing needs no lock shared between connections. Connections talk to it over a bounded
//! queue (a full queue pauses the publisher's socket: backpressure, not loss), and it delivers
//! into each connection's own bounded [`Outbox`].

pub mod durable;
pub mod router;
pub mod subscriptions;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use mqttbytes::QoS;
use mqttbytes::v5::PublishProperties;
use tokio::sync::{Notify, mpsc, oneshot};

pub use router::{Router, RouterHandle};
pub use subscriptions::SubOptions;

/// An application message as the router sees it, shared by every delivery.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// v5 properties forwarded to subscribers (no topic alias, no subscription ids).
    pub properties: Option<PublishProperties>,
    /// Client id of the publisher, for no-local; `None` for the server's own messages.
    pub publisher: Option<Arc<str>>,
    /// When the v5 Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// Deliver to this client's matching subscriptions only (the server's answer to one
    /// client on a topic others share); never retained.
    pub recipient: Option<Arc<str>>,
}

impl Message {
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<usize>,
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutPhase {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// The part of a session that outlives its connection.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Outgoing messages sent but not fully acknowledged, in packet-id order of sending.
    pub inflight: Vec<(u16, Delivery, OutPhase)>,
    /// Messages waiting to be sent.
    pub pending: VecDeque<Delivery>,
    /// Incoming QoS 2 packet ids received (and routed) but not yet released, each with
    /// whether it is stored in the WAL with its reading (so its release must be too).
    pub incoming_qos2: HashMap<u16, bool>,
    pub next_pkid: u16,
}

/// Why the router asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kick {
    None = 0,
    SessionTakenOver = 1,
    ShuttingDown = 2,
    /// An admin disconnected the client (dashboard or API).
    Administrative = 3,
}

/// A connection's bounded queue of deliveries, filled by the router and drained by the
/// connection. Its lock is per connection and held for a push or a pop.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<Delivery>>,
    capacity: usize,
    pub notify: Notify,
    kick: AtomicU8,
}

impl Outbox {
    pub fn new(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            notify: Notify::new(),
            kick: AtomicU8::new(Kick::None as u8),
        })
    }

    /// Queues a delivery; `false` (and nothing queued) when the queue is full.
    pub fn push(&self, d: Delivery) -> bool {
        {
            let mut q = self.queue.lock().expect("outbox");
            if q.len() >= self.capacity {
                return false;
            }
            q.push_back(d);
        }
        self.notify.notify_one();
        true
    }

    /// Queues several deliveries under one lock and one wake-up; returns how many did not
    /// fit (they are dropped from `ds` too).
    pub fn push_many(&self, ds: &mut Vec<Delivery>) -> usize {
        let dropped = {
            let mut q = self.queue.lock().expect("outbox");
            let room = self.capacity.saturating_sub(q.len());
            let dropped = ds.len().saturating_sub(room);
            ds.truncate(room);
            q.extend(ds.drain(..));
            dropped
        };
        self.notify.notify_one();
        dropped
    }

    /// Takes up to `n` deliveries; QoS 0 ones do not count towards `n`.
    pub fn take(&self, mut n: usize, out: &mut Vec<Delivery>) {
        let mut q = self.queue.lock().expect("outbox");
        while let Some(front) = q.front() {
            if front.qos != QoS::AtMostOnce {
                if n == 0 {
                    break;
                }
                n -= 1;
            }
            out.extend(q.pop_front());
        }
    }

    /// Empties the queue (the router does this once the connection is gone).
    pub fn drain(&self) -> VecDeque<Delivery> {
        std::mem::take(&mut *self.queue.lock().expect("outbox"))
    }

    /// Asks the connection to close.
    pub fn kick(&self, why: Kick) {
        self.kick.store(why as u8, Ordering::Release);
        self.notify.notify_one();
    }

    pub fn kicked(&self) -> Kick {
        match self.kick.load(Ordering::Acquire) {
            1 => Kick::SessionTakenOver,
            2 => Kick::ShuttingDown,
            3 => Kick::Administrative,
            _ => Kick::None,
        }
    }
}

/// A will message and when it is due.
#[derive(Debug, Clone)]
pub struct Will {
    pub message: Arc<Message>,
    /// v5 Will Delay Interval, seconds.
    pub delay_secs: u32,
}

/// What a connection asks of the router.
#[derive(Debug)]
pub enum Request {
    Connect {
        client_id: Arc<str>,
        clean_start: bool,
        /// Seconds the session outlives the connection; `u32::MAX` is forever.
        session_expiry: u32,
        outbox: Arc<Outbox>,
        reply: oneshot::Sender<ConnectGrant>,
    },
    /// Messages from one client, in order (one request per socket read, not per message).
    Publish(Vec<Arc<Message>>),
    Subscribe {
        client_id: Arc<str>,
        /// Filters already authorized.
        filters: Vec<(String, SubOptions)>,
        /// Whether each filter was stored (not: past `mqtt.max_subscriptions_per_client`).
        reply: oneshot::Sender<Vec<bool>>,
    },
    Unsubscribe {
        client_id: Arc<str>,
        filters: Vec<String>,
        reply: oneshot::Sender<Vec<bool>>,
    },
    Disconnected {
        client_id: Arc<str>,
        connection: u64,
        state: SessionState,
        will: Option<Will>,
        session_expiry: u32,
    },
    /// Internal: a will delay or session expiry timer fired.
    Timer(Timer),
    /// An admin's request to close a client's connection; answers whether it was online.
    Kick {
        client_id: Arc<str>,
        reply: oneshot::Sender<bool>,
    },
}

#[derive(Debug)]
pub enum Timer {
    Will { client_id: Arc<str>, epoch: u64 },
    Expiry { client_id: Arc<str>, epoch: u64 },
}

/// The router's answer to a CONNECT.
#[derive(Debug)]
pub struct ConnectGrant {
    pub session_present: bool,
    /// A clean start discarded a session this client id had.
    pub discarded_session: bool,
    pub state: SessionState,
    /// Identifies this connection of the client to the router.
    pub connection: u64,
}

/// The sending half connections use.
pub type RequestSender = mpsc::Sender<Request>;
