//! What a connection owes its client on the way out: QoS 1/2 messages in flight, their packet
//! ids, the messages waiting for room in the client's window, and the topic aliases given to
//! the client ([`OutgoingAliases`]). Sans-IO: the connection asks what to send next and writes it.
//!
//! Invariants: a packet id is in use from its PUBLISH until the PUBACK, or the PUBREC with an
//! error, or the PUBCOMP; no two messages in flight share one, and 0 is never used. At most
//! `window` (the client's Receive Maximum, capped by the server) QoS 1/2 messages are in
//! flight; QoS 0 messages are never held back by the window. Messages leave in the order they
//! were queued (backlog of the previous connection first, then the outbox).

use std::collections::VecDeque;

use mqttbytes::QoS;

use super::aliases::OutgoingAliases;
use crate::broker::{Delivery, OutPhase, Outbox, SessionState};

/// Packet ids as a bitmap: allocation is O(1) whatever the window. The 8 KiB bitmap exists
/// only once an id was used: a node that only publishes (most of a sensor network) never
/// receives a QoS 1/2 message and holds none.
#[derive(Debug)]
struct PacketIds {
    in_use: Option<Box<[u64; 1024]>>,
    /// The last id handed out; allocation continues after it.
    last: u16,
}

impl PacketIds {
    fn new(last: u16) -> PacketIds {
        PacketIds { in_use: None, last }
    }

    fn bit(id: u16) -> (usize, u64) {
        (usize::from(id >> 6), 1 << (id & 63))
    }

    fn is_used(&self, id: u16) -> bool {
        let (word, bit) = Self::bit(id);
        self.in_use.as_ref().is_some_and(|b| b[word] & bit != 0)
    }

    fn mark(&mut self, id: u16) {
        let (word, bit) = Self::bit(id);
        self.in_use.get_or_insert_with(|| Box::new([0; 1024]))[word] |= bit;
    }

    fn free(&mut self, id: u16) {
        let (word, bit) = Self::bit(id);
        if let Some(b) = &mut self.in_use {
            b[word] &= !bit;
        }
    }

    /// The next free id after the last one handed out. The window (at most 65,535 in flight)
    /// guarantees one is free.
    fn allocate(&mut self) -> u16 {
        loop {
            self.last = self.last.wrapping_add(1);
            if self.last != 0 && !self.is_used(self.last) {
                return self.last;
            }
        }
    }
}

/// What a PUBREC from the client means for the message it names.
#[derive(Debug, PartialEq, Eq)]
pub enum PubRecOutcome {
    /// Send PUBREL and wait for PUBCOMP.
    Release,
    /// The client refused the message (reason ≥ 0x80): the exchange ends here.
    Refused,
    /// No QoS 2 message is waiting for a PUBREC under this id.
    Unknown,
}

/// The outgoing QoS state of one connection (see the module header).
#[derive(Debug)]
pub struct Outgoing {
    /// QoS 1/2 messages awaiting acknowledgement, in sending order.
    inflight: VecDeque<(u16, Delivery, OutPhase)>,
    ids: PacketIds,
    /// Restored from a previous connection; sent before anything new.
    backlog: VecDeque<Delivery>,
    /// Taken from the outbox, not yet sent (reversed: the next one is last).
    taken: Vec<Delivery>,
    window: usize,
    pub aliases: OutgoingAliases,
}

impl Outgoing {
    pub fn new(window: usize, alias_maximum: u16) -> Outgoing {
        Outgoing {
            inflight: VecDeque::new(),
            ids: PacketIds::new(0),
            backlog: VecDeque::new(),
            taken: Vec::new(),
            window,
            aliases: OutgoingAliases::new(alias_maximum),
        }
    }

    /// Takes over a previous connection's state; returns its messages in flight, which must
    /// be sent again (PUBLISH with DUP, or PUBREL) in this order, and are tracked again.
    pub fn resume(&mut self, state: &mut SessionState) -> Vec<(u16, Delivery, OutPhase)> {
        self.ids.last = state.next_pkid;
        self.backlog = std::mem::take(&mut state.pending);
        let resend = std::mem::take(&mut state.inflight);
        for (pkid, _, _) in &resend {
            self.ids.mark(*pkid);
        }
        self.inflight.extend(resend.iter().cloned());
        resend
    }

    /// The next message to send, if the window allows one: the backlog first, then the
    /// outbox. QoS 0 messages pass a full window; a QoS 1/2 one at the head waits.
    pub fn next(&mut self, outbox: &Outbox) -> Option<Delivery> {
        let room = self.window.saturating_sub(self.inflight.len());
        if let Some(front) = self.backlog.front() {
            if front.qos != QoS::AtMostOnce && room == 0 {
                return None;
            }
            return self.backlog.pop_front();
        }
        if self.taken.is_empty() {
            outbox.take(room, &mut self.taken);
            self.taken.reverse();
        }
        self.taken.pop()
    }

    /// A packet id for the next QoS 1/2 PUBLISH: free until [`Outgoing::track`] takes it.
    pub fn allocate(&mut self) -> u16 {
        self.ids.allocate()
    }

    /// Starts tracking a QoS 1/2 message just sent under `pkid`.
    pub fn track(&mut self, pkid: u16, delivery: Delivery) {
        self.ids.mark(pkid);
        self.inflight
            .push_back((pkid, delivery, OutPhase::Published));
    }

    fn position(&self, pkid: u16, phase: OutPhase) -> Option<usize> {
        self.inflight
            .iter()
            .position(|(id, _, ph)| *id == pkid && *ph == phase)
    }

    fn forget(&mut self, index: usize) {
        if let Some((pkid, _, _)) = self.inflight.remove(index) {
            self.ids.free(pkid);
        }
    }

    /// PUBACK: the QoS 1 message is delivered. Unknown ids are ignored.
    pub fn puback(&mut self, pkid: u16) {
        if let Some(i) = self.position(pkid, OutPhase::Published) {
            self.forget(i);
        }
    }

    /// PUBREC with the client's verdict (`refused`: reason ≥ 0x80).
    pub fn pubrec(&mut self, pkid: u16, refused: bool) -> PubRecOutcome {
        match self.position(pkid, OutPhase::Published) {
            None => PubRecOutcome::Unknown,
            Some(i) if refused => {
                self.forget(i);
                PubRecOutcome::Refused
            }
            Some(i) => {
                self.inflight[i].2 = OutPhase::Released;
                PubRecOutcome::Release
            }
        }
    }

    /// PUBCOMP: the QoS 2 exchange is complete. Unknown ids are ignored.
    pub fn pubcomp(&mut self, pkid: u16) {
        if let Some(i) = self.position(pkid, OutPhase::Released) {
            self.forget(i);
        }
    }

    /// QoS 1/2 messages in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// What the next connection of a persistent session takes over: messages in flight, and
    /// the ones not yet sent in their order, with the id allocator's position.
    pub fn into_state(&mut self, state: &mut SessionState) {
        let mut pending: VecDeque<Delivery> = self.taken.drain(..).rev().collect();
        pending.extend(self.backlog.drain(..));
        state.inflight = self.inflight.drain(..).collect();
        state.pending = pending;
        state.next_pkid = self.ids.last;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::broker::Message;

    fn delivery(topic: &str, qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: topic.into(),
                payload: Bytes::new(),
                qos,
                retain: false,
                properties: None,
                publisher: None,
                expires_at: None,
                recipient: None,
            }),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
        }
    }

    fn send(out: &mut Outgoing, d: Delivery) -> u16 {
        let id = out.allocate();
        out.track(id, d);
        id
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_use() {
        let mut ids = PacketIds::new(u16::MAX - 1);
        assert_eq!(ids.allocate(), u16::MAX);
        assert!(ids.in_use.is_none(), "no bitmap before an id is in use");
        ids.mark(u16::MAX);
        ids.mark(1);
        ids.mark(2);
        assert_eq!(ids.allocate(), 3, "wraps past 0 and skips ids in use");
        ids.free(1);
        ids.last = 0;
        assert_eq!(ids.allocate(), 1, "a freed id is reused");
    }

    #[test]
    fn every_id_in_flight_is_distinct_even_after_wrapping() {
        let outbox = Outbox::new(100_000);
        let mut out = Outgoing::new(1000, 0);
        let mut live = std::collections::HashSet::new();
        let mut order = VecDeque::new();
        for i in 0..70_000u32 {
            assert!(outbox.push(delivery("t", QoS::AtLeastOnce)));
            let d = out.next(&outbox).expect("room in the window");
            let id = send(&mut out, d);
            assert_ne!(id, 0);
            assert!(live.insert(id), "id {id} handed out twice (message {i})");
            order.push_back(id);
            if order.len() == 1000 {
                let done = order.pop_front().unwrap();
                out.puback(done);
                live.remove(&done);
            }
        }
    }

    #[test]
    fn the_window_holds_back_qos1_and_2_but_never_qos0() {
        let outbox = Outbox::new(16);
        let mut out = Outgoing::new(1, 0);
        outbox.push(delivery("a", QoS::AtLeastOnce));
        let a = out.next(&outbox).unwrap();
        let id = send(&mut out, a);
        outbox.push(delivery("b", QoS::ExactlyOnce));
        assert!(out.next(&outbox).is_none(), "window of 1 is full");
        outbox.push(delivery("c", QoS::AtMostOnce));
        out.puback(id);
        assert_eq!(out.next(&outbox).unwrap().message.topic, "b");
        assert_eq!(out.next(&outbox).unwrap().message.topic, "c");
    }

    #[test]
    fn qos2_goes_published_released_complete() {
        let outbox = Outbox::new(16);
        let mut out = Outgoing::new(10, 0);
        outbox.push(delivery("a", QoS::ExactlyOnce));
        let next = out.next(&outbox).unwrap();
        let id = send(&mut out, next);
        assert_eq!(out.pubrec(id + 1, false), PubRecOutcome::Unknown);
        out.pubcomp(id);
        assert_eq!(
            out.in_flight(),
            1,
            "PUBCOMP before PUBREC completes nothing"
        );
        assert_eq!(out.pubrec(id, false), PubRecOutcome::Release);
        assert_eq!(
            out.pubrec(id, false),
            PubRecOutcome::Unknown,
            "already released"
        );
        out.puback(id);
        assert_eq!(out.in_flight(), 1, "a PUBACK does not end a QoS 2 exchange");
        out.pubcomp(id);
        assert_eq!(out.in_flight(), 0);

        outbox.push(delivery("b", QoS::ExactlyOnce));
        let next = out.next(&outbox).unwrap();
        let id = send(&mut out, next);
        assert_eq!(out.pubrec(id, true), PubRecOutcome::Refused);
        assert_eq!(out.in_flight(), 0);
    }

    #[test]
    fn a_session_resumes_with_its_messages_in_order() {
        let outbox = Outbox::new(16);
        let mut out = Outgoing::new(1, 0);
        // A window of 1 takes `a` and the QoS 0 `b` behind it out of the outbox; `c` waits
        // there (the outbox itself is the router's to carry over).
        outbox.push(delivery("a", QoS::AtLeastOnce));
        outbox.push(delivery("b", QoS::AtMostOnce));
        outbox.push(delivery("c", QoS::AtLeastOnce));
        let a = out.next(&outbox).unwrap();
        assert_eq!(a.message.topic, "a");
        let id_a = send(&mut out, a);
        let mut state = SessionState::default();
        out.into_state(&mut state);
        assert_eq!(state.inflight.len(), 1);
        assert_eq!(state.pending.len(), 1, "b was taken but not sent");
        assert_eq!(state.next_pkid, id_a);

        let mut next = Outgoing::new(10, 0);
        let resend = next.resume(&mut state);
        assert_eq!(resend.len(), 1);
        assert_eq!(resend[0].0, id_a);
        assert_eq!(next.in_flight(), 1, "the resent message is tracked again");
        let b = next.next(&outbox).unwrap();
        assert_eq!(b.message.topic, "b", "the backlog goes before the outbox");
        let c = next.next(&outbox).unwrap();
        assert_eq!(c.message.topic, "c");
        assert_ne!(
            send(&mut next, c),
            id_a,
            "the resent message's id stays in use"
        );
        next.puback(id_a);
        assert_eq!(next.in_flight(), 1);
    }
}
