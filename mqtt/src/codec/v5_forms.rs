//! The v5 DISCONNECT and UNSUBSCRIBE forms `mqttbytes` mishandles, decoded here from the
//! packet body with a small bounds-checked cursor.

use mqttbytes::v5::{
    Disconnect, DisconnectProperties, DisconnectReasonCode, Unsubscribe, UnsubscribeProperties,
};

use super::CodecError;

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

pub(super) fn decode_v5_disconnect(body: &[u8]) -> Result<Disconnect, CodecError> {
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

pub(super) fn decode_v5_unsubscribe(body: &[u8]) -> Result<Unsubscribe, CodecError> {
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
