//! SQL over the stored history with DataFusion: the Parquet store of a data directory is the
//! `readings` table, Hive-partitioned by `date` so that a date filter prunes whole partitions.
//! Depends on `samos-schemas` only; it reads the files Samos writes and never writes itself,
//! so it works on a data directory while the server runs and when it is stopped.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

pub use datafusion::arrow;

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("cannot read the store at {path}: {source}")]
    Store {
        path: String,
        source: std::io::Error,
    },
}

/// A read-only SQL session over one data directory.
pub struct History {
    ctx: SessionContext,
}

impl History {
    /// Registers `readings` over `data_dir/readings` (empty when nothing is stored yet).
    pub async fn open(data_dir: &Path) -> Result<History, QueryError> {
        let ctx = SessionContext::new();
        let root = data_dir.join("readings");
        if !root.exists() {
            // Nothing stored yet: an empty table (nothing is created in the directory).
            let schema = samos_schemas::readings::readings_schema();
            let fields = schema.fields().iter().cloned().chain([Arc::new(
                datafusion::arrow::datatypes::Field::new("date", DataType::Utf8, true),
            )]);
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
                fields.collect::<Vec<_>>(),
            ));
            let empty = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])?;
            ctx.register_table("readings", Arc::new(empty))?;
            return Ok(History { ctx });
        }
        let root = root.canonicalize().map_err(|source| QueryError::Store {
            path: root.display().to_string(),
            source,
        })?;
        let url = ListingTableUrl::parse(format!("{}/", root.display()))?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(samos_schemas::readings::readings_schema());
        ctx.register_table("readings", Arc::new(ListingTable::try_new(config)?))?;
        Ok(History { ctx })
    }

    /// Runs one statement and collects its result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self.ctx.sql(sql).await?.collect().await?)
    }
}

/// `batches` as an aligned text table.
pub fn format_table(batches: &[RecordBatch]) -> Result<String, QueryError> {
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}
