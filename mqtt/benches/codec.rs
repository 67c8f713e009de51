//! The wire codec alone, in packets per second (criterion): decoding a buffer of 1,000 QoS 1
//! PUBLISHes of a sensor reading (the paper's topic depth, a 20-byte payload) as 3.1.1 and as
//! 5.0, and writing 1,000 outgoing PUBLISHes. No sockets, no runtime: what the connection task
//! spends on framing.
//!
//! `cargo bench --bench codec` (`-- --quick` for criterion's quick mode).
// A benchmark harness: a panic is its failure report.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqttbytes::QoS;
use samos_mqtt::codec::{Codec, OutgoingPublish, ProtocolVersion};

const N: usize = 1000;
const TOPIC: &str = "samos/Greece/Attica/Athens/University/indoor/B1/R101/SIM001/temperature";
const PAYLOAD: &[u8] = b"2026-12-05 21.75 OK.";

fn codec(version: ProtocolVersion) -> Codec {
    Codec {
        version,
        max_incoming: 1 << 20,
        max_outgoing: usize::MAX,
    }
}

/// `N` QoS 1 PUBLISH frames in the wire form of `version`, as a client sends them.
fn stream(version: ProtocolVersion) -> BytesMut {
    let c = codec(version);
    let mut out = BytesMut::new();
    for i in 0..N {
        let p = OutgoingPublish {
            topic: TOPIC,
            payload: PAYLOAD,
            qos: QoS::AtLeastOnce,
            retain: false,
            dup: false,
            pkid: u16::try_from(i % 60_000 + 1).unwrap(),
            properties: None,
            message_expiry: None,
            topic_alias: None,
            subscription_ids: &[],
        };
        c.encode_publish(&p, &mut out);
    }
    out
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(N as u64));
    for (name, version) in [
        ("3.1.1", ProtocolVersion::V3_1_1),
        ("5.0", ProtocolVersion::V5),
    ] {
        let wire = stream(version);
        let codec = codec(version);
        g.bench_function(format!("decode_publish_1k_{name}"), |b| {
            b.iter(|| {
                let mut buf = wire.clone();
                let mut n = 0;
                while let Some(p) = codec.decode(&mut buf).unwrap() {
                    black_box(p);
                    n += 1;
                }
                assert_eq!(n, N);
            });
        });
    }
    let payload = Bytes::from_static(PAYLOAD);
    let v5 = codec(ProtocolVersion::V5);
    g.bench_function("encode_publish_1k_5.0", |b| {
        let mut out = BytesMut::with_capacity(N * 128);
        b.iter(|| {
            out.clear();
            for i in 0..N {
                let p = OutgoingPublish {
                    topic: TOPIC,
                    payload: &payload,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    dup: false,
                    pkid: u16::try_from(i + 1).unwrap(),
                    properties: None,
                    message_expiry: None,
                    topic_alias: None,
                    subscription_ids: &[],
                };
                v5.encode_publish(black_box(&p), &mut out);
            }
            black_box(out.len())
        });
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
