//! SQL over a Samos data directory with DataFusion.
//!
//! Tables: `readings` (every acknowledged reading: the Hive-partitioned Parquet store, pruned
//! by `date`, plus what is still only in the WAL — see [`readings`]), `nodes`, `events` and
//! `rejected` (the protocol's files — see [`protocol`]; `readings` reads the Delta table on
//! an object store instead of the local store where the server keeps it there), `motifs`, `discords` and
//! `window_stats` (what `samos mine` stored — see [`mining`]), `stream_profiles` (the server's
//! live matrix profiles), and the views `latest_readings`
//! and `hourly_readings`. It reads what the server writes and never writes itself, so it works
//! on a data directory while the server runs and when it is stopped. It depends on
//! `samos-schemas` and `samos-store` only, and must never import the server, the tools or the
//! mining backends: the server and `samos sql` both build on it.

pub mod dictionary_groups;
pub mod functions;
pub mod mining;
pub mod output;
pub mod protocol;
pub mod readings;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

pub use datafusion;
pub use datafusion::arrow;

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The statement would change something, and this session only reads.
    #[error("only SELECT, WITH and EXPLAIN are accepted here, not {0}")]
    NotReadOnly(String),
    #[error("one statement at a time, not {0}")]
    Statements(usize),
}

/// What statements a session accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries only: SELECT, WITH … SELECT, EXPLAIN of those (the HTTP API).
    Query,
    /// Also definitions that live in the session's memory (CREATE VIEW, SET, SHOW): the
    /// command line. Nothing that writes (INSERT, COPY) in either case.
    Session,
}

/// The catalog every table is in (`samos.public.readings`).
pub const CATALOG: &str = "samos";

/// The views every session has.
pub const VIEWS: [(&str, &str); 2] = [
    (
        "latest_readings",
        "SELECT network, node_id, sensor, max(ingest_time) AS ingest_time, \
                last_value(value ORDER BY ingest_time, key) AS value, \
                last_value(raw ORDER BY ingest_time, key) AS raw, \
                last_value(CAST(units AS VARCHAR) ORDER BY ingest_time, key) AS units, \
                last_value(CAST(severity AS VARCHAR) ORDER BY ingest_time, key) AS severity, \
                count(*) AS readings \
         FROM readings GROUP BY network, node_id, sensor",
    ),
    (
        "hourly_readings",
        "SELECT date_bin(INTERVAL '1 hour', ingest_time) AS hour, network, node_id, sensor, \
                count(*) AS readings, min(value) AS min, max(value) AS max, avg(value) AS avg \
         FROM readings GROUP BY 1, 2, 3, 4",
    ),
];

/// Scan partitions of a session whose `readings` are on an object store, at least. The
/// hourly aggregate of the SQL benchmark over 10M readings in a Delta table on Garage
/// (loopback, 2 cores): 2.35 s with 2 partitions (the default here: one per core), 0.96 s with
/// 8, 0.70 s with 16; the same table on the local disk took 0.55–0.69 s with any of them.
const LAKE_SCAN_PARTITIONS: usize = 16;

/// A SQL session over one data directory.
pub struct History {
    ctx: SessionContext,
    access: Access,
}

impl History {
    /// Registers the tables and views of `data_dir` (empty tables where nothing is stored).
    /// Where the server keeps the history on an object store, `readings` reads the table it
    /// recorded in `data_dir/lake.json`, with credentials from the `AWS_*` environment.
    pub async fn open(data_dir: &Path, access: Access) -> Result<History, QueryError> {
        let lake = samos_lake::Dataset::read_marker(data_dir)
            .map_err(|e| QueryError::Io(std::io::Error::other(e)))?;
        History::open_with_lake(data_dir, access, lake).await
    }

    /// [`History::open`] with the object-store dataset given (credentials included) rather
    /// than read from the data directory; `None`: the local Parquet store.
    pub async fn open_with_lake(
        data_dir: &Path,
        access: Access,
        lake: Option<samos_lake::Dataset>,
    ) -> Result<History, QueryError> {
        let instance = instance_of(data_dir);
        // Catalog `samos` (the database name PostgreSQL clients see), schema `public`.
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, "public");
        if lake.is_some() {
            // On an object store a scan partition waits on one range GET at a time: more of
            // them keep more requests in flight (see `LAKE_SCAN_PARTITIONS`).
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            config = config.with_target_partitions(LAKE_SCAN_PARTITIONS.max(cores));
        }
        // DataFusion keeps directory listings forever by default: a long-lived session (the
        // HTTP API) would never see a new Parquet file, and rows would vanish from it once the
        // WAL that held them is freed. Files themselves never change once named, so their
        // metadata may stay cached.
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(readings::latest::LatestPerSeriesRule))
            .with_physical_optimizer_rule(Arc::new(dictionary_groups::DictionaryGroupsRule))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udf(ScalarUDF::new_from_impl(functions::UtcDateTrunc::new()));
        ctx.register_udaf(AggregateUDF::new_from_impl(
            functions::percentile::CountingPercentileCont::new(),
        ));
        ctx.register_udaf(AggregateUDF::new_from_impl(
            functions::last_value::FastLastValue::new(),
        ));
        ctx.register_udaf(AggregateUDF::new_from_impl(
            functions::min_max::FastExtreme::min(),
        ));
        ctx.register_udaf(AggregateUDF::new_from_impl(
            functions::min_max::FastExtreme::max(),
        ));
        let lake = lake.map(|d| Arc::new(samos_lake::DatasetHandle::new(d)));
        ctx.register_table(
            "readings",
            Arc::new(readings::ReadingsTable::new(
                data_dir,
                &instance,
                lake.clone(),
            )),
        )?;
        for file in protocol::ProtocolFile::ALL {
            ctx.register_table(
                file.table_name(),
                Arc::new(protocol::ProtocolTable::new(
                    data_dir,
                    &instance,
                    lake.clone(),
                    file,
                )),
            )?;
        }
        for (name, schema) in mining::tables() {
            ctx.register_table(
                name,
                Arc::new(mining::ResultTable::new(data_dir, name, schema)),
            )?;
        }
        ctx.register_table(
            "stream_profiles",
            Arc::new(mining::StreamProfilesTable::new(data_dir)),
        )?;
        for (name, query) in VIEWS {
            ctx.sql(&format!("CREATE VIEW {name} AS {query}"))
                .await?
                .collect()
                .await?;
        }
        Ok(History { ctx, access })
    }

    /// A session over tables someone else registered in `ctx` (a Ballista cluster's), with
    /// the same statement checks.
    pub fn from_context(ctx: SessionContext, access: Access) -> History {
        History { ctx, access }
    }

    /// Plans one statement, refusing what this session's [`Access`] does not allow.
    pub async fn plan(&self, sql: &str) -> Result<DataFrame, QueryError> {
        check(sql, self.access)?;
        let options = SQLOptions::new()
            .with_allow_ddl(self.access == Access::Session)
            .with_allow_dml(false)
            .with_allow_statements(self.access == Access::Session);
        Ok(self.ctx.sql_with_options(sql, options).await?)
    }

    /// Runs one statement and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self.plan(sql).await?.collect().await?)
    }

    /// The DataFusion session, for callers that build queries with the DataFrame API.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Tables and views with their columns (`\d` in the interactive shell), or one of them.
    pub async fn describe(&self, table: Option<&str>) -> Result<Vec<RecordBatch>, QueryError> {
        let filter = match table {
            Some(t) => format!("AND table_name = '{}'", t.replace('\'', "''")),
            None => String::new(),
        };
        let sql = format!(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_schema = 'public' {filter} ORDER BY table_name, ordinal_position"
        );
        Ok(self.ctx.sql(&sql).await?.collect().await?)
    }
}

/// The instance whose data `data_dir` holds: as the server recorded it, else as it would name
/// itself (its store id's first 12 characters), else `local` (a directory no server ran in).
fn instance_of(data_dir: &Path) -> String {
    samos_store::layout::recorded_instance(data_dir)
        .or_else(|| {
            let id = std::fs::read_to_string(
                data_dir
                    .join(samos_store::layout::WAL_DIR)
                    .join(samos_store::wal::STORE_ID_FILE),
            )
            .ok()?;
            Some(samos_store::layout::default_instance_id(id.trim()))
        })
        .unwrap_or_else(|| "local".to_owned())
}

/// Refuses what `access` does not allow, before planning, with a message naming the statement.
pub fn check(sql: &str, access: Access) -> Result<(), QueryError> {
    let statements = DFParser::parse_sql(sql)?;
    if statements.len() != 1 {
        return Err(QueryError::Statements(statements.len()));
    }
    fn allowed(s: &Statement, access: Access) -> Result<(), String> {
        match s {
            Statement::Statement(s) => match s.as_ref() {
                SqlStatement::Query(_) => Ok(()),
                SqlStatement::Explain { statement, .. } => {
                    allowed(&Statement::Statement(statement.clone()), access)
                }
                SqlStatement::CreateView(_)
                | SqlStatement::Drop { .. }
                | SqlStatement::Set(_)
                | SqlStatement::ShowTables { .. }
                | SqlStatement::ShowColumns { .. }
                | SqlStatement::ShowVariable { .. }
                    if access == Access::Session =>
                {
                    Ok(())
                }
                other => Err(first_words(&other.to_string())),
            },
            Statement::Explain(e) => allowed(&e.statement, access),
            Statement::CreateExternalTable(_) if access == Access::Session => Ok(()),
            other => Err(first_words(&other.to_string())),
        }
    }
    allowed(&statements[0], access).map_err(QueryError::NotReadOnly)
}

/// The statement's first two words, for an error message.
fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queries_pass_the_query_check() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "EXPLAIN SELECT * FROM readings",
            "EXPLAIN ANALYZE SELECT 1",
            "select count(*) from readings where date = '2026-01-01'",
        ] {
            check(ok, Access::Query).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "INSERT INTO readings VALUES (1)",
            "DELETE FROM readings",
            "DROP TABLE readings",
            "CREATE VIEW v AS SELECT 1",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN INSERT INTO readings VALUES (1)",
        ] {
            let e = check(bad, Access::Query).unwrap_err();
            assert!(matches!(e, QueryError::NotReadOnly(_)), "{bad}: {e}");
        }
        assert!(matches!(
            check("SELECT 1; SELECT 2", Access::Query),
            Err(QueryError::Statements(2))
        ));
        check("CREATE VIEW v AS SELECT 1", Access::Session).unwrap();
        assert!(check("COPY (SELECT 1) TO '/tmp/x.csv'", Access::Session).is_err());
        assert!(check("INSERT INTO t VALUES (1)", Access::Session).is_err());
    }
}
