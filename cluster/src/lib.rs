//! Distributed SQL over a Samos dataset on Apache Ballista: `samos cluster scheduler`,
//! `samos cluster executor` and `samos sql --cluster df://host:port`.
//!
//! Ballista plans on its scheduler and runs stages on its executors; what travels between
//! them is DataFusion's protobuf form of plans, which knows DataFusion's own table kinds
//! (listing tables over Parquet, values, views), not Samos's providers. So the client resolves
//! Samos's tables into those kinds before it sends a query ([`client`]):
//!
//! - `readings` is a view: the union, per instance and per UTC date, of a listing table over
//!   exactly the Parquet files of that instance's newest Delta snapshot on that date (never a
//!   directory listing: a compacted file's inputs stay on the store until vacuum), with the
//!   `date` and `instance` columns as constants. A filter on `date` or `instance` folds whole
//!   branches away at planning; filters on `ingest_time`, `node_id`, … prune files and row
//!   groups by their statistics on the executors.
//! - `nodes`, `events` and `rejected` are read by the client (every instance's, as
//!   `samos sql` reads them) and sent as values: small, and current as of the query.
//! - The views (`latest_readings`, `hourly_readings`) are defined over those, as in
//!   `samos-analytics`.
//!
//! What a cluster query does not see: readings still only in an instance's WAL (its last
//! seconds, before a Parquet file is committed) and the `samos mine` result tables (files in a
//! data directory). The scheduler and executors ([`process`]) are Ballista's own, started by
//! Samos with the dataset's object store registered (credentials from their `AWS_*`
//! environment), so the stock protocol and any Ballista client work against them.
//!
//! This crate sits above `samos-analytics` (it reuses the table definitions) and below the
//! server (whose HTTP API runs a query here with `engine=cluster`) and the `samos` binary.

pub mod client;
pub mod process;

pub use client::connect;
pub use samos_lake::Dataset;

/// Why a cluster could not be started or queried.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Ballista: {0}")]
    Ballista(#[from] ballista_core::error::BallistaError),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Lake(#[from] samos_lake::LakeError),
    #[error("{0}")]
    Query(#[from] samos_analytics::QueryError),
    #[error(
        "a cluster reads the history on object storage, and {0} keeps its history locally: \
         set storage.object_store on the server (or pass --dataset)"
    )]
    LocalHistory(String),
}
