//! SQL endpoints for the operator's own tools: the PostgreSQL wire protocol ([`pg`]: psql,
//! Grafana, DBeaver, Metabase, psycopg) and Arrow Flight SQL ([`flight`]: ADBC, JDBC,
//! pyarrow).
//!
//! Both answer from a [`samos_analytics::History`] of their own, the same read-only tables and
//! views as `samos sql` and the HTTP API, and share what makes them safe to open:
//! - **Logins** ([`Logins`]): on a loopback address with no credential configured anyone is
//!   admitted, like the MQTT and HTTP defaults; otherwise a client gives either a password-file
//!   user and its password (the MQTT users) or any user name with `api.token` /
//!   `api.admin_token` as the password. `allow_anonymous` opens an endpoint explicitly.
//! - **Read-only**: only queries (and the session statements clients send on their own:
//!   `SET`, `SHOW`, `BEGIN`, cursors) are run; anything that would write is refused before it
//!   is planned. A `SET` never reaches the shared DataFusion session, so no client changes
//!   another's settings.
//! - **Limits** ([`Bounded`]): a result is streamed as it is computed (never collected in
//!   memory) and stops with an error past `max_rows` rows or `query_timeout_ms`. An error
//!   rather than a cut: a BI tool shown a silently shortened result draws a wrong chart; the
//!   HTTP API, whose JSON carries a `truncated` flag, is the place for cut previews.
//!
//! Every refusal is counted under its `sql_*` label (`samos_refusals_total`) and logged.

pub mod flight;
pub mod pg;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::future::BoxFuture;
use tokio::time::{Instant, Sleep};

use samos_analytics::History;

use crate::auth::{Authenticator, constant_time_eq};
use crate::config::{Config, SqlEndpointConfig};
use crate::metrics::Metrics;
use crate::refusal::Refusal;

/// Why an endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{endpoint}: cannot open the history: {source}")]
    History {
        endpoint: &'static str,
        source: samos_analytics::QueryError,
    },
    #[error("{endpoint}: TLS: {message}")]
    Tls {
        endpoint: &'static str,
        message: String,
    },
    #[error("{endpoint}: {message}")]
    Setup {
        endpoint: &'static str,
        message: String,
    },
}

/// A read-only history over `config`'s data (the object store's `readings` where it keeps them).
async fn history(config: &Config, endpoint: &'static str) -> Result<History, EndpointError> {
    let lake = config
        .storage
        .lake_dataset()
        .map_err(|e| EndpointError::Setup {
            endpoint,
            message: e.to_string(),
        })?;
    History::open_with_lake(&config.data_dir, samos_analytics::Access::Query, lake)
        .await
        .map_err(|source| EndpointError::History { endpoint, source })
}

/// Starts the PostgreSQL wire endpoint on `listener` (`[pgwire]`).
pub async fn start_pg(
    listener: tokio::net::TcpListener,
    config: &Config,
    passwords: Arc<Authenticator>,
    metrics: Arc<Metrics>,
) -> Result<(), EndpointError> {
    const NAME: &str = "pgwire";
    let endpoint = &config.pgwire;
    let addr = listener.local_addr().map_err(|e| EndpointError::Setup {
        endpoint: NAME,
        message: e.to_string(),
    })?;
    let tls = endpoint
        .tls
        .as_ref()
        .map(|tls| crate::link::tls::acceptor_for(tls, b"postgresql"))
        .transpose()
        .map_err(|e| EndpointError::Tls {
            endpoint: NAME,
            message: e.to_string(),
        })?;
    let logins = Logins::new(config, endpoint, addr, passwords);
    tracing::info!(
        "PostgreSQL wire protocol on {}",
        pg::describe(addr, tls.is_some(), &logins)
    );
    let pg = pg::Endpoint::new(
        history(config, NAME).await?,
        logins,
        Limits::of(endpoint),
        metrics,
    )
    .map_err(|message| EndpointError::Setup {
        endpoint: NAME,
        message,
    })?;
    tokio::spawn(pg::serve(listener, tls, Arc::new(pg)));
    Ok(())
}

/// Starts the Arrow Flight SQL endpoint on `listener` (`[flight]`).
pub async fn start_flight(
    listener: tokio::net::TcpListener,
    config: &Config,
    passwords: Arc<Authenticator>,
    metrics: Arc<Metrics>,
) -> Result<(), EndpointError> {
    const NAME: &str = "flight";
    let endpoint = &config.flight;
    let addr = listener.local_addr().map_err(|e| EndpointError::Setup {
        endpoint: NAME,
        message: e.to_string(),
    })?;
    let tls_error = |message: String| EndpointError::Tls {
        endpoint: NAME,
        message,
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &endpoint.tls {
        // tonic builds its TLS configuration with the process-level crypto provider, and both
        // ring and aws-lc-rs are compiled in (the AWS SDK brings the latter): name ring, the
        // provider of every other Samos listener (`link/tls.rs`). A no-op once one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| tls_error(format!("{}: {e}", p.display())))
        };
        let mut tls_config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?),
        );
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config
                .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
                .client_auth_optional(!tls.require_client_cert);
        }
        server = server
            .tls_config(tls_config)
            .map_err(|e| tls_error(e.to_string()))?;
    }
    let logins = Logins::new(config, endpoint, addr, passwords);
    tracing::info!(
        "Arrow Flight SQL on grpc{}://{addr}{}",
        if endpoint.tls.is_some() { "+tls" } else { "" },
        if logins.anonymous() {
            ", no login asked"
        } else {
            ""
        }
    );
    let flight = flight::Endpoint::new(
        history(config, NAME).await?,
        logins,
        Limits::of(endpoint),
        metrics,
        Duration::from_secs(config.api.session_hours.max(1) * 3600),
    )
    .map_err(|message| EndpointError::Setup {
        endpoint: NAME,
        message,
    })?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        if let Err(e) = server
            .add_service(flight.service())
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "Flight SQL endpoint stopped");
        }
    });
    Ok(())
}

/// Who may log in to one SQL endpoint, and how.
#[derive(Debug)]
pub struct Logins {
    /// Admit without asking for anything.
    anonymous: bool,
    token: Option<String>,
    admin_token: Option<String>,
    passwords: Arc<Authenticator>,
}

/// How a client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Nothing is asked.
    Anonymous,
    /// The password itself, checked against the password file's hash (PBKDF2 hashes can only be
    /// checked that way, as MQTT's CONNECT does); only over TLS or loopback.
    Password,
    /// A token, proved without sending it (SCRAM-SHA-256 on the PostgreSQL wire).
    Token,
}

impl Logins {
    pub fn new(
        config: &Config,
        endpoint: &SqlEndpointConfig,
        bound: SocketAddr,
        passwords: Arc<Authenticator>,
    ) -> Logins {
        Logins {
            anonymous: endpoint.allow_anonymous
                || (bound.ip().is_loopback() && !config.has_credentials()),
            token: config.api.token.clone(),
            admin_token: config.api.admin_token.clone(),
            passwords,
        }
    }

    /// How `user` logs in.
    pub fn method(&self, user: &str) -> Option<Method> {
        if self.anonymous {
            Some(Method::Anonymous)
        } else if self.passwords.has_user(user) {
            Some(Method::Password)
        } else if self.token_for(user).is_some() {
            Some(Method::Token)
        } else {
            None
        }
    }

    /// The token `user` proves it knows: `api.admin_token` for the user `admin` where one is
    /// set, else `api.token`, else `api.admin_token`. Both only read here.
    pub fn token_for(&self, user: &str) -> Option<&str> {
        match (&self.token, &self.admin_token) {
            (_, Some(admin)) if user == "admin" => Some(admin),
            (Some(token), _) => Some(token),
            (None, admin) => admin.as_deref(),
        }
    }

    /// Whether `user` / `password` are valid credentials: a password-file user with its
    /// password, or any name with either token.
    pub async fn check(&self, user: &str, password: &str) -> bool {
        if self.anonymous {
            return true;
        }
        self.is_token(password) || self.passwords.verify(user, password.as_bytes()).await
    }

    /// Whether `bearer` is one of the API tokens.
    pub fn is_token(&self, bearer: &str) -> bool {
        [&self.token, &self.admin_token]
            .into_iter()
            .flatten()
            .any(|t| constant_time_eq(t.as_bytes(), bearer.as_bytes()))
    }

    /// Whether nothing is asked of clients.
    pub fn anonymous(&self) -> bool {
        self.anonymous
    }
}

/// The limits one query runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most rows; `None`: no cap.
    pub max_rows: Option<u64>,
    pub timeout: Duration,
}

impl Limits {
    pub fn of(endpoint: &SqlEndpointConfig) -> Limits {
        Limits {
            max_rows: (endpoint.max_rows > 0).then_some(endpoint.max_rows),
            timeout: Duration::from_millis(endpoint.query_timeout_ms),
        }
    }

    /// These limits with the timeout shortened to `client`'s, where it asked for a shorter one.
    pub fn with_client_timeout(mut self, client: Option<Duration>) -> Limits {
        if let Some(t) = client {
            self.timeout = self.timeout.min(t);
        }
        self
    }
}

/// Why a result stream stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Timeout(Duration),
    TooManyRows(u64),
    Cancelled,
}

impl Stop {
    pub fn refusal(self) -> Refusal {
        match self {
            Stop::Timeout(_) | Stop::Cancelled => Refusal::SqlQueryTimeout,
            Stop::TooManyRows(_) => Refusal::SqlTooManyRows,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Timeout(t) => write!(
                f,
                "canceling statement: it ran longer than {} ms (query_timeout_ms)",
                t.as_millis()
            ),
            Stop::TooManyRows(n) => write!(
                f,
                "the result has more than {n} rows (max_rows): add a LIMIT or an aggregate"
            ),
            Stop::Cancelled => f.write_str("canceling statement due to user request"),
        }
    }
}

/// What a result stream counts: rows, whatever carries them.
pub trait Rows {
    fn rows(&self) -> u64;
}

impl Rows for arrow::record_batch::RecordBatch {
    fn rows(&self) -> u64 {
        self.num_rows() as u64
    }
}

/// A result stream that ends with an error once it passes its row cap, its deadline or a
/// cancel request. Rows pass through as they come; nothing is buffered.
pub struct Bounded<S, E> {
    inner: S,
    rows: u64,
    max_rows: Option<u64>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Resolves to `true` on a cancel request (`false`: the request can no longer come).
    cancel: Option<BoxFuture<'static, bool>>,
    error: fn(Stop) -> E,
    metrics: Arc<Metrics>,
    done: bool,
}

impl<S, E> Bounded<S, E> {
    /// `inner` under `limits`, counted from `started`; `error` turns a stop into the stream's
    /// error type.
    pub fn new(
        inner: S,
        limits: Limits,
        started: Instant,
        cancel: Option<BoxFuture<'static, bool>>,
        error: fn(Stop) -> E,
        metrics: Arc<Metrics>,
    ) -> Self {
        Bounded {
            inner,
            rows: 0,
            max_rows: limits.max_rows,
            timeout: limits.timeout,
            deadline: Box::pin(tokio::time::sleep_until(started + limits.timeout)),
            cancel,
            error,
            metrics,
            done: false,
        }
    }

    fn stop(&mut self, why: Stop) -> E {
        self.done = true;
        self.metrics.refuse(why.refusal());
        tracing::warn!(
            reason = why.refusal().label(),
            rows = self.rows,
            "SQL result stopped: {why}"
        );
        (self.error)(why)
    }
}

impl<S, T, E> Stream for Bounded<S, E>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: Rows,
{
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(cancel) = &mut this.cancel
            && let Poll::Ready(fired) = cancel.as_mut().poll(cx)
        {
            this.cancel = None;
            if fired {
                return Poll::Ready(Some(Err(this.stop(Stop::Cancelled))));
            }
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            let timeout = this.timeout;
            return Poll::Ready(Some(Err(this.stop(Stop::Timeout(timeout)))));
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(item))) => {
                this.rows += item.rows();
                if let Some(max) = this.max_rows
                    && this.rows > max
                {
                    return Poll::Ready(Some(Err(this.stop(Stop::TooManyRows(max)))));
                }
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiConfig;
    use futures_util::StreamExt;

    fn logins(token: Option<&str>, admin: Option<&str>, bind: &str, open: bool) -> Logins {
        let config = Config {
            api: ApiConfig {
                token: token.map(str::to_owned),
                admin_token: admin.map(str::to_owned),
                ..ApiConfig::default()
            },
            ..Config::default()
        };
        let endpoint = SqlEndpointConfig {
            allow_anonymous: open,
            ..SqlEndpointConfig::default()
        };
        Logins::new(
            &config,
            &endpoint,
            bind.parse().unwrap_or_else(|_| unreachable!()),
            Arc::new(Authenticator::new(None, Arc::default())),
        )
    }

    #[tokio::test]
    async fn loopback_without_credentials_is_open_and_nothing_else_is() {
        let open = logins(None, None, "127.0.0.1:5433", false);
        assert_eq!(open.method("anyone"), Some(Method::Anonymous));
        assert!(open.check("anyone", "").await);
        let public = logins(None, None, "0.0.0.0:5433", false);
        assert_eq!(public.method("anyone"), None);
        assert!(!public.check("anyone", "").await);
        let opened = logins(None, None, "0.0.0.0:5433", true);
        assert_eq!(opened.method("anyone"), Some(Method::Anonymous));
        let guarded = logins(Some("t"), None, "127.0.0.1:5433", false);
        assert_eq!(guarded.method("anyone"), Some(Method::Token));
    }

    #[tokio::test]
    async fn tokens_log_in_any_name_and_admin_uses_its_own() {
        let l = logins(Some("viewer"), Some("boss"), "0.0.0.0:5433", false);
        assert_eq!(l.token_for("grafana"), Some("viewer"));
        assert_eq!(l.token_for("admin"), Some("boss"));
        assert!(l.check("grafana", "viewer").await);
        assert!(l.check("grafana", "boss").await);
        assert!(!l.check("grafana", "viewer2").await);
        assert!(l.is_token("boss") && !l.is_token(""));
        let only_admin = logins(None, Some("boss"), "0.0.0.0:5433", false);
        assert_eq!(only_admin.token_for("grafana"), Some("boss"));
    }

    fn batches(n: usize, rows: usize) -> Vec<Result<arrow::record_batch::RecordBatch, String>> {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, false),
        ]));
        (0..n)
            .map(|_| {
                let column = arrow::array::Int64Array::from(vec![1_i64; rows]);
                Ok(arrow::record_batch::RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(column)],
                )
                .unwrap_or_else(|_| unreachable!()))
            })
            .collect()
    }

    fn bounded(
        items: Vec<Result<arrow::record_batch::RecordBatch, String>>,
        max_rows: Option<u64>,
        timeout: Duration,
        metrics: &Arc<Metrics>,
    ) -> Bounded<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<arrow::record_batch::RecordBatch, String>>,
        >,
        String,
    > {
        Bounded::new(
            futures_util::stream::iter(items),
            Limits { max_rows, timeout },
            Instant::now(),
            None,
            |stop| stop.to_string(),
            metrics.clone(),
        )
    }

    #[tokio::test]
    async fn a_bounded_stream_passes_rows_then_stops_past_the_cap() {
        let metrics = Arc::new(Metrics::default());
        let all: Vec<_> = bounded(batches(3, 10), Some(30), Duration::from_secs(60), &metrics)
            .collect()
            .await;
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(Result::is_ok));

        let cut: Vec<_> = bounded(batches(3, 10), Some(25), Duration::from_secs(60), &metrics)
            .collect()
            .await;
        assert_eq!(cut.len(), 3, "two batches, then the error, then the end");
        assert!(cut[0].is_ok() && cut[1].is_ok());
        let err = cut[2].as_ref().err().cloned().unwrap_or_default();
        assert!(err.contains("more than 25 rows"), "{err}");
        assert_eq!(metrics.refusals().get("sql_too_many_rows"), Some(&1));
    }

    #[tokio::test]
    async fn a_bounded_stream_stops_at_its_deadline() {
        let metrics = Arc::new(Metrics::default());
        let endless =
            futures_util::stream::pending::<Result<arrow::record_batch::RecordBatch, String>>();
        let mut s = Bounded::new(
            endless,
            Limits {
                max_rows: None,
                timeout: Duration::from_millis(50),
            },
            Instant::now(),
            None,
            |stop| stop.to_string(),
            metrics.clone(),
        );
        let err = s.next().await.and_then(Result::err).unwrap_or_default();
        assert!(err.contains("50 ms"), "{err}");
        assert!(s.next().await.is_none());
        assert_eq!(metrics.refusals().get("sql_query_timeout"), Some(&1));
    }

    #[test]
    fn a_client_may_only_shorten_the_timeout() {
        let limits = Limits {
            max_rows: None,
            timeout: Duration::from_secs(10),
        };
        let shorter = limits.with_client_timeout(Some(Duration::from_secs(2)));
        assert_eq!(shorter.timeout, Duration::from_secs(2));
        let longer = limits.with_client_timeout(Some(Duration::from_secs(60)));
        assert_eq!(longer.timeout, Duration::from_secs(10));
    }
}
