//! rumqttc, an independent Rust client, speaking MQTT 3.1.1 and 5 to `samos serve`.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::*;

async fn v4_roundtrip(port: u16, qos: rumqttc::QoS, count: usize) -> Vec<Vec<u8>> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut sub_opts = MqttOptions::new("rumqttc-sub", "127.0.0.1", port);
    sub_opts.set_keep_alive(Duration::from_secs(5));
    let (sub, mut sub_loop) = AsyncClient::new(sub_opts, 100);
    sub.subscribe("rust/#", rumqttc::QoS::ExactlyOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
            break;
        }
    }
    let (publ, mut pub_loop) =
        AsyncClient::new(MqttOptions::new("rumqttc-pub", "127.0.0.1", port), 100);
    // The event loop must run while publishing, or a full request channel blocks publish().
    let driver = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    for i in 0..count {
        publ.publish("rust/x", qos, false, format!("{i}"))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < count {
        if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
            got.push(p.payload.to_vec());
        }
    }
    driver.abort();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v4_every_qos_in_order() {
    let s = TestServer::start();
    for qos in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ] {
        let got = tokio::time::timeout(Duration::from_secs(30), v4_roundtrip(s.port(), qos, 200))
            .await
            .expect("all messages within 30 s");
        let want: Vec<Vec<u8>> = (0..200).map(|i| i.to_string().into_bytes()).collect();
        assert_eq!(got, want, "{qos:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_subscription_identifier_and_user_properties() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties, SubscribeProperties};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let s = TestServer::start();
    let (sub, mut sub_loop) =
        AsyncClient::new(MqttOptions::new("rumqttc5-sub", "127.0.0.1", s.port()), 10);
    let props = SubscribeProperties {
        id: Some(42),
        user_properties: vec![],
    };
    sub.subscribe_with_properties("v5/#", QoS::AtLeastOnce, props)
        .await
        .unwrap();
    let run = async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
                break;
            }
        }
        let (publ, mut pub_loop) =
            AsyncClient::new(MqttOptions::new("rumqttc5-pub", "127.0.0.1", s.port()), 10);
        let props = PublishProperties {
            user_properties: vec![("node".into(), "n1".into())],
            ..Default::default()
        };
        publ.publish_with_properties("v5/t", QoS::ExactlyOnce, false, "23.4", props)
            .await
            .unwrap();
        tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
        loop {
            if let Event::Incoming(Packet::Publish(p)) = sub_loop.poll().await.unwrap() {
                return p;
            }
        }
    };
    let p = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap();
    assert_eq!(&p.payload[..], b"23.4");
    let props = p.properties.unwrap();
    assert_eq!(props.subscription_identifiers, vec![42]);
    assert_eq!(
        props.user_properties,
        vec![("node".to_string(), "n1".to_string())]
    );
}
