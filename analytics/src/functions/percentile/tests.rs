use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;

use super::*;

/// A session over `t(g, v)`, with this module's `percentile_cont` or DataFusion's.
fn session(
    groups: &[i64],
    values: &[Option<f64>],
    counting: bool,
    partitions: usize,
) -> SessionContext {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("v", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(groups.to_vec())),
            Arc::new(Float64Array::from(values.to_vec())),
        ],
    )
    .unwrap();
    // Split into partitions, so partial and final phases both run.
    let per = batch.num_rows().div_ceil(partitions).max(1);
    let parts: Vec<Vec<RecordBatch>> = (0..partitions)
        .map(|i| {
            let from = (i * per).min(batch.num_rows());
            let len = per.min(batch.num_rows() - from);
            vec![batch.slice(from, len)]
        })
        .collect();
    let ctx = SessionContext::new();
    if counting {
        ctx.register_udaf(AggregateUDF::new_from_impl(CountingPercentileCont::new()));
    }
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    ctx
}

fn answer(ctx: &SessionContext, sql: &str) -> Vec<Option<u64>> {
    let batches = crate::functions::collect(ctx, sql);
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column(b.num_columns() - 1)
                .as_primitive::<Float64Type>()
                .clone();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i).to_bits()))
                .collect::<Vec<_>>()
        })
        .collect()
}

const QUERIES: [&str; 5] = [
    "SELECT g, percentile_cont({p}) WITHIN GROUP (ORDER BY v) FROM t GROUP BY g ORDER BY g",
    "SELECT g, percentile_cont({p}) WITHIN GROUP (ORDER BY v DESC) FROM t GROUP BY g ORDER BY g",
    "SELECT percentile_cont(v, {p}) FROM t",
    "SELECT g, percentile_cont(v, {p}) FILTER (WHERE v > 0) FROM t GROUP BY g ORDER BY g",
    "SELECT g, percentile_cont(DISTINCT v, {p}) FROM t GROUP BY g ORDER BY g",
];

fn same_as_datafusion(groups: &[i64], values: &[Option<f64>], p: f64, partitions: usize) {
    let ours = session(groups, values, true, partitions);
    let theirs = session(groups, values, false, partitions);
    for q in QUERIES {
        let sql = q.replace("{p}", &format!("{p:?}"));
        assert_eq!(answer(&ours, &sql), answer(&theirs, &sql), "{sql}");
    }
}

/// Values at a sensor's resolution (repeats), with nulls, negative zero and NaN now and then.
fn readings() -> impl Strategy<Value = Vec<(i64, Option<f64>)>> {
    prop::collection::vec(
        (
            0i64..4,
            prop_oneof![
                8 => (-200i32..200).prop_map(|v| Some(f64::from(v) / 10.0)),
                1 => Just(None),
                1 => prop_oneof![Just(Some(-0.0)), Just(Some(0.0)), Just(Some(f64::NAN)), any::<f64>().prop_map(Some)],
            ],
        ),
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn answers_are_datafusions_to_the_bit(
        rows in readings(),
        p in prop_oneof![Just(0.0), Just(1.0), Just(0.5), Just(0.99), 0.0f64..=1.0],
        partitions in 1usize..4,
    ) {
        let (g, v): (Vec<i64>, Vec<Option<f64>>) = rows.into_iter().unzip();
        same_as_datafusion(&g, &v, p, partitions);
    }
}

#[test]
fn values_that_do_not_repeat_are_kept_and_answer_the_same() {
    // 200,000 distinct values in one group: past the limit, the group keeps its values.
    let n = 200_000;
    let v: Vec<Option<f64>> = (0..n)
        .map(|i| Some(((i * 7_919) % n) as f64 * 0.001 - 3.0))
        .collect();
    let g = vec![1i64; n];
    let mut store = Store::default();
    for x in v.iter().flatten() {
        store.add(*x, 1);
    }
    assert!(matches!(store, Store::Values(_)), "switched to values");
    same_as_datafusion(&g, &v, 0.37, 2);
}

#[test]
fn a_group_of_one_value_and_an_empty_one() {
    same_as_datafusion(&[1, 2, 2], &[Some(4.5), None, None], 0.5, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Readings as sensors send them: a value repeated for a while, groups interleaved.
    #[test]
    fn runs_of_equal_values_answer_the_same(
        runs in prop::collection::vec((0i64..3, -30i32..30, 1usize..9), 1..80),
        p in 0.0f64..=1.0,
        partitions in 1usize..3,
    ) {
        let (mut g, mut v) = (Vec::new(), Vec::new());
        for (group, value, n) in runs {
            g.extend(std::iter::repeat_n(group, n));
            v.extend(std::iter::repeat_n(Some(f64::from(value) / 4.0), n));
        }
        same_as_datafusion(&g, &v, p, partitions);
    }
}
