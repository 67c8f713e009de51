use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::error::Result;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;

use super::*;

/// A context with one table `t(ts)` of the given UTC millisecond timestamps (nulls kept), and
/// DataFusion's `date_trunc` or ours.
fn context(values: &[Option<i64>], ours: bool) -> SessionContext {
    let ctx = SessionContext::new();
    if ours {
        ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc::new()));
    }
    let schema = Arc::new(Schema::new(vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        true,
    )]));
    let column = TimestampMillisecondArray::from(values.to_vec()).with_timezone("UTC");
    let batch = RecordBatch::try_new(schema, vec![Arc::new(column)]).unwrap();
    ctx.register_batch("t", batch).unwrap();
    ctx
}

fn answer(ctx: &SessionContext, sql: &str) -> (DataType, Vec<Option<i64>>) {
    let batches = block_on(ctx.sql(sql));
    let batches = block_on(batches.collect());
    let column = batches[0].column(0);
    let values = datafusion::arrow::compute::cast(column, &DataType::Int64).unwrap();
    let values = values.as_any().downcast_ref::<Int64Array>().unwrap();
    (
        column.data_type().clone(),
        (0..values.len())
            .map(|i| values.is_valid(i).then(|| values.value(i)))
            .collect(),
    )
}

fn block_on<T>(f: impl Future<Output = Result<T>>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
        .unwrap()
}

proptest! {
    /// Same values, same type, same nulls as DataFusion's own function, for the granularities
    /// with a fast path and those without, before and after 1970.
    #[test]
    fn agrees_with_datafusion(
        values in prop::collection::vec(prop::option::of(-4_000_000_000_000i64..4_000_000_000_000), 1..50),
        granularity in prop::sample::select(vec!["hour", "HOUR", "day", "minute", "second", "month", "year", "week"]),
    ) {
        let sql = format!("SELECT date_trunc('{granularity}', ts) FROM t");
        let ours = answer(&context(&values, true), &sql);
        let theirs = answer(&context(&values, false), &sql);
        prop_assert_eq!(ours, theirs);
    }
}

#[test]
fn other_zones_and_scalars_are_datafusions() {
    let ctx = context(&[Some(1_764_566_850_000)], true);
    // 2025-12-01T05:27:30Z is 11:12:30 in Kathmandu (UTC+05:45): the hour starts at 11:00
    // there, 05:15 UTC, not at 05:00 UTC.
    let (_, v) = answer(
        &ctx,
        "SELECT date_trunc('hour', arrow_cast(ts, 'Timestamp(Millisecond, Some(\"Asia/Kathmandu\"))')) FROM t",
    );
    assert_eq!(v, vec![Some(1_764_566_100_000)]);
    let (_, v) = answer(&ctx, "SELECT date_trunc('hour', ts) FROM t");
    assert_eq!(v, vec![Some(1_764_565_200_000)]);
    let (_, v) = answer(
        &ctx,
        "SELECT date_trunc('day', TIMESTAMP '2025-12-01T05:27:30Z')",
    );
    assert_eq!(v, vec![Some(1_764_547_200_000_000_000)]);
}

/// Every session `History` opens (the one of `samos sql`, the HTTP API, psql and Flight SQL)
/// resolves these names to Samos's functions, not DataFusion's.
#[test]
fn history_sessions_use_samos_functions() {
    use datafusion::execution::FunctionRegistry;
    use datafusion::logical_expr::AggregateUDF;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let history = rt
        .block_on(crate::History::open(dir.path(), crate::Access::Query))
        .unwrap();
    let ctx = history.context();
    assert!(*ctx.udf("date_trunc").unwrap() == ScalarUDF::new_from_impl(UtcDateTrunc::new()));
    let aggregates = [
        (
            "percentile_cont",
            AggregateUDF::new_from_impl(percentile::CountingPercentileCont::new()),
        ),
        (
            "last_value",
            AggregateUDF::new_from_impl(last_value::FastLastValue::new()),
        ),
        (
            "min",
            AggregateUDF::new_from_impl(min_max::FastExtreme::min()),
        ),
        (
            "max",
            AggregateUDF::new_from_impl(min_max::FastExtreme::max()),
        ),
    ];
    let plain = SessionContext::new();
    for (name, ours) in aggregates {
        assert!(*ctx.udaf(name).unwrap() == ours, "{name}");
        assert!(*plain.udaf(name).unwrap() != ours, "{name}");
    }
}
