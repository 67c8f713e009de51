//! `percentile_cont` over `DOUBLE` that counts repeated values instead of keeping every one.
//!
//! DataFusion's exact `percentile_cont` keeps each group's values in a growing `Vec`, copies
//! them into a list for the final phase, and selects the percentile by partitioning: memory
//! traffic and page faults in proportion to the rows, for each percentile asked. Sensor
//! readings repeat: a sensor reports at its resolution (0.1 °C, 1 ppm), so ten million readings
//! hold thousands of distinct values, not millions. Each group here starts as a map from value
//! to count (the state sent between phases is the distinct values and their counts); a group
//! whose values turn out not to repeat (more than [`DISTINCT_LIMIT`] distinct, and more than one
//! in [`DISTINCT_SHARE`] of its rows) switches to keeping them as DataFusion does.
//!
//! Invariants: the answer is DataFusion's to the bit — the same ranks `p·(n − 1)`, the same
//! total order of floats (−0 before +0, NaN last), the same interpolation with its weight
//! quantized to 10⁻⁶ (property test against DataFusion's own function). Anything this does not
//! handle — `DISTINCT`, another input type, a percentile that is not a literal — is DataFusion's
//! accumulator, unchanged.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray, UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Schema, UInt64Type};
use datafusion::common::{HashMap, ScalarValue};
use datafusion::error::Result;
use datafusion::functions_aggregate::percentile_cont::PercentileCont;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, Documentation, EmitTo, GroupsAccumulator,
    Signature,
};

/// Distinct values a group may hold before it is checked for not repeating.
pub const DISTINCT_LIMIT: usize = 1 << 16;
/// Past [`DISTINCT_LIMIT`], a group with more than one distinct value in this many rows keeps
/// its values as they are.
pub const DISTINCT_SHARE: usize = 8;
/// DataFusion's quantization of the interpolation weight.
const INTERPOLATION_PRECISION: f64 = 1_000_000.0;

/// `percentile_cont`, registered in place of DataFusion's.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct CountingPercentileCont {
    inner: PercentileCont,
}

impl CountingPercentileCont {
    pub fn new() -> CountingPercentileCont {
        CountingPercentileCont::default()
    }
}

/// The percentile this call asks for, where this module handles it: a `DOUBLE` input, not
/// `DISTINCT`, a literal percentile in [0, 1] (descending order: 1 − p).
fn handled(args: &AccumulatorArgs) -> Option<f64> {
    if args.is_distinct || args.expr_fields[0].data_type() != &DataType::Float64 {
        return None;
    }
    // DataFusion's own test of a literal: it evaluates to a scalar over no rows.
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let p = match args.exprs.get(1)?.evaluate(&empty).ok()? {
        ColumnarValue::Scalar(ScalarValue::Float64(Some(p))) => p,
        ColumnarValue::Scalar(ScalarValue::Float32(Some(p))) => f64::from(p),
        _ => return None,
    };
    if !(0.0..=1.0).contains(&p) {
        return None;
    }
    let descending = args.order_bys.first().is_some_and(|s| s.options.descending);
    Some(if descending { 1.0 - p } else { p })
}

impl AggregateUDFImpl for CountingPercentileCont {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if args.is_distinct || args.input_fields[0].data_type() != &DataType::Float64 {
            return self.inner.state_fields(args);
        }
        let list = |name: &str, item: DataType| -> FieldRef {
            Arc::new(Field::new(
                format_state_name(args.name, name),
                DataType::List(Arc::new(Field::new_list_field(item, true))),
                true,
            ))
        };
        Ok(vec![
            list("percentile_values", DataType::Float64),
            list("percentile_counts", DataType::UInt64),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match handled(&args) {
            Some(percentile) => Ok(Box::new(OneGroup {
                store: Store::default(),
                percentile,
            })),
            None => self.inner.accumulator(args),
        }
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match handled(&args) {
            Some(percentile) => Ok(Box::new(Groups {
                stores: Vec::new(),
                percentile,
            })),
            None => self.inner.create_groups_accumulator(args),
        }
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.inner.simplify()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// One group's values: counted while they repeat, else kept.
#[derive(Debug)]
enum Store {
    Counts(Counts),
    Values(Vec<f64>),
}

/// Value (its bits) → how many times it was seen. A sensor's readings often repeat one after
/// another (the same temperature for minutes), so the latest value's run is counted apart and
/// enters the map only when another value comes: one compare instead of a hash lookup.
#[derive(Debug, Default)]
struct Counts {
    map: HashMap<u64, u64>,
    /// Rows seen, the run included.
    rows: u64,
    /// The current run: a value's bits and how many times it came in a row (0: none).
    run: (u64, u64),
}

impl Counts {
    /// Moves the current run into the map; whether that added a distinct value.
    fn settle(&mut self) -> bool {
        let (bits, n) = std::mem::take(&mut self.run);
        if n == 0 {
            return false;
        }
        let before = self.map.len();
        *self.map.entry(bits).or_insert(0) += n;
        self.map.len() > before
    }
}

impl Default for Store {
    fn default() -> Store {
        Store::Counts(Counts::default())
    }
}

impl Store {
    fn add(&mut self, v: f64, times: u64) {
        match self {
            Store::Counts(c) => {
                c.rows += times;
                let bits = v.to_bits();
                if c.run.1 > 0 && c.run.0 == bits {
                    c.run.1 += times;
                    return;
                }
                let grew = c.settle();
                c.run = (bits, times);
                if grew
                    && c.map.len() > DISTINCT_LIMIT
                    && c.map.len() as u64 * DISTINCT_SHARE as u64 > c.rows
                {
                    self.keep_values();
                }
            }
            Store::Values(values) => {
                values.extend(std::iter::repeat_n(v, times as usize));
            }
        }
    }

    /// Switches to keeping every value.
    fn keep_values(&mut self) {
        if let Store::Counts(c) = self {
            c.settle();
            let mut values = Vec::with_capacity(c.rows as usize);
            for (bits, n) in c.map.drain() {
                values.extend(std::iter::repeat_n(f64::from_bits(bits), n as usize));
            }
            *self = Store::Values(values);
        }
    }

    fn size(&self) -> usize {
        match self {
            Store::Counts(c) => c.map.capacity() * 24,
            Store::Values(values) => values.capacity() * 8,
        }
    }

    /// The distinct values and their counts (counts 1 while values are kept).
    fn entries(&mut self) -> Vec<(f64, u64)> {
        match self {
            Store::Counts(c) => {
                c.settle();
                c.map
                    .iter()
                    .map(|(bits, n)| (f64::from_bits(*bits), *n))
                    .collect()
            }
            Store::Values(values) => values.iter().map(|v| (*v, 1)).collect(),
        }
    }

    /// The percentile, as DataFusion's `percentile_cont` computes it; `None` for no rows.
    fn percentile(&mut self, p: f64) -> Option<f64> {
        match self {
            Store::Values(values) => percentile_of_values(values, p),
            Store::Counts(c) => {
                c.settle();
                let n = c.rows;
                if n == 0 {
                    return None;
                }
                let mut sorted: Vec<(f64, u64)> = c
                    .map
                    .iter()
                    .map(|(bits, c)| (f64::from_bits(*bits), *c))
                    .collect();
                sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                let at = |rank: u64| -> f64 {
                    let mut seen = 0;
                    for (v, c) in &sorted {
                        seen += c;
                        if rank < seen {
                            return *v;
                        }
                    }
                    sorted[sorted.len() - 1].0
                };
                Some(interpolate(n as usize, p, |r| at(r as u64)))
            }
        }
    }
}

/// DataFusion's rule: rank `p·(n − 1)`; between two ranks, the weight quantized to 10⁻⁶.
fn interpolate(n: usize, p: f64, mut value_at: impl FnMut(usize) -> f64) -> f64 {
    if n == 1 {
        return value_at(0);
    }
    let index = p * (n - 1) as f64;
    let (lower, upper) = (index.floor() as usize, index.ceil() as usize);
    let low = value_at(lower);
    if lower == upper {
        return low;
    }
    let high = value_at(upper);
    let weight = ((index - lower as f64) * INTERPOLATION_PRECISION) as usize as f64
        / INTERPOLATION_PRECISION;
    low + (high - low) * weight
}

fn percentile_of_values(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    if p == 0.0 {
        return values.iter().copied().min_by(f64::total_cmp);
    }
    if p == 1.0 {
        return values.iter().copied().max_by(f64::total_cmp);
    }
    Some(interpolate(n, p, |rank| {
        *values.select_nth_unstable_by(rank, f64::total_cmp).1
    }))
}

/// Rows `0..len` of `values` that count: not null, not filtered out.
fn each_row(values: &Float64Array, filter: Option<&BooleanArray>, mut f: impl FnMut(usize, f64)) {
    let data = values.values();
    match (values.null_count(), filter) {
        (0, None) => data.iter().enumerate().for_each(|(i, v)| f(i, *v)),
        _ => {
            for (i, v) in data.iter().enumerate() {
                let kept = values.is_valid(i) && filter.is_none_or(|m| m.value(i) && m.is_valid(i));
                if kept {
                    f(i, *v);
                }
            }
        }
    }
}

/// Merges rows of a state (`percentile_values`, `percentile_counts` lists) into `add`.
fn each_state_row(states: &[ArrayRef], mut add: impl FnMut(usize, f64, u64)) {
    let values = states[0].as_list::<i32>();
    let counts = states[1].as_list::<i32>();
    for row in 0..values.len() {
        if values.is_null(row) {
            continue;
        }
        let v = values.value(row);
        let c = counts.value(row);
        let (v, c) = (
            v.as_primitive::<Float64Type>(),
            c.as_primitive::<UInt64Type>(),
        );
        for (x, n) in v.values().iter().zip(c.values().iter()) {
            add(row, *x, *n);
        }
    }
}

/// Stores as the two state lists.
fn state_of(stores: &mut [Store]) -> Vec<ArrayRef> {
    let mut offsets = vec![0i32];
    let (mut values, mut counts) = (Vec::new(), Vec::new());
    for s in stores.iter_mut() {
        for (v, c) in s.entries() {
            values.push(v);
            counts.push(c);
        }
        offsets.push(values.len() as i32);
    }
    let offsets = OffsetBuffer::new(offsets.into());
    let item = |t: DataType| Arc::new(Field::new_list_field(t, true));
    vec![
        Arc::new(ListArray::new(
            item(DataType::Float64),
            offsets.clone(),
            Arc::new(Float64Array::from(values)),
            None,
        )),
        Arc::new(ListArray::new(
            item(DataType::UInt64),
            offsets,
            Arc::new(UInt64Array::from(counts)),
            None,
        )),
    ]
}

/// The accumulator of one group (a query without GROUP BY).
#[derive(Debug)]
struct OneGroup {
    store: Store,
    percentile: f64,
}

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Float64Type>();
        each_row(values, None, |_, v| self.store.add(v, 1));
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        each_state_row(states, |_, v, n| self.store.add(v, n));
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        state_of(std::slice::from_mut(&mut self.store))
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.store.percentile(self.percentile)))
    }

    fn size(&self) -> usize {
        size_of::<OneGroup>() + self.store.size()
    }
}

/// The accumulator of every group of a GROUP BY.
#[derive(Debug)]
struct Groups {
    stores: Vec<Store>,
    percentile: f64,
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.stores.resize_with(total_num_groups, Store::default);
        let values = values[0].as_primitive::<Float64Type>();
        each_row(values, opt_filter, |i, v| {
            self.stores[group_indices[i]].add(v, 1);
        });
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.stores.resize_with(total_num_groups, Store::default);
        each_state_row(values, |row, v, n| {
            self.stores[group_indices[row]].add(v, n);
        });
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut stores = emit_to.take_needed(&mut self.stores);
        let p = self.percentile;
        Ok(Arc::new(
            stores
                .iter_mut()
                .map(|s| s.percentile(p))
                .collect::<Float64Array>(),
        ))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(state_of(&mut emit_to.take_needed(&mut self.stores)))
    }

    /// Each row as a group of its own: one value counted once, or none (null, filtered out).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let values = values[0].as_primitive::<Float64Type>();
        let stores: Vec<Store> = (0..values.len()).map(|_| Store::default()).collect();
        let mut stores = stores;
        each_row(values, opt_filter, |i, v| stores[i].add(v, 1));
        Ok(state_of(&mut stores))
    }

    fn size(&self) -> usize {
        self.stores.iter().map(Store::size).sum::<usize>() + self.stores.capacity() * 40
    }
}

#[cfg(test)]
mod tests;
