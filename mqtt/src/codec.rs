//! Wire codec: frames bytes into packets for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Decoding is delegated to the `mqttbytes` crate, behind this adapter, which covers its gaps:
//! the MQTT 3.1 `MQIsdp` CONNECT, strict fixed-header flags, the maximum size of the whole
//! frame, the v5 DISCONNECT and UNSUBSCRIBE forms it mishandles, and packets a server must
//! never receive. Every version is lifted into the v5 packet model so the rest of the engine
//! speaks one language; [`Codec::encode`] lowers it again for 3.x clients.

use bytes::{Buf, BufMut, BytesMut};
use mqttbytes::v4;
use mqttbytes::v5::{
    Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode, LastWill, Login, Packet, PubAck,
    PubComp, PubRec, PubRel, Publish, RetainForwardRule, Subscribe, SubscribeFilter,
    SubscribeReasonCode, Unsubscribe,
};

/// The protocol a client speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (`MQIsdp`, level 3): what the paper's nodes speak.
    V3_1,
    /// MQTT 3.1.1 (`MQTT`, level 4).
    V3_1_1,
    /// MQTT 5.0 (`MQTT`, level 5).
    V5,
}

impl ProtocolVersion {
    /// True for the 3.x family, which has no properties or reason codes.
    pub fn is_v3(self) -> bool {
        !matches!(self, ProtocolVersion::V5)
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V3_1 => "3.1",
            ProtocolVersion::V3_1_1 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        })
    }
}

/// Why bytes could not be turned into a packet. Each maps to a refusal reason in metrics.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("malformed remaining length")]
    MalformedLength,
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidFlags { packet_type: u8, flags: u8 },
    #[error("packet type {0} is reserved or never sent to a server")]
    UnexpectedPacketType(u8),
    #[error("first packet is not CONNECT (packet type {0})")]
    NotConnect(u8),
    #[error("a second CONNECT on an established connection")]
    SecondConnect,
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol { name: String, level: u8 },
    #[error("malformed CONNECT: {0}")]
    MalformedConnect(&'static str),
    #[error("topic or string is not valid UTF-8")]
    InvalidUtf8,
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("cannot encode packet: {0}")]
    Encode(String),
}

impl CodecError {
    /// A short, stable label for the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            CodecError::PacketTooLarge { .. } => "packet_too_large",
            CodecError::MalformedLength => "malformed_length",
            CodecError::InvalidFlags { .. } => "invalid_flags",
            CodecError::UnexpectedPacketType(_) => "unexpected_packet_type",
            CodecError::NotConnect(_) => "first_packet_not_connect",
            CodecError::SecondConnect => "second_connect",
            CodecError::UnsupportedProtocol { .. } => "unsupported_protocol",
            CodecError::MalformedConnect(_) => "malformed_connect",
            CodecError::InvalidUtf8 => "invalid_utf8",
            CodecError::Malformed(_) => "malformed_packet",
            CodecError::Encode(_) => "encode_error",
        }
    }

    /// The v5 DISCONNECT reason that reports this error to the peer.
    pub fn disconnect_reason(&self) -> DisconnectReasonCode {
        match self {
            CodecError::PacketTooLarge { .. } => DisconnectReasonCode::PacketTooLarge,
            CodecError::SecondConnect | CodecError::UnexpectedPacketType(_) => {
                DisconnectReasonCode::ProtocolError
            }
            _ => DisconnectReasonCode::MalformedPacket,
        }
    }
}

fn lift(e: mqttbytes::Error) -> CodecError {
    match e {
        mqttbytes::Error::TopicNotUtf8 => CodecError::InvalidUtf8,
        other => CodecError::Malformed(other.to_string()),
    }
}

/// A complete frame's fixed header.
#[derive(Debug, Clone, Copy)]
struct Frame {
    byte1: u8,
    header_len: usize,
    remaining: usize,
}

impl Frame {
    fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }
    fn flags(&self) -> u8 {
        self.byte1 & 0x0F
    }
    fn len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Reads the fixed header; `Ok(None)` when more bytes are needed. The size limit applies to the
/// whole frame and is checked as soon as the header is known, before the body is buffered.
fn frame(buf: &[u8], max_packet_size: usize) -> Result<Option<Frame>, CodecError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    let mut shift = 0;
    for i in 1..=4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        remaining |= ((b & 0x7F) as usize) << shift;
        if b & 0x80 == 0 {
            let f = Frame {
                byte1,
                header_len: i + 1,
                remaining,
            };
            if f.len() > max_packet_size {
                return Err(CodecError::PacketTooLarge {
                    size: f.len(),
                    max: max_packet_size,
                });
            }
            return Ok((buf.len() >= f.len()).then_some(f));
        }
        shift += 7;
    }
    Err(CodecError::MalformedLength)
}

/// Fixed-header flags the specification requires for each packet a server may receive.
fn check_flags(f: &Frame) -> Result<(), CodecError> {
    let (t, flags) = (f.packet_type(), f.flags());
    let ok = match t {
        1 | 4 | 5 | 7 | 12 | 14 => flags == 0,
        3 => {
            let qos = (flags >> 1) & 0b11;
            let dup = flags & 0b1000 != 0;
            qos != 3 && !(qos == 0 && dup)
        }
        6 | 8 | 10 => flags == 0b0010,
        _ => return Err(CodecError::UnexpectedPacketType(t)),
    };
    if ok {
        Ok(())
    } else {
        Err(CodecError::InvalidFlags {
            packet_type: t,
            flags,
        })
    }
}

/// Rewrites an MQTT 3.1 CONNECT (`MQIsdp`, level 3) into the 3.1.1 form: the remainder of the
/// packet is identical on the wire.
fn rewrite_mqisdp(frame: &[u8], f: &Frame) -> BytesMut {
    let body = &frame[f.header_len + 2 + 6 + 1..];
    let remaining = 2 + 4 + 1 + body.len();
    let mut out = BytesMut::with_capacity(remaining + 5);
    out.put_u8(0x10);
    put_varint(&mut out, remaining);
    out.put_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4]);
    out.put_slice(body);
    out
}

pub(crate) fn put_varint(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if len == 0 {
            break;
        }
    }
}

/// Decodes and encodes packets for one connection once its protocol is known.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub version: ProtocolVersion,
    /// Largest frame accepted from the peer.
    pub max_incoming: usize,
    /// Largest frame the peer accepts (v5 Maximum Packet Size); larger PUBLISHes are not sent.
    pub max_outgoing: usize,
}

impl Codec {
    /// Decodes the first packet of a connection, which must be CONNECT.
    ///
    /// Returns `Ok(None)` until a whole frame is buffered; consumes the frame on success.
    pub fn decode_connect(
        buf: &mut BytesMut,
        max_packet_size: usize,
    ) -> Result<Option<(ProtocolVersion, Connect)>, CodecError> {
        let Some(f) = frame(buf, max_packet_size)? else {
            return Ok(None);
        };
        if f.packet_type() != 1 {
            return Err(CodecError::NotConnect(f.packet_type()));
        }
        check_flags(&f)?;
        let raw = buf.split_to(f.len());
        let body = &raw[f.header_len..];
        if body.len() < 2 {
            return Err(CodecError::MalformedConnect("no protocol name"));
        }
        let name_len = u16::from_be_bytes([body[0], body[1]]) as usize;
        if body.len() < 2 + name_len + 2 {
            return Err(CodecError::MalformedConnect("truncated variable header"));
        }
        let name = String::from_utf8_lossy(&body[2..2 + name_len]).into_owned();
        let level = body[2 + name_len];
        let flags = body[2 + name_len + 1];
        let version = match (name.as_str(), level) {
            ("MQIsdp", 3) => ProtocolVersion::V3_1,
            ("MQTT", 4) => ProtocolVersion::V3_1_1,
            ("MQTT", 5) => ProtocolVersion::V5,
            _ => return Err(CodecError::UnsupportedProtocol { name, level }),
        };
        if flags & 0x01 != 0 {
            return Err(CodecError::MalformedConnect("reserved flag set"));
        }
        let will = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0b11;
        let will_retain = flags & 0x20 != 0;
        if will_qos == 3 || (!will && (will_qos != 0 || will_retain)) {
            return Err(CodecError::MalformedConnect("invalid will flags"));
        }
        if version.is_v3() && flags & 0x40 != 0 && flags & 0x80 == 0 {
            return Err(CodecError::MalformedConnect("password without user name"));
        }
        let connect = match version {
            ProtocolVersion::V5 => {
                let mut stream = raw;
                match mqttbytes::v5::read(&mut stream, usize::MAX).map_err(lift)? {
                    Packet::Connect(c) => c,
                    _ => unreachable!("packet type checked above"),
                }
            }
            ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => {
                let mut stream = if version == ProtocolVersion::V3_1 {
                    rewrite_mqisdp(&raw, &f)
                } else {
                    raw
                };
                match v4::read(&mut stream, usize::MAX).map_err(lift)? {
                    v4::Packet::Connect(c) => lift_connect(c),
                    _ => unreachable!("packet type checked above"),
                }
            }
        };
        Ok(Some((version, connect)))
    }

    /// Decodes the next packet after CONNECT; `Ok(None)` until a whole frame is buffered.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some(f) = frame(buf, self.max_incoming)? else {
            return Ok(None);
        };
        check_flags(&f)?;
        if f.packet_type() == 1 {
            buf.advance(f.len());
            return Err(CodecError::SecondConnect);
        }
        let mut raw = buf.split_to(f.len());
        let packet = match self.version {
            ProtocolVersion::V5 => match f.packet_type() {
                14 => Packet::Disconnect(decode_v5_disconnect(&raw[f.header_len..])?),
                10 => Packet::Unsubscribe(decode_v5_unsubscribe(&raw[f.header_len..])?),
                _ => mqttbytes::v5::read(&mut raw, usize::MAX).map_err(lift)?,
            },
            _ => lift_v4(v4::read(&mut raw, usize::MAX).map_err(lift)?)?,
        };
        validate(&packet)?;
        Ok(Some(packet))
    }

    /// Appends an outgoing PUBLISH (Samos's own encoder: the hot path of every delivery).
    pub fn encode_publish(&self, p: &OutgoingPublish<'_>, out: &mut BytesMut) {
        p.write(self.version, out);
    }

    /// Appends the wire form of `packet` to `out`, lowered to the connection's version.
    pub fn encode(&self, packet: &Packet, out: &mut BytesMut) -> Result<(), CodecError> {
        if let Packet::Publish(p) = packet {
            let props = p.properties.as_ref();
            self.encode_publish(
                &OutgoingPublish {
                    topic: &p.topic,
                    payload: &p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    dup: p.dup,
                    pkid: p.pkid,
                    properties: props,
                    message_expiry: props.and_then(|pr| pr.message_expiry_interval),
                    topic_alias: props.and_then(|pr| pr.topic_alias),
                    subscription_ids: props.map_or(&[], |pr| &pr.subscription_identifiers),
                },
                out,
            );
            return Ok(());
        }
        let enc = |e: mqttbytes::Error| CodecError::Encode(e.to_string());
        if !self.version.is_v3() {
            return match packet {
                Packet::PingResp => {
                    out.put_slice(&[0xD0, 0]);
                    Ok(())
                }
                // mqttbytes omits the mandatory property length when there are no properties.
                Packet::ConnAck(p) if p.properties.is_none() => {
                    out.put_slice(&[0x20, 3, u8::from(p.session_present), p.code as u8, 0]);
                    Ok(())
                }
                Packet::ConnAck(p) => p.write(out).map(drop).map_err(enc),
                Packet::PubAck(p) => p.write(out).map(drop).map_err(enc),
                Packet::PubRec(p) => p.write(out).map(drop).map_err(enc),
                Packet::PubRel(p) => p.write(out).map(drop).map_err(enc),
                Packet::PubComp(p) => p.write(out).map(drop).map_err(enc),
                Packet::SubAck(p) => p.write(out).map(drop).map_err(enc),
                Packet::UnsubAck(p) => p.write(out).map(drop).map_err(enc),
                Packet::Disconnect(p) => p.write(out).map(drop).map_err(enc),
                other => Err(CodecError::Encode(format!("server never sends {other:?}"))),
            };
        }
        match packet {
            Packet::PingResp => out.put_slice(&[0xD0, 0]),
            Packet::ConnAck(p) => {
                let code = v3_connack_code(p.code);
                // 3.1.1 §3.2.2.2: session present is 0 whenever the return code is non-zero.
                out.put_slice(&[0x20, 2, u8::from(p.session_present && code == 0), code]);
            }
            Packet::PubAck(p) => put_ack(out, 0x40, p.pkid),
            Packet::PubRec(p) => put_ack(out, 0x50, p.pkid),
            Packet::PubRel(p) => put_ack(out, 0x62, p.pkid),
            Packet::PubComp(p) => put_ack(out, 0x70, p.pkid),
            Packet::SubAck(p) => {
                out.put_u8(0x90);
                put_varint(out, 2 + p.return_codes.len());
                out.put_u16(p.pkid);
                for code in &p.return_codes {
                    out.put_u8(match code {
                        SubscribeReasonCode::QoS0 => 0,
                        SubscribeReasonCode::QoS1 => 1,
                        SubscribeReasonCode::QoS2 => 2,
                        _ => 0x80,
                    });
                }
            }
            Packet::UnsubAck(p) => put_ack(out, 0xB0, p.pkid),
            // 3.x has no server DISCONNECT: the connection is simply closed.
            Packet::Disconnect(_) => {}
            other => return Err(CodecError::Encode(format!("server never sends {other:?}"))),
        }
        Ok(())
    }
}

fn put_ack(out: &mut BytesMut, byte1: u8, pkid: u16) {
    out.put_u8(byte1);
    out.put_u8(2);
    out.put_u16(pkid);
}

/// Maps a v5 CONNACK reason to the nearest 3.1.1 return code.
fn v3_connack_code(code: ConnectReturnCode) -> u8 {
    match code {
        ConnectReturnCode::Success => 0,
        ConnectReturnCode::UnsupportedProtocolVersion => 1,
        ConnectReturnCode::ClientIdentifierNotValid => 2,
        ConnectReturnCode::ServerUnavailable
        | ConnectReturnCode::ServerBusy
        | ConnectReturnCode::ConnectionRateExceeded
        | ConnectReturnCode::QuotaExceeded => 3,
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::BadAuthenticationMethod => 4,
        _ => 5,
    }
}

fn lift_connect(c: v4::Connect) -> Connect {
    Connect {
        protocol: mqttbytes::Protocol::V4,
        keep_alive: c.keep_alive,
        client_id: c.client_id,
        clean_session: c.clean_session,
        last_will: c.last_will.map(|w| LastWill {
            topic: w.topic,
            message: w.message,
            qos: w.qos,
            retain: w.retain,
            properties: None,
        }),
        login: c.login.map(|l| Login {
            username: l.username,
            password: l.password,
        }),
        properties: None,
    }
}

fn lift_v4(p: v4::Packet) -> Result<Packet, CodecError> {
    Ok(match p {
        v4::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            topic: p.topic,
            pkid: p.pkid,
            properties: None,
            payload: p.payload,
        }),
        v4::Packet::PubAck(p) => Packet::PubAck(PubAck::new(p.pkid)),
        v4::Packet::PubRec(p) => Packet::PubRec(PubRec::new(p.pkid)),
        v4::Packet::PubRel(p) => Packet::PubRel(PubRel::new(p.pkid)),
        v4::Packet::PubComp(p) => Packet::PubComp(PubComp::new(p.pkid)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    path: f.path,
                    qos: f.qos,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq,
        v4::Packet::Disconnect => Packet::Disconnect(Disconnect::new()),
        other => {
            return Err(CodecError::Malformed(format!(
                "unexpected packet {other:?}"
            )));
        }
    })
}

/// Checks the decoder leaves to the caller: topic names without wildcards or NUL, packet ids,
/// and non-empty SUBSCRIBE/UNSUBSCRIBE.
fn validate(packet: &Packet) -> Result<(), CodecError> {
    match packet {
        Packet::Publish(p) => {
            if p.topic.contains(['+', '#', '\0']) {
                return Err(CodecError::Malformed(format!(
                    "PUBLISH topic {:?} contains a wildcard or NUL",
                    p.topic
                )));
            }
            Ok(())
        }
        Packet::Subscribe(s) if s.filters.is_empty() => Err(CodecError::Malformed(
            "SUBSCRIBE without topic filters".into(),
        )),
        Packet::Subscribe(s) if s.pkid == 0 => {
            Err(CodecError::Malformed("packet identifier 0".into()))
        }
        Packet::Unsubscribe(u) if u.filters.is_empty() => Err(CodecError::Malformed(
            "UNSUBSCRIBE without topic filters".into(),
        )),
        _ => Ok(()),
    }
}

mod outgoing;
mod v5_forms;

pub use outgoing::OutgoingPublish;
use v5_forms::{decode_v5_disconnect, decode_v5_unsubscribe};

#[cfg(test)]
mod tests;
