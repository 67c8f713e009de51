//! The PostgreSQL sink: follows the WAL from its own checkpoint and loads each batch with
//! binary COPY, so an outage only delays rows.
//!
//! Each batch is copied into `readings` (or, on a replay, into a temporary staging table and
//! inserted with `ON CONFLICT (instance, key) DO NOTHING`), and the sink's checkpoint row is
//! advanced — all in one transaction. A replay after a crash or an outage therefore never
//! duplicates a row, and a row is never skipped. While the sink is behind, WAL segments it
//! still needs are kept.
//!
//! Several instances may load one database. Each row carries its `instance`, and
//! `(instance, key)` is the primary key: the keys count each WAL's own sequences, so another
//! instance's row is never mistaken for a replay. An instance id is bound to the data
//! directory (store id) that first loaded it (`samos_instances`); another data directory under
//! the same id is refused. Checkpoints are per data directory (`readings:{store id}`). A
//! database from before several instances (one data directory, no `instance` column) is
//! migrated in one transaction when that data directory connects: its rows get its instance
//! id.
//!
//! The same sink mirrors the protocol's files once a second: `nodes.json` is upserted into
//! `nodes` whenever it changed, and `events.jsonl` / `rejected.jsonl` are followed by byte
//! offset into `events` / `rejected`, the offset checkpointed in the rows' transaction.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Float64Array, StringArray, TimestampMillisecondArray, UInt8Array, UInt64Array,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use futures_util::pin_mut;
use samos_store::layout;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tracing::{info, warn};

use super::log_tail::LogTail;
use super::wal::WalTail;
use super::watermark::Watermark;
use crate::metrics::Metrics;
use crate::refusal::Refusal;

/// Columns in COPY order, with their PostgreSQL types.
const COLUMNS: [(&str, Type); 20] = [
    ("instance", Type::TEXT),
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
    /// Highest WAL sequence loaded into PostgreSQL (gates WAL segment deletion; the batcher
    /// waits on it when the sink is too far behind).
    pub checkpoint: Arc<Watermark>,
    pub connected: std::sync::atomic::AtomicBool,
}

pub struct PostgresSink {
    pub url: String,
    pub wal_dir: PathBuf,
    /// Where `nodes.json`, `events.jsonl` and `rejected.jsonl` live.
    pub data_dir: PathBuf,
    /// Last committed WAL sequence (advanced by the batcher; the sink waits on it when idle).
    pub committed: Arc<Watermark>,
    pub state: Arc<PostgresState>,
    pub metrics: Arc<Metrics>,
    pub batch_records: usize,
    /// Rows older than this many days are deleted hourly (0: never).
    pub retention_days: u32,
    /// Identifies this data directory's WAL, whose sequences the keys and checkpoint count.
    pub store_id: String,
    /// The instance id its rows carry.
    pub instance: String,
}

/// Where one data directory's rows go: its instance id and its checkpoint rows.
#[derive(Debug, Clone)]
pub struct Loader {
    pub instance: String,
    pub store_id: String,
}

impl Loader {
    /// The checkpoint row of one of this data directory's sinks (`readings`, `events`, …).
    fn sink(&self, what: &str) -> String {
        format!("{what}:{}", self.store_id)
    }
}

/// Why a sink session ended.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    /// The instance id is loaded by another data directory: its keys count another WAL's
    /// sequences, so loading this one would silently drop rows.
    #[error(
        "the PostgreSQL database holds the rows of instance {instance:?} from another data \
         directory (store {theirs}; this one is {ours}): nothing is loaded. Give this instance \
         another instance_id, or point storage.postgres at another database"
    )]
    ForeignStore {
        instance: String,
        ours: String,
        theirs: String,
    },
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
                        if let SinkError::ForeignStore { .. } = e {
                            self.metrics.refuse(Refusal::PostgresForeignStore);
                            tracing::error!(error = %e, "PostgreSQL sink refuses the database");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            continue;
                        }
                        self.metrics.refuse(Refusal::PostgresSinkError);
                        warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "PostgreSQL sink: connection lost or failed; rows wait in the WAL");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    async fn session(&self) -> Result<(), SinkError> {
        let (mut client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(connection);
        let loader = Loader {
            instance: self.instance.clone(),
            store_id: self.store_id.clone(),
        };
        let checkpoint = prepare(&mut client, &loader).await?;
        self.state.checkpoint.set(checkpoint);
        self.state.connected.store(true, Relaxed);
        info!(checkpoint, "PostgreSQL sink connected");
        let mut files = FileFollower::new(&client, &self.data_dir, &loader).await?;
        let mut retention_checked: Option<std::time::Instant> = None;
        let mut tail = WalTail::new(&self.wal_dir, checkpoint);
        loop {
            if conn.is_finished() {
                // Surface the connection's error through a query.
                client.simple_query("SELECT 1").await?;
            }
            let committed = self.committed.get();
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
            if files.due() {
                files.load(&mut client, &self.metrics).await?;
            }
            if self.retention_days > 0
                && retention_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
            {
                retention_checked = Some(std::time::Instant::now());
                apply_retention(&client, self.retention_days).await?;
            }
            let Some(last) = records.last().map(|r| r.seq) else {
                // Idle: wake on the next commit, or within a second to follow the JSON files.
                let next = self.committed.changed_from(committed);
                let _ = tokio::time::timeout(Duration::from_secs(1), next).await;
                continue;
            };
            let mut batches = Vec::new();
            for record in &records {
                // The record passed its checksum, so this cannot happen short of a bug; it is
                // logged and counted, and skipped rather than blocking the sink forever.
                match samos_store::record::decode_batches(&record.payload) {
                    Ok(b) => batches.extend(b),
                    Err(e) => {
                        self.metrics.refuse(Refusal::PostgresUndecodableBatch);
                        tracing::error!(seq = record.seq, error = %e, "undecodable WAL batch skipped by the PostgreSQL sink");
                    }
                }
            }
            let rows = load(&mut client, &loader, &batches, last).await?;
            self.state.checkpoint.set(last);
            self.metrics.postgres_rows.fetch_add(rows, Relaxed);
        }
    }
}

/// Creates the tables (when missing), migrates a database from before several instances,
/// binds the instance id to this data directory, and creates this session's staging table;
/// returns the sink's checkpoint (0 when it has loaded nothing yet).
pub async fn prepare(
    client: &mut tokio_postgres::Client,
    loader: &Loader,
) -> Result<u64, SinkError> {
    client.batch_execute(samos_schemas::POSTGRES_DDL).await?;
    migrate_single_store(client, loader).await?;
    client
        .execute(
            "INSERT INTO samos_instances (instance, store_id) VALUES ($1, $2) \
             ON CONFLICT (instance) DO NOTHING",
            &[&loader.instance, &loader.store_id],
        )
        .await?;
    let theirs: String = client
        .query_one(
            "SELECT store_id FROM samos_instances WHERE instance = $1",
            &[&loader.instance],
        )
        .await?
        .get(0);
    if theirs != loader.store_id {
        return Err(SinkError::ForeignStore {
            instance: loader.instance.clone(),
            ours: loader.store_id.clone(),
            theirs,
        });
    }
    client
        .batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS readings_staging (LIKE readings) ON COMMIT DELETE ROWS",
        )
        .await?;
    let row = client
        .query_opt(
            "SELECT wal_seq FROM samos_sink_checkpoint WHERE sink = $1",
            &[&loader.sink("readings")],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// A database from before several instances has no `instance` column and one data directory
/// (`samos_store`). When that data directory connects, its rows get its instance id, the key
/// becomes `(instance, key)` and its checkpoints are renamed, in one transaction (serialised
/// between instances starting at once by an advisory lock). Another data directory cannot
/// tell whose rows they are and is refused.
async fn migrate_single_store(
    client: &mut tokio_postgres::Client,
    loader: &Loader,
) -> Result<(), SinkError> {
    const HAS_INSTANCE: &str = "SELECT 1 FROM information_schema.columns WHERE \
         table_schema = current_schema() AND table_name = 'readings' AND column_name = 'instance'";
    if client.query_opt(HAS_INSTANCE, &[]).await?.is_some() {
        return Ok(());
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('samos-instances'))",
        &[],
    )
    .await?;
    if tx.query_opt(HAS_INSTANCE, &[]).await?.is_some() {
        return Ok(tx.commit().await?);
    }
    let owner: Option<String> = tx
        .query_opt("SELECT store_id FROM samos_store LIMIT 1", &[])
        .await?
        .map(|r| r.get(0));
    if let Some(theirs) = owner.filter(|o| *o != loader.store_id) {
        return Err(SinkError::ForeignStore {
            instance: loader.instance.clone(),
            ours: loader.store_id.clone(),
            theirs,
        });
    }
    tx.batch_execute(
        "ALTER TABLE readings ADD COLUMN instance text; \
         ALTER TABLE nodes ADD COLUMN IF NOT EXISTS instance text; \
         ALTER TABLE events ADD COLUMN IF NOT EXISTS instance text; \
         ALTER TABLE rejected ADD COLUMN IF NOT EXISTS instance text",
    )
    .await?;
    let rows = tx
        .execute("UPDATE readings SET instance = $1", &[&loader.instance])
        .await?;
    for table in ["nodes", "events", "rejected"] {
        tx.execute(
            &format!("UPDATE {table} SET instance = $1 WHERE instance IS NULL"),
            &[&loader.instance],
        )
        .await?;
    }
    tx.batch_execute(
        "ALTER TABLE readings ALTER COLUMN instance SET NOT NULL; \
         ALTER TABLE readings DROP CONSTRAINT readings_pkey; \
         ALTER TABLE readings ADD PRIMARY KEY (instance, key)",
    )
    .await?;
    tx.execute(
        "UPDATE samos_sink_checkpoint SET sink = sink || ':' || $1 \
         WHERE sink IN ('readings', 'events', 'rejected')",
        &[&loader.store_id],
    )
    .await?;
    tx.execute(
        "INSERT INTO samos_instances (instance, store_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&loader.instance, &loader.store_id],
    )
    .await?;
    tx.commit().await?;
    info!(rows, instance = %loader.instance, "PostgreSQL database migrated to several instances: its rows are this instance's");
    Ok(())
}

/// Loads batches in one transaction and moves the checkpoint to `through` (a WAL sequence);
/// returns the rows loaded. Public for the COPY benchmark.
///
/// The rows are binary-COPYed straight into `readings`. Since the checkpoint moves in the same
/// transaction, a group is normally loaded once; should a key be there already (a replay:
/// the checkpoint row lost), the group is loaded again through the staging table with
/// `ON CONFLICT (instance, key) DO NOTHING`, so a replay never duplicates a row.
pub async fn load(
    client: &mut tokio_postgres::Client,
    loader: &Loader,
    batches: &[RecordBatch],
    through: u64,
) -> Result<u64, tokio_postgres::Error> {
    match copy_into(client, loader, "readings", batches, through).await {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            info!(
                through,
                "PostgreSQL already holds some of these rows (a replay): skipping them"
            );
            copy_into(client, loader, "readings_staging", batches, through).await
        }
        other => other,
    }
}

async fn copy_into(
    client: &mut tokio_postgres::Client,
    loader: &Loader,
    table: &str,
    batches: &[RecordBatch],
    through: u64,
) -> Result<u64, tokio_postgres::Error> {
    let types: Vec<Type> = COLUMNS.iter().map(|(_, t)| t.clone()).collect();
    let copy_sql = format!(
        "COPY {table} ({}) FROM STDIN BINARY",
        COLUMNS.map(|(c, _)| c).join(", ")
    );
    let tx = client.transaction().await?;
    let sink = tx.copy_in(&copy_sql).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut rows = 0u64;
    for batch in batches {
        rows += write_batch(writer.as_mut(), &loader.instance, batch).await?;
    }
    writer.finish().await?;
    if table == "readings_staging" {
        tx.execute(
            "INSERT INTO readings SELECT * FROM readings_staging ON CONFLICT (instance, key) DO NOTHING",
            &[],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO samos_sink_checkpoint (sink, wal_seq) VALUES ($1, $2) \
         ON CONFLICT (sink) DO UPDATE SET wal_seq = EXCLUDED.wal_seq",
        &[&loader.sink("readings"), &(through as i64)],
    )
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// The keys and values of a dictionary column, looked up once per batch.
fn dictionary(batch: &RecordBatch, column: usize) -> (&[i32], &StringArray) {
    let d = batch.column(column).as_dictionary::<Int32Type>();
    let values = d
        .values()
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8 dictionary");
    (d.keys().values(), values)
}

async fn write_batch(
    mut writer: std::pin::Pin<&mut BinaryCopyInWriter>,
    instance: &str,
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
    // network … units (1–12), severity (15), client id (17): COPY order.
    let dicts: Vec<(&[i32], &StringArray)> = (1..=12)
        .chain([15, 17])
        .map(|c| dictionary(batch, c))
        .collect();
    let mut text: [&str; 14] = [""; 14];
    for row in 0..batch.num_rows() {
        let k = key.value(row) as i64;
        let t = chrono::DateTime::from_timestamp_millis(time.value(row)).expect("valid time");
        for (slot, (keys, values)) in text.iter_mut().zip(&dicts) {
            *slot = values.value(keys[row] as usize);
        }
        let v = (!value.is_null(row)).then(|| value.value(row));
        let r = (!raw.is_null(row)).then(|| raw.value(row));
        let q = i16::from(qos.value(row));
        let [n, id, c0, c1, c2, c3, c4, c5, c6, se, dt, un, sev, client] = &text;
        let values: [&(dyn ToSql + Sync); 20] = [
            &instance, &k, &t, n, id, c0, c1, c2, c3, c4, c5, c6, se, dt, un, &v, &r, sev, &q,
            client,
        ];
        writer.as_mut().write(&values).await?;
    }
    Ok(batch.num_rows() as u64)
}

/// Deletes rows from before the retention (whole UTC days, as the Parquet partitions).
async fn apply_retention(
    client: &tokio_postgres::Client,
    days: u32,
) -> Result<(), tokio_postgres::Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let cutoff = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') \
                  - make_interval(days => $1)";
    let mut deleted = 0;
    for (table, column) in [
        ("readings", "ingest_time"),
        ("events", "time"),
        ("rejected", "time"),
    ] {
        deleted += client
            .execute(
                &format!("DELETE FROM {table} WHERE {column} < {cutoff}"),
                &[&days],
            )
            .await?;
    }
    if deleted > 0 {
        info!(
            rows = deleted,
            retention_days = days,
            "deleted PostgreSQL rows past the retention"
        );
    }
    Ok(())
}

/// Lines of a followed file loaded per transaction.
const LINES_PER_TRANSACTION: usize = 10_000;

/// A JSON-lines file loaded into a table by byte offset.
struct FollowedFile {
    sink: String,
    tail: LogTail,
    insert: &'static str,
}

/// Mirrors the protocol's files into `nodes`, `events` and `rejected`.
struct FileFollower {
    /// The instance id the rows carry.
    instance: String,
    nodes: PathBuf,
    /// Length and modification time of `nodes.json` when last loaded.
    nodes_seen: Option<(u64, std::time::SystemTime)>,
    logs: [FollowedFile; 2],
    last: std::time::Instant,
}

const INSERT_EVENTS: &str = "INSERT INTO events (time, kind, network, node_id, detail, instance) \
     SELECT to_timestamp((j->>'time_ms')::bigint / 1000.0), j->>'kind', j->>'network', \
            j->>'node_id', j->'detail', $2 \
     FROM unnest($1::text[]) AS l(line), LATERAL (SELECT l.line::jsonb AS j) AS x";

const INSERT_REJECTED: &str = "INSERT INTO rejected \
       (time, client_id, peer, topic, reason, detail, payload, payload_bytes, instance) \
     SELECT to_timestamp((j->>'time_ms')::bigint / 1000.0), j->>'client_id', j->>'peer', \
            j->>'topic', j->>'reason', j->>'detail', j->>'payload', \
            (j->>'payload_bytes')::integer, $2 \
     FROM unnest($1::text[]) AS l(line), LATERAL (SELECT l.line::jsonb AS j) AS x";

/// Each node's row is the record of the instance that heard from it last: an instance's
/// older record of a node that moved does not overwrite the newer one.
const UPSERT_NODES: &str = "INSERT INTO nodes (network, node_id, functional_mode, severity, \
       assessed_severity, config_xml, config, joined_at, last_seen, address, readings_accepted, \
       readings_rejected, instance) \
     SELECT n->>'network', n->>'node_id', n->>'functional_mode', n->>'severity', \
            n->>'assessed_severity', n->>'config_xml', NULLIF(n->'config', 'null'::jsonb), \
            to_timestamp((n->>'joined_at_ms')::bigint / 1000.0), \
            to_timestamp((n->>'last_seen_ms')::bigint / 1000.0), n->>'address', \
            (n->>'readings_accepted')::bigint, (n->>'readings_rejected')::bigint, $2 \
     FROM jsonb_array_elements($1::text::jsonb) AS n \
     ON CONFLICT (network, node_id) DO UPDATE SET functional_mode = EXCLUDED.functional_mode, \
       severity = EXCLUDED.severity, assessed_severity = EXCLUDED.assessed_severity, \
       config_xml = EXCLUDED.config_xml, config = EXCLUDED.config, \
       joined_at = EXCLUDED.joined_at, last_seen = EXCLUDED.last_seen, \
       address = EXCLUDED.address, readings_accepted = EXCLUDED.readings_accepted, \
       readings_rejected = EXCLUDED.readings_rejected, instance = EXCLUDED.instance \
     WHERE nodes.instance IS NOT DISTINCT FROM EXCLUDED.instance \
        OR nodes.last_seen IS NULL \
        OR EXCLUDED.last_seen >= nodes.last_seen";

/// PostgreSQL text cannot hold NUL: a quarantined payload may, so it becomes U+FFFD.
fn without_nul(json: &str) -> std::borrow::Cow<'_, str> {
    if json.contains("\\u0000") {
        json.replace("\\u0000", "\\ufffd").into()
    } else {
        json.into()
    }
}

impl FileFollower {
    async fn new(
        client: &tokio_postgres::Client,
        data_dir: &std::path::Path,
        loader: &Loader,
    ) -> Result<FileFollower, tokio_postgres::Error> {
        let mut logs = [
            FollowedFile {
                sink: loader.sink("events"),
                tail: LogTail::new(data_dir.join(layout::EVENTS_FILE), 0),
                insert: INSERT_EVENTS,
            },
            FollowedFile {
                sink: loader.sink("rejected"),
                tail: LogTail::new(data_dir.join(layout::REJECTED_FILE), 0),
                insert: INSERT_REJECTED,
            },
        ];
        for f in &mut logs {
            let row = client
                .query_opt(
                    "SELECT wal_seq FROM samos_sink_checkpoint WHERE sink = $1",
                    &[&f.sink],
                )
                .await?;
            f.tail.offset = row.map_or(0, |r| r.get::<_, i64>(0) as u64);
        }
        Ok(FileFollower {
            instance: loader.instance.clone(),
            nodes: data_dir.join(layout::NODES_FILE),
            nodes_seen: None,
            logs,
            last: std::time::Instant::now() - Duration::from_secs(10),
        })
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= Duration::from_secs(1)
    }

    async fn load(
        &mut self,
        client: &mut tokio_postgres::Client,
        metrics: &Metrics,
    ) -> Result<(), tokio_postgres::Error> {
        self.last = std::time::Instant::now();
        let seen = std::fs::metadata(&self.nodes)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        if seen.is_some() && seen != self.nodes_seen {
            // Written whole and renamed into place by the registry: never partial.
            if let Ok(text) = std::fs::read_to_string(&self.nodes) {
                client
                    .execute(
                        UPSERT_NODES,
                        &[&without_nul(&text).as_ref(), &self.instance],
                    )
                    .await?;
                self.nodes_seen = seen;
            }
        }
        for f in &mut self.logs {
            while let Some(chunk) = f.tail.read(LINES_PER_TRANSACTION, |_| {
                metrics.refuse(Refusal::PostgresUnreadableLogLine);
            }) {
                let lines: Vec<String> = chunk
                    .lines
                    .iter()
                    .map(|l| without_nul(&l.text).into_owned())
                    .collect();
                let next = chunk.next;
                let n = lines.len() as u64;
                let tx = client.transaction().await?;
                if !lines.is_empty() {
                    tx.execute(f.insert, &[&lines, &self.instance]).await?;
                }
                tx.execute(
                    "INSERT INTO samos_sink_checkpoint (sink, wal_seq) VALUES ($1, $2) \
                     ON CONFLICT (sink) DO UPDATE SET wal_seq = EXCLUDED.wal_seq",
                    &[&f.sink, &(next as i64)],
                )
                .await?;
                tx.commit().await?;
                f.tail.offset = next;
                metrics.postgres_rows.fetch_add(n, Relaxed);
            }
        }
        Ok(())
    }
}
