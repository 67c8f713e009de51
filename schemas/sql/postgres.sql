-- Samos tables in PostgreSQL (the optional sink). Created at start when missing; the same
-- columns as the Arrow/Parquet schema in schemas/src/readings.rs plus `instance`, checked by a
-- test. Several instances may load one database: a reading is identified by (instance, key).

CREATE TABLE IF NOT EXISTS readings (
    instance         text NOT NULL,                 -- the Samos instance that accepted it
    key              bigint NOT NULL,               -- WAL batch sequence × 2^20 + row: replays never duplicate
    ingest_time      timestamptz NOT NULL,
    network          text NOT NULL,
    node_id          text NOT NULL,
    country          text NOT NULL,
    district_state   text NOT NULL,
    city             text NOT NULL,
    area_description text NOT NULL,
    area             text NOT NULL,
    building         text NOT NULL,
    room             text NOT NULL,
    sensor           text NOT NULL,
    data_type        text NOT NULL,
    units            text NOT NULL,
    value            double precision,
    raw              text,
    severity         text NOT NULL,
    qos              smallint NOT NULL,
    client_id        text NOT NULL,
    PRIMARY KEY (instance, key)
);
-- Rows arrive in time order, so a BRIN index serves time ranges at almost no cost to loading.
-- (A btree on (node_id, sensor, ingest_time) halves the COPY rate; add one if your queries
-- need it.)
CREATE INDEX IF NOT EXISTS readings_time ON readings USING brin (ingest_time);

-- The node registry (upserted from data/nodes.json whenever it changes), and the event log and
-- quarantine (followed from data/events.jsonl and data/rejected.jsonl by byte offset, checkpointed
-- in the same transaction as the rows, so each line arrives exactly once).
CREATE TABLE IF NOT EXISTS nodes (
    network            text NOT NULL,
    node_id            text NOT NULL,
    functional_mode    text NOT NULL,
    severity           text NOT NULL,
    assessed_severity  text,
    config_xml         text,
    config             jsonb,
    joined_at          timestamptz,
    last_seen          timestamptz,
    address            text,
    readings_accepted  bigint,
    readings_rejected  bigint,
    instance           text,                        -- the instance that heard from it last
    PRIMARY KEY (network, node_id)
);
CREATE TABLE IF NOT EXISTS events (
    time             timestamptz NOT NULL,
    kind             text NOT NULL,
    network          text NOT NULL,
    node_id          text NOT NULL,
    detail           jsonb,
    instance         text
);
CREATE INDEX IF NOT EXISTS events_node_time ON events (network, node_id, time);
CREATE TABLE IF NOT EXISTS rejected (
    time             timestamptz NOT NULL,
    client_id        text NOT NULL,
    peer             text,
    topic            text NOT NULL,
    reason           text NOT NULL,
    detail           text,
    payload          text,
    payload_bytes    integer,
    instance         text
);
CREATE INDEX IF NOT EXISTS rejected_time ON rejected (time);

-- How far each data directory's sinks have loaded its WAL (`readings:{store id}`: a WAL
-- sequence) or its files (`events:{store id}`, `rejected:{store id}`: a byte offset); updated
-- in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS samos_sink_checkpoint (
    sink             text PRIMARY KEY,
    wal_seq          bigint NOT NULL
);

-- Which data directory (its WAL's store id) loads each instance's rows. An instance id is bound
-- to one store for good: its keys count that WAL's sequences, so another data directory under
-- the same instance id is refused rather than let ON CONFLICT drop its rows.
CREATE TABLE IF NOT EXISTS samos_instances (
    instance         text PRIMARY KEY,
    store_id         text NOT NULL
);

-- The one data directory of a database from before several instances (its rows get that
-- instance's id when it next connects; see server/src/ingest/postgres.rs).
CREATE TABLE IF NOT EXISTS samos_store (
    store_id         text PRIMARY KEY
);
