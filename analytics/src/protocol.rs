//! The protocol's tables — `nodes`, `events`, `rejected` — read from the files the server keeps
//! (`nodes.json`, `events.jsonl`, `rejected.jsonl`) on every scan, so a long-lived session
//! (the HTTP API) always answers from the current files. A line still being written (no
//! newline yet) or torn by a crash is left out.
//!
//! Where instances share an object-store dataset, the other instances' copies of their files
//! (mirrored every second, see `samos_lake::protocol`) are read beside this instance's own:
//! `events` and `rejected` are the union, and `nodes` has each node once, as the instance
//! that heard from it last recorded it. Every row names its `instance`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Int32Builder, Int64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use samos_lake::DatasetHandle;
use samos_store::layout::{EVENTS_FILE, NODES_FILE, REJECTED_FILE};

use crate::readings::INSTANCE_COLUMN;
use serde_json::Value;

/// Which file a table reads.
#[derive(Debug, Clone, Copy)]
pub enum ProtocolFile {
    Nodes,
    Events,
    Rejected,
}

impl ProtocolFile {
    pub const ALL: [ProtocolFile; 3] = [Self::Nodes, Self::Events, Self::Rejected];

    pub fn table_name(self) -> &'static str {
        match self {
            Self::Nodes => "nodes",
            Self::Events => "events",
            Self::Rejected => "rejected",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Self::Nodes => NODES_FILE,
            Self::Events => EVENTS_FILE,
            Self::Rejected => REJECTED_FILE,
        }
    }

    /// The stored columns and `instance`.
    fn schema(self) -> SchemaRef {
        let stored = match self {
            Self::Nodes => samos_schemas::tables::nodes_schema(),
            Self::Events => samos_schemas::tables::events_schema(),
            Self::Rejected => samos_schemas::tables::rejected_schema(),
        };
        let fields = stored.fields().iter().cloned().chain([Arc::new(Field::new(
            INSTANCE_COLUMN,
            DataType::Utf8,
            false,
        ))]);
        Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }

    /// The folder of the dataset the other instances' copies are in (logs only).
    fn folder(self) -> Option<&'static str> {
        samos_lake::protocol::LOGS
            .iter()
            .find(|(file, _)| *file == self.file_name())
            .map(|(_, folder)| *folder)
    }

    /// The JSON key each column is read from (times are stored as milliseconds).
    fn key(self, column: &str) -> String {
        match (self, column) {
            (Self::Nodes, "joined_at" | "last_seen") => format!("{column}_ms"),
            (_, "time") => "time_ms".into(),
            _ => column.into(),
        }
    }
}

/// One of the protocol's tables over a data directory.
#[derive(Debug)]
pub struct ProtocolTable {
    file: ProtocolFile,
    path: PathBuf,
    /// The data directory's instance.
    instance: String,
    /// The shared dataset, where there is one.
    lake: Option<Arc<DatasetHandle>>,
}

impl ProtocolTable {
    pub fn new(
        data_dir: &Path,
        instance: &str,
        lake: Option<Arc<DatasetHandle>>,
        file: ProtocolFile,
    ) -> ProtocolTable {
        ProtocolTable {
            file,
            path: data_dir.join(file.file_name()),
            instance: instance.to_owned(),
            lake,
        }
    }

    /// Every instance's objects, each with its `instance`.
    async fn objects(&self) -> Result<Vec<Value>> {
        let mut objects = tagged(self.local_objects()?, &self.instance);
        let Some(lake) = &self.lake else {
            return Ok(objects);
        };
        let external = |e: samos_lake::LakeError| DataFusionError::External(e.into());
        let store = lake.store().map_err(external)?;
        let me = Some(self.instance.as_str());
        match self.file.folder() {
            None => {
                for (instance, bytes) in samos_lake::protocol::registries(store.as_ref(), me)
                    .await
                    .map_err(external)?
                {
                    match serde_json::from_slice(&bytes) {
                        Ok(Value::Array(nodes)) => objects.extend(tagged(nodes, &instance)),
                        _ => {
                            tracing::warn!(%instance, "another instance's registry is not a JSON array; left out");
                        }
                    }
                }
                Ok(newest_per_node(objects))
            }
            Some(folder) => {
                for (instance, bytes) in samos_lake::protocol::logs(store.as_ref(), folder, me)
                    .await
                    .map_err(external)?
                {
                    let lines = json_lines(&String::from_utf8_lossy(&bytes), &instance);
                    objects.extend(tagged(lines, &instance));
                }
                Ok(objects)
            }
        }
    }

    /// This data directory's file's objects: the registry is one JSON array, the logs one
    /// object a line.
    fn local_objects(&self) -> Result<Vec<Value>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DataFusionError::External(
                    format!("cannot read {}: {e}", self.path.display()).into(),
                ));
            }
        };
        Ok(match self.file {
            ProtocolFile::Nodes => match serde_json::from_str(&text) {
                Ok(Value::Array(nodes)) => nodes,
                _ => {
                    return Err(DataFusionError::External(
                        format!("{} is not a JSON array", self.path.display()).into(),
                    ));
                }
            },
            _ => json_lines(&text, &self.path.display().to_string()),
        })
    }

    async fn batch(&self) -> Result<RecordBatch> {
        if self.lake.is_none()
            && !matches!(self.file, ProtocolFile::Nodes)
            && let Some(batch) = self.decoded_log()?
        {
            return Ok(batch);
        }
        self.value_batch().await
    }

    /// The table read as JSON values: every file, every instance's copies.
    async fn value_batch(&self) -> Result<RecordBatch> {
        let schema = self.file.schema();
        let objects = self.objects().await?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let key = self.file.key(field.name());
            let values = objects.iter().map(|o| o.get(&key).filter(|v| !v.is_null()));
            let column: ArrayRef = match field.data_type() {
                DataType::Timestamp(_, _) => {
                    let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
                    values.for_each(|v| b.append_option(v.and_then(Value::as_i64)));
                    finish(b)
                }
                DataType::Int64 => {
                    let mut b = Int64Builder::new();
                    values.for_each(|v| b.append_option(v.and_then(Value::as_i64)));
                    finish(b)
                }
                DataType::Int32 => {
                    let mut b = Int32Builder::new();
                    values.for_each(|v| {
                        b.append_option(v.and_then(Value::as_i64).and_then(|n| n.try_into().ok()));
                    });
                    finish(b)
                }
                _ => {
                    // Text as it is; any other JSON (a configuration, a detail) as JSON text.
                    let mut b = StringBuilder::new();
                    let mut missing = false;
                    values.for_each(|v| match v {
                        Some(Value::String(s)) => b.append_value(s),
                        Some(other) => b.append_value(other.to_string()),
                        None if field.is_nullable() => b.append_null(),
                        None => {
                            missing = true;
                            b.append_value("");
                        }
                    });
                    if missing {
                        // Read as empty text rather than failing every query on the table.
                        tracing::warn!(file = %self.path.display(), column = %field.name(), "entries without a required field");
                    }
                    finish(b)
                }
            };
            columns.push(column);
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

impl ProtocolTable {
    /// This data directory's log (`events.jsonl`, `rejected.jsonl`) decoded straight into
    /// Arrow: its complete lines through arrow-json, keys mapped to columns, times cast to
    /// timestamps. 100,000 refusals take some 30 ms this way against 0.45 s as JSON values.
    /// `None` where a line does not fit (one torn by a crash, a JSON object where the table
    /// keeps text, a required key missing): `batch` then reads the log value by value, which
    /// leaves such lines out or keeps their JSON as text, and says so.
    fn decoded_log(&self) -> Result<Option<RecordBatch>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(DataFusionError::External(
                    format!("cannot read {}: {e}", self.path.display()).into(),
                ));
            }
        };
        // A line still being written (no newline yet) is not part of the table.
        let complete = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(&bytes[..0], |end| &bytes[..=end]);
        let schema = self.file.schema();
        let stored = &schema.fields()[..schema.fields().len() - 1];
        let Some(mut columns) = decode_json_lines(complete, stored, |name| self.file.key(name))?
        else {
            return Ok(None);
        };
        let rows = columns.first().map_or(0, |c| c.len());
        columns.push(Arc::new(StringArray::from(vec![
            self.instance.as_str();
            rows
        ])));
        Ok(RecordBatch::try_new(schema, columns).ok())
    }
}

/// JSON lines (each complete, one object a line) decoded by arrow-json into one column per
/// field of `fields`, read from the key `key(field name)`; timestamps are read as integers
/// (epoch milliseconds) and cast. `None` where a line does not fit the fields (a torn line, a
/// JSON object where a field is text, a required key missing).
pub(crate) fn decode_json_lines(
    complete: &[u8],
    fields: &[FieldRef],
    key: impl Fn(&str) -> String,
) -> Result<Option<Vec<ArrayRef>>> {
    let keys: Vec<Field> = fields
        .iter()
        .map(|f| {
            let data_type = match f.data_type() {
                DataType::Timestamp(_, _) => DataType::Int64,
                other => other.clone(),
            };
            Field::new(key(f.name()), data_type, true)
        })
        .collect();
    let keys = Arc::new(Schema::new(keys));
    let Ok(mut decoder) = ReaderBuilder::new(keys.clone())
        .with_batch_size(64 * 1024)
        .build_decoder()
    else {
        return Ok(None);
    };
    let mut batches = Vec::new();
    let mut rest = complete;
    while !rest.is_empty() {
        match decoder.decode(rest) {
            // A full batch: take it and go on.
            Ok(0) => match decoder.flush() {
                Ok(Some(batch)) => batches.push(batch),
                _ => return Ok(None),
            },
            Ok(read) => rest = &rest[read..],
            Err(_) => return Ok(None),
        }
    }
    match decoder.flush() {
        Ok(Some(batch)) => batches.push(batch),
        Ok(None) => {}
        Err(_) => return Ok(None),
    }
    let decoded = concat_batches(&keys, &batches)?;
    let mut columns = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        let Ok(column) = cast(decoded.column(i), field.data_type()) else {
            return Ok(None);
        };
        columns.push(column);
    }
    Ok(Some(columns))
}

fn finish(mut b: impl ArrayBuilder) -> ArrayRef {
    b.finish()
}

/// The complete lines of a log that are JSON objects (`from` names it in the warning about
/// the others).
fn json_lines(text: &str, from: &str) -> Vec<Value> {
    let mut unreadable = 0usize;
    let objects = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| {
            let v = serde_json::from_str(line).ok();
            unreadable += usize::from(v.is_none());
            v
        })
        .collect();
    if unreadable > 0 {
        tracing::warn!(%from, lines = unreadable, "lines that are not JSON left out of the table");
    }
    objects
}

/// `objects` with `instance` set in each.
fn tagged(objects: Vec<Value>, instance: &str) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut o| {
            if let Value::Object(map) = &mut o {
                map.insert(INSTANCE_COLUMN.into(), Value::String(instance.to_owned()));
            }
            o
        })
        .collect()
}

/// Each node once: the record of the instance that heard from it last.
fn newest_per_node(records: Vec<Value>) -> Vec<Value> {
    let contact = |r: &Value| {
        ["last_seen_ms", "joined_at_ms"]
            .iter()
            .filter_map(|k| r.get(k).and_then(Value::as_i64))
            .max()
            .unwrap_or(i64::MIN)
    };
    let mut newest: std::collections::HashMap<(String, String), Value> = Default::default();
    for r in records {
        let key = |k: &str| {
            r.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let id = (key("network"), key("node_id"));
        match newest.get(&id) {
            Some(known) if contact(known) >= contact(&r) => {}
            _ => {
                newest.insert(id, r);
            }
        }
    }
    let mut nodes: Vec<Value> = newest.into_values().collect();
    nodes.sort_by(|a, b| {
        let key = |r: &Value| {
            (
                r.get("network").and_then(Value::as_str).map(str::to_owned),
                r.get("node_id").and_then(Value::as_str).map(str::to_owned),
            )
        };
        key(a).cmp(&key(b))
    });
    nodes
}

#[async_trait]
impl TableProvider for ProtocolTable {
    fn schema(&self) -> SchemaRef {
        self.file.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.batch().await?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn logs_skip_a_line_still_being_written_and_registry_fields_map() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(EVENTS_FILE),
            "{\"time_ms\":1000,\"kind\":\"join\",\"network\":\"n\",\"node_id\":\"CN1\",\"detail\":{\"a\":1}}\n\
             not json\n{\"time_ms\":2000,\"kind\":\"blo",
        )
        .unwrap();
        let events = ProtocolTable::new(dir.path(), "i", None, ProtocolFile::Events)
            .batch()
            .await
            .unwrap();
        assert_eq!(events.num_rows(), 1);
        let detail = events.column_by_name("detail").unwrap();
        let detail = detail.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(detail.value(0), "{\"a\":1}");

        std::fs::write(
            dir.path().join(NODES_FILE),
            r#"[{"network":"n","node_id":"CN1","functional_mode":"active","severity":"normalMode",
                "assessed_severity":"normalMode","config_xml":null,"config":null,"refusal":[],
                "joined_at_ms":5000,"last_seen_ms":null,"address":"127.0.0.1:5",
                "readings_accepted":7,"readings_rejected":1}]"#,
        )
        .unwrap();
        let nodes = ProtocolTable::new(dir.path(), "i", None, ProtocolFile::Nodes)
            .batch()
            .await
            .unwrap();
        assert_eq!(nodes.num_rows(), 1);
        assert_eq!(nodes.column_by_name("config").unwrap().null_count(), 1);
        assert_eq!(nodes.column_by_name("last_seen").unwrap().null_count(), 1);
        assert_eq!(nodes.column_by_name("joined_at").unwrap().null_count(), 0);

        let rejected = ProtocolTable::new(dir.path(), "i", None, ProtocolFile::Rejected)
            .batch()
            .await
            .unwrap();
        assert_eq!(rejected.num_rows(), 0, "no file: an empty table");
    }

    #[tokio::test]
    async fn a_log_decoded_into_arrow_equals_it_read_as_values() {
        let dir = tempfile::tempdir().unwrap();
        let table = ProtocolTable::new(dir.path(), "i", None, ProtocolFile::Rejected);
        let mut log = String::new();
        for i in 0..70_000 {
            // Optional keys missing or null, keys the table does not know, unicode.
            let line = match i % 3 {
                0 => format!(
                    r#"{{"time_ms":{i},"client_id":"N{i}","peer":"127.0.0.1:1","topic":"t/ü","reason":"unknown_node","detail":"d","payload":"{{}}","payload_bytes":2}}"#
                ),
                1 => format!(
                    r#"{{"time_ms":{i},"client_id":"N{i}","topic":"t","reason":"foreign_node","detail":null,"extra":[1,2]}}"#
                ),
                _ => format!(
                    r#"{{"reason":"disk_full","time_ms":{i},"topic":"t","client_id":"X","payload_bytes":null}}"#
                ),
            };
            log.push_str(&line);
            log.push('\n');
        }
        // A line still being written is left out by both.
        log.push_str(r#"{"time_ms":9,"client"#);
        std::fs::write(dir.path().join(REJECTED_FILE), &log).unwrap();
        let decoded = table.decoded_log().unwrap().expect("the fast path");
        assert_eq!(
            decoded.num_rows(),
            70_000,
            "more rows than one decoder batch"
        );
        assert_eq!(decoded, table.value_batch().await.unwrap());

        // A line torn in the middle (a crash, then more lines) or a JSON object where the
        // table keeps text: read value by value, the torn line left out.
        for bad in [
            "{\"time_ms\":1,\"clie\n",
            "{\"time_ms\":1,\"client_id\":\"N\",\"topic\":\"t\",\"reason\":\"r\",\"detail\":{\"a\":1}}\n",
        ] {
            let lines: Vec<&str> = log.split_inclusive('\n').collect();
            let text = format!("{}{bad}{}", lines[..10].concat(), lines[10..].concat());
            std::fs::write(dir.path().join(REJECTED_FILE), &text).unwrap();
            assert!(table.decoded_log().unwrap().is_none(), "{bad}");
            let rows = table.batch().await.unwrap().num_rows();
            assert_eq!(
                rows,
                if bad.contains("clie\n") {
                    70_000
                } else {
                    70_001
                }
            );
        }
    }
}
