use std::sync::Arc;

use arrow::array::{
    Array, AsArray, DictionaryArray, Float64Array, StringArray, TimestampMillisecondArray,
    UInt8Array, UInt64Array,
};
use arrow::datatypes::{DataType, Int32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use proptest::prelude::*;
use samos_schemas::readings::readings_schema;

use super::*;
use crate::parquet::series_index::SeriesIndex;

/// `n` readings from row `first` on: node `(i·7) % nodes`, sensor `i % 3`, time `i / 5` (ties),
/// key `i`.
fn batch(first: usize, n: usize, nodes: usize) -> RecordBatch {
    let schema = readings_schema();
    let rows = first..first + n;
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match (f.name().as_str(), f.data_type()) {
                ("node_id", _) => {
                    let names: Vec<String> = rows
                        .clone()
                        .map(|i| format!("N{:03}", (i * 7) % nodes))
                        .collect();
                    Arc::new(
                        names
                            .iter()
                            .map(String::as_str)
                            .collect::<DictionaryArray<Int32Type>>(),
                    )
                }
                ("sensor", _) => Arc::new(
                    rows.clone()
                        .map(|i| ["temp", "co2", "light"][i % 3])
                        .collect::<DictionaryArray<Int32Type>>(),
                ),
                (_, DataType::Timestamp(..)) => Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        rows.clone().map(|i| (i / 5) as i64),
                    )
                    .with_timezone("UTC"),
                ),
                (_, DataType::Dictionary(..)) => {
                    Arc::new(std::iter::repeat_n("x", n).collect::<DictionaryArray<Int32Type>>())
                }
                (_, DataType::Float64) => Arc::new(Float64Array::from_iter_values(
                    rows.clone().map(|i| i as f64),
                )),
                (_, DataType::Utf8) => Arc::new(StringArray::from(vec!["1.0"; n])),
                (_, DataType::UInt8) => Arc::new(UInt8Array::from(vec![1; n])),
                (_, DataType::UInt64) => Arc::new(UInt64Array::from_iter_values(
                    rows.clone().map(|i| i as u64),
                )),
                (_, other) => panic!("no test column for {other}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

/// (node, sensor, time, key) of every row of a file, by row group.
type Key = (String, String, i64, u64);
fn row_groups(path: &Path) -> Vec<Vec<Key>> {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let groups = reader.metadata().num_row_groups();
    (0..groups)
        .map(|g| {
            let r = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
                .unwrap()
                .with_row_groups(vec![g])
                .build()
                .unwrap();
            let mut keys = Vec::new();
            for b in r {
                let b = b.unwrap();
                let text = |name: &str| {
                    arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap()
                };
                let (node, sensor) = (text("node_id"), text("sensor"));
                let (node, sensor) = (node.as_string::<i32>(), sensor.as_string::<i32>());
                let time = b.column_by_name("ingest_time").unwrap();
                let time = time
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .unwrap();
                let key = b
                    .column_by_name("key")
                    .unwrap()
                    .as_primitive::<UInt64Type>();
                for i in 0..b.num_rows() {
                    keys.push((
                        node.value(i).to_owned(),
                        sensor.value(i).to_owned(),
                        time.value(i),
                        key.value(i),
                    ));
                }
            }
            keys
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Whatever the batch sizes: every row once, full row groups but the last, each sorted by
    /// node, sensor and time, rows of one series and instant in arrival order.
    #[test]
    fn a_file_holds_its_rows_once_in_sorted_row_groups(
        sizes in prop::collection::vec(1usize..90_000, 1..6),
        nodes in 1usize..120,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let mut w = ReadingsWriter::create(&path).unwrap();
        let mut at = 0;
        for n in &sizes {
            w.write(&batch(at, *n, nodes)).unwrap();
            at += n;
        }
        prop_assert!(w.bytes() > 0);
        drop(w.finish().unwrap());
        let groups = row_groups(&path);
        let total: usize = groups.iter().map(Vec::len).sum();
        prop_assert_eq!(total, at);
        for (g, rows) in groups.iter().enumerate() {
            if g + 1 < groups.len() {
                prop_assert_eq!(rows.len(), ROW_GROUP_ROWS);
            }
            for pair in rows.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                prop_assert!((&a.0, &a.1, a.2) <= (&b.0, &b.1, b.2), "{:?} then {:?}", a, b);
                if (&a.0, &a.1, a.2) == (&b.0, &b.1, b.2) {
                    prop_assert!(a.3 < b.3, "arrival order kept: {:?} then {:?}", a, b);
                }
            }
            // The row group holds exactly the rows that arrived for it.
            let mut keys: Vec<u64> = rows.iter().map(|r| r.3).collect();
            keys.sort_unstable();
            let first = (g * ROW_GROUP_ROWS) as u64;
            prop_assert_eq!(keys, (first..first + rows.len() as u64).collect::<Vec<_>>());
        }
        // The footer's series index names exactly the rows of each node and of each series.
        let index = series_index(&path);
        let probes = [("N000", None), ("N001", Some("co2")), ("N007", Some("temp"))];
        for (g, rows) in groups.iter().enumerate() {
            for (node, sensor) in probes {
                let sensors = sensor.map(|s| vec![s]);
                let ranges = index
                    .rows(g, rows.len(), Some(&[node]), sensors.as_deref())
                    .unwrap();
                let selected: Vec<usize> = ranges.into_iter().flatten().collect();
                let expected: Vec<usize> = (0..rows.len())
                    .filter(|r| rows[*r].0 == node && sensor.is_none_or(|s| rows[*r].1 == s))
                    .collect();
                prop_assert_eq!(selected, expected, "row group {}, {} {:?}", g, node, sensor);
            }
        }
    }
}

/// The series index in the footer of the file at `path`.
fn series_index(path: &Path) -> SeriesIndex {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let metadata = reader.metadata();
    let text = metadata
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .find(|kv| kv.key == SERIES_INDEX_KEY)
        .and_then(|kv| kv.value.clone())
        .unwrap();
    let counts: Vec<usize> = metadata
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows() as usize)
        .collect();
    SeriesIndex::parse(&text, &counts).unwrap()
}

#[test]
fn an_empty_file_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    let mut w = ReadingsWriter::create(&path).unwrap();
    w.write(&batch(0, 0, 3)).unwrap();
    drop(w.finish().unwrap());
    assert!(row_groups(&path).is_empty());
}

#[test]
fn many_one_reading_batches_are_held_compactly() {
    // Each one-row batch carries spare builder capacity; waiting batches are copied together,
    // so what waits stays near the size of its rows, not of its batches.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.parquet");
    let mut w = ReadingsWriter::create(&path).unwrap();
    let one = batch(0, 1, 10);
    let per_batch = one.get_array_memory_size();
    for i in 0..20_000 {
        w.write(&batch(i, 1, 10)).unwrap();
    }
    assert!(
        w.pending_bytes < 20_000 * per_batch / 4,
        "{} bytes wait for 20,000 rows ({per_batch} bytes a batch)",
        w.pending_bytes
    );
    drop(w.finish().unwrap());
    let rows: Vec<Key> = row_groups(&path).concat();
    assert_eq!(rows.len(), 20_000);
    let mut keys: Vec<u64> = rows.iter().map(|r| r.3).collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..20_000).collect::<Vec<u64>>());
}

proptest! {
    /// The packed integer order is the row format's, also where a dictionary holds one name
    /// twice (as a concatenation of batches can).
    #[test]
    fn the_packed_order_is_the_row_order(
        rows in prop::collection::vec((0i32..6, 0i32..4, 0i64..20), 2..400),
    ) {
        let mut b = batch(0, rows.len(), 5);
        let schema = b.schema();
        let names = StringArray::from(vec!["N2", "N1", "N2", "N0", "N1", "N9"]);
        let sensors = StringArray::from(vec!["co2", "temp", "co2", "light"]);
        let mut columns = b.columns().to_vec();
        for (i, f) in schema.fields().iter().enumerate() {
            match f.name().as_str() {
                "node_id" => {
                    let keys: arrow::array::Int32Array = rows.iter().map(|r| r.0).collect();
                    columns[i] = Arc::new(
                        DictionaryArray::<Int32Type>::try_new(keys, Arc::new(names.clone())).unwrap(),
                    );
                }
                "sensor" => {
                    let keys: arrow::array::Int32Array = rows.iter().map(|r| r.1).collect();
                    columns[i] = Arc::new(
                        DictionaryArray::<Int32Type>::try_new(keys, Arc::new(sensors.clone())).unwrap(),
                    );
                }
                "ingest_time" => {
                    columns[i] = Arc::new(
                        TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.2))
                            .with_timezone("UTC"),
                    );
                }
                _ => {}
            }
        }
        b = RecordBatch::try_new(schema, columns).unwrap();
        prop_assert_eq!(packed_order(&b).unwrap(), row_order(&b).unwrap());
    }
}
