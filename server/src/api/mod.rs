//! The HTTP listener: the JSON API over the stored history and the network, and the operator
//! dashboard (`assets`, `views`, `live`, `actions`; who may do what: `access`).
//!
//! The query API:
//! - `GET /api/v1/query?sql=…` — one SELECT / WITH / EXPLAIN statement (DataFusion, the tables
//!   of `samos sql`);
//! - `GET /api/v1/nodes` — the node registry;
//! - `GET /api/v1/readings?node=&sensor=&from=&to=` — readings in time order (`from`/`to`: an
//!   RFC 3339 time or a `YYYY-MM-DD` date, `to` exclusive).
//!
//! Answers are `{"columns": [{"name", "type"}], "rows": [{…}], "row_count", "truncated",
//! "elapsed_ms"}`; errors are `{"error": "…"}` with 400 (bad or refused query), 401 (token),
//! 408 (ran past `query_timeout_ms`) or 500. Every refusal is logged and counted in
//! `samos_refusals_total{reason="api_…"}`.

mod access;
mod actions;
mod assets;
mod live;
mod mining;
mod views;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use samos_analytics::datafusion::arrow::datatypes::SchemaRef;
use samos_analytics::datafusion::arrow::record_batch::RecordBatch;
use samos_analytics::datafusion::prelude::{DataFrame, col, lit};
use samos_analytics::datafusion::scalar::ScalarValue;
use samos_analytics::{History, QueryError};
use samos_schemas::http_params;
use serde_json::{Value, json};
use tracing::warn;

use crate::broker::RouterHandle;
use crate::config::ApiConfig;
use crate::metrics::Metrics;
use crate::protocol::Protocol;
use crate::refusal::Refusal;

/// What the handlers share.
pub struct Api {
    history: History,
    config: ApiConfig,
    metrics: Arc<Metrics>,
    access: access::Access,
    /// The sensor-network protocol (absent when `protocol.enabled = false`).
    protocol: Option<Arc<Protocol>>,
    /// For admins' disconnects.
    router: RouterHandle,
    data_dir: PathBuf,
    /// Mining runs started from the dashboard.
    mining: mining::MiningJobs,
    /// Environment for `samos mine` children: how to reach the object-store table.
    child_env: Vec<(String, String)>,
    /// The object-store dataset (with credentials) a cluster query reads, where there is one.
    dataset: Option<samos_cluster::Dataset>,
    /// The alert rules' engine, where rules are configured (admins acknowledge its alerts).
    alerts: Option<Arc<crate::alerts::Alerts>>,
    /// Live streams open now.
    live_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The last counters and when they were taken: every stream's second shares one walk of
    /// the registry.
    counters: std::sync::Mutex<Option<(Instant, Arc<Value>)>>,
}

/// A refused request: its status, why, and the message the client reads.
#[derive(Debug)]
pub(crate) struct Refused(StatusCode, Refusal, String);

impl Api {
    pub fn new(
        history: History,
        config: ApiConfig,
        metrics: Arc<Metrics>,
        protocol: Option<Arc<Protocol>>,
        router: RouterHandle,
        data_dir: PathBuf,
    ) -> Api {
        Api {
            access: access::Access::new(&config),
            history,
            config,
            metrics,
            protocol,
            router,
            data_dir,
            mining: mining::MiningJobs::default(),
            child_env: Vec::new(),
            dataset: None,
            alerts: None,
            live_streams: Arc::default(),
            counters: std::sync::Mutex::default(),
        }
    }

    /// The object-store dataset the history lives in (for queries on a cluster).
    pub fn with_dataset(mut self, dataset: Option<samos_cluster::Dataset>) -> Api {
        self.dataset = dataset;
        self
    }

    /// A session on the Ballista scheduler `api.cluster` names, built for one query (the
    /// dataset's snapshots and the protocol tables as of now).
    async fn cluster_history(&self) -> Result<History, Refused> {
        let refused = |why: String| {
            Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                Refusal::ApiClusterUnavailable,
                why,
            )
        };
        let Some(url) = &self.config.cluster else {
            return Err(refused(
                "engine=cluster: no cluster is configured (api.cluster)".into(),
            ));
        };
        let ctx = samos_cluster::connect(url, &self.data_dir, self.dataset.clone())
            .await
            .map_err(|e| refused(format!("the cluster at {url}: {e}")))?;
        Ok(History::from_context(ctx, samos_analytics::Access::Query))
    }

    /// Environment variables every `samos mine` child gets (the object store's credentials
    /// where the configuration, not the environment, holds them).
    /// The alert rules' engine whose alerts admins acknowledge.
    pub fn with_alerts(mut self, alerts: Option<Arc<crate::alerts::Alerts>>) -> Api {
        self.alerts = alerts;
        self
    }

    pub fn with_child_env(mut self, env: Vec<(String, String)>) -> Api {
        self.child_env = env;
        self
    }

    fn refuse(&self, r: Refused) -> Response {
        let Refused(status, reason, message) = r;
        self.metrics.refuse(reason);
        warn!(status = status.as_u16(), reason = reason.label(), %message, "API request refused");
        (status, axum::Json(json!({ "error": message }))).into_response()
    }

    /// The sensor-network protocol, or a 404 when `protocol.enabled = false`.
    fn protocol(&self) -> Result<&Arc<Protocol>, Refused> {
        self.protocol.as_ref().ok_or_else(|| {
            Refused(
                StatusCode::NOT_FOUND,
                Refusal::ApiNotFound,
                "the sensor-network protocol is off (protocol.enabled = false)".into(),
            )
        })
    }

    /// The counters pages show, at most half a second old.
    fn counters(&self) -> Arc<Value> {
        let mut cached = self.counters.lock().expect("counters cache");
        if let Some((at, v)) = &*cached
            && at.elapsed() < Duration::from_millis(500)
        {
            return v.clone();
        }
        let v = Arc::new(views::counters(&self.metrics, self.protocol.as_deref()));
        *cached = Some((Instant::now(), v.clone()));
        v
    }

    /// Any authenticated caller (viewer or admin) may read.
    fn authorize(&self, headers: &HeaderMap) -> Result<access::Caller, Refused> {
        self.access.caller(headers)
    }

    /// Runs `query` (a planned DataFrame) under the timeout, keeping at most `cap` rows.
    async fn collect(
        &self,
        frame: impl Future<Output = Result<DataFrame, QueryError>>,
        cap: usize,
    ) -> Result<Collected, Refused> {
        let run = async {
            let frame = frame.await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let mut stream = frame.execute_stream().await?;
            let mut batches: Vec<RecordBatch> = Vec::new();
            let mut rows = 0usize;
            let mut truncated = false;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if rows + batch.num_rows() > cap {
                    batches.push(batch.slice(0, cap - rows));
                    rows = cap;
                    truncated = true;
                    break;
                }
                rows += batch.num_rows();
                batches.push(batch);
            }
            Ok::<_, QueryError>(Collected {
                schema,
                batches,
                rows,
                truncated,
            })
        };
        let timeout = Duration::from_millis(self.config.query_timeout_ms);
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => {
                let reason = match e {
                    QueryError::NotReadOnly(_) | QueryError::Statements(_) => {
                        Refusal::ApiNotReadOnly
                    }
                    _ => Refusal::ApiBadQuery,
                };
                Err(Refused(StatusCode::BAD_REQUEST, reason, e.to_string()))
            }
            Err(_) => Err(Refused(
                StatusCode::REQUEST_TIMEOUT,
                Refusal::ApiQueryTimeout,
                format!(
                    "the query ran longer than {} ms and was cancelled",
                    self.config.query_timeout_ms
                ),
            )),
        }
    }

    /// Runs `query` under the row cap and the timeout; the answer in JSON.
    async fn answer(
        &self,
        frame: impl Future<Output = Result<DataFrame, QueryError>>,
    ) -> Result<Value, Refused> {
        let started = Instant::now();
        let Collected {
            schema,
            batches,
            rows,
            truncated,
        } = self.collect(frame, self.config.max_rows).await?;
        let mut json_rows = Vec::new();
        samos_analytics::output::write(
            &batches,
            &schema,
            samos_analytics::output::Format::Json,
            &mut json_rows,
        )
        .map_err(|e| {
            Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                Refusal::ApiEncode,
                e.to_string(),
            )
        })?;
        let rows_value: Value = serde_json::from_slice(&json_rows).map_err(|e| {
            Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                Refusal::ApiEncode,
                e.to_string(),
            )
        })?;
        let columns: Vec<Value> = schema
            .fields()
            .iter()
            .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
            .collect();
        Ok(json!({
            "columns": columns,
            "rows": rows_value,
            "row_count": rows,
            "truncated": truncated,
            "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
        }))
    }
}

/// A query's result, cut at a row cap.
struct Collected {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
    truncated: bool,
}

type Params = Query<HashMap<String, String>>;

async fn query(State(api): State<Arc<Api>>, headers: HeaderMap, Query(p): Params) -> Response {
    let result = async {
        api.authorize(&headers)?;
        let sql = p.get("sql").map(String::as_str).unwrap_or("").trim();
        if sql.is_empty() {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                Refusal::ApiBadQuery,
                "give the statement as ?sql=…".into(),
            ));
        }
        if sql.len() > api.config.max_query_bytes {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                Refusal::ApiQueryTooLong,
                format!(
                    "the query is {} bytes; at most {} are accepted (api.max_query_bytes)",
                    sql.len(),
                    api.config.max_query_bytes
                ),
            ));
        }
        let cluster;
        let history = match p.get("engine").map(String::as_str) {
            None | Some("local") => &api.history,
            Some("cluster") => {
                cluster = api.cluster_history().await?;
                &cluster
            }
            Some(other) => {
                return Err(Refused(
                    StatusCode::BAD_REQUEST,
                    Refusal::ApiBadQuery,
                    format!("engine {other:?}: local or cluster"),
                ));
            }
        };
        match p.get("format").map(String::as_str) {
            None | Some("json") => api.answer(history.plan(sql)).await.map(Answer::Json),
            Some(f @ ("csv" | "parquet")) => {
                // A download is the whole result (as `samos sql --format` writes it), not the
                // JSON answer's first `max_rows`.
                let done = api.collect(history.plan(sql), usize::MAX).await?;
                let format = if f == "csv" {
                    samos_analytics::output::Format::Csv
                } else {
                    samos_analytics::output::Format::Parquet
                };
                let mut bytes = Vec::new();
                samos_analytics::output::write(&done.batches, &done.schema, format, &mut bytes)
                    .map_err(|e| {
                        Refused(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            Refusal::ApiEncode,
                            e.to_string(),
                        )
                    })?;
                Ok(Answer::File {
                    bytes,
                    name: format!("samos-query.{f}"),
                    content_type: if f == "csv" {
                        "text/csv; charset=utf-8"
                    } else {
                        "application/vnd.apache.parquet"
                    },
                })
            }
            Some(other) => Err(Refused(
                StatusCode::BAD_REQUEST,
                Refusal::ApiBadQuery,
                format!("format={other:?}: use json, csv or parquet"),
            )),
        }
    }
    .await;
    match result {
        Ok(Answer::Json(v)) => (StatusCode::OK, axum::Json(v)).into_response(),
        Ok(Answer::File {
            bytes,
            name,
            content_type,
        }) => (
            [
                (header::CONTENT_TYPE, content_type.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(r) => api.refuse(r),
    }
}

/// What `GET /api/v1/query` answers: JSON, or a file to download.
enum Answer {
    Json(Value),
    File {
        bytes: Vec<u8>,
        name: String,
        content_type: &'static str,
    },
}

async fn nodes(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let result = async {
        api.authorize(&headers)?;
        let mut answer = api
            .answer(api.history.plan(
                "SELECT network, node_id, functional_mode, severity, assessed_severity, config, \
                 joined_at, last_seen, address, readings_accepted, readings_rejected \
                 FROM nodes ORDER BY network, node_id",
            ))
            .await?;
        // The configuration as a JSON object, not a string holding one.
        if let Some(rows) = answer["rows"].as_array_mut() {
            for row in rows {
                if let Some(config) = row.get("config").and_then(Value::as_str) {
                    row["config"] = serde_json::from_str(config).unwrap_or(Value::Null);
                }
            }
        }
        Ok(answer)
    }
    .await;
    respond(&api, result)
}

/// `2026-11-25T10:00:00Z` (or any RFC 3339 time) or `2026-11-25` (midnight UTC), as ms.
fn parse_time(name: &str, text: &str) -> Result<i64, Refused> {
    http_params::parse_time(text).ok_or_else(|| {
        Refused(
            StatusCode::BAD_REQUEST,
            Refusal::ApiBadQuery,
            format!("{name}={text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"),
        )
    })
}

fn utc_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

async fn readings(State(api): State<Arc<Api>>, headers: HeaderMap, Query(p): Params) -> Response {
    let result = async {
        api.authorize(&headers)?;
        let from = p.get("from").map(|t| parse_time("from", t)).transpose()?;
        let to = p.get("to").map(|t| parse_time("to", t)).transpose()?;
        let time = |ms: i64| {
            lit(ScalarValue::TimestampMillisecond(
                Some(ms),
                Some("UTC".into()),
            ))
        };
        let frame = async {
            let mut frame = api.history.context().table("readings").await?;
            for (column, param) in [
                ("node_id", "node"),
                ("sensor", "sensor"),
                ("network", "network"),
            ] {
                if let Some(v) = p.get(param) {
                    frame = frame.filter(col(column).eq(lit(v.as_str())))?;
                }
            }
            if let Some(ms) = from {
                // The date bound lets whole partitions be skipped.
                frame = frame.filter(col("date").gt_eq(lit(utc_date(ms))))?;
                frame = frame.filter(col("ingest_time").gt_eq(time(ms)))?;
            }
            if let Some(ms) = to {
                frame = frame.filter(col("date").lt_eq(lit(utc_date(ms))))?;
                frame = frame.filter(col("ingest_time").lt(time(ms)))?;
            }
            let frame = frame
                .select_columns(&[
                    "ingest_time",
                    "network",
                    "node_id",
                    "room",
                    "sensor",
                    "value",
                    "raw",
                    "units",
                    "severity",
                    "key",
                ])?
                .sort(vec![
                    col("ingest_time").sort(true, false),
                    col("key").sort(true, false),
                ])?
                .limit(0, Some(api.config.max_rows + 1))?;
            Ok::<_, QueryError>(frame)
        };
        api.answer(frame).await
    }
    .await;
    respond(&api, result)
}

fn respond(api: &Api, result: Result<Value, Refused>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(r) => api.refuse(r),
    }
}

/// Serves the API until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, api: Arc<Api>) -> std::io::Result<()> {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route("/api/v1/query", get(query))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/readings", get(readings))
        .route("/api/v1/overview", get(views::overview))
        .route("/api/v1/network", get(views::network))
        .route("/api/v1/network/{network}/{node}", get(views::node))
        .route(
            "/api/v1/network/{network}/{node}/mode",
            post(actions::set_mode),
        )
        .route(
            "/api/v1/network/{network}/{node}/config",
            post(actions::push_config),
        )
        .route("/api/v1/events", get(views::events))
        .route("/api/v1/alerts", get(views::alerts))
        .route("/api/v1/alerts/ack", post(actions::acknowledge))
        .route("/api/v1/mining/runs", get(mining::jobs).post(mining::start))
        .route(
            "/api/v1/clients/{client}/disconnect",
            post(actions::disconnect),
        )
        .route("/api/v1/quarantine", get(views::quarantine))
        .route("/api/v1/series", get(views::series))
        .route("/api/v1/live", get(live::live))
        .route("/api/v1/session", get(actions::session))
        .route("/api/v1/login", post(actions::login))
        .route("/api/v1/logout", post(actions::logout))
        .route("/assets/{file}", get(assets::asset))
        .fallback(get(assets::page))
        .layer(axum::middleware::map_response(assets::security_headers))
        .with_state(api);
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("from", "1970-01-02").ok().unwrap(), 86_400_000);
        assert_eq!(
            parse_time("from", "1970-01-01T00:00:01+00:00")
                .ok()
                .unwrap(),
            1000
        );
        assert!(parse_time("from", "yesterday").is_err());
        assert_eq!(utc_date(86_400_000), "1970-01-02");
    }
}
