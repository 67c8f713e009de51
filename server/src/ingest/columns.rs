//! The columns of one WAL record: readings into the `readings` Arrow batch (dictionary-encoded
//! strings, one row per reading), and the record's payload of session changes plus that batch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Builder, Int32Array, StringBuilder,
    TimestampMillisecondBuilder, UInt8Builder, UInt64Builder,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use samos_schemas::node_config::NodeConfig;
use samos_schemas::payload::Value;
use samos_schemas::readings::{ROWS_PER_BATCH, readings_schema};

use super::Reading;
use crate::broker::durable::SessionOp;

/// Builds the Arrow batch of `readings` for WAL sequence `seq` (public for benchmarks).
///
/// Twelve of the string columns (network, node, the seven location levels, sensor name, data
/// type, units) are the same for every reading of one node's sensor, so their dictionary keys
/// are found once per (configuration, sensor) pair of the batch — a pointer-keyed lookup —
/// instead of hashing twelve strings per row. The dictionaries come out as
/// `StringDictionaryBuilder` makes them (values in order of first appearance), which the
/// tests check against it.
pub fn build_batch(readings: &[Reading], seq: u64) -> RecordBatch {
    let n = readings.len();
    let mut time = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut sensors = SensorColumns::with_capacity(n);
    let mut value = Float64Builder::with_capacity(n);
    let mut raw = StringBuilder::new();
    let mut severity = DictionaryColumn::with_capacity(n);
    let mut qos = UInt8Builder::with_capacity(n);
    let mut client = DictionaryColumn::with_capacity(n);
    let mut key = UInt64Builder::with_capacity(n);
    for (row, r) in readings.iter().enumerate() {
        time.append_value(r.ingest_time_ms);
        sensors.append(&r.config, r.sensor);
        match &r.value {
            Value::Text(t) => {
                value.append_null();
                raw.append_value(t);
            }
            v => {
                value.append_option(v.as_f64());
                raw.append_null();
            }
        }
        severity.append(r.severity.as_str());
        qos.append_value(r.qos);
        client.append(&r.client_id);
        key.append_value(seq * ROWS_PER_BATCH + row as u64);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish())];
    columns.extend(sensors.finish());
    columns.push(Arc::new(value.finish()));
    columns.push(Arc::new(raw.finish()));
    columns.push(severity.finish());
    columns.push(Arc::new(qos.finish()));
    columns.push(client.finish());
    columns.push(Arc::new(key.finish()));
    RecordBatch::try_new(readings_schema(), columns).expect("columns follow readings_schema")
}

/// How many string columns describe a reading's node and sensor.
const SENSOR_COLUMNS: usize = 12;

/// The twelve node and sensor columns: each row's keys come from its (configuration, sensor)
/// pair, looked up by pointer; a pair's twelve strings are looked up only the first time.
struct SensorColumns<'a> {
    columns: [DictionaryColumn<'a>; SENSOR_COLUMNS],
    pairs: HashMap<(*const NodeConfig, usize), [i32; SENSOR_COLUMNS]>,
    last: Option<((*const NodeConfig, usize), [i32; SENSOR_COLUMNS])>,
}

impl<'a> SensorColumns<'a> {
    fn with_capacity(rows: usize) -> Self {
        SensorColumns {
            columns: std::array::from_fn(|_| DictionaryColumn::with_capacity(rows)),
            pairs: HashMap::new(),
            last: None,
        }
    }

    fn append(&mut self, config: &'a NodeConfig, sensor: usize) {
        let pair = (std::ptr::from_ref(config), sensor);
        let keys = match self.last {
            Some((last, keys)) if last == pair => keys,
            _ => {
                let keys = match self.pairs.get(&pair) {
                    Some(keys) => *keys,
                    None => {
                        let keys = self.intern(config, sensor);
                        self.pairs.insert(pair, keys);
                        keys
                    }
                };
                self.last = Some((pair, keys));
                keys
            }
        };
        for (column, key) in self.columns.iter_mut().zip(keys) {
            column.keys.push(key);
        }
    }

    fn intern(&mut self, config: &'a NodeConfig, sensor: usize) -> [i32; SENSOR_COLUMNS] {
        let spec = &config.sensors[sensor];
        let loc = config.location.levels();
        let texts: [&'a str; SENSOR_COLUMNS] = [
            &config.network,
            &config.node_id,
            loc[0],
            loc[1],
            loc[2],
            loc[3],
            loc[4],
            loc[5],
            loc[6],
            &spec.name,
            &spec.data_type,
            &spec.units,
        ];
        std::array::from_fn(|i| self.columns[i].intern(texts[i]))
    }

    fn finish(self) -> impl Iterator<Item = ArrayRef> {
        self.columns.into_iter().map(DictionaryColumn::finish)
    }
}

/// One dictionary-encoded string column (`Int32` keys): values in order of first appearance.
struct DictionaryColumn<'a> {
    keys: Vec<i32>,
    values: StringBuilder,
    index: HashMap<&'a str, i32>,
    /// The previous row's text and key: runs of one value skip the hash.
    last: Option<(&'a str, i32)>,
}

impl<'a> DictionaryColumn<'a> {
    fn with_capacity(rows: usize) -> Self {
        DictionaryColumn {
            keys: Vec::with_capacity(rows),
            values: StringBuilder::new(),
            index: HashMap::new(),
            last: None,
        }
    }

    fn append(&mut self, text: &'a str) {
        let key = match self.last {
            Some((last, key)) if std::ptr::eq(last, text) => key,
            _ => {
                let key = self.intern(text);
                self.last = Some((text, key));
                key
            }
        };
        self.keys.push(key);
    }

    /// The key of `text`, added to the dictionary if it is new.
    fn intern(&mut self, text: &'a str) -> i32 {
        let next = i32::try_from(self.index.len()).expect("fewer than 2^31 distinct values");
        *self.index.entry(text).or_insert_with(|| {
            self.values.append_value(text);
            next
        })
    }

    fn finish(mut self) -> ArrayRef {
        let keys = Int32Array::from(self.keys);
        let values = Arc::new(self.values.finish());
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(keys, values).expect("every key has its value"),
        )
    }
}

/// A WAL record's payload: the session operations ([`sessions`]) and the readings (see
/// [`samos_store::record`]).
pub fn encode_record(ops: &[SessionOp], batch: Option<&RecordBatch>) -> Vec<u8> {
    samos_store::record::encode(
        |buf| {
            for op in ops {
                op.encode(buf);
            }
        },
        batch,
    )
}

/// The session changes of a WAL record.
pub fn decode_record_sessions(payload: &[u8]) -> Result<Vec<SessionOp>, String> {
    SessionOp::decode_all(samos_store::record::sessions(payload)?)
}

/// A node of network `net` at location `c/d/ci/a/indoor/b/r` with three sensors, all declared
/// `0-100`: `t` (float), `s` (string), `b` (bool). For tests of what reads batches.
#[cfg(test)]
pub(crate) fn test_config(node: &str) -> Arc<NodeConfig> {
    use samos_schemas::payload::SensorSpec;
    use samos_schemas::topic::Location;
    let spec = |name: &str, ty: &str| SensorSpec {
        name: name.into(),
        part: "p".into(),
        data_type: ty.into(),
        units: "u".into(),
        min: "0".into(),
        max: "100".into(),
    };
    Arc::new(NodeConfig {
        node_id: node.into(),
        network: "net".into(),
        server_id: "SN".into(),
        location: Location::from_levels(["c", "d", "ci", "a", "indoor", "b", "r"]),
        sensors: vec![spec("t", "float"), spec("s", "string"), spec("b", "bool")],
        ip_address: String::new(),
        mac_address: String::new(),
        platform: String::new(),
        document: serde_json::Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use proptest::prelude::*;
    use samos_schemas::payload::Severity;

    fn config(node: &str) -> Arc<NodeConfig> {
        test_config(node)
    }

    fn value() -> impl Strategy<Value = (usize, Value)> {
        prop_oneof![
            (-1e6f64..1e6).prop_map(|v| (0, Value::Float(v))),
            "[a-z ]{0,12}".prop_map(|v| (1, Value::Text(v))),
            any::<bool>().prop_map(|v| (2, Value::Bool(v))),
        ]
    }

    /// The batch as arrow's own dictionary builders make it, one string lookup per cell: the
    /// oracle for `build_batch`'s per-pair keys.
    fn built_by_arrow(readings: &[Reading], seq: u64) -> RecordBatch {
        use arrow::array::StringDictionaryBuilder;
        let mut dicts: Vec<StringDictionaryBuilder<Int32Type>> =
            (0..15).map(|_| StringDictionaryBuilder::new()).collect();
        for r in readings {
            let c = &r.config;
            let spec = &c.sensors[r.sensor];
            let loc = c.location.levels();
            let texts = [
                c.network.as_str(),
                &c.node_id,
                loc[0],
                loc[1],
                loc[2],
                loc[3],
                loc[4],
                loc[5],
                loc[6],
                &spec.name,
                &spec.data_type,
                &spec.units,
                r.severity.as_str(),
                &r.client_id,
            ];
            for (b, t) in dicts.iter_mut().zip(texts) {
                b.append_value(t);
            }
        }
        let mine = build_batch(readings, seq);
        let mut columns: Vec<ArrayRef> = mine.columns().to_vec();
        let mut dicts = dicts.into_iter();
        for i in (1..=12).chain([15, 17]) {
            columns[i] = Arc::new(dicts.next().unwrap().finish());
        }
        RecordBatch::try_new(readings_schema(), columns).unwrap()
    }

    /// Small records use the compact encoding, large ones Arrow IPC; both decode to the batch.
    #[test]
    fn small_records_are_compact_and_large_ones_ipc() {
        let config = config("n0");
        let reading = |i: usize| Reading {
            ingest_time_ms: 1_700_000_000_000 + i as i64,
            config: config.clone(),
            sensor: i % 3,
            value: Value::Float(i as f64),
            severity: Severity::Normal,
            qos: 2,
            client_id: "n0".into(),
            ack: None,
            qos2_pkid: None,
        };
        for (rows, format) in [(1, 2), (samos_store::record::COMPACT_MAX_ROWS + 1, 1)] {
            let readings: Vec<Reading> = (0..rows).map(reading).collect();
            let batch = build_batch(&readings, 42);
            let payload = encode_record(&[], Some(&batch));
            assert_eq!(payload[0], format, "{rows} rows");
            if rows == 1 {
                assert!(
                    payload.len() < 600,
                    "a lone reading takes {} bytes",
                    payload.len()
                );
            }
            assert_eq!(
                samos_store::record::decode_batches(&payload).unwrap(),
                vec![batch]
            );
        }
    }

    proptest! {
        /// Every reading becomes one row holding exactly its fields, and the WAL encoding
        /// decodes back to the same batch.
        #[test]
        fn batches_hold_exactly_their_readings(
            rows in proptest::collection::vec((0usize..4, value(), any::<i64>().prop_map(|t| t.rem_euclid(4_000_000_000_000)), 0u8..3), 1..50),
            seq in 1u64..1_000_000,
        ) {
            // Two allocations of one configuration (a node that joined again): equal strings,
            // different pointers.
            let configs = [config("n0"), config("n1"), config("n2"), config("n1")];
            let readings: Vec<Reading> = rows
                .iter()
                .map(|(node, (sensor, v), t, qos)| Reading {
                    ingest_time_ms: *t,
                    config: configs[*node].clone(),
                    sensor: *sensor,
                    value: v.clone(),
                    severity: if *qos == 1 { Severity::Warning } else { Severity::Normal },
                    qos: *qos,
                    client_id: Arc::from(format!("n{node}").as_str()),
                    ack: None,
                    qos2_pkid: None,
                })
                .collect();
            let batch = build_batch(&readings, seq);
            prop_assert_eq!(batch.num_rows(), readings.len());
            let oracle = built_by_arrow(&readings, seq);
            for i in (1..=12).chain([15, 17]) {
                let (mine, theirs) = (batch.column(i).as_dictionary::<Int32Type>(), oracle.column(i).as_dictionary::<Int32Type>());
                prop_assert_eq!(mine.keys(), theirs.keys(), "keys of column {}", i);
                prop_assert_eq!(mine.values().as_ref(), theirs.values().as_ref(), "values of column {}", i);
            }
            let ops = [SessionOp::Received { client: "n0".into(), pkid: 9 }];
            let payload = encode_record(&ops, Some(&batch));
            prop_assert_eq!(decode_record_sessions(&payload).unwrap(), ops);
            let decoded = samos_store::record::decode_batches(&payload).unwrap();
            prop_assert_eq!(decoded.len(), 1);
            prop_assert_eq!(&decoded[0], &batch);
            let node = batch.column(2).as_dictionary::<Int32Type>();
            let nodes = node.values().as_string::<i32>();
            let values = batch.column(13).as_primitive::<arrow::datatypes::Float64Type>();
            let raw = batch.column(14).as_string::<i32>();
            let keys = batch.column(18).as_primitive::<arrow::datatypes::UInt64Type>();
            let times = batch.column(0).as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            for (i, r) in readings.iter().enumerate() {
                prop_assert_eq!(nodes.value(node.keys().value(i) as usize), r.config.node_id.as_str());
                prop_assert_eq!(times.value(i), r.ingest_time_ms);
                prop_assert_eq!(keys.value(i), seq * ROWS_PER_BATCH + i as u64);
                match &r.value {
                    Value::Text(t) => {
                        prop_assert!(values.is_null(i));
                        prop_assert_eq!(raw.value(i), t.as_str());
                    }
                    v => {
                        prop_assert_eq!(Some(values.value(i)), v.as_f64());
                        prop_assert!(raw.is_null(i));
                    }
                }
            }
        }
    }
}
