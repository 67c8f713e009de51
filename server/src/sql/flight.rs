//! Arrow Flight SQL (`[flight]`, `--flight-listen`): ADBC, JDBC and pyarrow's Flight client
//! get query results as Arrow record batches, end to end, without a row format in between.
//!
//! Statements are stateless: a ticket, and a prepared statement's handle, carry the SQL text
//! itself, planned again when it is fetched. So nothing is held per statement (no leak when a
//! client never closes one), and a ticket is answered by whichever connection brings it.
//!
//! Logins, as on the PostgreSQL endpoint ([`super::Logins`]): the handshake takes HTTP Basic
//! credentials (a password-file user, or any name with the API token) and answers a bearer
//! token for the following calls, valid for `api.session_hours`; a bearer that is the API
//! token itself is accepted too (scripts). Each result is streamed through [`Bounded`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::Schema;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures_util::{Stream, TryStreamExt};
use prost::Message;
use samos_analytics::datafusion::prelude::SessionContext;
use samos_analytics::{History, QueryError};
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::{Bounded, Limits, Logins, Stop};
use crate::metrics::Metrics;
use crate::refusal::Refusal;

/// Most handshake sessions held at once; the oldest is forgotten past it.
const MAX_SESSIONS: usize = 4096;

/// The Flight SQL service of one endpoint.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

struct Inner {
    history: History,
    logins: Logins,
    limits: Limits,
    metrics: Arc<Metrics>,
    session_ttl: Duration,
    /// Bearer tokens the handshake gave out, with the user and when they expire.
    sessions: Mutex<HashMap<String, (String, Instant)>>,
    sql_info: SqlInfoData,
}

impl Endpoint {
    pub fn new(
        history: History,
        logins: Logins,
        limits: Limits,
        metrics: Arc<Metrics>,
        session_ttl: Duration,
    ) -> Result<Endpoint, String> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Samos");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        let sql_info = info.build().map_err(|e| e.to_string())?;
        Ok(Endpoint {
            inner: Arc::new(Inner {
                history,
                logins,
                limits,
                metrics,
                session_ttl,
                sessions: Mutex::default(),
                sql_info,
            }),
        })
    }

    /// The gRPC service to serve.
    pub fn service(self) -> FlightServiceServer<Endpoint> {
        FlightServiceServer::new(self).max_decoding_message_size(16 * 1024 * 1024)
    }

    fn ctx(&self) -> &SessionContext {
        self.inner.history.context()
    }

    fn refuse(&self, reason: Refusal, status: Status) -> Status {
        self.inner.metrics.refuse(reason);
        warn!(
            reason = reason.label(),
            message = status.message(),
            "Flight SQL request refused"
        );
        status
    }

    fn unauthenticated(&self, why: &str) -> Status {
        self.refuse(Refusal::SqlUnauthorized, Status::unauthenticated(why))
    }

    /// Credentials of HTTP Basic form, `user:password`, padded or not (Go's Flight client
    /// sends them unpadded).
    fn basic(value: &str) -> Option<(String, String)> {
        const BASE64: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let encoded = value.strip_prefix("Basic ")?;
        let text = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }

    /// Who sent `metadata`: anonymous where allowed, a bearer from the handshake or the API
    /// token, or Basic credentials.
    async fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.inner.logins.anonymous() {
            return Ok(());
        }
        let Some(value) = metadata.get("authorization").and_then(|v| v.to_str().ok()) else {
            return Err(self.unauthenticated(
                "log in first: a handshake with Basic credentials (a password-file user, or any name with the API token)",
            ));
        };
        if let Some(bearer) = value.strip_prefix("Bearer ") {
            let bearer = bearer.trim();
            let now = Instant::now();
            let known = self
                .inner
                .sessions
                .lock()
                .expect("flight sessions")
                .get(bearer)
                .is_some_and(|(_, expires)| *expires > now);
            if known || self.inner.logins.is_token(bearer) {
                return Ok(());
            }
            return Err(self.unauthenticated("unknown or expired bearer token: log in again"));
        }
        match Self::basic(value) {
            Some((user, password)) if self.inner.logins.check(&user, &password).await => Ok(()),
            _ => Err(self.unauthenticated("wrong user name or password")),
        }
    }

    /// Plans `sql` under the timeout, refusing what would write.
    async fn plan(
        &self,
        sql: &str,
    ) -> Result<samos_analytics::datafusion::prelude::DataFrame, Status> {
        let timeout = self.inner.limits.timeout;
        match tokio::time::timeout(timeout, self.inner.history.plan(sql)).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(e @ (QueryError::NotReadOnly(_) | QueryError::Statements(_)))) => Err(self
                .refuse(
                    Refusal::SqlNotReadOnly,
                    Status::invalid_argument(format!("Samos only reads here: {e}")),
                )),
            Ok(Err(e)) => Err(self.refuse(
                Refusal::SqlBadQuery,
                Status::invalid_argument(e.to_string()),
            )),
            Err(_) => Err(self.refuse(
                Refusal::SqlQueryTimeout,
                Status::deadline_exceeded(Stop::Timeout(timeout).to_string()),
            )),
        }
    }

    /// The result schema of `sql` as the stream carries it, planned but not run.
    async fn schema_of(&self, sql: &str) -> Result<Schema, Status> {
        Ok(hydrated(self.plan(sql).await?.schema().as_arrow()))
    }

    /// A FlightInfo whose one endpoint's ticket is `ticket` (an encoded command).
    fn info(
        schema: &Schema,
        descriptor: FlightDescriptor,
        ticket: Vec<u8>,
    ) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor))
    }

    /// Authorizes `request`, then answers a FlightInfo for a listing command.
    async fn listing(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        ticket: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata()).await?;
        Ok(Response::new(Self::info(
            schema,
            request.into_inner(),
            ticket,
        )?))
    }

    /// Runs `sql` and streams its batches under the limits.
    async fn run(
        &self,
        sql: &str,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let started = Instant::now();
        let frame = self.plan(sql).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame
            .execute_stream()
            .await
            .map_err(|e| self.refuse(Refusal::SqlBadQuery, Status::internal(e.to_string())))?
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        let bounded = Bounded::new(
            batches,
            self.inner.limits,
            started,
            None,
            |stop| FlightError::Tonic(Box::new(stop_status(stop))),
            self.inner.metrics.clone(),
        );
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(bounded)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    /// Encodes one metadata batch as a DoGet answer.
    fn one_batch<E: std::fmt::Display>(
        batch: Result<arrow::record_batch::RecordBatch, E>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(futures_util::stream::once(async { Ok(batch) }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    /// Every table and view: (catalog, schema, name, type, columns).
    async fn tables(&self) -> Vec<(String, String, String, String, Arc<Schema>)> {
        let ctx = self.ctx();
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    if let Ok(Some(table)) = schema.table(&table_name).await {
                        let kind = match table.table_type() {
                            samos_analytics::datafusion::datasource::TableType::View => "VIEW",
                            samos_analytics::datafusion::datasource::TableType::Temporary => {
                                "LOCAL TEMPORARY"
                            }
                            samos_analytics::datafusion::datasource::TableType::Base => "TABLE",
                        };
                        out.push((
                            catalog_name.clone(),
                            schema_name.clone(),
                            table_name,
                            kind.to_owned(),
                            table.schema(),
                        ));
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
        out
    }
}

/// `schema` with dictionary columns as their values: the encoder sends them so (its default,
/// which every client reads), and a FlightInfo must announce what the stream holds.
fn hydrated(schema: &Schema) -> Schema {
    let fields: Vec<arrow::datatypes::Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            arrow::datatypes::DataType::Dictionary(_, values) => {
                f.as_ref().clone().with_data_type(values.as_ref().clone())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn stop_status(stop: Stop) -> Status {
    match stop {
        Stop::Timeout(_) | Stop::Cancelled => Status::deadline_exceeded(stop.to_string()),
        Stop::TooManyRows(_) => Status::resource_exhausted(stop.to_string()),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("a statement handle is SQL text in UTF-8"))
}

#[tonic::async_trait]
impl FlightSqlService for Endpoint {
    type FlightService = Endpoint;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let credentials = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(Self::basic);
        let user = match credentials {
            Some((user, password)) => {
                if !self.inner.logins.check(&user, &password).await {
                    return Err(self.unauthenticated("wrong user name or password"));
                }
                user
            }
            None if self.inner.logins.anonymous() => "anonymous".to_owned(),
            None => {
                return Err(self.unauthenticated(
                    "the handshake needs Basic credentials: a password-file user, or any name with the API token",
                ));
            }
        };
        let token = hex(&rand::random::<[u8; 24]>());
        {
            let now = Instant::now();
            let mut sessions = self.inner.sessions.lock().expect("flight sessions");
            sessions.retain(|_, (_, expires)| *expires > now);
            if sessions.len() >= MAX_SESSIONS
                && let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
            sessions.insert(token.clone(), (user.clone(), now + self.inner.session_ttl));
        }
        info!(%user, "Flight SQL client logged in");
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures_util::stream::iter([Ok(answer)])));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata()).await?;
        let schema = self.schema_of(&query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        let info = Self::info(
            &schema,
            request.into_inner(),
            ticket.as_any().encode_to_vec(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        self.run(utf8(&ticket.statement_handle)?).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(request.metadata()).await?;
        let schema = self.schema_of(&query.query).await?;
        let IpcMessage(dataset_schema) =
            SchemaAsIpc::new(&schema, &arrow::ipc::writer::IpcWriteOptions::default())
                .try_into()
                .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.authorize(request.metadata()).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata()).await?;
        let schema = self
            .schema_of(utf8(&query.prepared_statement_handle)?)
            .await?;
        let info = Self::info(
            &schema,
            request.into_inner(),
            query.as_any().encode_to_vec(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        self.run(utf8(&query.prepared_statement_handle)?).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.listing(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        let mut builder = query.into_builder();
        for name in self.ctx().catalog_names() {
            builder.append(name);
        }
        Self::one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        let mut builder = query.into_builder();
        for catalog_name in self.ctx().catalog_names() {
            if let Some(catalog) = self.ctx().catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        Self::one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.listing(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, columns) in self.tables().await {
            builder
                .append(catalog, schema, table, kind, &columns)
                .map_err(Status::from)?;
        }
        Self::one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata()).await?;
        let schema = Schema::new(vec![arrow::datatypes::Field::new(
            "table_type",
            arrow::datatypes::DataType::Utf8,
            false,
        )]);
        let info = Self::info(
            &schema,
            request.into_inner(),
            query.as_any().encode_to_vec(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "table_type",
            arrow::datatypes::DataType::Utf8,
            false,
        )]));
        let types = arrow::array::StringArray::from(vec!["LOCAL TEMPORARY", "TABLE", "VIEW"]);
        Self::one_batch(arrow::record_batch::RecordBatch::try_new(
            schema,
            vec![Arc::new(types)],
        ))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.inner.sql_info).schema();
        self.listing(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        Self::one_batch(query.into_builder(&self.inner.sql_info).build())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.authorize(request.metadata()).await?;
        Err(Status::unimplemented(format!(
            "Samos answers queries, prepared queries and catalog listings, not {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
