//! The router's unit tests: sessions, subscriptions, retained messages, wills, queues.
use super::*;

fn router() -> Router {
    let config = RouterConfig::for_tests();
    Router::new(config, Arc::new(Metrics::default())).0
}

/// Sends CONNECT for `client` and returns the grant's receiver and the connection's outbox.
fn connect(
    r: &mut Router,
    client: &str,
    clean_start: bool,
) -> (oneshot::Receiver<ConnectGrant>, Arc<Outbox>) {
    let (reply, rx) = oneshot::channel();
    let outbox = Outbox::new(16);
    r.handle(Request::Connect {
        client_id: client.into(),
        clean_start,
        session_expiry: 60,
        outbox: outbox.clone(),
        reply,
    });
    (rx, outbox)
}

fn subscribe(r: &mut Router, client: &str, filter: &str) {
    let (reply, _rx) = oneshot::channel();
    let options = SubOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
    };
    r.handle(Request::Subscribe {
        client_id: client.into(),
        filters: vec![(filter.into(), options)],
        reply,
    });
}

/// The first connection ends (with `expiry` on its DISCONNECT) after a second connection
/// of the same client asked to take over: what does the second one find?
fn takeover_after_disconnect_with(expiry: u32) -> bool {
    let mut r = router();
    let (mut first, _) = connect(&mut r, "c", true);
    let connection = first.try_recv().expect("granted").connection;
    subscribe(&mut r, "c", "a/#");
    let (mut second, _) = connect(&mut r, "c", false);
    assert!(
        second.try_recv().is_err(),
        "waits for the first connection to end"
    );
    r.handle(Request::Disconnected {
        client_id: "c".into(),
        connection,
        state: SessionState::default(),
        will: None,
        session_expiry: expiry,
    });
    second.try_recv().expect("granted now").session_present
}

#[tokio::test]
async fn a_disconnect_with_expiry_zero_ends_the_session_before_a_waiting_takeover() {
    assert!(!takeover_after_disconnect_with(0));
    assert!(takeover_after_disconnect_with(5));
}

fn disconnect(r: &mut Router, client: &str, connection: u64, expiry: u32) {
    r.handle(Request::Disconnected {
        client_id: client.into(),
        connection,
        state: SessionState::default(),
        will: None,
        session_expiry: expiry,
    });
}

#[tokio::test]
async fn the_expiry_timer_of_a_replaced_session_does_not_end_the_new_one() {
    let mut r = router();
    let (mut first, _) = connect(&mut r, "c", true);
    disconnect(&mut r, "c", first.try_recv().unwrap().connection, 5);
    let stale = r.sessions["c"].epoch;
    // A clean start replaces the session; the new one is away with its own expiry.
    let (mut second, _) = connect(&mut r, "c", true);
    subscribe(&mut r, "c", "a/#");
    disconnect(&mut r, "c", second.try_recv().unwrap().connection, 5);
    r.handle(Request::Timer(Timer::Expiry {
        client_id: "c".into(),
        epoch: stale,
    }));
    assert!(
        r.sessions.contains_key("c"),
        "the old session's timer ended the new one"
    );
    let current = r.sessions["c"].epoch;
    r.handle(Request::Timer(Timer::Expiry {
        client_id: "c".into(),
        epoch: current,
    }));
    assert!(!r.sessions.contains_key("c"));
}

#[tokio::test]
async fn a_message_with_a_recipient_reaches_that_client_alone() {
    let mut r = router();
    let (_a, outbox_a) = connect(&mut r, "a", true);
    let (_b, outbox_b) = connect(&mut r, "b", true);
    subscribe(&mut r, "a", "n/+/control");
    subscribe(&mut r, "b", "n/#");
    let message = |recipient: Option<&str>| {
        Arc::new(Message {
            topic: "n/1/control".into(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            publisher: None,
            expires_at: None,
            recipient: recipient.map(Arc::from),
        })
    };
    r.handle(Request::Publish(vec![message(Some("b")), message(None)]));
    let taken = |outbox: &Outbox| {
        let mut got = Vec::new();
        outbox.take(10, &mut got);
        got.len()
    };
    assert_eq!(taken(&outbox_a), 1, "a gets the broadcast only");
    assert_eq!(taken(&outbox_b), 2, "b gets both");
}
