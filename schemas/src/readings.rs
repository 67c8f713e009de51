//! The `readings` table: one row per accepted reading, the same in the WAL (Arrow IPC), in
//! Parquet (`readings/date=YYYY-MM-DD/*.parquet`, Hive-partitioned by the UTC date of
//! `ingest_time`) and, later, in PostgreSQL.
//!
//! | column | type | meaning |
//! | --- | --- | --- |
//! | `ingest_time` | timestamp(ms, UTC) | when Samos accepted the reading |
//! | `network`, `node_id` | dictionary utf8 | from the topic (= the node's document) |
//! | `country` … `room` | dictionary utf8 | the seven location levels |
//! | `sensor` | dictionary utf8 | the sensor's `dataName` (last topic level) |
//! | `data_type`, `units` | dictionary utf8 | as the node declared them |
//! | `value` | float64, nullable | the numeric value (booleans 0/1); null for text |
//! | `raw` | utf8, nullable | the value as sent, where it is not numeric |
//! | `severity` | dictionary utf8 | the node's reported severity mode at that time |
//! | `qos` | uint8 | QoS of the PUBLISH |
//! | `client_id` | dictionary utf8 | the MQTT client that sent it |
//! | `key` | uint64 | idempotency key: WAL batch sequence × 2^20 + row, stable across replays |

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Rows per WAL batch are below this, so `key` = sequence × ROWS_PER_BATCH + row is unique.
pub const ROWS_PER_BATCH: u64 = 1 << 20;

/// Column names of the location levels, in topic order.
pub const LOCATION_COLUMNS: [&str; 7] = [
    "country",
    "district_state",
    "city",
    "area_description",
    "area",
    "building",
    "room",
];

fn dict(name: &str) -> Field {
    Field::new(
        name,
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    )
}

/// The Arrow schema of `readings`.
pub fn readings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new(
                    "ingest_time",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                dict("network"),
                dict("node_id"),
            ];
            fields.extend(LOCATION_COLUMNS.iter().map(|c| dict(c)));
            fields.extend([
                dict("sensor"),
                dict("data_type"),
                dict("units"),
                Field::new("value", DataType::Float64, true),
                Field::new("raw", DataType::Utf8, true),
                dict("severity"),
                Field::new("qos", DataType::UInt8, false),
                dict("client_id"),
                Field::new("key", DataType::UInt64, false),
            ]);
            Arc::new(Schema::new(fields))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_stable() {
        let s = readings_schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "ingest_time",
                "network",
                "node_id",
                "country",
                "district_state",
                "city",
                "area_description",
                "area",
                "building",
                "room",
                "sensor",
                "data_type",
                "units",
                "value",
                "raw",
                "severity",
                "qos",
                "client_id",
                "key"
            ]
        );
    }
}
