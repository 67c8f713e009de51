//! The PostgreSQL sink: follows the WAL from its own checkpoint and loads each batch with
//! binary COPY, so an outage only delays rows.
//!
//! Each batch is copied into a temporary staging table, then inserted into `readings` with
//! `ON CONFLICT (key) DO NOTHING`, and the sink's checkpoint row is advanced — all in one
//! transaction. A replay after a crash or an outage therefore never duplicates a row, and a
//! row is never skipped. While the sink is behind, WAL segments it still needs are kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Float64Array, StringArray, TimestampMillisecondArray, UInt8Array, UInt64Array,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tracing::{info, warn};

use super::wal::WalTail;
use crate::metrics::Metrics;

const SINK: &str = "readings";

/// Columns in COPY order, with their PostgreSQL types.
const COLUMNS: [(&str, Type); 19] = [
    ("key", Type::INT8),
    ("ingest_time", Type::TIMESTAMPTZ),
    ("network", Type::TEXT),
    ("node_id", Type::TEXT),
    ("country", Type::TEXT),
    ("district_state", Type::TEXT),
    ("city", Type::TEXT),
    ("area_description", Type::TEXT),
    ("area", Type::TEXT),
    ("building", Type::TEXT),
    ("room", Type::TEXT),
    ("sensor", Type::TEXT),
    ("data_type", Type::TEXT),
    ("units", Type::TEXT),
    ("value", Type::FLOAT8),
    ("raw", Type::TEXT),
    ("severity", Type::TEXT),
    ("qos", Type::INT2),
    ("client_id", Type::TEXT),
];

/// What the sink shares with the rest of the engine.
#[derive(Debug)]
pub struct PostgresState {
    /// Highest WAL sequence loaded into PostgreSQL (gates WAL segment deletion).
    pub checkpoint: AtomicU64,
    pub connected: std::sync::atomic::AtomicBool,
}

pub struct PostgresSink {
    pub url: String,
    pub wal_dir: PathBuf,
    /// Last committed WAL sequence (advanced by the batcher).
    pub committed: Arc<AtomicU64>,
    pub state: Arc<PostgresState>,
    pub metrics: Arc<Metrics>,
    pub batch_records: usize,
}

impl PostgresSink {
    /// Runs forever on its own thread (with its own small runtime).
    pub fn run(self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("PostgreSQL sink runtime");
        rt.block_on(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match self.session().await {
                    Ok(()) => return,
                    Err(e) => {
                        self.state.connected.store(false, Relaxed);
                        self.metrics.refuse("postgres_sink_error");
                        warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "PostgreSQL sink: connection lost or failed; rows wait in the WAL");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    async fn session(&self) -> Result<(), tokio_postgres::Error> {
        let (mut client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(connection);
        client.batch_execute(samos_schemas::POSTGRES_DDL).await?;
        client
            .batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS readings_staging (LIKE readings) ON COMMIT DELETE ROWS",
            )
            .await?;
        let row = client
            .query_opt(
                "SELECT wal_seq FROM samos_sink_checkpoint WHERE sink = $1",
                &[&SINK],
            )
            .await?;
        let checkpoint = row.map_or(0, |r| r.get::<_, i64>(0) as u64);
        self.state.checkpoint.store(checkpoint, Relaxed);
        self.state.connected.store(true, Relaxed);
        info!(checkpoint, "PostgreSQL sink connected");
        let mut tail = WalTail::new(&self.wal_dir, checkpoint);
        let types: Vec<Type> = COLUMNS.iter().map(|(_, t)| t.clone()).collect();
        let copy_sql = format!(
            "COPY readings_staging ({}) FROM STDIN BINARY",
            COLUMNS.map(|(c, _)| c).join(", ")
        );
        loop {
            if conn.is_finished() {
                // Surface the connection's error through a query.
                client.simple_query("SELECT 1").await?;
            }
            let committed = self.committed.load(Relaxed);
            self.metrics
                .postgres_lag
                .store(committed.saturating_sub(tail.position), Relaxed);
            let records = match tail.read(committed, self.batch_records) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "PostgreSQL sink cannot read the WAL");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if records.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let last = records.last().expect("non-empty").seq;
            let tx = client.transaction().await?;
            let sink = tx.copy_in(&copy_sql).await?;
            let writer = BinaryCopyInWriter::new(sink, &types);
            pin_mut!(writer);
            let mut rows = 0u64;
            for record in &records {
                // The record passed its checksum, so this cannot happen short of a bug; it is
                // logged and counted, and skipped rather than blocking the sink forever.
                let batches = super::decode_record_batches(&record.payload).unwrap_or_else(|e| {
                    self.metrics.refuse("postgres_undecodable_batch");
                    tracing::error!(seq = record.seq, error = %e, "undecodable WAL batch skipped by the PostgreSQL sink");
                    Vec::new()
                });
                for batch in batches {
                    rows += write_batch(writer.as_mut(), &batch).await?;
                }
            }
            writer.finish().await?;
            tx.execute(
                "INSERT INTO readings SELECT * FROM readings_staging ON CONFLICT (key) DO NOTHING",
                &[],
            )
            .await?;
            tx.execute(
                "INSERT INTO samos_sink_checkpoint (sink, wal_seq) VALUES ($1, $2) \
                 ON CONFLICT (sink) DO UPDATE SET wal_seq = EXCLUDED.wal_seq",
                &[&SINK, &(last as i64)],
            )
            .await?;
            tx.commit().await?;
            self.state.checkpoint.store(last, Relaxed);
            self.metrics.postgres_rows.fetch_add(rows, Relaxed);
        }
    }
}

fn dict_value(batch: &RecordBatch, column: usize, row: usize) -> &str {
    let d = batch.column(column).as_dictionary::<Int32Type>();
    let values = d
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8 dictionary");
    values.value(d.keys().value(row) as usize)
}

async fn write_batch(
    mut writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    batch: &RecordBatch,
) -> Result<u64, tokio_postgres::Error> {
    let time = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .expect("ingest_time");
    let value = batch
        .column(13)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("value");
    let raw = batch
        .column(14)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("raw");
    let qos = batch
        .column(16)
        .as_any()
        .downcast_ref::<UInt8Array>()
        .expect("qos");
    let key = batch
        .column(18)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("key");
    for row in 0..batch.num_rows() {
        let k = key.value(row) as i64;
        let t = chrono::DateTime::from_timestamp_millis(time.value(row)).expect("valid time");
        let text: Vec<&str> = (1..=12).map(|c| dict_value(batch, c, row)).collect();
        let v = (!value.is_null(row)).then(|| value.value(row));
        let r = (!raw.is_null(row)).then(|| raw.value(row));
        let severity = dict_value(batch, 15, row);
        let q = i16::from(qos.value(row));
        let client = dict_value(batch, 17, row);
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&k, &t];
        for s in &text {
            values.push(s);
        }
        values.push(&v);
        values.push(&r);
        values.push(&severity);
        values.push(&q);
        values.push(&client);
        writer.as_mut().write(&values).await?;
    }
    Ok(batch.num_rows() as u64)
}
