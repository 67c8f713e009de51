//! The results `samos mine` stores — `motifs`, `discords`, `window_stats` — as tables over
//! `data/mining/{table}/run-*.parquet`, listed on every scan (a run written while a session is
//! open is seen by its next query).

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
        let Some(table) = crate::readings::parquet_listing(&self.dir, self.schema.clone(), &[])?
        else {
            return Ok(Arc::new(EmptyExec::new(
                datafusion::physical_plan::project_schema(&self.schema, projection)?,
            )));
        };
        table.scan(state, projection, filters, limit).await
    }
}
