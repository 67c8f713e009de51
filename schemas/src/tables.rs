//! The Arrow schemas of the protocol's tables — `nodes` (the registry, `nodes.json`), `events`
//! (`events.jsonl`) and `rejected` (the quarantine, `rejected.jsonl`) — as SQL sees them and
//! as PostgreSQL stores them (same columns; a test checks the DDL). JSON documents (a node's
//! configuration, an event's detail) are JSON text. Then the results `samos mine` stores —
//! `motifs`, `discords`, `window_stats` under `data/mining/` — one row set per run.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

fn time(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    )
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// `nodes`: one row per node the server has heard from.
pub fn nodes_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                text("network", false),
                text("node_id", false),
                text("functional_mode", false),
                text("severity", false),
                text("assessed_severity", true),
                text("config_xml", true),
                text("config", true),
                time("joined_at", true),
                time("last_seen", true),
                text("address", true),
                Field::new("readings_accepted", DataType::Int64, true),
                Field::new("readings_rejected", DataType::Int64, true),
            ]))
        })
        .clone()
}

/// `events`: joins, blocks, severity changes and alerts.
pub fn events_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                time("time", false),
                text("kind", false),
                text("network", false),
                text("node_id", false),
                text("detail", true),
            ]))
        })
        .clone()
}

/// `rejected`: every refused reading or message, with its reason.
pub fn rejected_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                time("time", false),
                text("client_id", false),
                text("peer", true),
                text("topic", false),
                text("reason", false),
                text("detail", true),
                text("payload", true),
                Field::new("payload_bytes", DataType::Int32, true),
            ]))
        })
        .clone()
}

/// Columns every mining result shares: which run, over what.
fn mining_fields() -> Vec<Field> {
    vec![
        text("run", false),
        time("mined_at", false),
        text("source", false),
        text("node_id", true),
        text("sensor", true),
        Field::new("window", DataType::UInt32, false),
        text("backend", false),
    ]
}

/// `motifs`: the closest pairs of windows a `samos mine` run found (rank 1 = closest).
pub fn motifs_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut f = mining_fields();
            f.extend([
                Field::new("rank", DataType::UInt32, false),
                Field::new("first_index", DataType::UInt64, false),
                time("first_time", true),
                Field::new("second_index", DataType::UInt64, false),
                time("second_time", true),
                Field::new("distance", DataType::Float64, false),
            ]);
            Arc::new(Schema::new(f))
        })
        .clone()
}

/// `discords`: the windows farthest from all others (rank 1 = most anomalous).
pub fn discords_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut f = mining_fields();
            f.extend([
                Field::new("rank", DataType::UInt32, false),
                Field::new("start_index", DataType::UInt64, false),
                time("start_time", true),
                Field::new("distance", DataType::Float64, false),
            ]);
            Arc::new(Schema::new(f))
        })
        .clone()
}

/// `stream_profiles`: the live matrix profile of each streamed sensor (`[[stream_profile]]`),
/// as the server last saved it (each second while readings arrive).
pub fn stream_profiles_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let int = |n: &str| Field::new(n, DataType::Int64, false);
            let float = |n: &str, nullable| Field::new(n, DataType::Float64, nullable);
            Arc::new(Schema::new(vec![
                text("network", false),
                text("node_id", false),
                text("sensor", false),
                int("window"),
                int("history"),
                int("windows"),
                float("score", true),
                float("max_score", false),
                float("threshold", false),
                int("discords"),
                Field::new("in_discord", DataType::Boolean, false),
                time("last_discord", true),
                time("updated", false),
                int("memory_bytes"),
            ]))
        })
        .clone()
}

/// `window_stats`: min, max, mean, std and slope (per sample) of consecutive windows.
pub fn window_stats_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut f = mining_fields();
            f.extend([
                Field::new("start_index", DataType::UInt64, false),
                time("start_time", true),
                Field::new("min", DataType::Float64, true),
                Field::new("max", DataType::Float64, true),
                Field::new("mean", DataType::Float64, true),
                Field::new("std", DataType::Float64, true),
                Field::new("slope", DataType::Float64, true),
            ]);
            Arc::new(Schema::new(f))
        })
        .clone()
}
