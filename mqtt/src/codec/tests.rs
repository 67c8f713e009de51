//! Codec tests: round trips against `mqttbytes`, strictness, chunking and hostile bytes.

use super::*;
use bytes::Bytes;
use mqttbytes::QoS;
use mqttbytes::v5::{
    ConnAck, PubAckReason, PublishProperties, SubAck, SubscribeProperties, UnsubAck, UnsubAckReason,
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
