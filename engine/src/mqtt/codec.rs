//! Wire codec: frames bytes into packets for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Decoding is delegated to the `mqttbytes` crate, behind this adapter, which covers its gaps:
//! the MQTT 3.1 `MQIsdp` CONNECT, strict fixed-header flags, the maximum size of the whole
//! frame, the v5 DISCONNECT and UNSUBSCRIBE forms it mishandles, and packets a server must
//! never receive. Every version is lifted into the v5 packet model so the rest of the engine
//! speaks one language; [`Codec::encode`] lowers it again for 3.x clients.

use bytes::{Buf, BufMut, BytesMut};
use mqttbytes::v5::{
    Connect, ConnectReturnCode, Disconnect, DisconnectProperties, DisconnectReasonCode, LastWill,
    Login, Packet, PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties, RetainForwardRule,
    Subscribe, SubscribeFilter, SubscribeReasonCode, Unsubscribe, UnsubscribeProperties,
};
use mqttbytes::{QoS, v4};

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

fn put_varint(out: &mut BytesMut, mut len: usize) {
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
                    out.put_slice(&[0x20, 3, p.session_present as u8, p.code as u8, 0]);
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
                out.put_slice(&[0x20, 2, (p.session_present && code == 0) as u8, code]);
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

/// A tiny cursor over a packet body for the v5 forms decoded here.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.0.len() < n {
            Err(CodecError::Malformed(
                "packet shorter than its contents".into(),
            ))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        let v = self.0[0];
        self.0 = &self.0[1..];
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        self.need(2)?;
        let v = u16::from_be_bytes([self.0[0], self.0[1]]);
        self.0 = &self.0[2..];
        Ok(v)
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        let v = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]);
        self.0 = &self.0[4..];
        Ok(v)
    }
    fn varint(&mut self) -> Result<usize, CodecError> {
        let mut v = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            v |= ((b & 0x7F) as usize) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::MalformedLength)
    }
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()? as usize;
        self.need(n)?;
        let (v, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(v)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::InvalidUtf8)
    }
    /// Splits off the property block, returning a reader over it.
    fn properties(&mut self) -> Result<Reader<'a>, CodecError> {
        let n = self.varint()?;
        self.need(n)?;
        let (p, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(Reader(p))
    }
}

fn decode_v5_disconnect(body: &[u8]) -> Result<Disconnect, CodecError> {
    let mut r = Reader(body);
    if body.is_empty() {
        return Ok(Disconnect::new());
    }
    let code = r.u8()?;
    let reason_code = DisconnectReasonCode::try_from(code)
        .map_err(|_| CodecError::Malformed(format!("unknown DISCONNECT reason {code:#04x}")))?;
    let mut properties = None;
    if !r.0.is_empty() {
        let mut p = r.properties()?;
        let mut props = DisconnectProperties {
            session_expiry_interval: None,
            reason_string: None,
            user_properties: Vec::new(),
            server_reference: None,
        };
        while !p.0.is_empty() {
            match p.u8()? {
                17 => props.session_expiry_interval = Some(p.u32()?),
                31 => props.reason_string = Some(p.string()?),
                38 => props.user_properties.push((p.string()?, p.string()?)),
                28 => props.server_reference = Some(p.string()?),
                id => {
                    return Err(CodecError::Malformed(format!(
                        "property {id} not allowed in DISCONNECT"
                    )));
                }
            }
        }
        properties = Some(props);
    }
    Ok(Disconnect {
        reason_code,
        properties,
    })
}

fn decode_v5_unsubscribe(body: &[u8]) -> Result<Unsubscribe, CodecError> {
    let mut r = Reader(body);
    let pkid = r.u16()?;
    if pkid == 0 {
        return Err(CodecError::Malformed("packet identifier 0".into()));
    }
    let mut p = r.properties()?;
    let mut user_properties = Vec::new();
    while !p.0.is_empty() {
        match p.u8()? {
            38 => user_properties.push((p.string()?, p.string()?)),
            id => {
                return Err(CodecError::Malformed(format!(
                    "property {id} not allowed in UNSUBSCRIBE"
                )));
            }
        }
    }
    let mut filters = Vec::new();
    while !r.0.is_empty() {
        filters.push(r.string()?);
    }
    Ok(Unsubscribe {
        pkid,
        filters,
        properties: (!user_properties.is_empty())
            .then_some(UnsubscribeProperties { user_properties }),
    })
}

/// An outgoing PUBLISH borrowed from a routed message, so that delivering it copies neither
/// topic nor payload into an intermediate packet.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingPublish<'a> {
    /// Empty when only a topic alias is sent.
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    /// Ignored for QoS 0.
    pub pkid: u16,
    /// The publisher's v5 properties (topic alias and subscription ids in it are ignored).
    pub properties: Option<&'a PublishProperties>,
    /// Remaining message expiry, replacing the publisher's interval.
    pub message_expiry: Option<u32>,
    pub topic_alias: Option<u16>,
    pub subscription_ids: &'a [usize],
}

impl OutgoingPublish<'_> {
    fn properties_len(&self) -> usize {
        let mut n = 0;
        if let Some(p) = self.properties {
            if p.payload_format_indicator.is_some() {
                n += 2;
            }
            if let Some(t) = &p.response_topic {
                n += 3 + t.len();
            }
            if let Some(c) = &p.correlation_data {
                n += 3 + c.len();
            }
            for (k, v) in &p.user_properties {
                n += 5 + k.len() + v.len();
            }
            if let Some(c) = &p.content_type {
                n += 3 + c.len();
            }
        }
        if self.message_expiry.is_some() {
            n += 5;
        }
        if self.topic_alias.is_some() {
            n += 3;
        }
        for id in self.subscription_ids {
            n += 1 + varint_len(*id);
        }
        n
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2 + self.topic.len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if !version.is_v3() {
            let props = self.properties_len();
            n += varint_len(props) + props;
        }
        n
    }

    /// Size of the whole frame for `version`.
    pub fn frame_len(&self, version: ProtocolVersion) -> usize {
        let r = self.remaining_len(version);
        1 + varint_len(r) + r
    }

    fn write(&self, version: ProtocolVersion, out: &mut BytesMut) {
        let remaining = self.remaining_len(version);
        out.reserve(5 + remaining);
        out.put_u8(0x30 | (self.dup as u8) << 3 | (self.qos as u8) << 1 | self.retain as u8);
        put_varint(out, remaining);
        put_str(out, self.topic);
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.pkid);
        }
        if !version.is_v3() {
            put_varint(out, self.properties_len());
            if let Some(p) = self.properties {
                if let Some(v) = p.payload_format_indicator {
                    out.put_slice(&[0x01, v]);
                }
                if let Some(t) = &p.response_topic {
                    out.put_u8(0x08);
                    put_str(out, t);
                }
                if let Some(c) = &p.correlation_data {
                    out.put_u8(0x09);
                    out.put_u16(c.len() as u16);
                    out.put_slice(c);
                }
                for (k, v) in &p.user_properties {
                    out.put_u8(0x26);
                    put_str(out, k);
                    put_str(out, v);
                }
                if let Some(c) = &p.content_type {
                    out.put_u8(0x03);
                    put_str(out, c);
                }
            }
            if let Some(e) = self.message_expiry {
                out.put_u8(0x02);
                out.put_u32(e);
            }
            if let Some(a) = self.topic_alias {
                out.put_u8(0x23);
                out.put_u16(a);
            }
            for id in self.subscription_ids {
                out.put_u8(0x0B);
                put_varint(out, *id);
            }
        }
        out.put_slice(self.payload);
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mqttbytes::v5::{
        ConnAck, PubAckReason, PublishProperties, SubAck, SubscribeProperties, UnsubAck,
        UnsubAckReason,
    };
    use proptest::prelude::*;

    fn codec(version: ProtocolVersion) -> Codec {
        Codec {
            version,
            max_incoming: 1 << 20,
            max_outgoing: usize::MAX,
        }
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}(/[a-z0-9]{0,6}){0,4}"
    }

    fn filter() -> impl Strategy<Value = String> {
        prop_oneof![
            topic(),
            Just("#".to_string()),
            "[a-z]{1,4}/\\+/[a-z]{1,4}/#"
        ]
    }

    /// Properties as they survive the wire: an all-empty set is the same as none.
    fn publish_props() -> impl Strategy<Value = Option<PublishProperties>> {
        (
            proptest::option::of(0u8..=1),
            proptest::option::of(1u32..100_000),
            proptest::option::of("[a-z/]{1,10}"),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9]{0,5}"), 0..3),
            proptest::option::of("[a-z]{1,8}/[a-z]{1,8}"),
        )
            .prop_map(|(pfi, exp, rt, cd, up, ct)| {
                let p = PublishProperties {
                    payload_format_indicator: pfi,
                    message_expiry_interval: exp,
                    topic_alias: None,
                    response_topic: rt,
                    correlation_data: cd.map(Bytes::from),
                    user_properties: up,
                    subscription_identifiers: Vec::new(),
                    content_type: ct,
                };
                let empty = p.payload_format_indicator.is_none()
                    && p.message_expiry_interval.is_none()
                    && p.response_topic.is_none()
                    && p.correlation_data.is_none()
                    && p.user_properties.is_empty()
                    && p.content_type.is_none();
                (!empty).then_some(p)
            })
    }

    fn decode_all(c: &Codec, bytes: &[u8]) -> Vec<Packet> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(p) = c.decode(&mut buf).expect("decodes") {
            out.push(p);
        }
        assert!(buf.is_empty(), "left over bytes");
        out
    }

    proptest! {
        /// Client → server, v5: mqttbytes writes, Samos's codec reads the same packet back.
        #[test]
        fn v5_client_packets_round_trip(
            t in topic(), q in qos(), pkid in 1u16.., retain in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            props in publish_props(), f in filter(), sub_id in proptest::option::of(1usize..268_435_455),
        ) {
            let c = codec(ProtocolVersion::V5);
            let mut publish = Publish::from_bytes(t.clone(), q, Bytes::from(payload));
            publish.pkid = if q == QoS::AtMostOnce { 0 } else { pkid };
            publish.retain = retain;
            publish.properties = props;
            let mut sub = Subscribe::new(f.clone(), q);
            sub.pkid = pkid;
            sub.properties = sub_id.map(|id| SubscribeProperties { id: Some(id), user_properties: vec![] });
            let mut wire = BytesMut::new();
            publish.write(&mut wire).unwrap();
            sub.write(&mut wire).unwrap();
            PubAck::new(pkid).write(&mut wire).unwrap();
            PubRel::new(pkid).write(&mut wire).unwrap();
            wire.put_slice(&[0xC0, 0]);
            // UNSUBSCRIBE and DISCONNECT written by hand (mqttbytes mishandles their v5 forms).
            let mut body = vec![(pkid >> 8) as u8, pkid as u8, 0, 0, f.len() as u8];
            body.extend_from_slice(f.as_bytes());
            wire.put_u8(0xA2);
            put_varint(&mut wire, body.len());
            wire.put_slice(&body);
            wire.put_slice(&[0xE0, 0]);
            let got = decode_all(&c, &wire);
            prop_assert_eq!(got.len(), 7);
            prop_assert_eq!(&got[0], &Packet::Publish(publish));
            prop_assert_eq!(&got[1], &Packet::Subscribe(sub));
            prop_assert_eq!(&got[2], &Packet::PubAck(PubAck::new(pkid)));
            prop_assert_eq!(&got[3], &Packet::PubRel(PubRel::new(pkid)));
            prop_assert_eq!(&got[4], &Packet::PingReq);
            let Packet::Unsubscribe(u) = &got[5] else { panic!("UNSUBSCRIBE") };
            prop_assert_eq!(&u.filters, &vec![f]);
            prop_assert_eq!(&got[6], &Packet::Disconnect(Disconnect::new()));
        }

        /// CONNECT in 3.1.1 and 5.0, with and without will and login, decodes to what was sent.
        #[test]
        fn connect_round_trips(
            id in "[a-zA-Z0-9-]{0,23}", keep_alive in any::<u16>(), clean in any::<bool>(),
            will in proptest::option::of((topic(), proptest::collection::vec(any::<u8>(), 0..16), qos(), any::<bool>())),
            login in proptest::option::of(("[a-z]{1,8}", "[ -~]{0,12}")),
            expiry in proptest::option::of(any::<u32>()), receive_max in proptest::option::of(1u16..),
        ) {
            let mut c4 = v4::Connect::new(id.clone());
            c4.keep_alive = keep_alive;
            c4.clean_session = clean;
            c4.last_will = will.clone().map(|(t, m, q, r)| v4::LastWill::new(t, m, q, r));
            c4.login = login.clone().map(|(u, p)| v4::Login::new(u, p));
            let mut wire = BytesMut::new();
            c4.write(&mut wire).unwrap();
            let (v, got) = Codec::decode_connect(&mut wire, 1 << 16).unwrap().unwrap();
            prop_assert_eq!(v, ProtocolVersion::V3_1_1);
            prop_assert!(wire.is_empty());
            prop_assert_eq!((&got.client_id, got.keep_alive, got.clean_session), (&id, keep_alive, clean));
            prop_assert_eq!(got.login.map(|l| (l.username, l.password)), login.clone());
            prop_assert_eq!(
                got.last_will.map(|w| (w.topic, w.message.to_vec(), w.qos, w.retain)),
                will.clone()
            );

            let mut c5 = Connect::new(id.clone());
            c5.keep_alive = keep_alive;
            c5.clean_session = clean;
            c5.last_will = will.clone().map(|(t, m, q, r)| LastWill::new(t, m, q, r));
            c5.login = login.clone().map(|(u, p)| Login::new(u, p));
            if expiry.is_some() || receive_max.is_some() {
                c5.properties = Some(mqttbytes::v5::ConnectProperties {
                    session_expiry_interval: expiry,
                    receive_maximum: receive_max,
                    max_packet_size: None,
                    topic_alias_max: None,
                    request_response_info: None,
                    request_problem_info: None,
                    user_properties: vec![],
                    authentication_method: None,
                    authentication_data: None,
                });
            }
            let mut wire = BytesMut::new();
            c5.write(&mut wire).unwrap();
            let (v, got) = Codec::decode_connect(&mut wire, 1 << 16).unwrap().unwrap();
            prop_assert_eq!(v, ProtocolVersion::V5);
            prop_assert_eq!(got, c5);
        }

        /// Client → server, 3.1.1: lifted into the v5 model without loss.
        #[test]
        fn v4_client_packets_round_trip(
            t in topic(), q in qos(), pkid in 1u16.., dup in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64), f in filter(),
        ) {
            let c = codec(ProtocolVersion::V3_1_1);
            let mut p = v4::Publish::new(t.clone(), q, payload.clone());
            p.pkid = if q == QoS::AtMostOnce { 0 } else { pkid };
            p.dup = dup && q != QoS::AtMostOnce;
            let mut s = v4::Subscribe::new(f.clone(), q);
            s.pkid = pkid;
            let mut wire = BytesMut::new();
            p.write(&mut wire).unwrap();
            s.write(&mut wire).unwrap();
            v4::PubRec::new(pkid).write(&mut wire).unwrap();
            v4::PubComp::new(pkid).write(&mut wire).unwrap();
            let mut u = v4::Unsubscribe::new(f.clone());
            u.pkid = pkid;
            u.write(&mut wire).unwrap();
            wire.put_slice(&[0xE0, 0]);
            let got = decode_all(&c, &wire);
            let Packet::Publish(gp) = &got[0] else { panic!("PUBLISH") };
            prop_assert_eq!((&gp.topic, gp.qos, gp.pkid, gp.dup, &gp.payload[..]), (&t, q, p.pkid, p.dup, &payload[..]));
            let Packet::Subscribe(gs) = &got[1] else { panic!("SUBSCRIBE") };
            prop_assert_eq!((&gs.filters[0].path, gs.filters[0].qos, gs.pkid), (&f, q, pkid));
            prop_assert_eq!(&got[2], &Packet::PubRec(PubRec::new(pkid)));
            prop_assert_eq!(&got[3], &Packet::PubComp(PubComp::new(pkid)));
            let Packet::Unsubscribe(gu) = &got[4] else { panic!("UNSUBSCRIBE") };
            prop_assert_eq!(&gu.filters, &vec![f]);
            prop_assert!(matches!(got[5], Packet::Disconnect(_)));
        }

        /// Server → client: Samos encodes, mqttbytes (an independent reader) decodes.
        #[test]
        fn server_packets_decode_in_every_version(
            t in topic(), q in qos(), pkid in 1u16.., retain in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64), props in publish_props(),
            present in any::<bool>(), codes in proptest::collection::vec(0u8..4, 1..5),
            sub_ids in proptest::collection::vec(1usize..268_435_455, 0..3),
        ) {
            let mut publish = Publish::from_bytes(t, q, Bytes::from(payload));
            publish.pkid = if q == QoS::AtMostOnce { 0 } else { pkid };
            publish.retain = retain;
            let sub_codes: Vec<SubscribeReasonCode> = codes.iter().map(|c| match c {
                0 => SubscribeReasonCode::QoS0, 1 => SubscribeReasonCode::QoS1,
                2 => SubscribeReasonCode::QoS2, _ => SubscribeReasonCode::NotAuthorized,
            }).collect();
            let packets = vec![
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, present)),
                Packet::Publish(publish.clone()),
                Packet::PubAck(PubAck::new(pkid)),
                Packet::PubRec(PubRec::new(pkid)),
                Packet::PubRel(PubRel::new(pkid)),
                Packet::PubComp(PubComp::new(pkid)),
                Packet::SubAck(SubAck::new(pkid, sub_codes.clone())),
                Packet::UnsubAck(UnsubAck { pkid, reasons: vec![UnsubAckReason::Success], properties: None }),
                Packet::PingResp,
            ];
            for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
                let mut wire = BytesMut::new();
                for p in &packets { codec(version).encode(p, &mut wire).unwrap(); }
                let mut got = Vec::new();
                while !wire.is_empty() { got.push(v4::read(&mut wire, 1 << 20).unwrap()); }
                prop_assert_eq!(got.len(), packets.len());
                let v4::Packet::ConnAck(a) = &got[0] else { panic!() };
                prop_assert_eq!(a.session_present, present);
                let v4::Packet::Publish(p) = &got[1] else { panic!() };
                prop_assert_eq!((&p.topic, p.qos, p.pkid, p.retain, &p.payload), (&publish.topic, q, publish.pkid, retain, &publish.payload));
                let v4::Packet::SubAck(s) = &got[6] else { panic!() };
                let want: Vec<v4::SubscribeReasonCode> = codes.iter().map(|c| match c {
                    0 => v4::SubscribeReasonCode::Success(QoS::AtMostOnce),
                    1 => v4::SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    2 => v4::SubscribeReasonCode::Success(QoS::ExactlyOnce),
                    _ => v4::SubscribeReasonCode::Failure,
                }).collect();
                prop_assert_eq!(&s.return_codes, &want);
            }
            publish.properties = match (props, sub_ids.is_empty()) {
                (p, true) => p,
                (Some(mut p), false) => { p.subscription_identifiers = sub_ids; Some(p) }
                (None, false) => Some(PublishProperties {
                    payload_format_indicator: None, message_expiry_interval: None,
                    topic_alias: Some(3), response_topic: None, correlation_data: None,
                    user_properties: vec![], subscription_identifiers: sub_ids, content_type: None,
                }),
            };
            let mut v5packets = packets;
            v5packets[1] = Packet::Publish(publish);
            let mut wire = BytesMut::new();
            for p in &v5packets { codec(ProtocolVersion::V5).encode(p, &mut wire).unwrap(); }
            let mut got = Vec::new();
            while !wire.is_empty() { got.push(mqttbytes::v5::read(&mut wire, 1 << 20).unwrap()); }
            prop_assert_eq!(&got[1], &v5packets[1]);
            let Packet::PubAck(a) = &got[2] else { panic!() };
            prop_assert_eq!((a.pkid, a.reason), (pkid, PubAckReason::Success));
            let Packet::SubAck(s) = &got[6] else { panic!() };
            prop_assert_eq!(&s.return_codes, &sub_codes);
        }

        /// Any split of a byte stream decodes to the same packets as the whole.
        #[test]
        fn chunking_never_changes_what_is_decoded(
            topics in proptest::collection::vec(topic(), 1..6),
            cuts in proptest::collection::vec(1usize..40, 0..20),
        ) {
            let c = codec(ProtocolVersion::V3_1_1);
            let mut wire = BytesMut::new();
            for (i, t) in topics.iter().enumerate() {
                let mut p = v4::Publish::new(t.clone(), QoS::AtLeastOnce, vec![i as u8; i * 7]);
                p.pkid = i as u16 + 1;
                p.write(&mut wire).unwrap();
            }
            let whole = decode_all(&c, &wire);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            for cut in cuts.iter().chain(std::iter::repeat(&usize::MAX)) {
                let n = (*cut).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Some(p) = c.decode(&mut buf).unwrap() { got.push(p); }
                if rest.is_empty() { break; }
            }
            prop_assert_eq!(got, whole);
        }

        /// Arbitrary bytes never panic the decoder; they decode, ask for more, or are refused.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = Codec::decode_connect(&mut buf, 1024);
            for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
                let mut buf = BytesMut::from(&bytes[..]);
                let c = Codec { max_incoming: 1024, ..codec(v) };
                while let Ok(Some(_)) = c.decode(&mut buf) {}
            }
        }
    }

    #[test]
    fn mqtt_3_1_connect_is_accepted() {
        let mut c = v4::Connect::new("node-1");
        c.keep_alive = 30;
        let mut wire = BytesMut::new();
        c.write(&mut wire).unwrap();
        // Rewrite "MQTT"/4 into "MQIsdp"/3: two bytes longer.
        let body = &wire[2..];
        let mut old = vec![0x10, (body.len() + 2) as u8, 0, 6];
        old.extend_from_slice(b"MQIsdp");
        old.push(3);
        old.extend_from_slice(&body[7..]);
        let mut buf = BytesMut::from(&old[..]);
        let (v, got) = Codec::decode_connect(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(v, ProtocolVersion::V3_1);
        assert_eq!((got.client_id.as_str(), got.keep_alive), ("node-1", 30));
    }

    #[test]
    fn size_limit_applies_to_the_whole_frame_before_the_body_arrives() {
        let c = Codec {
            max_incoming: 100,
            ..codec(ProtocolVersion::V3_1_1)
        };
        let mut buf = BytesMut::from(&[0x30u8, 98][..]);
        assert_eq!(
            c.decode(&mut buf),
            Ok(None),
            "exactly the limit: wait for the body"
        );
        let mut buf = BytesMut::from(&[0x30u8, 99][..]);
        assert_eq!(
            c.decode(&mut buf),
            Err(CodecError::PacketTooLarge {
                size: 101,
                max: 100
            })
        );
    }
}
