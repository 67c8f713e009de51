//! The acknowledgements a connection owes, in the order it owes them.
//!
//! A PUBACK or PUBREC for a reading may leave only once the reading is durable; a SUBACK,
//! UNSUBACK or PUBCOMP of a persistent session only once its session change is. Everything
//! else could leave at once, but MQTT clients match acknowledgements in order (and a client
//! that sees the ack of message 5 before that of message 4 may take 4 as lost), so nothing
//! overtakes a held acknowledgement: an [`AckQueue`] releases its head while the head is
//! durable, and only its head.
//!
//! Durability is counted per connection: [`AckQueue::ticket`] hands out the next sequence
//! number on this connection's [`AckCursor`]; the ingest batcher raises the cursor once the WAL
//! record holding that work is fsync'd. The queue is sans-IO: it says which acknowledgements
//! are due, [`ack_packet`] says what they look like on the wire, and the connection writes them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mqttbytes::QoS;
use mqttbytes::v5::{Packet, PubAck, PubRec, PubRecReason};
use samos_mqtt::codec::ProtocolVersion;
use samos_mqtt::reason::puback_reason;

use crate::ingest::{AckCursor, Ticket};

/// An acknowledgement not yet sent.
#[derive(Debug)]
pub enum Ack {
    /// PUBACK (QoS 1) or PUBREC (QoS 2) with a v5 reason (3.x acknowledges plainly).
    Publish {
        pkid: u16,
        qos: QoS,
        reason: PubRecReason,
    },
    /// PUBCOMP, SUBACK or UNSUBACK of a persistent session.
    Packet(Box<Packet>),
}

#[derive(Debug)]
struct Held {
    /// The sequence on this connection's cursor that must be durable first (0: none).
    seq: u64,
    ack: Ack,
    arrived: Instant,
}

/// Held acknowledgements and the durable cursor of one connection (see the module header).
#[derive(Debug, Default)]
pub struct AckQueue {
    held: VecDeque<Held>,
    cursor: Arc<AckCursor>,
    /// The last sequence handed out.
    issued: u64,
}

impl AckQueue {
    /// A ticket for the next piece of work whose acknowledgement waits for durability.
    pub fn ticket(&mut self) -> Ticket {
        self.issued += 1;
        Ticket {
            cursor: self.cursor.clone(),
            seq: self.issued,
        }
    }

    /// The last sequence handed out (0: none yet).
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// How far this connection's work is durable.
    pub fn durable(&self) -> u64 {
        self.cursor.durable.load(Ordering::Acquire)
    }

    /// Queues `ack` to leave once sequence `after` is durable (`None`: once everything before
    /// it has left). `arrived` is when the packet it answers arrived, for the latency metric.
    pub fn push(&mut self, ack: Ack, after: Option<u64>, arrived: Instant) {
        self.held.push_back(Held {
            seq: after.unwrap_or(0),
            ack,
            arrived,
        });
    }

    /// Takes the oldest acknowledgement if it may leave now.
    pub fn next_due(&mut self) -> Option<(Ack, Instant)> {
        if self.held.front()?.seq > self.durable() {
            return None;
        }
        self.held.pop_front().map(|h| (h.ack, h.arrived))
    }

    /// Whether an acknowledgement is waiting (the connection then listens to the cursor).
    pub fn is_waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// Wakes when the batcher raises the cursor.
    pub fn cursor(&self) -> &Arc<AckCursor> {
        &self.cursor
    }

    /// Waits (at most `limit`) until sequence `wanted` is durable; returns how far it is.
    pub async fn wait_durable(&self, wanted: u64, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.cursor.notify.notified();
            let durable = self.durable();
            if durable >= wanted || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return durable;
            }
        }
    }

    /// The QoS 2 packet ids whose readings are still not durable at `durable`: a connection
    /// that ends must forget them, so that their resends are stored rather than taken for
    /// duplicates of something stored.
    pub fn undurable_qos2(&self, durable: u64) -> impl Iterator<Item = u16> + '_ {
        self.held.iter().filter_map(move |h| match h.ack {
            Ack::Publish {
                pkid,
                qos: QoS::ExactlyOnce,
                ..
            } if h.seq > durable => Some(pkid),
            _ => None,
        })
    }
}

/// The packet that carries an acknowledgement to a client speaking `version`: PUBACK for QoS 1
/// and PUBREC for QoS 2, with the reason code on v5 only (3.x has none: a refused message is
/// acknowledged plainly); `None` for QoS 0, which is never acknowledged.
pub fn ack_packet(version: ProtocolVersion, ack: Ack) -> Option<Packet> {
    match ack {
        Ack::Packet(p) => Some(*p),
        Ack::Publish { pkid, qos, reason } => match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => {
                let mut a = PubAck::new(pkid);
                if !version.is_v3() {
                    a.reason = puback_reason(reason);
                }
                Some(Packet::PubAck(a))
            }
            QoS::ExactlyOnce => {
                let mut r = PubRec::new(pkid);
                if !version.is_v3() {
                    r.reason = reason;
                }
                Some(Packet::PubRec(r))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqttbytes::v5::{PubAckReason, PubComp, SubAck, SubscribeReasonCode};

    fn publish(pkid: u16, qos: QoS, reason: PubRecReason) -> Ack {
        Ack::Publish { pkid, qos, reason }
    }

    fn release(q: &AckQueue, seq: u64) {
        q.cursor.durable.fetch_max(seq, Ordering::Release);
    }

    fn due_ids(q: &mut AckQueue) -> Vec<u16> {
        std::iter::from_fn(|| q.next_due())
            .map(|(a, _)| match a {
                Ack::Publish { pkid, .. } => pkid,
                Ack::Packet(p) => match *p {
                    Packet::PubComp(c) => c.pkid,
                    Packet::SubAck(s) => s.pkid,
                    _ => 0,
                },
            })
            .collect()
    }

    #[test]
    fn nothing_held_leaves_at_once() {
        let mut q = AckQueue::default();
        q.push(
            publish(1, QoS::AtLeastOnce, PubRecReason::Success),
            None,
            Instant::now(),
        );
        assert_eq!(due_ids(&mut q), vec![1]);
        assert!(!q.is_waiting());
    }

    #[test]
    fn acks_leave_in_publish_order_across_qos_and_refusals() {
        let mut q = AckQueue::default();
        let now = Instant::now();
        // QoS 1 reading (waits for 1), a refused QoS 2 (no reading), a QoS 2 reading (waits
        // for 2), a plain QoS 1 message (nothing to wait for), a SUBACK of a persistent
        // session (waits for 3).
        let t1 = q.ticket();
        q.push(
            publish(10, QoS::AtLeastOnce, PubRecReason::Success),
            Some(t1.seq),
            now,
        );
        q.push(
            publish(11, QoS::ExactlyOnce, PubRecReason::NotAuthorized),
            None,
            now,
        );
        let t2 = q.ticket();
        q.push(
            publish(12, QoS::ExactlyOnce, PubRecReason::Success),
            Some(t2.seq),
            now,
        );
        q.push(
            publish(13, QoS::AtLeastOnce, PubRecReason::Success),
            None,
            now,
        );
        let t3 = q.ticket();
        q.push(
            Ack::Packet(Box::new(Packet::SubAck(SubAck::new(
                14,
                vec![SubscribeReasonCode::QoS1],
            )))),
            Some(t3.seq),
            now,
        );
        assert_eq!((t1.seq, t2.seq, t3.seq), (1, 2, 3));

        assert!(due_ids(&mut q).is_empty(), "nothing is durable yet");
        release(&q, 1);
        assert_eq!(
            due_ids(&mut q),
            vec![10, 11],
            "the refusal waits behind the reading before it"
        );
        release(&q, 2);
        assert_eq!(due_ids(&mut q), vec![12, 13]);
        assert!(q.is_waiting());
        release(&q, 3);
        assert_eq!(due_ids(&mut q), vec![14]);
        assert!(!q.is_waiting());
    }

    #[test]
    fn a_durable_later_sequence_releases_everything_before_it() {
        let mut q = AckQueue::default();
        let now = Instant::now();
        for pkid in 1..=5 {
            let t = q.ticket();
            q.push(
                publish(pkid, QoS::ExactlyOnce, PubRecReason::Success),
                Some(t.seq),
                now,
            );
        }
        release(&q, 5);
        assert_eq!(due_ids(&mut q), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn undurable_qos2_ids_are_those_past_the_cursor() {
        let mut q = AckQueue::default();
        let now = Instant::now();
        let t1 = q.ticket();
        q.push(
            publish(1, QoS::ExactlyOnce, PubRecReason::Success),
            Some(t1.seq),
            now,
        );
        let t2 = q.ticket();
        q.push(
            publish(2, QoS::AtLeastOnce, PubRecReason::Success),
            Some(t2.seq),
            now,
        );
        let t3 = q.ticket();
        q.push(
            publish(3, QoS::ExactlyOnce, PubRecReason::Success),
            Some(t3.seq),
            now,
        );
        q.push(
            Ack::Packet(Box::new(Packet::PubComp(PubComp::new(4)))),
            Some(t3.seq),
            now,
        );
        assert_eq!(q.undurable_qos2(1).collect::<Vec<_>>(), vec![3]);
        assert_eq!(q.undurable_qos2(0).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[tokio::test]
    async fn wait_durable_wakes_on_release_and_gives_up_at_the_limit() {
        let mut q = AckQueue::default();
        let t = q.ticket();
        assert_eq!(q.wait_durable(t.seq, Duration::from_millis(20)).await, 0);
        let cursor = q.cursor().clone();
        let waker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cursor.durable.store(1, Ordering::Release);
            cursor.notify.notify_one();
        });
        assert_eq!(q.wait_durable(t.seq, Duration::from_secs(10)).await, 1);
        waker.await.unwrap();
    }

    #[test]
    fn wire_form_follows_the_protocol_version() {
        let refused = || publish(7, QoS::AtLeastOnce, PubRecReason::NotAuthorized);
        match ack_packet(ProtocolVersion::V5, refused()) {
            Some(Packet::PubAck(a)) => {
                assert_eq!((a.pkid, a.reason), (7, PubAckReason::NotAuthorized));
            }
            other => panic!("{other:?}"),
        }
        match ack_packet(ProtocolVersion::V3_1_1, refused()) {
            Some(Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::Success),
            other => panic!("{other:?}"),
        }
        let rec = publish(8, QoS::ExactlyOnce, PubRecReason::PayloadFormatInvalid);
        match ack_packet(ProtocolVersion::V5, rec) {
            Some(Packet::PubRec(r)) => {
                assert_eq!((r.pkid, r.reason), (8, PubRecReason::PayloadFormatInvalid));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            ack_packet(
                ProtocolVersion::V5,
                publish(9, QoS::AtMostOnce, PubRecReason::Success)
            )
            .is_none()
        );
    }
}
