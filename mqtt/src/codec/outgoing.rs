//! Outgoing PUBLISH frames written straight from a routed message's topic and payload.

use bytes::{BufMut, BytesMut};
use mqttbytes::QoS;
use mqttbytes::v5::PublishProperties;

use super::{ProtocolVersion, put_varint};

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

    pub(super) fn write(&self, version: ProtocolVersion, out: &mut BytesMut) {
        let remaining = self.remaining_len(version);
        out.reserve(5 + remaining);
        out.put_u8(0x30 | u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain));
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
