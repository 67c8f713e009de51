//! A readings store written the way the engine writes it, without the engine: 100 nodes × 4
//! sensors, one reading each every 15 s from 2025-12-01, values replayed from the bundled UCI
//! office trace (temperature, humidity, light, CO2), `readings/date=…/part-….parquet` files
//! of 1,000,000 rows with the engine's writer settings. For benchmarks and tests that need
//! millions of readings faster than MQTT can bring them.
// Shared by test and bench targets that each use part of it.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use samos_analytics::datafusion::arrow::array::{
    ArrayRef, Float64Array, StringArray, StringDictionaryBuilder, TimestampMillisecondArray,
    UInt8Array, UInt64Array,
};
use samos_analytics::datafusion::arrow::datatypes::Int32Type;
use samos_analytics::datafusion::arrow::record_batch::RecordBatch;
use samos_schemas::readings::{ROWS_PER_BATCH, readings_schema};

pub const NODES: usize = 100;
pub const SENSORS: [&str; 4] = ["temperature", "humidity", "light", "co2"];
pub const STEP_MS: i64 = 15_000;
pub const START_MS: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z
pub const FILE_ROWS: usize = 1_000_000;

/// The office trace's four columns, one row a minute.
fn trace() -> Vec<[f64; 4]> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/uci-occupancy-detection/datatest.txt");
    std::fs::read_to_string(path)
        .expect("the bundled UCI trace")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some([
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
                f.get(4)?.parse().ok()?,
                f.get(5)?.parse().ok()?,
            ])
        })
        .collect()
}

fn dict(values: impl Iterator<Item = String>) -> ArrayRef {
    let mut b = StringDictionaryBuilder::<Int32Type>::new();
    values.for_each(|v| {
        b.append_value(v);
    });
    Arc::new(b.finish())
}

/// Rows `first..first + n` of the series, in time order (all series sample at each step).
fn batch(first: usize, n: usize, trace: &[[f64; 4]], seq: u64) -> RecordBatch {
    let series = NODES * SENSORS.len();
    let rows = first..first + n;
    let step = |r: usize| r / series;
    let node = |r: usize| (r % series) / SENSORS.len();
    let sensor = |r: usize| r % SENSORS.len();
    let schema = readings_schema();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let column: ArrayRef = match field.name().as_str() {
            "ingest_time" => Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    rows.clone().map(|r| START_MS + step(r) as i64 * STEP_MS),
                )
                .with_timezone("UTC"),
            ),
            "node_id" | "client_id" => dict(rows.clone().map(|r| format!("N{:03}", node(r)))),
            "sensor" => dict(rows.clone().map(|r| SENSORS[sensor(r)].to_string())),
            "units" => dict(
                rows.clone()
                    .map(|r| ["C", "%RH", "lx", "ppm"][sensor(r)].into()),
            ),
            "data_type" => dict(rows.clone().map(|_| "float".to_string())),
            "severity" => dict(rows.clone().map(|_| "normalMode".to_string())),
            "network" => dict(rows.clone().map(|_| "bench".to_string())),
            "room" => dict(rows.clone().map(|r| format!("R{:02}", node(r) % 20))),
            "value" => Arc::new(Float64Array::from_iter_values(rows.clone().map(|r| {
                let minute = (step(r) / 4 + node(r) * 7) % trace.len();
                trace[minute][sensor(r)]
            }))),
            "raw" => Arc::new(StringArray::new_null(n)),
            "qos" => Arc::new(UInt8Array::from_iter_values(rows.clone().map(|_| 1))),
            "key" => Arc::new(UInt64Array::from_iter_values(
                (0..n as u64).map(|i| seq * ROWS_PER_BATCH + i),
            )),
            _ => dict(rows.clone().map(|_| "x".to_string())),
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Writes `rows` readings as the engine would; one WAL sequence per 65,536-row batch.
pub fn write_store(data: &Path, rows: usize) {
    let trace = trace();
    let day_rows = (86_400_000 / STEP_MS) as usize * NODES * SENSORS.len();
    let mut seq = 1u64;
    let mut at = 0usize;
    while at < rows {
        let date_end = (at / day_rows + 1) * day_rows;
        let end = (at + FILE_ROWS).min(rows).min(date_end);
        let day_ms = START_MS + (at / day_rows) as i64 * 86_400_000;
        let date = chrono::DateTime::from_timestamp_millis(day_ms)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        let dir = data.join(format!("readings/date={date}"));
        std::fs::create_dir_all(&dir).unwrap();
        let first_seq = seq;
        let tmp = dir.join(".tmp.parquet.partial");
        let mut w = samos_store::parquet::ReadingsWriter::create(&tmp).unwrap();
        let mut i = at;
        while i < end {
            let n = (end - i).min(65_536);
            w.write(&batch(i, n, &trace, seq)).unwrap();
            seq += 1;
            i += n;
        }
        drop(w.finish().unwrap());
        std::fs::rename(
            &tmp,
            dir.join(format!("part-{first_seq:020}-{:020}.parquet", seq - 1)),
        )
        .unwrap();
        at = end;
    }
}
