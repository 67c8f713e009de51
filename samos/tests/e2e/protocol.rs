//! Byte-level protocol tests over raw sockets: hostile and broken input, and the exact
//! packet sequences of redelivery, QoS 2, flow control and keep-alive. Frames are written by
//! hand from the specification; replies are parsed with the `mqttbytes` decoder.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::raw::*;
use common::*;
use mqttbytes::QoS;
use mqttbytes::{v4, v5};

const T: Duration = Duration::from_secs(5);

/// The server still works for well-behaved clients.
fn still_serving(s: &TestServer) {
    let (mut sub, _) = Raw::connected(s.port(), 4, "probe-sub", true, &[]);
    sub.send(&subscribe(4, 1, "alive", 1));
    assert!(matches!(sub.next(T), Reply::V4(v4::Packet::SubAck(_))));
    assert!(
        mosquitto_pub(s.port(), &["-t", "alive", "-m", "yes", "-q", "1"])
            .status
            .success()
    );
    assert_eq!(&sub.expect_publish().payload[..], b"yes");
}

#[test]
fn first_packet_must_be_connect() {
    let s = TestServer::start();
    let mut r = Raw::open(s.port(), 4);
    r.send(&[0xC0, 0]);
    r.closed_with(T);
    assert!(s.wait_log("first packet is not CONNECT", T));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"first_packet_not_connect\"}"),
        1
    );
    still_serving(&s);
}

#[test]
fn second_connect_closes_the_connection() {
    let s = TestServer::start();
    let (mut r, _) = Raw::connected(s.port(), 5, "twice", true, &[]);
    r.send(&connect(5, "twice", true, 60, &[]));
    assert_eq!(r.closed_with(T), Some(0x82));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"second_connect\"}"),
        1
    );
    still_serving(&s);
}

#[test]
fn malformed_remaining_length_and_flags_are_refused() {
    let s = TestServer::start();
    let (mut r, _) = Raw::connected(s.port(), 4, "bad-len", true, &[]);
    r.send(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    r.closed_with(T);
    let (mut r, _) = Raw::connected(s.port(), 4, "bad-flags", true, &[]);
    r.send(&frame(0x80, &[0, 1, 0, 1, b'a', 0])); // SUBSCRIBE must carry flags 0b0010
    r.closed_with(T);
    let (mut r, _) = Raw::connected(s.port(), 4, "qos3", true, &[]);
    r.send(&frame(0x36, &[0, 1, b'a', 0, 1]));
    r.closed_with(T);
    let mut r = Raw::open(s.port(), 4);
    let mut c = connect(4, "reserved", true, 60, &[]);
    c[9] |= 0x01; // reserved CONNECT flag
    r.send(&c);
    r.closed_with(T);
    let m = s.metrics_text();
    assert!(m.contains("reason=\"malformed_length\"} 1"), "{m}");
    assert!(m.contains("reason=\"invalid_flags\"} 2"), "{m}");
    assert!(m.contains("reason=\"malformed_connect\"} 1"), "{m}");
    still_serving(&s);
}

#[test]
fn truncated_frames_are_completed_not_misparsed() {
    let s = TestServer::start();
    let (mut sub, _) = Raw::connected(s.port(), 4, "t-sub", true, &[]);
    sub.send(&subscribe(4, 1, "trunc", 0));
    assert!(matches!(sub.next(T), Reply::V4(v4::Packet::SubAck(_))));
    let (mut publ, _) = Raw::connected(s.port(), 4, "t-pub", true, &[]);
    let p = publish(4, b"trunc", 0, 0, false, b"whole message");
    for chunk in p.chunks(3) {
        publ.send(chunk);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(&sub.expect_publish().payload[..], b"whole message");
    // A frame cut off by a disconnect is dropped without harm.
    publ.send(&p[..p.len() - 4]);
    drop(publ);
    assert!(matches!(
        sub.next(Duration::from_millis(500)),
        Reply::Timeout
    ));
    still_serving(&s);
}

#[test]
fn oversized_packets_are_refused_before_they_are_buffered() {
    let s = TestServer::with_config("[mqtt]\nmax_packet_size = 1024\n");
    let (mut r, _) = Raw::connected(s.port(), 5, "big", true, &[]);
    // Only the header of a 100 MB PUBLISH: refused at once.
    r.send(&[0x30, 0x80, 0x80, 0x80, 0x30]);
    assert_eq!(r.closed_with(T), Some(0x95));
    let (mut r, _) = Raw::connected(s.port(), 4, "big4", true, &[]);
    r.send(&publish(4, b"x", 0, 0, false, &[0u8; 2000]));
    r.closed_with(T);
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"packet_too_large\"}"),
        2
    );
    still_serving(&s);
}

#[test]
fn invalid_utf8_and_wildcard_topics_are_refused() {
    let s = TestServer::start();
    let (mut r, _) = Raw::connected(s.port(), 4, "utf8", true, &[]);
    r.send(&publish(4, b"bad/\xff\xfe", 0, 0, false, b"x"));
    r.closed_with(T);
    let (mut r, _) = Raw::connected(s.port(), 5, "wild", true, &[]);
    r.send(&publish(5, b"a/+/b", 1, 1, false, b"x"));
    assert_eq!(r.closed_with(T), Some(0x81));
    assert_eq!(s.metric("samos_refusals_total{reason=\"invalid_utf8\"}"), 1);
    assert!(s.log().contains("contains a wildcard"));
    still_serving(&s);
}

#[test]
fn a_client_that_never_sends_connect_is_closed_after_the_timeout() {
    let s = TestServer::with_config("[mqtt]\nconnect_timeout_secs = 1\n");
    let mut r = Raw::open(s.port(), 4);
    let t0 = Instant::now();
    r.closed_with(Duration::from_secs(5));
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert!(s.wait_log("no CONNECT within 1s", T));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"connect_timeout\"}"),
        1
    );
}

#[test]
fn a_connect_flood_leaves_other_clients_undisturbed() {
    let s = TestServer::start();
    let (mut sub, _) = Raw::connected(s.port(), 4, "steady", true, &[]);
    sub.send(&subscribe(4, 1, "steady/#", 1));
    assert!(matches!(sub.next(T), Reply::V4(v4::Packet::SubAck(_))));
    let port = s.port();
    let flood: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..50 {
                    let mut r = Raw::open(port, 4);
                    r.send(&connect(4, &format!("flood-{t}-{i}"), true, 60, &[]));
                    kept.push(r);
                }
                kept
            })
        })
        .collect();
    let conns: Vec<Raw> = flood.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(
        mosquitto_pub(s.port(), &["-t", "steady/x", "-m", "through", "-q", "1"])
            .status
            .success()
    );
    assert_eq!(&sub.expect_publish().payload[..], b"through");
    drop(conns);
    still_serving(&s);
}

#[test]
fn keepalive_timeout_is_one_and_a_half_times_the_interval() {
    let s = TestServer::start();
    let mut r = Raw::open(s.port(), 5);
    r.send(&connect(5, "sleepy", true, 1, &[]));
    assert!(matches!(r.next(T), Reply::V5(v5::Packet::ConnAck(_))));
    let t0 = Instant::now();
    assert_eq!(r.closed_with(Duration::from_secs(5)), Some(0x8D));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Keep-alive 0: never timed out (3.1.1 keeps the client's value).
    let mut r = Raw::open(s.port(), 4);
    r.send(&connect(4, "forever", true, 0, &[]));
    assert!(matches!(r.next(T), Reply::V4(v4::Packet::ConnAck(_))));
    assert!(matches!(r.next(Duration::from_secs(2)), Reply::Timeout));
}

#[test]
fn unacknowledged_qos1_and_qos2_are_redelivered_with_dup_after_reconnect() {
    let s = TestServer::start();
    let (mut c, present) = Raw::connected(s.port(), 4, "redeliver", false, &[]);
    assert!(!present);
    c.send(&subscribe(4, 1, "rd/#", 2));
    assert!(matches!(c.next(T), Reply::V4(v4::Packet::SubAck(_))));
    assert!(
        mosquitto_pub(s.port(), &["-t", "rd/1", "-m", "q1", "-q", "1"])
            .status
            .success()
    );
    assert!(
        mosquitto_pub(s.port(), &["-t", "rd/2", "-m", "q2", "-q", "2"])
            .status
            .success()
    );
    let first = c.expect_publish();
    assert!(!first.dup && first.qos == QoS::AtLeastOnce);
    let second = c.expect_publish();
    assert_eq!(second.qos, QoS::ExactlyOnce);
    drop(c); // no PUBACK, no PUBREC

    let (mut c, present) = Raw::connected(s.port(), 4, "redeliver", false, &[]);
    assert!(present);
    let again = c.expect_publish();
    assert!(again.dup);
    assert_eq!((again.pkid, &again.payload[..]), (first.pkid, &b"q1"[..]));
    let again2 = c.expect_publish();
    assert!(again2.dup);
    assert_eq!(
        (again2.pkid, &again2.payload[..]),
        (second.pkid, &b"q2"[..])
    );
    c.send(&ack(0x40, first.pkid));
    c.send(&ack(0x50, second.pkid));
    match c.next(T) {
        Reply::V4(v4::Packet::PubRel(r)) => assert_eq!(r.pkid, second.pkid),
        _ => panic!("expected PUBREL"),
    }
    drop(c); // PUBREL sent, PUBCOMP not: PUBREL is resent

    let (mut c, _) = Raw::connected(s.port(), 4, "redeliver", false, &[]);
    match c.next(T) {
        Reply::V4(v4::Packet::PubRel(r)) => assert_eq!(r.pkid, second.pkid),
        _ => panic!("expected PUBREL again"),
    }
    c.send(&ack(0x70, second.pkid));
    assert!(matches!(c.next(Duration::from_millis(500)), Reply::Timeout));
}

#[test]
fn qos2_resend_with_dup_is_routed_once() {
    let s = TestServer::start();
    let (mut sub, _) = Raw::connected(s.port(), 4, "q2-sub", true, &[]);
    sub.send(&subscribe(4, 1, "q2", 0));
    assert!(matches!(sub.next(T), Reply::V4(v4::Packet::SubAck(_))));
    let (mut p, _) = Raw::connected(s.port(), 4, "q2-pub", true, &[]);
    p.send(&publish(4, b"q2", 2, 7, false, b"exactly once"));
    assert!(matches!(p.next(T), Reply::V4(v4::Packet::PubRec(r)) if r.pkid == 7));
    p.send(&publish(4, b"q2", 2, 7, true, b"exactly once"));
    assert!(matches!(p.next(T), Reply::V4(v4::Packet::PubRec(r)) if r.pkid == 7));
    p.send(&ack(0x62, 7));
    assert!(matches!(p.next(T), Reply::V4(v4::Packet::PubComp(c)) if c.pkid == 7));
    assert_eq!(&sub.expect_publish().payload[..], b"exactly once");
    assert!(matches!(
        sub.next(Duration::from_millis(500)),
        Reply::Timeout
    ));
}

#[test]
fn exceeding_receive_maximum_ends_the_connection_with_0x93() {
    let s = TestServer::with_config("[mqtt]\nreceive_maximum = 2\n");
    let (mut c, _) = Raw::connected(s.port(), 5, "greedy", true, &[]);
    for id in 1..=3 {
        c.send(&publish(5, b"rm", 2, id, false, b"x"));
    }
    assert_eq!(c.closed_with(T), Some(0x93));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"receive_maximum_exceeded\"}"),
        1
    );
}

#[test]
fn a_client_still_writing_reads_the_disconnect_instead_of_a_reset() {
    // The client goes on publishing after it broke the limit, as a busy one does (paho's
    // interoperability suite: flow control). The server must not close with unread input: the
    // kernel would reset the connection and the client would see a broken pipe instead of
    // DISCONNECT 0x93. It drains until the client closes.
    let s = TestServer::with_config("[mqtt]\nreceive_maximum = 2\n");
    for round in 0..3 {
        let (mut c, _) = Raw::connected(s.port(), 5, &format!("flood-{round}"), true, &[]);
        let mut w = c.writer();
        let mut burst = Vec::new();
        for id in 1..=3 {
            burst.extend(publish(5, b"rm", 2, id, false, b"x"));
        }
        let filler = publish(5, b"rm", 0, 0, false, &[b'f'; 1000]);
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            w.write_all(&burst)?;
            for _ in 0..1000 {
                w.write_all(&filler)?;
            }
            Ok::<(), std::io::Error>(())
        });
        assert_eq!(c.closed_with(T), Some(0x93), "round {round}");
        let written = writer.join().unwrap();
        assert!(written.is_ok(), "round {round}: {written:?}");
    }
}

#[test]
fn client_receive_maximum_limits_what_is_in_flight() {
    let s = TestServer::start();
    // Receive Maximum (0x21) = 2.
    let (mut c, _) = Raw::connected(s.port(), 5, "small-window", true, &[0x21, 0, 2]);
    c.send(&subscribe(5, 1, "win", 1));
    assert!(matches!(c.next(T), Reply::V5(v5::Packet::SubAck(_))));
    for i in 0..5 {
        assert!(
            mosquitto_pub(s.port(), &["-t", "win", "-m", &i.to_string(), "-q", "1"])
                .status
                .success()
        );
    }
    let mut got = Vec::new();
    loop {
        match c.next(Duration::from_millis(700)) {
            Reply::V5(v5::Packet::Publish(p)) => got.push(p),
            Reply::Timeout if got.len() < 5 => {
                assert_eq!(got.len() % 2, 0, "window of 2 respected");
                let ids: Vec<u16> = got.iter().rev().take(2).map(|p| p.pkid).collect();
                for id in ids {
                    c.send(&ack(0x40, id));
                }
            }
            _ => break,
        }
        if got.len() == 5 {
            break;
        }
    }
    let payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [b"0", b"1", b"2", b"3", b"4"]);
}

#[test]
fn connect_refusals_use_the_right_return_codes() {
    let s = TestServer::start();
    // 3.1.1, empty client id, persistent session: identifier rejected (2).
    let mut r = Raw::open(s.port(), 4);
    r.send(&connect(4, "", false, 60, &[]));
    assert!(
        matches!(r.next(T), Reply::V4(v4::Packet::ConnAck(a)) if a.code == v4::ConnectReturnCode::BadClientId)
    );
    // Unknown protocol level: unacceptable protocol version (1), then close.
    let mut r = Raw::open(s.port(), 4);
    let mut c = connect(4, "lvl", true, 60, &[]);
    c[8] = 9;
    r.send(&c);
    assert!(
        matches!(r.next(T), Reply::V4(v4::Packet::ConnAck(a)) if a.code == v4::ConnectReturnCode::RefusedProtocolVersion)
    );
    // MQTT 3.1 (MQIsdp, level 3) is accepted.
    let (mut old, _) = Raw::connected(s.port(), 3, "paper-node", true, &[]);
    old.send(&publish(3, b"paper/t", 1, 1, false, b"23.4"));
    assert!(matches!(old.next(T), Reply::V4(v4::Packet::PubAck(a)) if a.pkid == 1));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"client_id_invalid\"}"),
        1
    );
}

#[test]
fn server_topic_alias_is_used_for_repeated_topics() {
    let s = TestServer::start();
    // Topic Alias Maximum (0x22) = 4.
    let (mut c, _) = Raw::connected(s.port(), 5, "aliased", true, &[0x22, 0, 4]);
    c.send(&subscribe(5, 1, "ta/#", 0));
    assert!(matches!(c.next(T), Reply::V5(v5::Packet::SubAck(_))));
    for _ in 0..2 {
        assert!(
            mosquitto_pub(s.port(), &["-t", "ta/some/long/topic", "-m", "v"])
                .status
                .success()
        );
    }
    let Reply::V5(v5::Packet::Publish(a)) = c.next(T) else {
        panic!()
    };
    let Reply::V5(v5::Packet::Publish(b)) = c.next(T) else {
        panic!()
    };
    let alias = a.properties.as_ref().unwrap().topic_alias.unwrap();
    assert_eq!(a.topic, "ta/some/long/topic");
    assert_eq!(b.topic, "");
    assert_eq!(b.properties.as_ref().unwrap().topic_alias, Some(alias));
}

#[test]
fn messages_larger_than_the_client_maximum_packet_size_are_not_sent() {
    let s = TestServer::start();
    // Maximum Packet Size (0x27) = 100 bytes.
    let (mut c, _) = Raw::connected(s.port(), 5, "small-client", true, &[0x27, 0, 0, 0, 100]);
    c.send(&subscribe(5, 1, "mps", 1));
    assert!(matches!(c.next(T), Reply::V5(v5::Packet::SubAck(_))));
    let big = "x".repeat(200);
    assert!(
        mosquitto_pub(s.port(), &["-t", "mps", "-m", &big, "-q", "1"])
            .status
            .success()
    );
    assert!(
        mosquitto_pub(s.port(), &["-t", "mps", "-m", "small", "-q", "1"])
            .status
            .success()
    );
    let Reply::V5(v5::Packet::Publish(p)) = c.next(T) else {
        panic!("expected the small message")
    };
    assert_eq!(&p.payload[..], b"small");
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"exceeds_client_maximum_packet_size\"}"),
        1
    );
}
