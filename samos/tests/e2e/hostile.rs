//! Hostile and careless clients against the real server: each test states the bound it
//! proves (memory, time, what other clients see) — README, "Failure behaviour".
// Integration tests: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::raw::{self, Reply};
use common::*;

const TOPIC: &str = "Karlovasi_IoT_network/CN1/Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52/indoorTemperatureSensor";

#[test]
fn a_client_trickling_a_packet_byte_by_byte_is_closed_by_its_keep_alive() {
    // Slowloris after CONNECT: bytes keep coming, a whole packet never does. Keep-alive counts
    // packets, so the bound is 1.5 × keep-alive, and the held bytes stay under one packet
    // (mqtt.max_packet_size).
    let s = TestServer::start();
    let mut r = raw::Raw::open(s.port(), 5);
    r.send(&raw::connect(5, "trickle", true, 1, &[]));
    assert!(matches!(r.next(Duration::from_secs(5)), Reply::V5(_)));
    let header = raw::publish(5, TOPIC.as_bytes(), 0, 0, false, &[b'x'; 200]);
    let t0 = Instant::now();
    let mut writer = r.writer();
    let trickler = std::thread::spawn(move || {
        use std::io::Write;
        for b in header.iter().take(100) {
            if writer.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    assert_eq!(
        r.closed_with(Duration::from_secs(10)),
        Some(0x8D),
        "keep-alive timeout"
    );
    let waited = t0.elapsed();
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    trickler.join().unwrap();
}

#[test]
fn connections_past_the_limits_are_closed_before_any_handshake() {
    let s = TestServer::with_config("[mqtt]\nmax_connections = 2\n");
    let (a, _) = raw::Raw::connected(s.port(), 4, "a", true, &[]);
    let (_b, _) = raw::Raw::connected(s.port(), 4, "b", true, &[]);
    // The third socket is closed at once: no CONNACK.
    let mut c = raw::Raw::open(s.port(), 4);
    c.send(&raw::connect(4, "c", true, 60, &[]));
    assert!(matches!(c.next(Duration::from_secs(5)), Reply::Closed));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"max_connections\"}"),
        1
    );
    assert!(s.wait_log("mqtt.max_connections reached", Duration::from_secs(5)));
    // A place is given back when a connection ends.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = raw::Raw::open(s.port(), 4);
        d.send(&raw::connect(4, "d", true, 60, &[]));
        if let Reply::V4(mqttbytes::v4::Packet::ConnAck(_)) = d.next(Duration::from_secs(5)) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(100));
    }

    let s = TestServer::with_config("[mqtt]\nmax_connection_rate_per_ip = 3\n");
    let t0 = Instant::now();
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..5 {
        let mut r = raw::Raw::open(s.port(), 4);
        r.send(&raw::connect(4, &format!("r{i}"), true, 60, &[]));
        match r.next(Duration::from_secs(5)) {
            Reply::V4(mqttbytes::v4::Packet::ConnAck(_)) => admitted += 1,
            Reply::Closed => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    if t0.elapsed() < Duration::from_millis(900) {
        assert_eq!((admitted, refused), (3, 2));
        assert_eq!(
            s.metric("samos_refusals_total{reason=\"connection_rate\"}"),
            2
        );
    }
    // The next second admits again.
    std::thread::sleep(Duration::from_millis(1100));
    raw::Raw::connected(s.port(), 4, "later", true, &[]);
}

/// Publishes `n` QoS 0 messages of `bytes` each on `topic` from a fresh client.
fn flood(port: u16, topic: &str, n: usize, bytes: usize) {
    let (mut p, _) = raw::Raw::connected(port, 4, "flooder", true, &[]);
    let payload = vec![b'x'; bytes];
    for _ in 0..n {
        p.send(&raw::publish(4, topic.as_bytes(), 0, 0, false, &payload));
    }
    // A round trip: everything before it was read by the server.
    assert_eq!(p.publish_qos1(topic, b"end", 1), 0);
}

#[test]
fn the_memory_a_crowd_of_connections_held_is_given_back_after_it_leaves() {
    // Bound: once 1,500 connections have come and gone, the server's ten-second check for a
    // crowd that left (`server/src/memory.rs`) purges jemalloc's free pages
    // (`samos/src/allocator.rs`) and trims glibc's, and logs it; within 2 s of that line the
    // anonymous memory is back within a quarter of what the crowd added (and within 4 MiB of
    // before). jemalloc's own decay, without the purge, took 20 s here.
    const CROWD: usize = 1500;
    assert!(
        samos_tools::fd_limit::raise_open_file_limit() > CROWD as u64 + 100,
        "this test needs more than {CROWD} open files"
    );
    let s = TestServer::start();
    let pid = s.pid();
    assert!(
        thread_names(pid).iter().any(|t| t == "jemalloc_bg_thd"),
        "the server allocates through jemalloc with its background purging thread: {:?}",
        thread_names(pid)
    );
    // One connection first: what the first one initialises stays and is not the crowd's.
    drop(raw::Raw::connected(s.port(), 4, "first", true, &[]));
    wait_until(Duration::from_secs(10), || {
        s.metric("samos_connections") == 0
    });
    let before = anon_kib(pid);
    let crowd: Vec<_> = (0..CROWD)
        .map(|i| raw::Raw::connected(s.port(), 4, &format!("crowd{i}"), true, &[]).0)
        .collect();
    assert_eq!(s.metric("samos_connections"), CROWD as u64);
    let peak = anon_kib(pid);
    drop(crowd);
    wait_until(Duration::from_secs(20), || {
        s.metric("samos_connections") == 0
    });
    assert!(
        s.wait_log(
            "gave free memory back to the system after a crowd of connections left",
            Duration::from_secs(30)
        ),
        "no purge logged after the crowd left"
    );
    let added = peak.saturating_sub(before);
    let allowed = (added / 4).min(4096);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut now = anon_kib(pid);
    while now > before + allowed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        now = anon_kib(pid);
    }
    eprintln!(
        "anonymous memory: {before} KiB before, {peak} KiB with {CROWD} connections, {now} KiB after they left"
    );
    assert!(
        now <= before + allowed,
        "{now} KiB after the crowd left: {before} KiB before it, {peak} KiB with it"
    );
}

#[test]
fn a_subscriber_to_everything_that_never_reads_is_bounded_and_ingest_goes_on() {
    // Bound: what the server holds for the stuck subscriber is its queue
    // (mqtt.max_queued_messages = 200 messages) plus its in-flight window and one write
    // buffer; everything past it is dropped for that subscriber alone and counted.
    // RSS measures what the server holds only if freed pages leave it at once: jemalloc keeps
    // them for `dirty_decay_ms` (10 s by default), which under a parallel test run let the
    // flood's freed buffers count (31 MiB once).
    let s = TestServer::in_dir_with_env(
        tempfile::tempdir().unwrap(),
        "[mqtt]\nmax_queued_messages = 200\nmax_inflight_messages = 10\n",
        &[("_RJEM_MALLOC_CONF", "dirty_decay_ms:0")],
    );
    let (mut stuck, _) = raw::Raw::connected(s.port(), 4, "stuck", true, &[]);
    stuck.send(&raw::subscribe(4, 1, "#", 1));
    assert!(matches!(stuck.next(Duration::from_secs(5)), Reply::V4(_)));
    wait_subscriptions(&s, 1);
    let rss_before = rss_kib(s.pid());
    // 40 MB of messages towards a client that reads nothing: far past any socket buffer.
    flood(s.port(), "bulk/x", 4000, 10_000);
    let mut node = join_paper_node(&s, "CN1");
    let t0 = Instant::now();
    for i in 1..=200u16 {
        assert_eq!(
            node.publish_qos1(TOPIC, format!("float,0-70,{}", i % 70).as_bytes(), i),
            0
        );
    }
    let ingest = t0.elapsed();
    assert!(
        ingest < Duration::from_secs(20),
        "200 readings took {ingest:?}"
    );
    let dropped = s.metric("samos_messages_dropped_total");
    assert!(dropped >= 3000, "dropped {dropped}");
    assert!(s.metric("samos_refusals_total{reason=\"subscriber_queue_full\"}") >= 3000);
    let grown_mib = rss_kib(s.pid()).saturating_sub(rss_before) / 1024;
    eprintln!("the server grew by {grown_mib} MiB for a stuck subscriber");
    assert!(
        grown_mib < 30,
        "the server grew by {grown_mib} MiB for a stuck subscriber"
    );
    drop(stuck);
}

#[test]
fn a_subscriber_that_never_acknowledges_gets_its_in_flight_window_and_no_more() {
    // Packet ids: the server never has more than mqtt.max_inflight_messages QoS 1 messages
    // unacknowledged towards one client, so it never runs out of ids or reuses one in flight.
    let s =
        TestServer::with_config("[mqtt]\nmax_inflight_messages = 10\nmax_queued_messages = 50\n");
    let (mut lazy, _) = raw::Raw::connected(s.port(), 4, "lazy", true, &[]);
    lazy.send(&raw::subscribe(4, 1, "t/#", 1));
    assert!(matches!(lazy.next(Duration::from_secs(5)), Reply::V4(_)));
    wait_subscriptions(&s, 1);
    let (mut p, _) = raw::Raw::connected(s.port(), 4, "pub", true, &[]);
    for i in 1..=100u16 {
        assert_eq!(p.publish_qos1("t/a", b"m", i), 0);
    }
    let mut ids = std::collections::HashSet::new();
    let mut received = 0;
    while let Some(publish) = next_v4_publish(&mut lazy, Duration::from_secs(2)) {
        received += 1;
        assert!(
            ids.insert(publish.pkid),
            "id {} reused while in flight",
            publish.pkid
        );
    }
    assert_eq!(received, 10, "exactly the in-flight window");
    // 100 - 10 in flight - 50 queued.
    assert_eq!(s.metric("samos_messages_dropped_total"), 40);
}

fn next_v4_publish(c: &mut raw::Raw, timeout: Duration) -> Option<mqttbytes::v4::Publish> {
    match c.next(timeout) {
        Reply::V4(mqttbytes::v4::Packet::Publish(p)) => Some(p),
        Reply::Timeout | Reply::Closed => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_subscription_flood_stops_at_the_quota_and_an_alias_flood_at_the_alias_maximum() {
    // Bound: a session holds at most mqtt.max_subscriptions_per_client filters.
    let s = TestServer::with_config(
        "[mqtt]\nmax_subscriptions_per_client = 100\ntopic_alias_maximum = 8\n",
    );
    let (mut c, _) = raw::Raw::connected(s.port(), 5, "greedy", true, &[]);
    let mut granted = 0;
    let mut refused = 0;
    for i in 0..150u16 {
        c.send(&raw::subscribe(5, i + 1, &format!("f/{i}"), 0));
        match c.next(Duration::from_secs(5)) {
            Reply::V5(mqttbytes::v5::Packet::SubAck(a)) => match a.return_codes[0] {
                mqttbytes::v5::SubscribeReasonCode::QoS0 => granted += 1,
                mqttbytes::v5::SubscribeReasonCode::QuotaExceeded => refused += 1,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((granted, refused), (100, 50));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"subscription_quota\"}"),
        50
    );
    // Re-subscribing to a filter it holds is no new subscription.
    c.send(&raw::subscribe(5, 999, "f/0", 1));
    assert!(matches!(
        c.next(Duration::from_secs(5)),
        Reply::V5(mqttbytes::v5::Packet::SubAck(a)) if a.return_codes[0] == mqttbytes::v5::SubscribeReasonCode::QoS1
    ));
    assert_eq!(s.metric("samos_subscriptions"), 100);

    // Topic aliases: an alias past topic_alias_maximum ends the connection (0x94); the
    // server keeps at most that many aliases per connection.
    let (mut a, _) = raw::Raw::connected(s.port(), 5, "aliases", true, &[]);
    let mut body = Vec::new();
    raw::string(b"t/alias", &mut body);
    body.extend_from_slice(&[3, 0x23, 0, 9]);
    body.extend_from_slice(b"x");
    a.send(&raw::frame(0x30, &body));
    assert_eq!(a.closed_with(Duration::from_secs(5)), Some(0x94));
    assert_eq!(
        s.metric("samos_refusals_total{reason=\"topic_alias_invalid\"}"),
        1
    );
}
