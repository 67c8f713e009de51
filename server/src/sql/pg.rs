//! The PostgreSQL wire protocol (`[pgwire]`, `--pg-listen`): psql, Grafana's PostgreSQL data
//! source, DBeaver, Metabase and psycopg query Samos as if it were a read-only PostgreSQL 16.
//!
//! `datafusion-postgres` (on `pgwire`) parses the PostgreSQL dialect, answers the catalog
//! queries those tools send (`pg_catalog`, `information_schema`, `SET`/`SHOW`, cursors) and
//! encodes Arrow batches as rows; Samos wraps it with its own three parts:
//! - [`Login`], one per connection: anonymous where [`Logins`] says so; a password-file user
//!   sends its password (`AuthenticationCleartextPassword`), accepted only over TLS or from
//!   loopback since PBKDF2 hashes can only be checked against the password itself; any other
//!   user proves it knows the API token by SCRAM-SHA-256, which never sends it. Every login is
//!   registered for cancel requests (psql's Ctrl-C).
//! - [`ReadOnly`], the first query hook: refuses whatever is not a query or a session
//!   statement before it is planned (SQLSTATE 25006), and answers a `SET` of anything but the
//!   per-connection settings itself, so no client changes the shared session's settings.
//! - [`Queries`]: each result's row stream goes through [`Bounded`] (row cap, timeout, cancel),
//!   so a 10M-row scan is streamed with memory bounded by a few batches.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_query_response};
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, DEFAULT_NAME, ErrorHandler,
    METADATA_USER, PgWireConnectionState, PgWireServerHandlers,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Execute;
use samos_analytics::History;
use samos_analytics::datafusion::common::ParamValues;
use samos_analytics::datafusion::logical_expr::LogicalPlan;
use samos_analytics::datafusion::prelude::SessionContext;
use samos_analytics::datafusion::sql::sqlparser::ast::{Set, Statement};
use tokio::time::Instant;
use tracing::{debug, warn};

mod login;

use login::{Login, TokenVerifiers};

use super::{Bounded, Limits, Logins, Rows, Stop};
use crate::metrics::Metrics;
use crate::refusal::Refusal;

/// The catalog (PostgreSQL database) name clients connect to; any name is accepted.
pub const DATABASE: &str = samos_analytics::CATALOG;

/// A PostgreSQL error for the client.
fn pg_error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

fn stop_error(stop: Stop) -> PgWireError {
    let code = match stop {
        Stop::Timeout(_) | Stop::Cancelled => "57014",
        Stop::TooManyRows(_) => "54000",
    };
    pg_error("ERROR", code, stop.to_string())
}

impl Rows for pgwire::messages::data::DataRow {
    fn rows(&self) -> u64 {
        1
    }
}

/// What every connection of one endpoint shares.
pub struct Endpoint {
    queries: Arc<Queries>,
    logins: Arc<Logins>,
    tokens: Arc<TokenVerifiers>,
    connections: Arc<ConnectionManager>,
    parameters: Arc<DefaultServerParameterProvider>,
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// An endpoint over `history` (whose session gets `pg_catalog` here).
    pub fn new(
        history: History,
        logins: Logins,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Endpoint, String> {
        let ctx = history.context().clone();
        setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider).map_err(|e| e.to_string())?;
        // `datafusion-postgres`'s own hooks, after the gate.
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnly),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let service = DfSessionService::new_with_hooks(Arc::new(ctx), hooks);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.6-samos-{}", env!("CARGO_PKG_VERSION"));
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        let logins = Arc::new(logins);
        Ok(Endpoint {
            queries: Arc::new(Queries {
                inner: Arc::new(service),
                limits,
                metrics: metrics.clone(),
            }),
            tokens: Arc::new(TokenVerifiers::new(logins.clone())),
            logins,
            connections: Arc::new(ConnectionManager::new()),
            parameters: Arc::new(parameters),
            metrics,
        })
    }
}

/// Accepts connections on `listener` until the runtime stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    endpoint: Arc<Endpoint>,
) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let handlers = Connection {
                    endpoint: endpoint.clone(),
                    login: Arc::new(Login::new(endpoint.clone())),
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                        debug!(%peer, error = %e, "PostgreSQL connection ended");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "PostgreSQL endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The handlers of one connection (its own [`Login`]; the rest shared).
struct Connection {
    endpoint: Arc<Endpoint>,
    login: Arc<Login>,
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.endpoint.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.endpoint.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.login.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Errors {
            metrics: self.endpoint.metrics.clone(),
        })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.endpoint.connections.clone()))
    }
}

/// Counts and logs what is sent back as an error (stops of a result stream are counted where
/// they happen, in [`Bounded`]).
struct Errors {
    metrics: Arc<Metrics>,
}

impl ErrorHandler for Errors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let reason = match error {
            PgWireError::ApiError(_) => Some(Refusal::SqlBadQuery),
            PgWireError::InvalidPassword(_) => Some(Refusal::SqlUnauthorized),
            PgWireError::UserError(info) => match info.code.as_str() {
                "28000" | "28P01" => Some(Refusal::SqlUnauthorized),
                "25006" => Some(Refusal::SqlNotReadOnly),
                _ => None,
            },
            _ => None,
        };
        if let Some(reason) = reason {
            self.metrics.refuse(reason);
            let user = client.metadata().get(METADATA_USER).cloned();
            warn!(peer = %client.socket_addr(), ?user, reason = reason.label(), "PostgreSQL request refused: {error}");
        }
    }
}

/// The first query hook: lets through queries and the session statements clients send on
/// their own, refuses the rest before it is planned.
struct ReadOnly;

/// What a `SET` may change: the settings `datafusion-postgres` keeps per connection.
const CONNECTION_SETTINGS: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

enum Verdict {
    /// Handled by the next hooks or the query path.
    Pass,
    /// A `SET` of something that is not per connection: acknowledged, not applied.
    IgnoredSet,
    Refused(String),
}

fn verdict(statement: &Statement) -> Verdict {
    match statement {
        Statement::Query(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => Verdict::Pass,
        Statement::Explain {
            statement, analyze, ..
        } if !analyze => verdict(statement),
        Statement::Explain { statement, .. } => match verdict(statement) {
            Verdict::Pass if matches!(**statement, Statement::Query(_)) => Verdict::Pass,
            _ => Verdict::Refused("EXPLAIN ANALYZE of a statement that writes".into()),
        },
        Statement::Set(Set::SingleAssignment {
            scope: None,
            hivevar: false,
            variable,
            ..
        }) if CONNECTION_SETTINGS.contains(&variable.to_string().to_lowercase().as_str()) => {
            Verdict::Pass
        }
        Statement::Set(Set::SetTimeZone { local: false, .. }) => Verdict::Pass,
        Statement::Set(_) => Verdict::IgnoredSet,
        other => {
            let text = other.to_string();
            let words: Vec<&str> = text.split_whitespace().take(2).collect();
            Verdict::Refused(words.join(" "))
        }
    }
}

impl ReadOnly {
    fn refuse(&self, what: &str) -> PgWireError {
        pg_error(
            "ERROR",
            "25006",
            format!(
                "Samos only reads here: {what} is refused (queries, SET and SHOW are accepted)"
            ),
        )
    }
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match verdict(statement) {
            Verdict::Pass => None,
            Verdict::IgnoredSet => {
                debug!(%statement, "SET of a server-wide setting acknowledged, not applied");
                Some(Ok(Response::Execution(Tag::new("SET"))))
            }
            Verdict::Refused(what) => Some(Err(self.refuse(&what))),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match verdict(statement) {
            Verdict::Refused(what) => Some(Err(self.refuse(&what))),
            Verdict::IgnoredSet => Some(Ok(LogicalPlan::EmptyRelation(
                samos_analytics::datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: Arc::new(samos_analytics::datafusion::common::DFSchema::empty()),
                },
            ))),
            Verdict::Pass => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match verdict(statement) {
            Verdict::IgnoredSet => Some(Ok(Response::Execution(Tag::new("SET")))),
            Verdict::Refused(what) => Some(Err(self.refuse(&what))),
            Verdict::Pass => None,
        }
    }
}

/// `datafusion-postgres`'s query path with every result bounded.
struct Queries {
    inner: Arc<DfSessionService>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Queries {
    /// The limits of `client`'s next query (its own `statement_timeout` where shorter).
    fn limits<C: ClientInfo + ?Sized>(&self, client: &C) -> Limits {
        let asked = client
            .metadata()
            .get("statement_timeout_ms")
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis);
        self.limits.with_client_timeout(asked)
    }

    /// What a cancel request for `client`'s result stream resolves: a receiver installed when
    /// the stream is first polled. pgwire itself watches cancel requests while a query is
    /// planned (its own receiver, which installing one here would fire); the rows are sent
    /// after that, and only this one watches them.
    fn cancel<C: ClientInfo + ?Sized>(client: &C) -> Option<BoxFuture<'static, bool>> {
        let handle = client.session_extensions().get::<Arc<ConnectionHandle>>()?;
        // A dropped sender is the next query starting, not a cancel request.
        Some(async move { handle.start_query().await.await.is_ok() }.boxed())
    }

    /// Runs `planning` under the deadline, then bounds the rows of what it answers.
    async fn bounded<F, T>(
        &self,
        limits: Limits,
        started: Instant,
        mut cancel: Option<BoxFuture<'static, bool>>,
        planning: F,
        mut bound: impl FnMut(T, &mut Option<BoxFuture<'static, bool>>) -> T,
    ) -> PgWireResult<T>
    where
        F: Future<Output = PgWireResult<T>>,
    {
        let answer = match tokio::time::timeout_at(started + limits.timeout, planning).await {
            Ok(answer) => answer?,
            Err(_) => {
                let stop = Stop::Timeout(limits.timeout);
                self.metrics.refuse(stop.refusal());
                return Err(stop_error(stop));
            }
        };
        Ok(bound(answer, &mut cancel))
    }

    fn bound_response(
        &self,
        response: Response,
        limits: Limits,
        started: Instant,
        cancel: &mut Option<BoxFuture<'static, bool>>,
    ) -> Response {
        match response {
            Response::Query(mut query) => {
                let rows = std::mem::replace(
                    &mut query.data_rows,
                    Box::pin(futures_util::stream::empty()),
                );
                query.data_rows = Bounded::new(
                    rows,
                    limits,
                    started,
                    cancel.take(),
                    stop_error,
                    self.metrics.clone(),
                )
                .boxed();
                Response::Query(query)
            }
            other => other,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let limits = self.limits(client);
        let cancel = Self::cancel(client);
        let planning = SimpleQueryHandler::do_query(&*self.inner, client, query);
        self.bounded(
            limits,
            started,
            cancel,
            planning,
            |responses: Vec<Response>, cancel| {
                responses
                    .into_iter()
                    .map(|r| self.bound_response(r, limits, started, cancel))
                    .collect()
            },
        )
        .await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
    }

    /// An `Execute` asking for every row of a query (`max_rows` 0: psycopg, pgx, JDBC's
    /// default) streams them to the socket. pgwire's own path collects such a result into
    /// memory first (to serve later partial fetches); a fetch of N rows at a time still takes
    /// it, holding N rows.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal))
                if message.max_rows == 0
                    && matches!(client.state(), PgWireConnectionState::ReadyForQuery)
                    && matches!(portal.statement.statement.1, Some((Statement::Query(_), _)))
                    && matches!(*portal.state().lock().await, PortalExecutionState::Initial) =>
            {
                portal
            }
            _ => return self._on_execute(client, message).await,
        };
        let transaction_status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let response = ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await?;
        *portal.state().lock().await = PortalExecutionState::Finished;
        match response {
            Response::Query(rows) => send_query_response(client, rows, false).await?,
            Response::Execution(tag) => {
                client
                    .send(PgWireBackendMessage::CommandComplete(tag.into()))
                    .await?;
            }
            _ => {
                return Err(pg_error("ERROR", "0A000", "this statement is not a query"));
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction_status);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = Instant::now();
        let limits = self.limits(client);
        let cancel = Self::cancel(client);
        let planning = ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows);
        self.bounded(limits, started, cancel, planning, |response, cancel| {
            self.bound_response(response, limits, started, cancel)
        })
        .await
    }
}

/// The address an endpoint is reachable on, for logs.
pub fn describe(addr: SocketAddr, tls: bool, logins: &Logins) -> String {
    format!(
        "postgresql://{addr}/{DATABASE}{}{}",
        if tls { " (TLS)" } else { "" },
        if logins.anonymous() {
            ", no login asked"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use samos_analytics::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use samos_analytics::datafusion::sql::sqlparser::parser::Parser as SqlParser;

    fn verdict_of(sql: &str) -> Verdict {
        let statements = SqlParser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap_or_else(|e| unreachable!("{sql}: {e}"));
        verdict(&statements[0])
    }

    #[test]
    fn queries_and_session_statements_pass_and_writes_are_refused() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT * FROM readings",
            "EXPLAIN ANALYZE SELECT * FROM readings",
            "SHOW search_path",
            "BEGIN",
            "COMMIT",
            "SET statement_timeout = 1000",
            "SET search_path TO public",
            "SET TIME ZONE 'UTC'",
        ] {
            assert!(matches!(verdict_of(ok), Verdict::Pass), "{ok}");
        }
        for refused in [
            "INSERT INTO readings (value) VALUES (1)",
            "UPDATE readings SET value = 1",
            "DELETE FROM readings",
            "CREATE TABLE t (a INT)",
            "CREATE VIEW v AS SELECT 1",
            "DROP TABLE readings",
            "COPY readings TO '/tmp/x'",
            "EXPLAIN ANALYZE INSERT INTO readings (value) VALUES (1)",
            "TRUNCATE readings",
        ] {
            assert!(
                matches!(verdict_of(refused), Verdict::Refused(_)),
                "{refused}"
            );
        }
        assert!(matches!(
            verdict_of("SET datafusion.execution.batch_size = 1"),
            Verdict::IgnoredSet
        ));
    }
}
