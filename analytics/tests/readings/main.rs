//! `readings` over stores laid out as the engine lays them out, one test binary (one link of
//! DataFusion instead of one per file): `store` — Parquet files, WAL records, compaction,
//! pruning by date; `series` — queries naming nodes and sensors read only those series' rows.
//! Run one module with `cargo test -p samos-analytics --test readings series::`.

mod series;
mod store;
