use datafusion::arrow::array::{
    DictionaryArray, Float64Array, Int64Array, StringArray, UInt8Array,
};
use datafusion::arrow::datatypes::{Field, Int32Type, Schema, UInt8Type};
use datafusion::datasource::MemTable;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use datafusion::common::resources_err;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{MemoryPool, UnboundedMemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{SessionConfig, SessionContext};
use proptest::prelude::*;

use std::collections::HashMap;

use datafusion::arrow::compute::cast;

use super::*;

/// One row of `t(node, sensor, v, at)`: `node` and `sensor` index `NAMES` (`None`: null).
type Row = (Option<usize>, Option<usize>, Option<i64>, i64);

const NAMES: [&str; 6] = ["a", "b", "node-17", "temperature", "", "ü"];

/// `rows` as `t`, cut into batches of `batch` rows spread over `partitions` partitions. Each
/// batch gets its own dictionaries (their values in another order, some unused, a null value
/// now and then) unless `shared`, where consecutive batches carry the same dictionary arrays
/// as a Parquet column chunk's do.
fn table(rows: &[Row], partitions: usize, batch: usize, shared: bool) -> MemTable {
    let node_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let sensor_type = DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8));
    let schema = Arc::new(Schema::new(vec![
        Field::new("node", node_type, true),
        Field::new("sensor", sensor_type, true),
        Field::new("v", DataType::Float64, true),
        Field::new("at", DataType::Int64, false),
    ]));
    let shared_values: ArrayRef = Arc::new(StringArray::from_iter_values(NAMES));
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for (b, chunk) in rows.chunks(batch.max(1)).enumerate() {
        // A dictionary of this batch: NAMES rotated by `b`, with a null value first when `b`
        // is odd (keys never point at it; nulls are null keys).
        let (values, position): (ArrayRef, Box<dyn Fn(usize) -> usize>) = if shared {
            (Arc::clone(&shared_values), Box::new(|n| n))
        } else {
            let offset = usize::from(b % 2 == 1);
            let mut names: Vec<Option<&str>> = vec![None; offset];
            names.extend((0..NAMES.len()).map(|i| Some(NAMES[(i + b) % NAMES.len()])));
            let len = NAMES.len();
            (
                Arc::new(names.into_iter().collect::<StringArray>()),
                Box::new(move |n| offset + (n + len - b % len) % len),
            )
        };
        let node_keys: Vec<Option<i32>> = chunk
            .iter()
            .map(|r| r.0.map(|n| position(n) as i32))
            .collect();
        let sensor_keys: UInt8Array = chunk
            .iter()
            .map(|r| r.1.map(|n| position(n) as u8))
            .collect();
        let node =
            DictionaryArray::<Int32Type>::try_new(node_keys.into(), Arc::clone(&values)).unwrap();
        let sensor = DictionaryArray::<UInt8Type>::try_new(sensor_keys, values).unwrap();
        parts[b % partitions].push(
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(node),
                    Arc::new(sensor),
                    Arc::new(
                        chunk
                            .iter()
                            .map(|r| r.2.map(|v| v as f64))
                            .collect::<Float64Array>(),
                    ),
                    Arc::new(chunk.iter().map(|r| r.3).collect::<Int64Array>()),
                ],
            )
            .unwrap(),
        );
    }
    MemTable::try_new(schema, parts).unwrap()
}

/// A memory pool without a limit, except that it refuses a [`DictionaryGroupsExec`] more
/// than `limit` bytes (the final phase above it can still run).
#[derive(Debug)]
struct TightForGroups {
    limit: usize,
    inner: UnboundedMemoryPool,
    refused: AtomicUsize,
}

impl fmt::Display for TightForGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl MemoryPool for TightForGroups {
    fn name(&self) -> &str {
        "tight for DictionaryGroupsExec"
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if reservation
            .consumer()
            .name()
            .starts_with("DictionaryGroupsExec")
            && reservation.size() + additional > self.limit
        {
            self.refused.fetch_add(1, AtomicOrdering::Relaxed);
            return resources_err!("over {} bytes", self.limit);
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
}

/// A session over `table`, with the rule or without it; `memory`: the pool.
fn session(table: MemTable, ours: bool, memory: Option<Arc<dyn MemoryPool>>) -> SessionContext {
    let mut builder = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(2))
        .with_default_features();
    if let Some(pool) = memory {
        builder = builder.with_runtime_env(
            RuntimeEnvBuilder::new()
                .with_memory_pool(pool)
                .build_arc()
                .unwrap(),
        );
    }
    if ours {
        builder = builder.with_physical_optimizer_rule(Arc::new(DictionaryGroupsRule));
    }
    let ctx = SessionContext::new_with_state(builder.build());
    ctx.register_table("t", Arc::new(table)).unwrap();
    ctx
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The answer, and whether its plan ran a [`DictionaryGroupsExec`].
fn answer(ctx: &SessionContext, sql: &str) -> (String, bool) {
    runtime().block_on(async {
        let frame = ctx.sql(sql).await.unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(false).to_string();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (
            text,
            shown.contains("DictionaryGroupsExec: mode=Partial, gby=["),
        )
    })
}

/// Queries grouped by dictionaries only (the rule must apply), each ordered so answers compare.
const QUERIES: [&str; 6] = [
    "SELECT node, sensor, count(*) AS n, count(v) AS c, sum(v) AS s, avg(v) AS a, min(v) AS lo, \
     max(at) AS hi FROM t GROUP BY node, sensor ORDER BY node, sensor",
    "SELECT sensor, last_value(v ORDER BY at) AS x, first_value(v ORDER BY at DESC) AS y \
     FROM t GROUP BY sensor ORDER BY sensor",
    "SELECT node, count(DISTINCT v) AS d, sum(v) FILTER (WHERE at > 20) AS f \
     FROM t GROUP BY node ORDER BY node",
    "SELECT sensor, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) AS p, \
     array_agg(v ORDER BY at, v) AS all_v FROM t GROUP BY sensor ORDER BY sensor",
    "SELECT node, sensor, node AS again, count(*) AS n FROM t WHERE at % 3 <> 1 \
     GROUP BY node, sensor, node ORDER BY node, sensor",
    "SELECT sensor, n, count(*) AS k FROM (SELECT node, sensor, count(*) AS n FROM t \
     GROUP BY node, sensor) GROUP BY sensor, n ORDER BY sensor, n",
];

fn same_as_datafusion(rows: &[Row], partitions: usize, batch: usize, shared: bool) {
    for q in QUERIES {
        let (ours, used) = answer(
            &session(table(rows, partitions, batch, shared), true, None),
            q,
        );
        let (theirs, _) = answer(
            &session(table(rows, partitions, batch, shared), false, None),
            q,
        );
        assert_eq!(ours, theirs, "{q}");
        // One partition of input aggregates in one phase (`Single`): left to DataFusion.
        assert!(used || partitions == 1, "the rule did not apply to {q}");
    }
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(
        (
            prop::option::weighted(0.9, 0..NAMES.len()),
            prop::option::weighted(0.9, 0..NAMES.len()),
            prop::option::weighted(0.9, -20i64..20),
            0i64..40,
        ),
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn answers_are_datafusions(
        rows in rows(),
        partitions in 1usize..4,
        batch in 1usize..80,
        shared: bool,
    ) {
        same_as_datafusion(&rows, partitions, batch, shared);
    }
}

#[test]
fn grouping_a_non_dictionary_column_is_left_to_datafusion() {
    let rows: Vec<Row> = (0..100)
        .map(|i| (Some(i % 3), Some(i % 2), Some(1), i as i64))
        .collect();
    let ctx = session(table(&rows, 2, 10, false), true, None);
    let (_, used) = answer(&ctx, "SELECT node, at, count(*) FROM t GROUP BY node, at");
    assert!(!used);
    let (_, used) = answer(&ctx, "SELECT count(*) FROM t");
    assert!(!used);
}

/// Where the memory pool refuses more, the partial phase emits what it has and starts again;
/// the final phase merges the pieces into the same answer.
#[test]
fn a_full_memory_pool_emits_early_with_the_same_answer() {
    let rows: Vec<Row> = (0..20_000)
        .map(|i| {
            (
                Some(i % 6),
                Some((i / 6) % 6),
                Some((i % 37) as i64),
                i as i64,
            )
        })
        .collect();
    let q = QUERIES[0];
    let (theirs, _) = answer(&session(table(&rows, 2, 500, false), false, None), q);
    let pool = Arc::new(TightForGroups {
        limit: 4096,
        inner: UnboundedMemoryPool::default(),
        refused: AtomicUsize::new(0),
    });
    let memory: Arc<dyn MemoryPool> = pool.clone();
    let (ours, used) = answer(&session(table(&rows, 2, 500, false), true, Some(memory)), q);
    assert!(used);
    assert!(pool.refused.load(AtomicOrdering::Relaxed) > 10);
    assert_eq!(ours, theirs);
}

/// A dictionary array with no values at all (every key null) groups as null.
#[test]
fn an_empty_dictionary_is_all_nulls() {
    let mut table = GroupTable::new(&[DataType::Utf8]).unwrap();
    let empty: ArrayRef = Arc::new(StringArray::from(Vec::<&str>::new()));
    let keys = Int64Array::from(vec![None, None]);
    let column: ArrayRef = Arc::new(
        DictionaryArray::<datafusion::arrow::datatypes::Int64Type>::try_new(keys, empty).unwrap(),
    );
    let mut groups = Vec::new();
    table.intern(&[column], &mut groups).unwrap();
    assert_eq!(groups, vec![0, 0]);
    let field = Arc::new(Field::new("x", DataType::Utf8, true));
    let out = table.emit(&[field]).unwrap();
    assert_eq!(out[0].len(), 1);
    assert!(out[0].is_null(0));
    assert_eq!(table.len(), 0);
}

/// Group numbers by first appearance of each tuple of values, the naive way.
fn expected_groups(
    seen: &mut HashMap<Vec<Option<String>>, usize>,
    columns: &[ArrayRef],
) -> Vec<usize> {
    let strings: Vec<Vec<Option<String>>> = columns
        .iter()
        .map(|c| {
            let c = cast(c, &DataType::Utf8).unwrap();
            c.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect()
        })
        .collect();
    (0..columns[0].len())
        .map(|row| {
            let tuple: Vec<Option<String>> = strings.iter().map(|c| c[row].clone()).collect();
            let next = seen.len();
            *seen.entry(tuple).or_insert(next)
        })
        .collect()
}

/// A dictionary column of `rows` rows over `values` distinct names (`salt` varies the
/// dictionary's order), every 7th row null.
fn dictionary_column(values: usize, rows: usize, salt: usize) -> ArrayRef {
    let names: StringArray = (0..values)
        .map(|i| Some(format!("v{}", (i * 7 + salt) % values)))
        .collect();
    let keys: Int64Array = (0..rows)
        .map(|r| (r % 7 != 3).then_some(((r * 31 + salt * 5) % values) as i64))
        .collect();
    Arc::new(
        DictionaryArray::<datafusion::arrow::datatypes::Int64Type>::try_new(keys, Arc::new(names))
            .unwrap(),
    )
}

/// The dense table (small dictionaries), the hash map by slot number (product over 2^16) and
/// the value-id tuples (product over 2^64) number the same groups, across batches whose
/// dictionaries differ.
#[test]
fn every_lookup_numbers_groups_by_their_values() {
    for (width, values) in [(2, 20), (2, 400), (5, 10_000)] {
        let mut table = GroupTable::new(&vec![DataType::Utf8; width]).unwrap();
        let mut seen = HashMap::new();
        let mut groups = Vec::new();
        for batch in 0..3 {
            let columns: Vec<ArrayRef> = (0..width)
                .map(|c| dictionary_column(values, 2_000, batch * 3 + c))
                .collect();
            table.intern(&columns, &mut groups).unwrap();
            assert_eq!(
                groups,
                expected_groups(&mut seen, &columns),
                "{width} x {values}"
            );
        }
        let kind = table.lookup_kind();
        let expected = match values {
            20 => "dense",
            400 => "sparse",
            _ => "tuple",
        };
        assert_eq!(kind, expected);
    }
}
