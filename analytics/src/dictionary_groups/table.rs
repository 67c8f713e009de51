//! The group table of [`super::DictionaryGroupsExec`]: which group each row of a batch is in,
//! from its dictionary keys.
//!
//! Design: each group column keeps its distinct values (encoded in arrow's row format, nulls
//! as one value of their own) and numbers them in the order first seen. A batch's dictionary
//! is mapped onto those numbers once (`ColumnIds::local`: dictionary key → value id, the
//! slot after the last key standing for null); a batch that carries the same dictionary array
//! as the one before (a Parquet column chunk's batches share theirs) reuses the map. A row's
//! group is found from its local slots alone: their mixed-radix number indexes a dense table
//! while the product of the dictionaries' sizes is small (`DENSE_SLOTS`), and a hash map
//! otherwise; only a miss there consults the groups' own index by their value ids.
//!
//! Invariants: a group's number never changes until [`GroupTable::emit`] (the accumulators
//! index their state by it) and numbers are dense from 0; two rows are in the same group
//! exactly when every column's values are equal under arrow's row format (nulls equal to
//! each other, as SQL's GROUP BY wants); the local lookup is dropped whenever any column's
//! dictionary changes, so it never maps slots of one dictionary through another's.

use std::sync::Arc;

use datafusion::arrow::array::{AnyDictionaryArray, Array, ArrayRef, AsArray, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowNativeType, ArrowPrimitiveType, DataType, FieldRef, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::row::{RowConverter, RowParser, Rows, SortField};
use datafusion::common::{HashMap, internal_datafusion_err};
use datafusion::error::Result;

/// Largest product of the dictionaries' sizes (nulls included) looked up in a dense table.
const DENSE_SLOTS: u64 = 1 << 16;

/// Not yet known (in a dense lookup table).
const UNKNOWN: u32 = u32::MAX;

/// One group column's distinct values.
#[derive(Debug)]
struct ColumnIds {
    converter: RowConverter,
    /// Reads row bytes back as rows of `converter`'s.
    parser: RowParser,
    /// Value id by the value's row bytes.
    ids: HashMap<Box<[u8]>, u32>,
    /// Each id's value, in id order.
    values: Rows,
    /// The row bytes of null.
    null_row: Box<[u8]>,
    /// The dictionary values `local` was built for.
    dictionary: Option<ArrayRef>,
    /// Value id of each key of `dictionary`, then of null.
    local: Vec<u32>,
}

impl ColumnIds {
    fn new(value_type: &DataType) -> Result<ColumnIds> {
        let converter = RowConverter::new(vec![SortField::new(value_type.clone())])?;
        let null_row = converter
            .convert_columns(&[new_null_array(value_type, 1)])?
            .row(0)
            .as_ref()
            .into();
        Ok(ColumnIds {
            values: converter.empty_rows(0, 0),
            parser: converter.parser(),
            converter,
            ids: HashMap::new(),
            null_row,
            dictionary: None,
            local: Vec::new(),
        })
    }

    /// The id of the value whose row bytes are `row`, numbering it if new.
    fn id(
        ids: &mut HashMap<Box<[u8]>, u32>,
        values: &mut Rows,
        parser: &RowParser,
        row: &[u8],
    ) -> Result<u32> {
        if let Some(&id) = ids.get(row) {
            return Ok(id);
        }
        let id = u32::try_from(ids.len())
            .map_err(|_| internal_datafusion_err!("more than 2^32 distinct group values"))?;
        ids.insert(row.into(), id);
        values.push(parser.parse(row));
        Ok(id)
    }

    /// Maps `dictionary`'s keys (and null) to value ids; whether the map changed.
    fn prepare(&mut self, dictionary: &ArrayRef) -> Result<bool> {
        if self
            .dictionary
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, dictionary))
        {
            return Ok(false);
        }
        let rows = self.converter.convert_columns(&[Arc::clone(dictionary)])?;
        self.local.clear();
        for row in &rows {
            let id = Self::id(&mut self.ids, &mut self.values, &self.parser, row.as_ref())?;
            self.local.push(id);
        }
        let null = Self::id(
            &mut self.ids,
            &mut self.values,
            &self.parser,
            &self.null_row,
        )?;
        self.local.push(null);
        self.dictionary = Some(Arc::clone(dictionary));
        Ok(true)
    }

    /// Slots of the local map per row of `dictionary` (of this column's values).
    fn slots(dictionary: &dyn AnyDictionaryArray, out: &mut Vec<u32>) -> Result<()> {
        let null_slot = dictionary.values().len() as u32;
        out.clear();
        if null_slot == 0 {
            out.resize(dictionary.len(), 0);
            return Ok(());
        }
        let keys = dictionary.keys();
        match keys.data_type() {
            DataType::Int8 => extend_keys::<Int8Type>(keys, null_slot, out),
            DataType::Int16 => extend_keys::<Int16Type>(keys, null_slot, out),
            DataType::Int32 => extend_keys::<Int32Type>(keys, null_slot, out),
            DataType::Int64 => extend_keys::<Int64Type>(keys, null_slot, out),
            DataType::UInt8 => extend_keys::<UInt8Type>(keys, null_slot, out),
            DataType::UInt16 => extend_keys::<UInt16Type>(keys, null_slot, out),
            DataType::UInt32 => extend_keys::<UInt32Type>(keys, null_slot, out),
            DataType::UInt64 => extend_keys::<UInt64Type>(keys, null_slot, out),
            other => return Err(internal_datafusion_err!("dictionary keys of type {other}")),
        }
        if let Some(nulls) = dictionary.logical_nulls().filter(|n| n.null_count() > 0) {
            for (slot, valid) in out.iter_mut().zip(nulls.iter()) {
                if !valid {
                    *slot = null_slot;
                }
            }
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.ids.capacity() * (size_of::<(Box<[u8]>, u32)>() + 1)
            + self.values.size()
            + self.local.capacity() * 4
    }
}

/// `keys` (of type `K`) as slots, each below `slots` (a null key's value is arbitrary; the
/// caller overwrites it).
fn extend_keys<K: ArrowPrimitiveType>(keys: &dyn Array, slots: u32, out: &mut Vec<u32>) {
    let last = slots as usize - 1;
    out.extend(
        keys.as_primitive::<K>()
            .values()
            .iter()
            .map(|k| k.as_usize().min(last) as u32),
    );
}

/// Group by local slots, valid while every column's dictionary stays the same.
#[derive(Debug)]
enum Lookup {
    /// Not built for the current dictionaries.
    None,
    /// Indexed by the slots' mixed-radix number.
    Dense(Vec<u32>),
    /// By the slots' mixed-radix number.
    Sparse(HashMap<u64, u32>),
    /// The number does not fit 64 bits: every row goes through the groups' index.
    Tuple,
}

/// The groups themselves: each one's value ids.
#[derive(Debug, Default)]
struct Groups {
    /// Each group's value id per column, a group's ids one after another.
    keys: Vec<u32>,
    /// Group by its value ids.
    index: HashMap<Box<[u32]>, u32>,
    /// A group's value ids while it is looked up.
    tuple: Vec<u32>,
}

impl Groups {
    /// The group of `row` (its `slots` in each column's local map), numbering it if new.
    fn find(&mut self, columns: &[ColumnIds], slots: &[Vec<u32>], row: usize) -> Result<u32> {
        self.tuple.clear();
        self.tuple.extend(
            columns
                .iter()
                .zip(slots)
                .map(|(column, slots)| column.local[slots[row] as usize]),
        );
        if let Some(&g) = self.index.get(self.tuple.as_slice()) {
            return Ok(g);
        }
        let g = u32::try_from(self.index.len())
            .map_err(|_| internal_datafusion_err!("more than 2^32 groups"))?;
        self.index.insert(self.tuple.as_slice().into(), g);
        self.keys.extend_from_slice(&self.tuple);
        Ok(g)
    }
}

/// The groups seen so far, by their values in each group column.
#[derive(Debug)]
pub(super) struct GroupTable {
    columns: Vec<ColumnIds>,
    groups: Groups,
    lookup: Lookup,
    /// Size of each column's local map (keys and null), for the mixed-radix number.
    radix: Vec<u64>,
    /// Per column, each row's slot (reused between batches).
    slots: Vec<Vec<u32>>,
    /// Each row's mixed-radix number of its slots (reused between batches).
    numbers: Vec<u64>,
}

impl GroupTable {
    /// A table for group columns holding dictionaries of `value_types`.
    pub(super) fn new(value_types: &[DataType]) -> Result<GroupTable> {
        Ok(GroupTable {
            columns: value_types
                .iter()
                .map(ColumnIds::new)
                .collect::<Result<_>>()?,
            groups: Groups::default(),
            lookup: Lookup::None,
            radix: vec![0; value_types.len()],
            slots: vec![Vec::new(); value_types.len()],
            numbers: Vec::new(),
        })
    }

    /// How many groups there are.
    pub(super) fn len(&self) -> usize {
        self.groups.index.len()
    }

    /// Bytes held, roughly.
    pub(super) fn size(&self) -> usize {
        let lookup = match &self.lookup {
            Lookup::Dense(table) => table.capacity() * 4,
            Lookup::Sparse(map) => map.capacity() * (size_of::<(u64, u32)>() + 1),
            Lookup::None | Lookup::Tuple => 0,
        };
        self.columns.iter().map(ColumnIds::size).sum::<usize>()
            + self.groups.keys.capacity() * 4
            + self.groups.index.capacity()
                * (size_of::<(Box<[u32]>, u32)>() + 1 + 4 * self.columns.len())
            + lookup
            + self.slots.iter().map(|s| s.capacity() * 4).sum::<usize>()
            + self.numbers.capacity() * 8
    }

    /// The group of each row of `columns` (one dictionary array per group column) into
    /// `groups`, numbering new groups.
    pub(super) fn intern(&mut self, columns: &[ArrayRef], groups: &mut Vec<usize>) -> Result<()> {
        let rows = columns.first().map_or(0, Array::len);
        let mut changed = false;
        for (c, array) in columns.iter().enumerate() {
            let dictionary = array
                .as_any_dictionary_opt()
                .ok_or_else(|| internal_datafusion_err!("group column is not a dictionary"))?;
            changed |= self.columns[c].prepare(dictionary.values())?;
            ColumnIds::slots(dictionary, &mut self.slots[c])?;
            self.radix[c] = self.columns[c].local.len() as u64;
        }
        if changed || matches!(self.lookup, Lookup::None) {
            self.lookup = match self.radix.iter().try_fold(1u64, |p, &r| p.checked_mul(r)) {
                Some(p) if p <= DENSE_SLOTS => Lookup::Dense(vec![UNKNOWN; p as usize]),
                Some(_) => Lookup::Sparse(HashMap::new()),
                None => Lookup::Tuple,
            };
        }
        let GroupTable {
            columns,
            groups: table,
            lookup,
            radix,
            slots,
            numbers,
        } = self;
        numbers.clear();
        numbers.resize(rows, 0);
        for (column, &radix) in slots.iter().zip(radix.iter()) {
            for (n, &slot) in numbers.iter_mut().zip(column) {
                *n = n.wrapping_mul(radix).wrapping_add(u64::from(slot));
            }
        }
        groups.clear();
        groups.reserve(rows);
        match lookup {
            Lookup::Dense(dense) => {
                for (row, &n) in numbers.iter().enumerate() {
                    let mut g = dense[n as usize];
                    if g == UNKNOWN {
                        g = table.find(columns, slots, row)?;
                        dense[n as usize] = g;
                    }
                    groups.push(g as usize);
                }
            }
            Lookup::Sparse(map) => {
                for (row, &n) in numbers.iter().enumerate() {
                    let g = match map.get(&n) {
                        Some(&g) => g,
                        None => {
                            let g = table.find(columns, slots, row)?;
                            map.insert(n, g);
                            g
                        }
                    };
                    groups.push(g as usize);
                }
            }
            Lookup::Tuple | Lookup::None => {
                for row in 0..rows {
                    groups.push(table.find(columns, slots, row)? as usize);
                }
            }
        }
        Ok(())
    }

    /// Which lookup the current dictionaries use.
    #[cfg(test)]
    pub(super) fn lookup_kind(&self) -> &'static str {
        match self.lookup {
            Lookup::None => "none",
            Lookup::Dense(_) => "dense",
            Lookup::Sparse(_) => "sparse",
            Lookup::Tuple => "tuple",
        }
    }

    /// Every group's values, one array per group column cast to `fields`' types (group
    /// order), and a fresh start: group numbers begin at 0 again.
    pub(super) fn emit(&mut self, fields: &[FieldRef]) -> Result<Vec<ArrayRef>> {
        let width = self.columns.len();
        let groups = self.len();
        let mut out = Vec::with_capacity(width);
        for (c, (column, field)) in self.columns.iter().zip(fields).enumerate() {
            let rows =
                (0..groups).map(|g| column.values.row(self.groups.keys[g * width + c] as usize));
            let values = column.converter.convert_rows(rows)?.remove(0);
            out.push(cast(&values, field.data_type())?);
        }
        self.groups = Groups::default();
        self.lookup = Lookup::None;
        for column in &mut self.columns {
            column.ids = HashMap::new();
            column.values = column.converter.empty_rows(0, 0);
            column.dictionary = None;
            column.local = Vec::new();
        }
        Ok(out)
    }
}
