//! History on object storage: the `readings` table as Delta Lake tables on S3-compatible
//! storage (AWS S3, MinIO, Cloudflare R2, Garage) or a local directory, which Spark, Trino,
//! DuckDB, Polars, pandas and DataFusion read at consistent snapshots.
//!
//! ```text
//! {base}/readings/{instance}/_delta_log/{version:020}.json     commits (add/remove/txn), checkpoints
//! {base}/readings/{instance}/date=YYYY-MM-DD/part-{first}-{last}.parquet   files, by WAL range
//! {base}/protocol/{instance}/…     the instance's nodes, events and rejected (see [`protocol`])
//! ```
//!
//! Several instances share one dataset, each committing to a table of its own: a Delta table
//! has one writer, so no commit ever races another, on any store (Garage and older S3
//! gateways do not enforce the conditional writes Delta's multi-writer protocol needs), and a
//! reading's `(instance, key)` is unique because each WAL's keys are. Readers take the union
//! of the instances' tables. The server's WAL stays on its local disk and remains the
//! durability point; the table is where finished Parquet files go. [`writer::LakeWriter`] is
//! the one committer of a table (see its header for the invariants: exactly once by WAL
//! range, upload before commit, compaction and retention as transactions, one writer per
//! table). [`reader::LakeReader`] gives queries a snapshot of every table and the WAL ranges
//! each covers, so that `samos-analytics` can add the WAL tail without losing or doubling a
//! row, as it does for the local store.
//!
//! This crate sits between `samos-store` (file names, the Parquet writer) and the crates that
//! serve: it imports neither the server nor the query layer. It is async (`deltalake` and
//! `object_store` are); the server runs it on a thread of its own.

pub mod location;
pub mod protocol;
pub mod reader;
pub mod stats;
pub mod writer;

use std::path::PathBuf;

pub use deltalake;
pub use location::{Dataset, DatasetHandle, TableLocation};
pub use object_store;
pub use reader::LakeReader;
pub use writer::LakeWriter;

/// The partition column: the UTC date of `ingest_time`, as in the local store's directories.
pub const DATE_COLUMN: &str = "date";

/// The table property (and commit metadata) naming the table's one writer.
pub const WRITER_PROPERTY: &str = "samos.writer";

/// Why the table could not be reached, read or written.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("object store location {url}: {why}")]
    Location { url: String, why: String },
    #[error("{path}: {why}")]
    Marker { path: PathBuf, why: String },
    #[error(
        "the table {table} is written by another Samos instance (store id {owner}; this one \
         is {me}). One instance commits to a table: point this one at another location"
    )]
    OtherWriter {
        table: String,
        owner: String,
        me: String,
    },
    #[error(
        "{table} is a readings table of an older Samos (one writer, no instance folder). Move \
         its objects under {table}/<instance id>/ (the paths inside a Delta table are relative), \
         or point storage.object_store at a new prefix"
    )]
    OldLayout { table: String },
    #[error("Delta table: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("uploading {path}: {why}")]
    Upload { path: String, why: String },
    #[error("Parquet file {path}: {why}")]
    Parquet { path: String, why: String },
    #[error("the readings schema has no Delta form: {0}")]
    Schema(String),
    #[error("local file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] samos_store::parquet::ParquetError),
}

/// The (not yet loaded) table at `location`.
pub(crate) fn table_at(location: &TableLocation) -> Result<deltalake::DeltaTable, LakeError> {
    Ok(
        deltalake::DeltaTableBuilder::from_url(location.url().clone())?
            .with_storage_options(location.options().clone())
            .build()?,
    )
}
