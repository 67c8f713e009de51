-- Samos tables in PostgreSQL (the optional sink). Created at start when missing; the same
-- columns as the Arrow/Parquet schema in schemas/src/readings.rs, checked by a test.

CREATE TABLE IF NOT EXISTS readings (
    key              bigint PRIMARY KEY,            -- WAL batch sequence × 2^20 + row: replays never duplicate
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
    client_id        text NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_node_sensor_time ON readings (node_id, sensor, ingest_time);

-- The node registry, events and quarantine (filled by later versions of the sink).
CREATE TABLE IF NOT EXISTS nodes (
    network          text NOT NULL,
    node_id          text NOT NULL,
    functional_mode  text NOT NULL,
    severity         text NOT NULL,
    config_xml       text,
    config           jsonb,
    last_seen        timestamptz,
    address          text,
    PRIMARY KEY (network, node_id)
);
CREATE TABLE IF NOT EXISTS events (
    time             timestamptz NOT NULL,
    kind             text NOT NULL,
    network          text NOT NULL,
    node_id          text NOT NULL,
    detail           jsonb
);
CREATE TABLE IF NOT EXISTS rejected (
    time             timestamptz NOT NULL,
    client_id        text NOT NULL,
    topic            text NOT NULL,
    reason           text NOT NULL,
    detail           text,
    payload          text
);

-- How far each sink has loaded the WAL; updated in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS samos_sink_checkpoint (
    sink             text PRIMARY KEY,
    wal_seq          bigint NOT NULL
);
