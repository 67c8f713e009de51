//! A Ballista session over a Samos dataset: Samos's tables resolved into what Ballista's plan
//! protocol carries (see the crate header).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ballista::prelude::{SessionConfigExt as _, SessionContextExt as _};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::prelude::{SessionConfig, SessionContext, col};
use samos_analytics::readings::{DATE_COLUMN, INSTANCE_COLUMN};
use samos_analytics::{Access, History};
use samos_lake::{Dataset, DatasetHandle, LakeReader};

use crate::ClusterError;

/// A session whose queries run on the Ballista scheduler at `url` (`df://host:port`), with
/// `readings`, `nodes`, `events`, `rejected` and the views of the dataset `data_dir` writes
/// to (its `lake.json`), or of `dataset` when given.
pub async fn connect(
    url: &str,
    data_dir: &Path,
    dataset: Option<Dataset>,
) -> Result<SessionContext, ClusterError> {
    let dataset = match dataset {
        Some(d) => d,
        None => Dataset::read_marker(data_dir)?
            .ok_or_else(|| ClusterError::LocalHistory(data_dir.display().to_string()))?,
    };
    let config = SessionConfig::new_with_ballista().with_information_schema(true);
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(crate::process::runtime(Some(&dataset))?)
        .build();
    let ctx = SessionContext::remote_with_state(url, state).await?;
    let handle = Arc::new(DatasetHandle::new(dataset.clone()));
    ctx.register_table("readings", readings(&handle).await?)?;
    // The protocol tables as `samos sql` reads them (this data directory's files and every
    // other instance's copies), sent as values.
    let local = History::open_with_lake(data_dir, Access::Query, Some(dataset)).await?;
    for name in ["nodes", "events", "rejected"] {
        let frame = local.context().table(name).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        ctx.register_table(
            name,
            Arc::new(ViewTable::new(values(&schema, &batches)?, None)),
        )?;
    }
    for (name, sql) in samos_analytics::VIEWS {
        let plan = ctx.state().create_logical_plan(sql).await?;
        ctx.register_table(name, Arc::new(ViewTable::new(plan, Some(sql.to_owned()))))?;
    }
    Ok(ctx)
}

/// `readings`: per instance and date, a listing table over exactly the snapshot's files, with
/// `date` and `instance` as constants; their union.
async fn readings(dataset: &Arc<DatasetHandle>) -> Result<Arc<dyn TableProvider>, ClusterError> {
    // Text columns are read as plain strings: Ballista's shuffle does not keep the stored
    // dictionary encoding through every operator (a hash aggregate's row converter then
    // meets both), and results are the same values either way.
    let plain = |schema: &Schema| {
        Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Dictionary(_, value) => {
                        f.as_ref().clone().with_data_type(value.as_ref().clone())
                    }
                    _ => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        ))
    };
    let schema = plain(&samos_analytics::readings::table_schema());
    let stored = plain(&samos_schemas::readings::readings_schema());
    let mut branches = Vec::new();
    for (instance, snapshot) in LakeReader::new(dataset.clone()).snapshots().await? {
        let mut by_date: BTreeMap<String, Vec<ListingTableUrl>> = BTreeMap::new();
        for (date, url) in snapshot.files().await? {
            by_date
                .entry(date)
                .or_default()
                .push(ListingTableUrl::parse(url.as_str())?);
        }
        for (date, urls) in by_date {
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let table = ListingTable::try_new(
                ListingTableConfig::new_with_multi_paths(urls)
                    .with_listing_options(options)
                    .with_schema(stored.clone()),
            )?;
            let name = format!("readings_{instance}_{date}");
            let mut columns: Vec<Expr> = stored
                .fields()
                .iter()
                .map(|f| col(f.name().as_str()))
                .collect();
            columns.push(lit(date.as_str()).alias(DATE_COLUMN));
            columns.push(lit(instance.as_str()).alias(INSTANCE_COLUMN));
            branches.push(
                LogicalPlanBuilder::scan(name, provider_as_source(Arc::new(table)), None)?
                    .project(columns)?
                    .build()?,
            );
        }
    }
    let plan = match branches.len() {
        0 => empty(&schema)?,
        _ => {
            let mut plans = branches.into_iter();
            let first = LogicalPlanBuilder::from(plans.next().expect("one at least"));
            plans.try_fold(first, LogicalPlanBuilder::union)?.build()?
        }
    };
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The rows of `batches` as a VALUES plan of `schema` (an empty relation when there are none).
fn values(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<LogicalPlan, ClusterError> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row).map(lit))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
    }
    if rows.is_empty() {
        return empty(schema);
    }
    let names: Vec<Expr> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| col(format!("column{}", i + 1)).alias(f.name()))
        .collect();
    let schema = Arc::new(DFSchema::try_from(schema.as_ref().clone())?);
    // VALUES names its columns column1, column2, …: named back.
    Ok(LogicalPlanBuilder::values_with_schema(rows, &schema)?
        .project(names)?
        .build()?)
}

fn empty(schema: &datafusion::arrow::datatypes::SchemaRef) -> Result<LogicalPlan, ClusterError> {
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(DFSchema::try_from(schema.as_ref().clone())?),
    }))
}
