//! Samos behind a real HAProxy (Debian's package) in TCP mode with the PROXY protocol: the
//! listener takes the client's real address from the header HAProxy writes, nodes join and
//! publish through the balancer, HAProxy's health checks pass, and a connection that skips the
//! balancer (no header) is refused and counted.
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::haproxy::HaProxy;
use common::raw::*;
use common::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn behind_haproxy_the_real_client_address_is_seen_and_nodes_publish() {
    let s =
        TestServer::with_config("[[listener]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n");
    let lb = HaProxy::start(&[s.mqtt[0]]);

    // A node joins and publishes through the balancer.
    let net = "Karlovasi_IoT_network";
    let loc = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52";
    let mut c = join_paper_node_at(lb.port, "CN1");
    let client = c.local_addr();
    let topic = format!("{net}/CN1/{loc}/indoorTemperatureSensor");
    for i in 0..10u16 {
        assert_eq!(
            c.publish_qos1(&topic, format!("float,0-70,{i}").as_bytes(), i + 2),
            0
        );
    }
    // Samos knows the client by its own address, not HAProxy's outgoing one.
    assert!(
        s.wait_log(&format!("client={client}"), T),
        "no PROXY header naming {client}\n{}",
        s.log()
    );
    assert_eq!(s.metric("samos_readings_committed_total "), 10);

    // Skipping the balancer: no header, refused and counted.
    let mut direct = Raw::open(s.mqtt[0].port(), 4);
    direct.send(&connect(4, "sneaky", true, 60, &[]));
    assert!(matches!(direct.next(T), Reply::Closed));
    assert!(s.wait_log("connection refused: no valid PROXY header", T));
    assert!(
        s.metrics_text()
            .contains("samos_refusals_total{reason=\"proxy_header_invalid\"}"),
        "{}",
        s.metrics_text()
    );
    // HAProxy's health checks (every second, with their own header) are not refusals.
    std::thread::sleep(Duration::from_millis(2500));
    for reason in ["proxy_header_invalid", "proxy_header_timeout"] {
        let expected = u64::from(reason == "proxy_header_invalid");
        assert_eq!(
            s.metric(&format!("samos_refusals_total{{reason=\"{reason}\"}} ")),
            expected,
            "{}",
            s.metrics_text()
        );
    }
    drop(lb);
}
