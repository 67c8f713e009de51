//! The results `samos mine` stores — `motifs`, `discords`, `window_stats` — as tables over
//! `data/mining/{table}/run-*.parquet`, listed on every scan (a run written while a session is
//! open is seen by its next query); and `stream_profiles`, the server's live matrix profiles
//! (`data/mining/stream_profiles.jsonl`, replaced whole each second while they move), read
//! anew by every scan.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

/// The mining result tables: name and schema.
pub fn tables() -> [(&'static str, SchemaRef); 3] {
    use samos_schemas::tables::{discords_schema, motifs_schema, window_stats_schema};
    [
        ("motifs", motifs_schema()),
        ("discords", discords_schema()),
        ("window_stats", window_stats_schema()),
    ]
}

/// One result table over its directory.
#[derive(Debug)]
pub struct ResultTable {
    dir: PathBuf,
    schema: SchemaRef,
}

impl ResultTable {
    pub fn new(data_dir: &Path, name: &str, schema: SchemaRef) -> ResultTable {
        ResultTable {
            dir: data_dir.join(samos_store::layout::MINING_DIR).join(name),
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for ResultTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(table) =
            crate::readings::parquet_listing(&self.dir, self.schema.clone(), &[], Some(state))?
        else {
            return Ok(Arc::new(EmptyExec::new(
                datafusion::physical_plan::project_schema(&self.schema, projection)?,
            )));
        };
        table.scan(state, projection, filters, limit).await
    }
}

/// `stream_profiles`: one row per streamed sensor of every node.
#[derive(Debug)]
pub struct StreamProfilesTable {
    path: PathBuf,
}

impl StreamProfilesTable {
    pub fn new(data_dir: &Path) -> StreamProfilesTable {
        StreamProfilesTable {
            path: data_dir
                .join(samos_store::layout::MINING_DIR)
                .join(samos_store::layout::STREAM_PROFILES_FILE),
        }
    }

    /// The file as one batch (written whole by the server, so every line complete); empty
    /// where there is none.
    fn batch(&self) -> Result<datafusion::arrow::record_batch::RecordBatch> {
        use datafusion::arrow::record_batch::RecordBatch;
        use datafusion::error::DataFusionError;
        let schema = samos_schemas::tables::stream_profiles_schema();
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RecordBatch::new_empty(schema));
            }
            Err(e) => {
                return Err(DataFusionError::External(
                    format!("cannot read {}: {e}", self.path.display()).into(),
                ));
            }
        };
        let columns = crate::protocol::decode_json_lines(&bytes, schema.fields(), str::to_owned)?
            .ok_or_else(|| {
            DataFusionError::External(
                format!("{} does not fit stream_profiles", self.path.display()).into(),
            )
        })?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[async_trait]
impl TableProvider for StreamProfilesTable {
    fn schema(&self) -> SchemaRef {
        samos_schemas::tables::stream_profiles_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.batch()?;
        Ok(
            datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[vec![batch]],
                self.schema(),
                projection.cloned(),
            )?,
        )
    }
}
