//! A raw MQTT client for byte-level tests: frames written by hand from the specification,
//! replies parsed with the `mqttbytes` decoder (an implementation independent of Samos's).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::{v4, v5};

pub fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

pub fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

pub fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// CONNECT for `level` 3 (MQIsdp), 4 or 5. `props` is the raw v5 property block content.
pub fn connect(level: u8, client_id: &str, clean: bool, keepalive: u16, props: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(if level == 3 { b"MQIsdp" } else { b"MQTT" }, &mut body);
    body.push(level);
    body.push(if clean { 0x02 } else { 0 });
    body.extend_from_slice(&keepalive.to_be_bytes());
    if level == 5 {
        varint(props.len(), &mut body);
        body.extend_from_slice(props);
    }
    string(client_id.as_bytes(), &mut body);
    frame(0x10, &body)
}

pub fn publish(level: u8, topic: &[u8], qos: u8, pkid: u16, dup: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic, &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | if dup { 0x08 } else { 0 }, &body)
}

pub fn subscribe(level: u8, pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0);
    }
    string(filter.as_bytes(), &mut body);
    body.push(qos);
    frame(0x82, &body)
}

pub fn ack(byte1: u8, pkid: u16) -> Vec<u8> {
    frame(byte1, &pkid.to_be_bytes())
}

/// A raw client: writes bytes, reads whole packets.
pub struct Raw {
    s: TcpStream,
    buf: BytesMut,
    pub level: u8,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Reply {
    V4(v4::Packet),
    V5(v5::Packet),
    Closed,
    Timeout,
}

impl Raw {
    pub fn open(port: u16, level: u8) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
            level,
        }
    }

    /// Connects and checks CONNACK; returns session present.
    pub fn connected(port: u16, level: u8, id: &str, clean: bool, props: &[u8]) -> (Raw, bool) {
        let mut r = Raw::open(port, level);
        r.send(&connect(level, id, clean, 60, props));
        match r.next(Duration::from_secs(5)) {
            Reply::V4(v4::Packet::ConnAck(a)) => {
                assert_eq!(a.code, v4::ConnectReturnCode::Success);
                (r, a.session_present)
            }
            Reply::V5(v5::Packet::ConnAck(a)) => {
                assert_eq!(a.code, v5::ConnectReturnCode::Success);
                (r, a.session_present)
            }
            _ => panic!("no CONNACK"),
        }
    }

    /// This client's own address (what the server sees as its peer without a balancer).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.s.local_addr().expect("local address")
    }

    /// A second handle on the socket, to write from another thread while this one reads.
    pub fn writer(&self) -> TcpStream {
        self.s.try_clone().expect("clone the socket")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    pub fn next(&mut self, timeout: Duration) -> Reply {
        let deadline = Instant::now() + timeout;
        loop {
            // mqttbytes cannot read a v5 DISCONNECT without properties (`E0 01 rc`): do it here.
            if self.level == 5 && self.buf.len() >= 2 && self.buf[0] == 0xE0 {
                let len = self.buf[1] as usize;
                if self.buf.len() >= 2 + len {
                    let reason = if len == 0 { 0 } else { self.buf[2] };
                    let _ = self.buf.split_to(2 + len);
                    let mut d = v5::Disconnect::new();
                    d.reason_code =
                        v5::DisconnectReasonCode::try_from(reason).expect("known reason");
                    return Reply::V5(v5::Packet::Disconnect(d));
                }
            }
            if !self.buf.is_empty() {
                let parsed = if self.level == 5 {
                    v5::read(&mut self.buf, 1 << 20).map(Reply::V5)
                } else {
                    v4::read(&mut self.buf, 1 << 20).map(Reply::V4)
                };
                match parsed {
                    Ok(p) => return p,
                    Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent an undecodable packet: {e:?}"),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Reply::Timeout;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Reply::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Reply::Timeout;
                }
                Err(_) => return Reply::Closed,
            }
        }
    }

    /// Reads until the server closes the connection; returns the v5 DISCONNECT reason seen.
    pub fn closed_with(&mut self, timeout: Duration) -> Option<u8> {
        let mut reason = None;
        loop {
            match self.next(timeout) {
                Reply::Closed => return reason,
                Reply::Timeout => panic!("connection not closed within {timeout:?}"),
                Reply::V5(v5::Packet::Disconnect(d)) => reason = Some(d.reason_code as u8),
                _ => {}
            }
        }
    }

    pub fn expect_publish(&mut self) -> v4::Publish {
        match self.next(Duration::from_secs(5)) {
            Reply::V4(v4::Packet::Publish(p)) => p,
            _ => panic!("expected PUBLISH"),
        }
    }
}

impl Raw {
    /// Publishes at QoS 1 and returns the PUBACK reason code (0 for 3.x success).
    pub fn publish_qos1(&mut self, topic: &str, payload: &[u8], pkid: u16) -> u8 {
        self.send(&publish(
            self.level,
            topic.as_bytes(),
            1,
            pkid,
            false,
            payload,
        ));
        loop {
            match self.next(Duration::from_secs(5)) {
                Reply::V5(v5::Packet::PubAck(a)) if a.pkid == pkid => return a.reason as u8,
                Reply::V4(v4::Packet::PubAck(a)) if a.pkid == pkid => return 0,
                Reply::Closed | Reply::Timeout => panic!("no PUBACK for {topic}"),
                _ => {}
            }
        }
    }

    /// The next PUBLISH (either version) as (topic, payload).
    pub fn next_publish(&mut self, timeout: Duration) -> Option<(String, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Reply::V5(v5::Packet::Publish(p)) => return Some((p.topic, p.payload.to_vec())),
                Reply::V4(v4::Packet::Publish(p)) => return Some((p.topic, p.payload.to_vec())),
                Reply::Closed | Reply::Timeout => return None,
                _ => {}
            }
        }
    }
}
