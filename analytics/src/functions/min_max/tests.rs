use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::AggregateUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use proptest::prelude::*;

use super::*;

/// Values that test the total order: both zeros, both infinities, NaNs of both signs and two
/// payloads, the extremes of the finite range, and ordinary readings.
const SPECIAL: [f64; 10] = [
    0.0,
    -0.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    21.5,
    -3.25,
    1e-300,
];

fn nan(negative: bool, payload: u64) -> f64 {
    let bits = 0x7ff8_0000_0000_0000 | (payload & 0xffff);
    f64::from_bits(if negative { bits | (1 << 63) } else { bits })
}

/// A session over `t(g, v)` cut into batches of `batch` rows over `partitions` partitions,
/// with this module's `min`/`max` or DataFusion's.
fn session(
    rows: &[(i64, Option<f64>)],
    ours: bool,
    partitions: usize,
    batch: usize,
) -> SessionContext {
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("v", DataType::Float64, true),
    ]));
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (i, chunk) in rows.chunks(batch.max(1)).enumerate() {
        parts[i % partitions].push(
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(chunk.iter().map(|r| r.0).collect::<Int64Array>()),
                    Arc::new(chunk.iter().map(|r| r.1).collect::<Float64Array>()),
                ],
            )
            .unwrap(),
        );
    }
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    if ours {
        ctx.register_udaf(AggregateUDF::new_from_impl(FastExtreme::min()));
        ctx.register_udaf(AggregateUDF::new_from_impl(FastExtreme::max()));
    }
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap()))
        .unwrap();
    ctx
}

/// Every `DOUBLE` of the answer as its bits (NaN payloads and signed zeros compared too).
fn answer(ctx: &SessionContext, sql: &str) -> Vec<Vec<Option<u64>>> {
    let batches = crate::functions::collect(ctx, sql);
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                b.columns()
                    .iter()
                    .map(|c| match c.data_type() {
                        DataType::Float64 => {
                            let c = c.as_primitive::<Float64Type>();
                            c.is_valid(r).then(|| c.value(r).to_bits())
                        }
                        _ => Some(
                            c.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                                .value(r) as u64,
                        ),
                    })
                    .collect()
            })
        })
        .collect()
}

const QUERIES: [&str; 4] = [
    "SELECT min(v) AS lo, max(v) AS hi FROM t",
    "SELECT max(v) AS hi, min(v) FILTER (WHERE g > 1) AS lo FROM t",
    "SELECT g, min(v) AS lo, max(v) AS hi FROM t GROUP BY g ORDER BY g",
    "SELECT min(v) OVER (ORDER BY g ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS w FROM t \
     ORDER BY g, w",
];

fn value() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        4 => (-1000i32..1000).prop_map(|v| Some(f64::from(v) / 8.0)),
        2 => prop::sample::select(SPECIAL.to_vec()).prop_map(Some),
        1 => (any::<bool>(), 0u64..3).prop_map(|(n, p)| Some(nan(n, p))),
        1 => Just(None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn answers_are_datafusions(
        rows in prop::collection::vec((0i64..4, value()), 0..120),
        partitions in 1usize..4,
        batch in 1usize..50,
    ) {
        let ours = session(&rows, true, partitions, batch);
        let theirs = session(&rows, false, partitions, batch);
        for q in QUERIES {
            prop_assert_eq!(answer(&ours, q), answer(&theirs, q), "{}", q);
        }
    }
}

/// The kernel against a plain fold of `total_cmp`, at lengths around the lane count.
#[test]
fn kernel_is_total_cmp() {
    let mut values: Vec<f64> = SPECIAL.to_vec();
    values.extend([nan(false, 1), nan(true, 2), nan(false, 0), nan(true, 0)]);
    for len in 0..values.len() * 3 {
        // 5 is prime to the 14 values: every slice of 14 or more holds each of them.
        let slice: Vec<f64> = (0..len).map(|i| values[(i * 5) % values.len()]).collect();
        for largest in [false, true] {
            let expected = slice.iter().copied().reduce(|a, b| {
                let take_b = if largest {
                    b.total_cmp(&a).is_gt()
                } else {
                    b.total_cmp(&a).is_lt()
                };
                if take_b { b } else { a }
            });
            let got = extreme_key_dispatch(&slice, largest).map(|k| f64::from_bits(key(k) as u64));
            assert_eq!(
                got.map(f64::to_bits),
                expected.map(f64::to_bits),
                "{len} {largest}"
            );
            let baseline = extreme_key(&slice, largest).map(|k| f64::from_bits(key(k) as u64));
            assert_eq!(baseline.map(f64::to_bits), expected.map(f64::to_bits));
        }
    }
}
