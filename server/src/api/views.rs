//! What the dashboard reads: the network as the registry holds it now, one node in detail,
//! events and alerts, the quarantine, counters, and a sensor's series down-sampled for a chart.
//!
//! The node views read the live registry, not the store, so they are current to the message;
//! events and refused readings are the newest lines of `events.jsonl` and `rejected.jsonl`
//! (at most the last `TAIL_BYTES` of each file); series come from the store through
//! DataFusion, one row per time bucket (min, max, mean), so a year of readings draws as a few
//! hundred points.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use samos_schemas::http_params::{self, SeriesWindow, sql_text};
use samos_schemas::payload::FunctionalMode;
use samos_store::layout;
use serde_json::{Value, json};

use super::{Api, Params, Refused, respond};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::protocol::Protocol;
use crate::protocol::registry::Node;
use crate::refusal::Refusal;

/// How much of the end of a JSON-lines log a view reads.
const TAIL_BYTES: u64 = 4 << 20;
/// Most lines one events or quarantine answer carries.
const MAX_LINES: usize = 2000;

/// The counters a page shows, as totals (the live stream adds rates).
pub(super) fn counters(metrics: &Metrics, protocol: Option<&Protocol>) -> Value {
    let refusals: serde_json::Map<String, Value> = metrics
        .refusals()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let committed = metrics.readings_committed.load(Relaxed);
    let in_parquet = metrics.parquet_rows.load(Relaxed);
    let (mut active, mut blocked, mut connected, mut total) = (0, 0, 0, 0);
    if let Some(p) = protocol {
        for node in p.registry.all() {
            total += 1;
            match node.record.lock().expect("node record").functional_mode {
                FunctionalMode::Active => active += 1,
                FunctionalMode::Blocked => blocked += 1,
                _ => {}
            }
            if node.session.lock().expect("session").is_some() {
                connected += 1;
            }
        }
    }
    json!({
        "time_ms": now_ms(),
        "uptime_s": metrics.uptime().as_secs(),
        "connections": metrics.connections_current.load(Relaxed),
        "connections_total": metrics.connections_total.load(Relaxed),
        "readings_committed": committed,
        "refusals_total": refusals.values().filter_map(Value::as_u64).sum::<u64>(),
        "refusals": refusals,
        "alerts_total": metrics.alerts_raised.load(Relaxed),
        "messages_received": metrics.messages_received.iter().map(|c| c.load(Relaxed)).sum::<u64>(),
        "messages_sent": metrics.messages_sent.iter().map(|c| c.load(Relaxed)).sum::<u64>(),
        "wal_batches": metrics.wal_batches.load(Relaxed),
        "parquet_lag_rows": committed.saturating_sub(in_parquet),
        "postgres_lag_batches": metrics.postgres_lag.load(Relaxed),
        "object_store_lag_batches": metrics.lake_lag.load(Relaxed),
        "ingest_backpressure": metrics.ingest_backpressure.load(Relaxed),
        "bridges": metrics.bridges().iter().map(|b| json!({
            "name": b.name,
            "connected": b.connected.load(Relaxed) == 1,
            "lag_batches": b.lag_batches.load(Relaxed),
            "messages": b.forwarded.load(Relaxed),
        })).collect::<Vec<_>>(),
        "nodes": {"total": total, "active": active, "blocked": blocked, "connected": connected},
    })
}

/// One node as the network view lists it.
fn node_summary(node: &Node) -> Value {
    let r = node.snapshot();
    let client = node.session.lock().expect("session").clone();
    let connected = client.is_some();
    let (location, sensors) = match &r.config {
        Some(c) => (
            serde_json::to_value(&c.location).unwrap_or(Value::Null),
            serde_json::to_value(&c.sensors).unwrap_or(Value::Null),
        ),
        None => (Value::Null, json!([])),
    };
    json!({
        "network": r.network, "node_id": r.node_id,
        "functional_mode": r.functional_mode.as_str(),
        "severity": r.severity.as_str(), "assessed_severity": r.assessed_severity.as_str(),
        "joined_at_ms": r.joined_at_ms, "last_seen_ms": r.last_seen_ms, "address": r.address,
        "readings_accepted": r.readings_accepted, "readings_rejected": r.readings_rejected,
        "connected": connected, "client_id": client.as_deref(), "blocked_by": r.blocked_by,
        "location": location, "sensors": sensors,
    })
}

pub(super) async fn overview(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let result = api.authorize(&headers).map(|_| {
        let mut v = Value::clone(&api.counters());
        if let Some(p) = &api.protocol {
            v["network"] = json!(p.identity.network);
            v["server_id"] = json!(p.identity.server_id);
        }
        v["version"] = json!(env!("CARGO_PKG_VERSION"));
        v
    });
    respond(&api, result)
}

/// `GET /api/v1/network`: every node, from the live registry.
pub(super) async fn network(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let result = (|| {
        api.authorize(&headers)?;
        let p = api.protocol()?;
        let nodes: Vec<Value> = p.registry.all().iter().map(|n| node_summary(n)).collect();
        Ok(json!({ "nodes": nodes }))
    })();
    respond(&api, result)
}

/// `GET /api/v1/network/{network}/{node}`: one node with its configuration.
pub(super) async fn node(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    UrlPath((network, node_id)): UrlPath<(String, String)>,
) -> Response {
    let result = (|| {
        api.authorize(&headers)?;
        let p = api.protocol()?;
        let node = p.registry.get(&network, &node_id).ok_or_else(|| {
            Refused(
                StatusCode::NOT_FOUND,
                Refusal::ApiNotFound,
                format!("no node {node_id} in network {network}"),
            )
        })?;
        let mut v = node_summary(&node);
        let r = node.snapshot();
        v["config_xml"] = json!(r.config_xml);
        v["config"] = r
            .config
            .as_ref()
            .map_or(Value::Null, |c| c.document.clone());
        v["refusal"] = json!(
            r.refusal
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        v["pushed_config"] = r
            .pushed_config
            .as_ref()
            .map_or(Value::Null, |p| json!({"by": p.by, "time_ms": p.time_ms}));
        Ok(v)
    })();
    respond(&api, result)
}

/// The newest lines of a JSON-lines file (at most its last `TAIL_BYTES`), newest first.
fn tail_lines(path: &Path, keep: impl Fn(&Value) -> bool, limit: usize) -> Vec<Value> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    // The window may start inside a multi-byte character; that first line is dropped anyway.
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if start > 0 {
        lines.next(); // a line cut by the window
    }
    let mut out: Vec<Value> = lines
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| keep(v))
        .collect();
    out.reverse();
    out.truncate(limit);
    out
}

fn limit(p: &HashMap<String, String>) -> usize {
    http_params::count(p.get("limit").map(String::as_str), 200, MAX_LINES)
}

/// Whether a log line matches the `node` and `network` parameters.
fn for_node(p: &HashMap<String, String>, v: &Value) -> bool {
    ["node_id", "network"].iter().all(|field| {
        let param = if *field == "node_id" {
            "node"
        } else {
            "network"
        };
        p.get(param)
            .is_none_or(|want| v[*field].as_str() == Some(want.as_str()))
    })
}

/// `GET /api/v1/events?node=&kind=&limit=`: the event log, newest first.
pub(super) async fn events(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let result = api.authorize(&headers).map(|_| {
        let path = api.data_dir.join(layout::EVENTS_FILE);
        let kind = p.get("kind").cloned();
        let events = tail_lines(
            &path,
            |v| for_node(&p, v) && kind.as_ref().is_none_or(|k| v["kind"].as_str() == Some(k)),
            limit(&p),
        );
        json!({ "events": events })
    });
    respond(&api, result)
}

/// `GET /api/v1/alerts`: alerts, newest first, each with its acknowledgement if any.
pub(super) async fn alerts(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let result = api.authorize(&headers).map(|_| {
        let path = api.data_dir.join(layout::EVENTS_FILE);
        // One read of the event log for both kinds of alert.
        let (rule_lines, lines): (Vec<Value>, Vec<Value>) = tail_lines(
            &path,
            |v| {
                for_node(&p, v)
                    && matches!(
                        v["kind"].as_str(),
                        Some("alert" | "alert_firing" | "alert_acknowledged" | "alert_resolved")
                    )
            },
            usize::MAX,
        )
        .into_iter()
        .partition(|v| v["detail"]["id"].is_string());
        // An alert of the cross-check is (network, node, its time); an acknowledgement names
        // that time.
        let key = |v: &Value, time: &Value| {
            (
                v["network"].as_str().unwrap_or("").to_string(),
                v["node_id"].as_str().unwrap_or("").to_string(),
                time.as_i64(),
            )
        };
        let mut acks: HashMap<(String, String, Option<i64>), Value> = HashMap::new();
        for v in lines.iter().filter(|v| v["kind"] == "alert_acknowledged") {
            // Newest first: later inserts are older, so the earliest acknowledgement stays.
            acks.insert(
                key(v, &v["detail"]["alert_time_ms"]),
                json!({"by": v["detail"]["by"], "time_ms": v["time_ms"]}),
            );
        }
        let alerts: Vec<Value> = lines
            .into_iter()
            .filter(|v| v["kind"] == "alert")
            .take(limit(&p))
            .map(|mut v| {
                let ack = acks.get(&key(&v, &v["time_ms"])).cloned();
                v["acknowledged"] = ack.unwrap_or(Value::Null);
                v
            })
            .collect();
        let rules = rule_alerts(rule_lines, &p);
        json!({ "alerts": alerts, "rules": rules })
    });
    respond(&api, result)
}

/// The alert rules' alerts as their events (`lines`, newest first, each with the alert as
/// `detail`) leave them, newest first: each alert (its id, rule,
/// severity, series, value, start, summary) with `state` (`firing`, `acknowledged`,
/// `resolved`), who acknowledged it and when it resolved.
fn rule_alerts(lines: Vec<Value>, p: &HashMap<String, String>) -> Vec<Value> {
    let mut by_id: HashMap<String, Value> = HashMap::new();
    // Oldest first, so each alert ends as its newest event left it.
    for v in lines.into_iter().rev() {
        let mut alert = v["detail"].clone();
        let state = v["kind"]
            .as_str()
            .and_then(|k| k.strip_prefix("alert_"))
            .unwrap_or_default()
            .to_owned();
        alert["state"] = state.into();
        alert["changed_ms"] = v["time_ms"].clone();
        let id = alert["id"].as_str().unwrap_or_default().to_owned();
        by_id.insert(id, alert);
    }
    let mut alerts: Vec<Value> = by_id.into_values().collect();
    alerts.sort_by_key(|a| std::cmp::Reverse(a["started_ms"].as_i64()));
    alerts.truncate(limit(p));
    alerts
}

/// `GET /api/v1/quarantine?node=&reason=&limit=`: refused messages, newest first.
pub(super) async fn quarantine(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let result = api.authorize(&headers).map(|_| {
        let path = api.data_dir.join(layout::REJECTED_FILE);
        let reason = p.get("reason").cloned();
        let node = p.get("node").cloned();
        let refused = tail_lines(
            &path,
            |v| {
                reason
                    .as_ref()
                    .is_none_or(|r| v["reason"].as_str() == Some(r))
                    && node.as_ref().is_none_or(|n| {
                        v["topic"]
                            .as_str()
                            .and_then(samos_schemas::topic::parse)
                            .is_some_and(|t| t.node_id == n)
                    })
            },
            limit(&p),
        );
        json!({ "refused": refused })
    });
    respond(&api, result)
}

/// A string as a SQL literal.
/// `GET /api/v1/series?node=&sensor=&from=&to=&points=`: one sensor's readings in at most
/// `points` time buckets (min, max, mean, count each), for charts of any range.
pub(super) async fn series(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(p): Params,
) -> Response {
    let result = async {
        api.authorize(&headers)?;
        let bad = |what: &str| {
            Refused(
                StatusCode::BAD_REQUEST,
                Refusal::ApiBadQuery,
                format!("series needs {what}"),
            )
        };
        let node = p.get("node").ok_or_else(|| bad("node="))?;
        let sensor = p.get("sensor").ok_or_else(|| bad("sensor="))?;
        let SeriesWindow { from, to, bucket } = http_params::series_window(
            p.get("from").map(String::as_str),
            p.get("to").map(String::as_str),
            p.get("points").map(String::as_str),
            now_ms(),
        )
        .map_err(|e| Refused(StatusCode::BAD_REQUEST, Refusal::ApiBadQuery, e.to_string()))?;
        let network = p
            .get("network")
            .map(|n| format!(" AND network = {}", sql_text(n)))
            .unwrap_or_default();
        let sql = format!(
            "SELECT (CAST(ingest_time AS BIGINT) - {from}) / {bucket} AS bucket, \
             min(CAST(ingest_time AS BIGINT)) AS t, min(value) AS lo, max(value) AS hi, \
             avg(value) AS mean, count(*) AS n FROM readings \
             WHERE node_id = {node} AND sensor = {sensor}{network} \
             AND date >= {from_date} AND date <= {to_date} \
             AND CAST(ingest_time AS BIGINT) >= {from} AND CAST(ingest_time AS BIGINT) < {to} \
             GROUP BY 1 ORDER BY 1",
            node = sql_text(node),
            sensor = sql_text(sensor),
            from_date = sql_text(&super::utc_date(from)),
            to_date = sql_text(&super::utc_date(to)),
        );
        let answer = api.answer(api.history.plan(&sql)).await?;
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        let points: Vec<Value> = rows
            .iter()
            .map(|r| json!([r["t"], r["lo"], r["hi"], r["mean"], r["n"]]))
            .collect();
        Ok(json!({
            "node": node, "sensor": sensor, "from_ms": from, "to_ms": to,
            "bucket_ms": bucket, "columns": ["time_ms", "min", "max", "mean", "count"],
            "points": points,
        }))
    }
    .await;
    respond(&api, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_of_a_log_is_read_newest_first_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("{{\"i\":{i},\"node_id\":\"N{}\"}}\n", i % 2));
        }
        text.push_str("not json\n");
        std::fs::write(&path, text).unwrap();
        let p: HashMap<String, String> = [("node".to_string(), "N1".to_string())].into();
        let got = tail_lines(&path, |v| for_node(&p, v), 3);
        let order: Vec<i64> = got.iter().map(|v| v["i"].as_i64().unwrap()).collect();
        assert_eq!(order, vec![9, 7, 5]);
        assert!(tail_lines(&dir.path().join("absent"), |_| true, 5).is_empty());
        // A window that starts inside a multi-byte character still reads the lines after it.
        let long = dir.path().join("long.jsonl");
        let filler = format!("{{\"p\":\"{}\"}}\n", "é".repeat(700));
        let mut text = filler.repeat((TAIL_BYTES as usize / filler.len()) + 2);
        text.push_str("{\"last\":true}\n");
        std::fs::write(&long, text).unwrap();
        let got = tail_lines(&long, |_| true, 1);
        assert_eq!(got[0]["last"], true);
    }
}
