use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;

use super::*;

type Row = (i64, Option<f64>, Option<i64>);

/// A session over `t(g, v, at)`, with this module's `last_value` or DataFusion's.
fn session(rows: &[Row], ours: bool, partitions: usize) -> SessionContext {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("v", DataType::Float64, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.1).collect::<Float64Array>()),
            Arc::new(
                rows.iter()
                    .map(|r| r.2)
                    .collect::<TimestampMillisecondArray>()
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let per = batch.num_rows().div_ceil(partitions).max(1);
    let parts: Vec<Vec<RecordBatch>> = (0..partitions)
        .map(|i| {
            // Several batches a partition, so a group meets rows with and without nulls in
            // separate updates.
            let from = (i * per).min(batch.num_rows());
            let to = (from + per).min(batch.num_rows());
            (from..to)
                .step_by(7)
                .map(|at| batch.slice(at, 7.min(to - at)))
                .collect()
        })
        .collect();
    let ctx = SessionContext::new();
    if ours {
        ctx.register_udaf(AggregateUDF::new_from_impl(FastLastValue::new()));
    }
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    ctx
}

fn answer(ctx: &SessionContext, sql: &str) -> String {
    let batches = crate::functions::collect(ctx, sql);
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

const QUERIES: [&str; 6] = [
    "SELECT g, last_value(v ORDER BY at) AS x FROM t GROUP BY g ORDER BY g",
    "SELECT g, last_value(v ORDER BY at DESC) AS x FROM t GROUP BY g ORDER BY g",
    "SELECT g, last_value(v ORDER BY at NULLS FIRST) AS x FROM t GROUP BY g ORDER BY g",
    "SELECT g, last_value(v ORDER BY at DESC NULLS LAST) AS x FROM t GROUP BY g ORDER BY g",
    "SELECT g, last_value(v ORDER BY at) FILTER (WHERE v > 0) AS x FROM t GROUP BY g ORDER BY g",
    "SELECT g, max(at) AS m, last_value(v ORDER BY at) AS x, last_value(v ORDER BY g, at) AS y \
     FROM t GROUP BY g ORDER BY g",
];

fn same_as_datafusion(rows: &[Row], partitions: usize) {
    let ours = session(rows, true, partitions);
    let theirs = session(rows, false, partitions);
    for q in QUERIES {
        assert_eq!(answer(&ours, q), answer(&theirs, q), "{q}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn answers_are_datafusions(
        rows in prop::collection::vec(
            (
                0i64..5,
                prop::option::weighted(0.9, -50i32..50).prop_map(|v| v.map(f64::from)),
                // Few distinct times, so ties happen; a null now and then.
                prop::option::weighted(0.9, 0i64..40),
            ),
            0..200,
        ),
        partitions in 1usize..4,
    ) {
        same_as_datafusion(&rows, partitions);
    }
}
