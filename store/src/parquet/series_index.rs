//! Where each series lies in a readings file: the file's series index.
//!
//! A readings row group is sorted by (`node_id`, `sensor`, `ingest_time`)
//! ([`super::ReadingsWriter`]), so each series — one node's one sensor — is one run of
//! consecutive rows. The page index only narrows a query for one series to the pages around
//! its run (a 4,096-row page holds a dozen series of a fleet), and every row of those pages is
//! decoded and filtered again. The writer records each row group's runs in the file's
//! key-value metadata under [`SERIES_INDEX_KEY`]; a reader turns a filter on nodes and sensors
//! into the exact rows to read.
//!
//! Format (JSON, so that any Parquet tool shows it): `{"version":1,"nodes":[..],
//! "sensors":[..],"row_groups":[[node, sensor, first_row, ...] | null, ...]}` — per row
//! group, its runs in row order as flattened triples of indices into `nodes` and `sensors`
//! and the run's first row; a run ends where the next begins (the last at the row group's
//! end). A row group of more than [`MAX_RUNS`] runs, or of columns of another kind, is
//! `null`: not indexed (readers read it whole).
//!
//! Invariants: a run holds every row of its row group with that node and sensor, and nothing
//! else; an index that does not match the file's row groups (count, row counts, names out of
//! range, runs out of order) is refused as a whole by [`SeriesIndex::parse`], and a reader
//! then reads the file as if it had none. The index only ever narrows which rows are read;
//! the query's own filter is still applied to them.

use std::collections::HashMap;
use std::ops::Range;

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// The key-value metadata entry that holds a readings file's series index.
pub const SERIES_INDEX_KEY: &str = "samos.series_index";

/// The most runs a row group's index lists: beyond it (a fleet so large that a row group
/// holds a few rows of each series) the row group is not indexed, which keeps the footer small.
pub const MAX_RUNS: usize = 4096;

const VERSION: u32 = 1;

/// The runs of every row group of one readings file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeriesIndex {
    version: u32,
    nodes: Vec<String>,
    sensors: Vec<String>,
    row_groups: Vec<Option<Vec<u32>>>,
}

/// Builds a file's index one sorted row group at a time.
#[derive(Debug, Default)]
pub struct SeriesIndexBuilder {
    index: SeriesIndex,
    nodes: HashMap<String, u32>,
    sensors: HashMap<String, u32>,
}

impl SeriesIndexBuilder {
    /// Records the runs of `row_group`, a row group as written (sorted by node, sensor, time).
    /// Where its `node_id` and `sensor` are not string dictionaries without nulls, or it has
    /// more than [`MAX_RUNS`] runs, the row group is recorded as not indexed.
    pub fn add_row_group(&mut self, row_group: &RecordBatch) {
        let runs = self.runs(row_group);
        self.index.row_groups.push(runs);
    }

    fn runs(&mut self, row_group: &RecordBatch) -> Option<Vec<u32>> {
        let names = |column: &str| -> Option<(Vec<i32>, StringArray)> {
            let column = row_group.column_by_name(column)?;
            let dict = column.as_dictionary_opt::<Int32Type>()?;
            let values = dict.values().as_string_opt::<i32>()?;
            (column.null_count() == 0 && values.null_count() == 0)
                .then(|| (dict.keys().values().to_vec(), values.clone()))
        };
        let (node_keys, node_names) = names("node_id")?;
        let (sensor_keys, sensor_names) = names("sensor")?;
        let mut runs = Vec::new();
        let mut previous: Option<(&str, &str)> = None;
        for (row, (n, s)) in node_keys.iter().zip(&sensor_keys).enumerate() {
            let series = (name(&node_names, *n)?, name(&sensor_names, *s)?);
            if previous == Some(series) {
                continue;
            }
            if runs.len() / 3 == MAX_RUNS {
                return None;
            }
            previous = Some(series);
            let node = intern(&mut self.nodes, &mut self.index.nodes, series.0);
            let sensor = intern(&mut self.sensors, &mut self.index.sensors, series.1);
            runs.extend([node, sensor, u32::try_from(row).ok()?]);
        }
        Some(runs)
    }

    /// The index as the text stored under [`SERIES_INDEX_KEY`].
    pub fn finish(mut self) -> String {
        self.index.version = VERSION;
        serde_json::to_string(&self.index).expect("an index of strings and integers serializes")
    }
}

/// The string of dictionary key `key`, if it is one.
fn name(names: &StringArray, key: i32) -> Option<&str> {
    let key = usize::try_from(key).ok()?;
    (key < names.len()).then(|| names.value(key))
}

fn intern(ids: &mut HashMap<String, u32>, names: &mut Vec<String>, name: &str) -> u32 {
    if let Some(id) = ids.get(name) {
        return *id;
    }
    let id = names.len() as u32;
    names.push(name.to_owned());
    ids.insert(name.to_owned(), id);
    id
}

impl SeriesIndex {
    /// The index stored as `text` for a file whose row groups hold `row_counts` rows each;
    /// `None` where it is not a version-1 index of exactly those row groups.
    pub fn parse(text: &str, row_counts: &[usize]) -> Option<SeriesIndex> {
        let index: SeriesIndex = serde_json::from_str(text).ok()?;
        (index.version == VERSION && index.row_groups.len() == row_counts.len()).then_some(())?;
        for (runs, rows) in index.row_groups.iter().zip(row_counts) {
            let Some(runs) = runs else { continue };
            if runs.len() % 3 != 0 || runs.len() / 3 > MAX_RUNS {
                return None;
            }
            let mut next_first = 0usize;
            for (i, run) in runs.chunks_exact(3).enumerate() {
                let first = run[2] as usize;
                let in_order = if i == 0 {
                    first == 0
                } else {
                    first >= next_first
                };
                if (run[0] as usize) >= index.nodes.len()
                    || (run[1] as usize) >= index.sensors.len()
                    || !in_order
                    || first >= *rows
                {
                    return None;
                }
                next_first = first + 1;
            }
            if runs.is_empty() && *rows > 0 {
                return None;
            }
        }
        Some(index)
    }

    /// The row ranges of row group `row_group` (of `rows` rows) whose node is one of `nodes`
    /// and sensor one of `sensors` (`None`: any), in order and merged where they touch; `None`
    /// where the row group is not indexed.
    pub fn rows(
        &self,
        row_group: usize,
        rows: usize,
        nodes: Option<&[&str]>,
        sensors: Option<&[&str]>,
    ) -> Option<Vec<Range<usize>>> {
        let runs = self.row_groups.get(row_group)?.as_ref()?;
        let wanted = |names: &[String], filter: Option<&[&str]>| -> Vec<bool> {
            names
                .iter()
                .map(|n| filter.is_none_or(|f| f.contains(&n.as_str())))
                .collect()
        };
        let (node_wanted, sensor_wanted) =
            (wanted(&self.nodes, nodes), wanted(&self.sensors, sensors));
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let mut triples = runs.chunks_exact(3).peekable();
        while let Some(run) = triples.next() {
            let end = triples.peek().map_or(rows, |next| next[2] as usize);
            if !(node_wanted[run[0] as usize] && sensor_wanted[run[1] as usize]) {
                continue;
            }
            let start = run[2] as usize;
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => ranges.push(start..end),
            }
        }
        Some(ranges)
    }

    /// The last row of each run of row group `row_group` (of `rows` rows), in order: in a
    /// sorted row group, each series' latest reading (the last of its latest instant); `None`
    /// where the row group is not indexed.
    pub fn last_rows(&self, row_group: usize, rows: usize) -> Option<Vec<usize>> {
        let runs = self.row_groups.get(row_group)?.as_ref()?;
        if runs.is_empty() {
            return Some(Vec::new());
        }
        let firsts: Vec<usize> = runs.chunks_exact(3).map(|run| run[2] as usize).collect();
        Some(
            firsts
                .iter()
                .skip(1)
                .chain(std::iter::once(&rows))
                .map(|end| end - 1)
                .collect(),
        )
    }

    /// Roughly the bytes the index holds in memory.
    pub fn memory_size(&self) -> usize {
        let names: usize = self
            .nodes
            .iter()
            .chain(&self.sensors)
            .map(|n| n.len() + size_of::<String>())
            .sum();
        let runs: usize = self
            .row_groups
            .iter()
            .map(|r| size_of::<Option<Vec<u32>>>() + r.as_ref().map_or(0, |r| r.len() * 4))
            .sum();
        size_of::<SeriesIndex>() + names + runs
    }
}

#[cfg(test)]
// A list of one row range is what these tests mean by `vec![a..b]`.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, DictionaryArray, Int32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    use super::*;

    /// A row group of `series` (node, sensor) pairs in the order given.
    fn row_group(series: &[(&str, &str)]) -> RecordBatch {
        let column = |second: bool| -> ArrayRef {
            Arc::new(
                series
                    .iter()
                    .map(|(n, s)| if second { *s } else { *n })
                    .collect::<DictionaryArray<Int32Type>>(),
            )
        };
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let schema = Schema::new(vec![
            Field::new("node_id", dict.clone(), false),
            Field::new("sensor", dict, false),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![column(false), column(true)]).unwrap()
    }

    #[test]
    fn runs_are_found_and_looked_up() {
        let mut builder = SeriesIndexBuilder::default();
        builder.add_row_group(&row_group(&[
            ("a", "t"),
            ("a", "t"),
            ("a", "u"),
            ("b", "t"),
            ("b", "t"),
            ("b", "t"),
        ]));
        builder.add_row_group(&row_group(&[("b", "u"), ("c", "t")]));
        let text = builder.finish();
        let index = SeriesIndex::parse(&text, &[6, 2]).unwrap();
        assert_eq!(index.rows(0, 6, Some(&["a"]), None), Some(vec![0..3]));
        assert_eq!(index.rows(0, 6, None, Some(&["t"])), Some(vec![0..2, 3..6]));
        assert_eq!(
            index.rows(0, 6, Some(&["b"]), Some(&["t"])),
            Some(vec![3..6])
        );
        assert_eq!(index.rows(1, 2, Some(&["a"]), None), Some(vec![]));
        assert_eq!(index.rows(1, 2, Some(&["b", "c"]), None), Some(vec![0..2]));
        assert_eq!(index.rows(2, 2, None, None), None);
        assert_eq!(index.last_rows(0, 6), Some(vec![1, 2, 5]));
        assert_eq!(index.last_rows(1, 2), Some(vec![0, 1]));
        assert_eq!(index.last_rows(2, 2), None);
        // Refused: other row counts, another row-group count, a run past its row group.
        assert!(SeriesIndex::parse(&text, &[6]).is_none());
        assert!(SeriesIndex::parse(&text, &[6, 1]).is_none());
        assert!(SeriesIndex::parse(&text, &[2, 2]).is_none());
        assert!(SeriesIndex::parse("{\"version\":2}", &[]).is_none());
        assert!(SeriesIndex::parse("not json", &[6, 2]).is_none());
    }

    #[test]
    fn a_row_group_of_another_kind_or_too_many_runs_is_not_indexed() {
        let mut builder = SeriesIndexBuilder::default();
        let plain = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "node_id",
                DataType::Int32,
                false,
            )])),
            vec![Arc::new(Int32Array::from(vec![1, 2]))],
        )
        .unwrap();
        builder.add_row_group(&plain);
        let names: Vec<String> = (0..=MAX_RUNS).map(|i| format!("n{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "t")).collect();
        builder.add_row_group(&row_group(&many));
        let fits = &many[..MAX_RUNS];
        builder.add_row_group(&row_group(fits));
        let index = SeriesIndex::parse(&builder.finish(), &[2, MAX_RUNS + 1, MAX_RUNS]).unwrap();
        assert_eq!(index.rows(0, 2, None, None), None);
        assert_eq!(index.rows(1, MAX_RUNS + 1, None, None), None);
        assert_eq!(
            index.rows(2, MAX_RUNS, Some(&["n7"]), None),
            Some(vec![7..8])
        );
    }

    fn as_refs(v: &Option<Vec<String>>) -> Option<Vec<&str>> {
        v.as_ref().map(|v| v.iter().map(String::as_str).collect())
    }

    proptest! {
        /// For any sorted row group and any filter, the ranges hold exactly the rows whose
        /// node and sensor pass it.
        #[test]
        fn ranges_are_exactly_the_matching_rows(
            mut series in prop::collection::vec((0u8..5, 0u8..3), 1..200),
            node_filter in prop::option::of(prop::collection::vec(0u8..6, 0..3)),
            sensor_filter in prop::option::of(prop::collection::vec(0u8..4, 0..3)),
        ) {
            series.sort();
            let names: Vec<(String, String)> =
                series.iter().map(|(n, s)| (format!("n{n}"), format!("s{s}"))).collect();
            let pairs: Vec<(&str, &str)> =
                names.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
            let mut builder = SeriesIndexBuilder::default();
            builder.add_row_group(&row_group(&pairs));
            let index = SeriesIndex::parse(&builder.finish(), &[pairs.len()]).unwrap();
            let filter_names = |f: &Option<Vec<u8>>, prefix: &str| {
                f.as_ref().map(|v| v.iter().map(|i| format!("{prefix}{i}")).collect::<Vec<_>>())
            };
            let (nodes, sensors) = (filter_names(&node_filter, "n"), filter_names(&sensor_filter, "s"));
            let (nodes, sensors) = (as_refs(&nodes), as_refs(&sensors));
            let ranges = index.rows(0, pairs.len(), nodes.as_deref(), sensors.as_deref()).unwrap();
            let selected: Vec<usize> = ranges.iter().flat_map(Clone::clone).collect();
            let expected: Vec<usize> = pairs
                .iter()
                .enumerate()
                .filter(|(_, (n, s))| {
                    nodes.as_ref().is_none_or(|f| f.contains(n))
                        && sensors.as_ref().is_none_or(|f| f.contains(s))
                })
                .map(|(row, _)| row)
                .collect();
            prop_assert_eq!(selected, expected);
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].end < pair[1].start);
            }
        }
    }
}
