//! The columns of one WAL record: readings into the `readings` Arrow batch (dictionary-encoded
//! strings, one row per reading), and the record's payload of session changes plus that batch.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, StringBuilder, StringDictionaryBuilder, TimestampMillisecondBuilder,
    UInt8Builder, UInt64Builder,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use samos_schemas::payload::Value;
use samos_schemas::readings::{ROWS_PER_BATCH, readings_schema};

use super::Reading;
use crate::broker::durable::SessionOp;

/// Builds the Arrow batch of `readings` for WAL sequence `seq` (public for benchmarks).
pub fn build_batch(readings: &[Reading], seq: u64) -> RecordBatch {
    let n = readings.len();
    let mut time = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut dicts: Vec<StringDictionaryBuilder<Int32Type>> =
        (0..12).map(|_| StringDictionaryBuilder::new()).collect();
    let mut value = Float64Builder::with_capacity(n);
    let mut raw = StringBuilder::new();
    let mut severity = StringDictionaryBuilder::<Int32Type>::new();
    let mut qos = UInt8Builder::with_capacity(n);
    let mut client = StringDictionaryBuilder::<Int32Type>::new();
    let mut key = UInt64Builder::with_capacity(n);
    for (row, r) in readings.iter().enumerate() {
        let c = &r.config;
        let spec = &c.sensors[r.sensor];
        time.append_value(r.ingest_time_ms);
        let loc = c.location.levels();
        let texts: [&str; 12] = [
            &c.network,
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
        ];
        for (b, t) in dicts.iter_mut().zip(texts) {
            b.append_value(t);
        }
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
        severity.append_value(r.severity.as_str());
        qos.append_value(r.qos);
        client.append_value(&r.client_id);
        key.append_value(seq * ROWS_PER_BATCH + row as u64);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish())];
    columns.extend(dicts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(value.finish()));
    columns.push(Arc::new(raw.finish()));
    columns.push(Arc::new(severity.finish()));
    columns.push(Arc::new(qos.finish()));
    columns.push(Arc::new(client.finish()));
    columns.push(Arc::new(key.finish()));
    RecordBatch::try_new(readings_schema(), columns).expect("columns follow readings_schema")
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
    SessionOp::decode_all(samos_store::record::sections(payload)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use proptest::prelude::*;
    use samos_schemas::node_config::NodeConfig;
    use samos_schemas::payload::SensorSpec;
    use samos_schemas::payload::Severity;
    use samos_schemas::topic::Location;

    fn config(node: &str) -> Arc<NodeConfig> {
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

    fn value() -> impl Strategy<Value = (usize, Value)> {
        prop_oneof![
            (-1e6f64..1e6).prop_map(|v| (0, Value::Float(v))),
            "[a-z ]{0,12}".prop_map(|v| (1, Value::Text(v))),
            any::<bool>().prop_map(|v| (2, Value::Bool(v))),
        ]
    }

    proptest! {
        /// Every reading becomes one row holding exactly its fields, and the WAL encoding
        /// decodes back to the same batch.
        #[test]
        fn batches_hold_exactly_their_readings(
            rows in proptest::collection::vec((0usize..3, value(), any::<i64>().prop_map(|t| t.rem_euclid(4_000_000_000_000)), 0u8..3), 1..50),
            seq in 1u64..1_000_000,
        ) {
            let configs = [config("n0"), config("n1"), config("n2")];
            let readings: Vec<Reading> = rows
                .iter()
                .map(|(node, (sensor, v), t, qos)| Reading {
                    ingest_time_ms: *t,
                    config: configs[*node].clone(),
                    sensor: *sensor,
                    value: v.clone(),
                    severity: Severity::Warning,
                    qos: *qos,
                    client_id: Arc::from(format!("n{node}").as_str()),
                    ack: None,
                    qos2_pkid: None,
                })
                .collect();
            let batch = build_batch(&readings, seq);
            prop_assert_eq!(batch.num_rows(), readings.len());
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
