//! Network side: listeners accept sockets (plain or TLS, behind a load balancer's PROXY
//! header where configured) and run one connection task each.
//!
//! Files: this one (listeners, accept loop), [`limits`] (max connections, connection rate
//! per address, checked before anything else), [`proxy`] (reading the PROXY header), [`tls`],
//! [`connection`] (one task per client:
//! admission, session loop, incoming packets), [`ack_queue`] (acknowledgements held until
//! durable), [`outgoing`] (QoS 1/2 state towards the client), [`aliases`] (topic aliases).

pub mod ack_queue;
pub mod aliases;
pub mod connection;
pub mod limits;
pub mod outgoing;
pub mod proxy;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::auth::{Acl, Authenticator};
use crate::broker::RouterHandle;
use crate::config::{Config, ListenerConfig};
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use connection::ListenerContext;

/// What every connection shares: configuration, metrics, the router, authentication.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub router: RouterHandle,
    pub auth: Arc<Authenticator>,
    pub acl: Acl,
    /// The sensor-network protocol, unless switched off.
    pub protocol: Option<Arc<crate::protocol::Protocol>>,
    /// Durable storage of readings (with the protocol).
    pub ingest: Option<Arc<crate::ingest::Ingest>>,
    /// `mqtt.max_connections` and `mqtt.max_connection_rate_per_ip`.
    pub limits: limits::ConnectionLimits,
}

/// A bound listener, ready to accept.
pub struct Listener {
    pub local_addr: SocketAddr,
    pub tls: bool,
    /// Connections start with a PROXY protocol header naming the real client.
    proxy_protocol: bool,
    socket: TcpListener,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    context: Arc<ListenerContext>,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: tls::TlsError,
    },
}

impl Listener {
    /// Binds the socket and loads TLS material, so errors surface at startup.
    pub async fn bind(cfg: &ListenerConfig, config: &Config) -> Result<Listener, ListenError> {
        let tls_config = cfg
            .tls
            .as_ref()
            .map(|t| tls::server_config(t, b"mqtt"))
            .transpose()
            .map_err(|source| ListenError::Tls {
                addr: cfg.bind,
                source,
            })?;
        let socket = TcpListener::bind(cfg.bind)
            .await
            .map_err(|source| ListenError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| ListenError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let allow_anonymous = config.anonymous_allowed(cfg);
        if allow_anonymous && !local_addr.ip().is_loopback() {
            warn!(%local_addr, "anonymous clients allowed on a non-loopback listener");
        }
        Ok(Listener {
            local_addr,
            tls: tls_config.is_some(),
            proxy_protocol: cfg.proxy_protocol,
            socket,
            tls_config,
            context: Arc::new(ListenerContext {
                allow_anonymous,
                use_identity_as_username: cfg
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.use_identity_as_username),
                tls: cfg.tls.is_some(),
            }),
        })
    }

    /// Accepts connections forever.
    pub async fn run(self, shared: Arc<Shared>) {
        info!(addr = %self.local_addr, tls = self.tls, proxy_protocol = self.proxy_protocol,
            anonymous = self.context.allow_anonymous, "listening");
        let handshake_timeout = Duration::from_secs(shared.config.mqtt.connect_timeout_secs);
        loop {
            let (stream, peer) = match self.socket.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = shared.limits.slot(&shared.metrics) else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let accepted = Accepted {
                stream,
                peer,
                _slot: slot,
                proxy_protocol: self.proxy_protocol,
                handshake_timeout,
                context: self.context.clone(),
                shared: shared.clone(),
            };
            // One task per connection, each sized for its own kind: every connected node holds
            // its task for as long as it stays (`tests.rs` bounds the size).
            match &self.tls_config {
                None => tokio::spawn(serve_tcp(accepted)),
                Some(tls_config) => tokio::spawn(serve_tls(accepted, tls_config.clone())),
            };
        }
    }
}

/// A connection just accepted, holding its place under `mqtt.max_connections`.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    _slot: limits::Slot,
    proxy_protocol: bool,
    handshake_timeout: Duration,
    context: Arc<ListenerContext>,
    shared: Arc<Shared>,
}

impl Accepted {
    /// The client's address (from the PROXY header behind a balancer), if it may go on: the
    /// header is valid and the address within its connection rate.
    async fn client(&mut self) -> Option<SocketAddr> {
        let mut peer = self.peer;
        if self.proxy_protocol {
            let header =
                tokio::time::timeout(self.handshake_timeout, proxy::read_header(&mut self.stream));
            match header.await {
                Ok(Ok(Some(client))) => {
                    debug!(balancer = %peer, %client, "PROXY header");
                    peer = client;
                }
                // The balancer's own connection (a health check): its address stays.
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    self.shared.metrics.refuse(Refusal::ProxyHeaderInvalid);
                    warn!(%peer, error = %e, "connection refused: no valid PROXY header");
                    return None;
                }
                Err(_) => {
                    self.shared.metrics.refuse(Refusal::ProxyHeaderTimeout);
                    debug!(%peer, "PROXY header timed out");
                    return None;
                }
            }
        }
        self.shared
            .limits
            .admit_rate(peer.ip(), &self.shared.metrics)
            .then_some(peer)
    }
}

/// A plain TCP connection to its end.
async fn serve_tcp(mut a: Accepted) {
    let Some(peer) = a.client().await else {
        return;
    };
    let (reader, writer) = tokio::io::split(a.stream);
    connection::run(reader, writer, peer, None, a.context, a.shared).await;
}

/// A TLS connection to its end: the handshake (in a future of its own, gone once it is done),
/// then the session.
async fn serve_tls(mut a: Accepted, tls_config: Arc<rustls::ServerConfig>) {
    let Some(peer) = a.client().await else {
        return;
    };
    // In a block of its own, so that the stream, moved into its halves, is not also kept in
    // this task for as long as the session runs.
    let (reader, writer, identity) = {
        let handshake = Box::pin(tokio::time::timeout(
            a.handshake_timeout,
            tls::TlsStream::accept(a.stream, tls_config),
        ));
        let tls = match handshake.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                a.shared.metrics.refuse(Refusal::TlsHandshakeFailed);
                warn!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                a.shared.metrics.refuse(Refusal::TlsHandshakeTimeout);
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let identity = tls
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(tls::common_name);
        let (reader, writer) = tokio::io::split(tls);
        (reader, writer, identity)
    };
    connection::run(reader, writer, peer, identity, a.context, a.shared).await;
}

#[cfg(test)]
mod tests;
