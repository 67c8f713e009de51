//! Persistent MQTT sessions made durable in the WAL, so that QoS 2 is exactly once across a
//! restart and a subscriber's persistent session outlives a crash.
//!
//! Session changes travel through the same queue as readings and are written into the same WAL
//! record as the readings they concern: a QoS 2 packet id is stored *with* its reading (one
//! fsync), so after a crash either both are durable or neither is. A resent PUBLISH whose
//! packet id was recovered is acknowledged and not stored again; a PUBCOMP leaves only once its
//! release is durable, so a packet id reused by the client is never mistaken for a resend.
//!
//! The first record of every WAL segment starts with a snapshot of the whole table, so the
//! retained segments always hold the complete state however many older segments were freed.
//!
//! Encoding (little endian), one operation after another:
//!
//! ```text
//! u8 tag · fields
//!   0 reset                        (a snapshot follows)
//!   1 open        client, u8 clean, u32 expiry_secs
//!   2 subscribe   client, filter, u8 qos, u8 flags (1 no-local, 2 retain-as-published),
//!                 u8 retain_handling, u32 subscription id (0: none)
//!   3 unsubscribe client, filter
//!   4 received    client, u16 packet id
//!   5 released    client, u16 packet id
//!   6 closed      client, i64 at_ms, u32 expiry_secs
//!   7 end         client
//! strings: u16 length · UTF-8 bytes
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A subscription as stored: what the router needs to recreate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubscription {
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

/// One change to the durable session table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOp {
    /// Everything before is replaced by the snapshot that follows.
    Reset,
    /// A persistent session starts (`clean`: whatever the client id had is discarded first) or
    /// resumes.
    Open {
        client: Arc<str>,
        clean: bool,
        expiry_secs: u32,
    },
    Subscribe {
        client: Arc<str>,
        filter: String,
        options: DurableSubscription,
    },
    Unsubscribe {
        client: Arc<str>,
        filter: String,
    },
    /// A QoS 2 reading with this packet id is stored (written with the reading itself).
    Received {
        client: Arc<str>,
        pkid: u16,
    },
    /// PUBREL: the packet id may be used for a new message.
    Released {
        client: Arc<str>,
        pkid: u16,
    },
    /// The connection ended; the session lasts `expiry_secs` from `at_ms` (0: it ends now).
    Closed {
        client: Arc<str>,
        at_ms: i64,
        expiry_secs: u32,
    },
    /// The client id connected with a non-persistent session: its stored session ends.
    End {
        client: Arc<str>,
    },
}

impl SessionOp {
    pub fn client(&self) -> Option<&Arc<str>> {
        match self {
            SessionOp::Reset => None,
            SessionOp::Open { client, .. }
            | SessionOp::Subscribe { client, .. }
            | SessionOp::Unsubscribe { client, .. }
            | SessionOp::Received { client, .. }
            | SessionOp::Released { client, .. }
            | SessionOp::Closed { client, .. }
            | SessionOp::End { client } => Some(client),
        }
    }

    /// Appends the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn text(out: &mut Vec<u8>, s: &str) {
            // MQTT strings are at most 65,535 bytes, so the length always fits.
            let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        }
        match self {
            SessionOp::Reset => out.push(0),
            SessionOp::Open {
                client,
                clean,
                expiry_secs,
            } => {
                out.push(1);
                text(out, client);
                out.push(u8::from(*clean));
                out.extend_from_slice(&expiry_secs.to_le_bytes());
            }
            SessionOp::Subscribe {
                client,
                filter,
                options: o,
            } => {
                out.push(2);
                text(out, client);
                text(out, filter);
                out.push(o.qos);
                out.push(u8::from(o.no_local) | (u8::from(o.retain_as_published) << 1));
                out.push(o.retain_handling);
                out.extend_from_slice(&o.subscription_id.unwrap_or(0).to_le_bytes());
            }
            SessionOp::Unsubscribe { client, filter } => {
                out.push(3);
                text(out, client);
                text(out, filter);
            }
            SessionOp::Received { client, pkid } => {
                out.push(4);
                text(out, client);
                out.extend_from_slice(&pkid.to_le_bytes());
            }
            SessionOp::Released { client, pkid } => {
                out.push(5);
                text(out, client);
                out.extend_from_slice(&pkid.to_le_bytes());
            }
            SessionOp::Closed {
                client,
                at_ms,
                expiry_secs,
            } => {
                out.push(6);
                text(out, client);
                out.extend_from_slice(&at_ms.to_le_bytes());
                out.extend_from_slice(&expiry_secs.to_le_bytes());
            }
            SessionOp::End { client } => {
                out.push(7);
                text(out, client);
            }
        }
    }

    /// Decodes a sequence of operations (a WAL record's session section).
    pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<SessionOp>, String> {
        let mut ops = Vec::new();
        while !bytes.is_empty() {
            ops.push(Self::decode_one(&mut bytes)?);
        }
        Ok(ops)
    }

    fn decode_one(b: &mut &[u8]) -> Result<SessionOp, String> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
            if b.len() < n {
                return Err(format!(
                    "session record cut short ({} of {n} bytes)",
                    b.len()
                ));
            }
            let (head, tail) = b.split_at(n);
            *b = tail;
            Ok(head)
        }
        fn u8_(b: &mut &[u8]) -> Result<u8, String> {
            Ok(take(b, 1)?[0])
        }
        fn u16_(b: &mut &[u8]) -> Result<u16, String> {
            Ok(u16::from_le_bytes(take(b, 2)?.try_into().expect("2 bytes")))
        }
        fn u32_(b: &mut &[u8]) -> Result<u32, String> {
            Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")))
        }
        fn text(b: &mut &[u8]) -> Result<String, String> {
            let n = usize::from(u16_(b)?);
            String::from_utf8(take(b, n)?.to_vec()).map_err(|e| e.to_string())
        }
        let tag = u8_(b)?;
        Ok(match tag {
            0 => SessionOp::Reset,
            1 => SessionOp::Open {
                client: text(b)?.into(),
                clean: u8_(b)? != 0,
                expiry_secs: u32_(b)?,
            },
            2 => {
                let client = text(b)?.into();
                let filter = text(b)?;
                let qos = u8_(b)?;
                let flags = u8_(b)?;
                let retain_handling = u8_(b)?;
                let id = u32_(b)?;
                SessionOp::Subscribe {
                    client,
                    filter,
                    options: DurableSubscription {
                        qos,
                        no_local: flags & 1 != 0,
                        retain_as_published: flags & 2 != 0,
                        retain_handling,
                        subscription_id: (id != 0).then_some(id),
                    },
                }
            }
            3 => SessionOp::Unsubscribe {
                client: text(b)?.into(),
                filter: text(b)?,
            },
            4 => SessionOp::Received {
                client: text(b)?.into(),
                pkid: u16_(b)?,
            },
            5 => SessionOp::Released {
                client: text(b)?.into(),
                pkid: u16_(b)?,
            },
            6 => SessionOp::Closed {
                client: text(b)?.into(),
                at_ms: i64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes")),
                expiry_secs: u32_(b)?,
            },
            7 => SessionOp::End {
                client: text(b)?.into(),
            },
            t => return Err(format!("unknown session operation {t}")),
        })
    }
}

/// One durable persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableSession {
    pub expiry_secs: u32,
    /// When its last connection ended; `None` while connected.
    pub closed_at_ms: Option<i64>,
    pub subscriptions: BTreeMap<String, DurableSubscription>,
    /// QoS 2 packet ids whose readings are stored and not yet released.
    pub qos2_received: BTreeSet<u16>,
}

impl DurableSession {
    /// Whether the session has run out at `now_ms`.
    fn expired(&self, now_ms: i64) -> bool {
        match self.closed_at_ms {
            _ if self.expiry_secs == u32::MAX => false,
            Some(at) => at.saturating_add(i64::from(self.expiry_secs) * 1000) <= now_ms,
            None => false,
        }
    }
}

/// The durable sessions, by client id: what the applied operations add up to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionTable {
    sessions: HashMap<Arc<str>, DurableSession>,
}

impl SessionTable {
    pub fn apply(&mut self, op: &SessionOp) {
        match op {
            SessionOp::Reset => self.sessions.clear(),
            SessionOp::Open {
                client,
                clean,
                expiry_secs,
            } => {
                if *clean {
                    self.sessions.remove(client);
                }
                let s = self.sessions.entry(client.clone()).or_default();
                s.expiry_secs = *expiry_secs;
                s.closed_at_ms = None;
            }
            SessionOp::Subscribe {
                client,
                filter,
                options,
            } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.subscriptions.insert(filter.clone(), options.clone());
                }
            }
            SessionOp::Unsubscribe { client, filter } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.subscriptions.remove(filter);
                }
            }
            SessionOp::Received { client, pkid } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.qos2_received.insert(*pkid);
                }
            }
            SessionOp::Released { client, pkid } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.qos2_received.remove(pkid);
                }
            }
            SessionOp::Closed {
                client,
                at_ms,
                expiry_secs,
            } => {
                if *expiry_secs == 0 {
                    self.sessions.remove(client);
                } else if let Some(s) = self.sessions.get_mut(client) {
                    s.closed_at_ms = Some(*at_ms);
                    s.expiry_secs = *expiry_secs;
                }
            }
            SessionOp::End { client } => {
                self.sessions.remove(client);
            }
        }
    }

    pub fn contains(&self, client: &str) -> bool {
        self.sessions.contains_key(client)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The operations that rebuild this table from nothing, starting with a reset.
    pub fn snapshot(&self) -> Vec<SessionOp> {
        let mut ops = vec![SessionOp::Reset];
        for (client, s) in &self.sessions {
            ops.push(SessionOp::Open {
                client: client.clone(),
                clean: true,
                expiry_secs: s.expiry_secs,
            });
            for (filter, options) in &s.subscriptions {
                ops.push(SessionOp::Subscribe {
                    client: client.clone(),
                    filter: filter.clone(),
                    options: options.clone(),
                });
            }
            for pkid in &s.qos2_received {
                ops.push(SessionOp::Received {
                    client: client.clone(),
                    pkid: *pkid,
                });
            }
            if let Some(at_ms) = s.closed_at_ms {
                ops.push(SessionOp::Closed {
                    client: client.clone(),
                    at_ms,
                    expiry_secs: s.expiry_secs,
                });
            }
        }
        ops
    }

    /// After a restart: drops the sessions that expired while Samos was down, and counts the
    /// ones still connected at the crash as disconnected now.
    pub fn restart(&mut self, now_ms: i64) {
        for s in self.sessions.values_mut() {
            s.closed_at_ms.get_or_insert(now_ms);
        }
        self.sessions.retain(|_, s| !s.expired(now_ms));
    }

    /// Forgets the sessions whose clients left longer ago than their expiry; returns them.
    /// (The router has already ended them; this keeps snapshots from growing without end.)
    pub fn drop_expired(&mut self, now_ms: i64) -> Vec<Arc<str>> {
        let gone: Vec<Arc<str>> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(now_ms))
            .map(|(c, _)| c.clone())
            .collect();
        for c in &gone {
            self.sessions.remove(c);
        }
        gone
    }

    /// The sessions, for the router to recreate.
    pub fn sessions(&self) -> impl Iterator<Item = (&Arc<str>, &DurableSession)> {
        self.sessions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = SessionOp> {
        let client = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(Arc::<str>::from);
        let filter = prop_oneof![Just("x/#"), Just("y/+"), Just("z")].prop_map(String::from);
        let pkid = 1u16..6;
        prop_oneof![
            Just(SessionOp::Reset),
            (
                client.clone(),
                any::<bool>(),
                prop_oneof![Just(0u32), Just(60), Just(u32::MAX)]
            )
                .prop_map(|(client, clean, expiry_secs)| SessionOp::Open {
                    client,
                    clean,
                    expiry_secs
                }),
            (
                client.clone(),
                filter.clone(),
                0u8..3,
                any::<bool>(),
                any::<bool>(),
                0u8..3,
                proptest::option::of(1u32..10)
            )
                .prop_map(|(client, filter, qos, nl, rap, rh, id)| {
                    SessionOp::Subscribe {
                        client,
                        filter,
                        options: DurableSubscription {
                            qos,
                            no_local: nl,
                            retain_as_published: rap,
                            retain_handling: rh,
                            subscription_id: id,
                        },
                    }
                }),
            (client.clone(), filter)
                .prop_map(|(client, filter)| SessionOp::Unsubscribe { client, filter }),
            (client.clone(), pkid.clone())
                .prop_map(|(client, pkid)| SessionOp::Received { client, pkid }),
            (client.clone(), pkid).prop_map(|(client, pkid)| SessionOp::Released { client, pkid }),
            (
                client.clone(),
                0i64..10_000,
                prop_oneof![Just(0u32), Just(5), Just(u32::MAX)]
            )
                .prop_map(|(client, at_ms, expiry_secs)| SessionOp::Closed {
                    client,
                    at_ms,
                    expiry_secs
                }),
            client.prop_map(|client| SessionOp::End { client }),
        ]
    }

    proptest! {
        /// Operations decode to what was encoded.
        #[test]
        fn operations_round_trip(ops in proptest::collection::vec(op(), 0..40)) {
            let mut bytes = Vec::new();
            for o in &ops {
                o.encode(&mut bytes);
            }
            prop_assert_eq!(SessionOp::decode_all(&bytes).unwrap(), ops);
        }

        /// A snapshot rebuilds the table exactly, whatever came before it.
        #[test]
        fn a_snapshot_rebuilds_the_table(ops in proptest::collection::vec(op(), 0..60), before in proptest::collection::vec(op(), 0..10)) {
            let mut table = SessionTable::default();
            for o in &ops {
                table.apply(o);
            }
            let mut rebuilt = SessionTable::default();
            for o in before.iter().chain(&table.snapshot()) {
                rebuilt.apply(o);
            }
            prop_assert_eq!(rebuilt, table);
        }

        /// Truncated input is an error, never a panic.
        #[test]
        fn truncated_input_is_an_error(ops in proptest::collection::vec(op(), 1..10), cut in 1usize..8) {
            let mut bytes = Vec::new();
            for o in &ops {
                o.encode(&mut bytes);
            }
            let keep = bytes.len().saturating_sub(cut);
            if let Ok(decoded) = SessionOp::decode_all(&bytes[..keep]) {
                prop_assert!(decoded.len() < ops.len());
            }
        }
    }

    #[test]
    fn released_and_expired_state_is_gone() {
        let c: Arc<str> = "n1".into();
        let mut t = SessionTable::default();
        t.apply(&SessionOp::Open {
            client: c.clone(),
            clean: false,
            expiry_secs: 10,
        });
        t.apply(&SessionOp::Received {
            client: c.clone(),
            pkid: 7,
        });
        t.apply(&SessionOp::Received {
            client: c.clone(),
            pkid: 8,
        });
        t.apply(&SessionOp::Released {
            client: c.clone(),
            pkid: 7,
        });
        let s = t.sessions().next().unwrap().1;
        assert_eq!(s.qos2_received.iter().copied().collect::<Vec<_>>(), [8]);
        t.apply(&SessionOp::Closed {
            client: c.clone(),
            at_ms: 1_000,
            expiry_secs: 10,
        });
        let mut kept = t.clone();
        kept.restart(10_999);
        assert!(kept.contains("n1"));
        t.restart(11_000);
        assert!(t.is_empty());
    }

    #[test]
    fn expired_sessions_leave_the_table() {
        let mut t = SessionTable::default();
        for (c, expiry) in [("gone", 1), ("kept", u32::MAX)] {
            t.apply(&SessionOp::Open {
                client: c.into(),
                clean: true,
                expiry_secs: expiry,
            });
            t.apply(&SessionOp::Closed {
                client: c.into(),
                at_ms: 0,
                expiry_secs: expiry,
            });
        }
        t.apply(&SessionOp::Open {
            client: "online".into(),
            clean: true,
            expiry_secs: 1,
        });
        assert_eq!(t.drop_expired(5_000), [Arc::<str>::from("gone")]);
        assert!(t.contains("kept") && t.contains("online") && !t.contains("gone"));
    }

    #[test]
    fn a_session_connected_at_the_crash_counts_as_closed_at_restart() {
        let mut t = SessionTable::default();
        t.apply(&SessionOp::Open {
            client: "n".into(),
            clean: true,
            expiry_secs: 5,
        });
        t.restart(1_000);
        assert_eq!(t.sessions().next().unwrap().1.closed_at_ms, Some(1_000));
    }
}
