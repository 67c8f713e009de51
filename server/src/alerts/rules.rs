//! Alert rules as SQL conditions over `live`: one row per sensor of every known node, rebuilt
//! at each evaluation from what the protocol keeps in memory (never a scan of the history).
//!
//! `live`'s columns: `network`, `node_id`, `sensor`, `units`, `value` (the latest reading),
//! `previous_value`, `rate_per_min` (their difference per minute), `time` (of the latest
//! reading), `silent_secs` (seconds since it, or since the node joined when it never sent
//! one), `mode` (the node's declared severity), `assessed` (the server's), `severity_exceeded`
//! (`assessed` above `mode`: the paper's cross-check), `blocked`, `connected`, `discord` (a
//! streamed sensor — `[[stream_profile]]` — is in a discord episode, or one opened since the
//! previous evaluation, so an episode shorter than the interval is still seen once),
//! `discord_score` (its latest window's distance per √window to the nearest earlier one). A
//! rule's `when`
//! is a boolean SQL expression over them, e.g. `sensor LIKE '%Temperature%' AND value > 45`,
//! `abs(rate_per_min) > 2`, `silent_secs > 600` (the most common real failure: a silent node).
//!
//! Every rule is planned once at start against an empty `live`, so a typo is a configuration
//! error naming the rule, not a silent rule.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use samos_analytics::datafusion::datasource::MemTable;
use samos_analytics::datafusion::prelude::SessionContext;

use super::state::Series;

/// One row of `live`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesRow {
    pub network: String,
    pub node_id: String,
    pub sensor: String,
    pub units: String,
    pub value: Option<f64>,
    pub previous_value: Option<f64>,
    pub rate_per_min: Option<f64>,
    pub time_ms: Option<i64>,
    pub silent_secs: f64,
    pub mode: String,
    pub assessed: String,
    pub severity_exceeded: bool,
    pub blocked: bool,
    pub connected: bool,
    pub discord: bool,
    pub discord_score: Option<f64>,
}

/// `live`'s schema.
pub fn live_schema() -> SchemaRef {
    let text = |n: &str| Field::new(n, DataType::Utf8, false);
    let number = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        text("network"),
        text("node_id"),
        text("sensor"),
        text("units"),
        number("value"),
        number("previous_value"),
        number("rate_per_min"),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("silent_secs", DataType::Float64, false),
        text("mode"),
        text("assessed"),
        Field::new("severity_exceeded", DataType::Boolean, false),
        Field::new("blocked", DataType::Boolean, false),
        Field::new("connected", DataType::Boolean, false),
        Field::new("discord", DataType::Boolean, false),
        number("discord_score"),
    ]))
}

/// `rows` as one batch of `live`.
pub fn live_batch(rows: &[SeriesRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: fn(&SeriesRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let number = |f: fn(&SeriesRow) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Float64Array>())
    };
    let flag = |f: fn(&SeriesRow) -> bool| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<BooleanArray>())
    };
    RecordBatch::try_new(
        live_schema(),
        vec![
            text(|r| &r.network),
            text(|r| &r.node_id),
            text(|r| &r.sensor),
            text(|r| &r.units),
            number(|r| r.value),
            number(|r| r.previous_value),
            number(|r| r.rate_per_min),
            Arc::new(
                rows.iter()
                    .map(|r| r.time_ms)
                    .collect::<TimestampMillisecondArray>()
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.silent_secs),
            )),
            text(|r| &r.mode),
            text(|r| &r.assessed),
            flag(|r| r.severity_exceeded),
            flag(|r| r.blocked),
            flag(|r| r.connected),
            flag(|r| r.discord),
            number(|r| r.discord_score),
        ],
    )
}

/// Why a rule cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("alert rule {rule:?}: {message}")]
pub struct RuleError {
    pub rule: String,
    pub message: String,
}

/// The rules' conditions, checked, ready to run over a `live` batch.
pub struct Conditions {
    ctx: SessionContext,
    queries: Vec<(String, String)>,
}

impl Conditions {
    /// Plans each `(name, when)` over an empty `live`.
    pub async fn compile(rules: &[(String, String)]) -> Result<Conditions, RuleError> {
        let ctx = SessionContext::new();
        let mut queries = Vec::new();
        let empty = live_batch(&[]).map_err(|e| RuleError {
            rule: String::new(),
            message: e.to_string(),
        })?;
        let conditions = Conditions {
            ctx,
            queries: Vec::new(),
        };
        conditions.load(empty).map_err(|message| RuleError {
            rule: String::new(),
            message,
        })?;
        for (name, when) in rules {
            if when.contains(';') {
                return Err(RuleError {
                    rule: name.clone(),
                    message: "a condition is one expression, without ';'".into(),
                });
            }
            let sql = format!(
                "SELECT network, node_id, sensor, value FROM live WHERE ({when}) ORDER BY network, node_id, sensor"
            );
            let frame = conditions.ctx.sql(&sql).await.map_err(|e| RuleError {
                rule: name.clone(),
                message: e.to_string(),
            })?;
            frame.collect().await.map_err(|e| RuleError {
                rule: name.clone(),
                message: e.to_string(),
            })?;
            queries.push((name.clone(), sql));
        }
        Ok(Conditions {
            queries,
            ..conditions
        })
    }

    fn load(&self, batch: RecordBatch) -> Result<(), String> {
        let table =
            MemTable::try_new(live_schema(), vec![vec![batch]]).map_err(|e| e.to_string())?;
        let _ = self.ctx.deregister_table("live");
        self.ctx
            .register_table("live", Arc::new(table))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Every rule's matching series (with their values) over `rows`, in rule order.
    pub async fn evaluate(
        &self,
        rows: &[SeriesRow],
    ) -> Result<Vec<(String, Vec<(Series, Option<f64>)>)>, String> {
        self.load(live_batch(rows).map_err(|e| e.to_string())?)?;
        let mut out = Vec::with_capacity(self.queries.len());
        for (name, sql) in &self.queries {
            let batches = self
                .ctx
                .sql(sql)
                .await
                .map_err(|e| e.to_string())?
                .collect()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let mut matching = Vec::new();
            for b in &batches {
                let column = |i: usize| {
                    b.column(i)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .cloned()
                        .ok_or_else(|| "unexpected column type".to_string())
                };
                let (network, node, sensor) = (column(0)?, column(1)?, column(2)?);
                let values = b
                    .column(3)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or_else(|| "unexpected column type".to_string())?;
                for i in 0..b.num_rows() {
                    matching.push((
                        Series {
                            network: network.value(i).to_owned(),
                            node_id: node.value(i).to_owned(),
                            sensor: sensor.value(i).to_owned(),
                        },
                        (!values.is_null(i)).then(|| values.value(i)),
                    ));
                }
            }
            out.push((name.clone(), matching));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, sensor: &str, value: Option<f64>, silent: f64) -> SeriesRow {
        SeriesRow {
            network: "net".into(),
            node_id: node.into(),
            sensor: sensor.into(),
            units: "C".into(),
            value,
            silent_secs: silent,
            mode: "normalMode".into(),
            assessed: "normalMode".into(),
            ..SeriesRow::default()
        }
    }

    #[tokio::test]
    async fn conditions_select_the_series_they_describe() {
        let c = Conditions::compile(&[
            ("hot".into(), "sensor LIKE '%Temp%' AND value > 45".into()),
            ("silent".into(), "silent_secs > 600".into()),
        ])
        .await
        .unwrap_or_else(|e| unreachable!("{e}"));
        let rows = [
            row("a", "indoorTemperature", Some(50.0), 1.0),
            row("b", "indoorTemperature", Some(20.0), 700.0),
            row("c", "humidity", Some(90.0), 2.0),
            row("d", "indoorTemperature", None, 900.0),
        ];
        let out = c
            .evaluate(&rows)
            .await
            .unwrap_or_else(|e| unreachable!("{e}"));
        let nodes =
            |i: usize| -> Vec<&str> { out[i].1.iter().map(|(s, _)| s.node_id.as_str()).collect() };
        assert_eq!(out[0].0, "hot");
        assert_eq!(nodes(0), ["a"]);
        assert_eq!(out[0].1[0].1, Some(50.0));
        assert_eq!(nodes(1), ["b", "d"]);
        assert!(c.evaluate(&[]).await.unwrap_or_default()[0].1.is_empty());
    }

    #[tokio::test]
    async fn a_bad_condition_is_an_error_naming_its_rule() {
        for bad in ["valu > 3", "value >", "1; DROP TABLE live"] {
            let err = Conditions::compile(&[("typo".into(), bad.into())])
                .await
                .err()
                .unwrap_or_else(|| unreachable!("{bad} compiled"));
            assert_eq!(err.rule, "typo", "{bad}");
        }
    }
}
