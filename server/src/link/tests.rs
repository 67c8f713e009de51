//! What a connection costs while it waits: the size of its task, which every connected node
//! holds for as long as it stays (BENCHMARKS, "Ingest at the machine's limits": idle nodes).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::broker::router::{Router, RouterConfig};

fn shared() -> Arc<Shared> {
    let metrics = Arc::new(Metrics::default());
    let config = RouterConfig::for_tests();
    let (_router, handle) = Router::new(config, metrics.clone());
    Arc::new(Shared {
        config: Arc::new(Config::default()),
        metrics: metrics.clone(),
        router: handle,
        auth: Arc::new(Authenticator::new(None, metrics)),
        acl: Acl::default(),
        protocol: None,
        ingest: None,
        limits: limits::ConnectionLimits::new(0, 0),
    })
}

fn context() -> Arc<ListenerContext> {
    Arc::new(ListenerContext {
        allow_anonymous: true,
        use_identity_as_username: false,
        tls: false,
    })
}

/// The size of the future `f` returns, without calling it.
fn future_size<A, B, F: Future>(_: impl FnOnce(A, B) -> F) -> usize {
    size_of::<F>()
}

/// A connection's task holds what it needs while it waits and no more: admission, packet
/// handling, the TLS handshake and the goodbye run in boxed futures of their own, allocated
/// only while they run. (Before that was so, the task was 8.7 KiB in a release build, more
/// than all else a connection holds.)
#[test]
fn a_waiting_connection_holds_a_small_task() {
    const BOUND: usize = 3 * 1024;
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (stream, _other) = tokio::io::duplex(64);
    let (reader, writer) = tokio::io::split(stream);
    let session = connection::run(reader, writer, peer, None, context(), shared());
    let tcp = future_size(|a: Accepted, _: ()| serve_tcp(a));
    let tls = future_size(serve_tls);
    eprintln!(
        "connection: {} bytes; TCP task {tcp}; TLS task {tls}",
        size_of_val(&session)
    );
    for (what, size) in [
        ("session", size_of_val(&session)),
        ("TCP", tcp),
        ("TLS", tls),
    ] {
        assert!(
            size <= BOUND,
            "a {what} connection's task takes {size} bytes"
        );
    }
}
