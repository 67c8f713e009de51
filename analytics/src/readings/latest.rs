//! The latest reading of each series from the last row of each run.
//!
//! "The latest reading per node and sensor" is what every dashboard tile asks:
//! `SELECT node_id, sensor, max(ingest_time), last_value(value ORDER BY ingest_time) FROM
//! readings GROUP BY node_id, sensor`. A readings row group is sorted by node, sensor and time,
//! so each series' latest row in a row group is the last row of its run, which the file's
//! series index names ([`super::series`]). [`LatestPerSeriesRule`] finds an aggregation whose
//! answer depends only on each series' latest rows and has every indexed file read those rows
//! alone: a few hundred rows a row group instead of 128k.
//!
//! When it applies (anything else leaves the plan as it was): a partial (or single)
//! aggregation grouped by `node_id` and/or `sensor` of the table, no aggregate filter, every
//! aggregate one of `max(ingest_time)`, `last_value(x ORDER BY ingest_time)` or
//! `first_value(x ORDER BY ingest_time DESC)` (not DISTINCT, not IGNORE NULLS), and between
//! it and the scans only nodes that pass rows on unchanged (unions, repartitions,
//! projections that select columns under their own names): no filter. The
//! WAL-tail part and files without an index are read whole, as before; the final phase
//! combines them as it always does.
//!
//! Why the answer is unchanged: each series' rows within a row group are one run in time
//! order, rows of one instant in arrival order, so the run's last row holds the row group's
//! greatest `ingest_time` for that series, and is the one `last_value` keeps there (the last
//! of its latest instant). The maximum over row groups of each one's maximum is the maximum.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::DataSourceExec;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::error::Result;
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use super::series::{FileSeries, with_files_mapped};

/// Has the scans under a latest-per-series aggregation read each run's last row only.
#[derive(Debug, Default)]
pub struct LatestPerSeriesRule;

impl PhysicalOptimizerRule for LatestPerSeriesRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !latest_per_series(aggregate) || !passes_rows_unchanged(aggregate.input()) {
                return Ok(Transformed::no(node));
            }
            let input = Arc::clone(aggregate.input()).transform_up(|scan| {
                Ok(match last_rows_only(&scan) {
                    Some(narrowed) => Transformed::yes(narrowed),
                    None => Transformed::no(scan),
                })
            })?;
            if !input.transformed {
                return Ok(Transformed::no(node));
            }
            Ok(Transformed::yes(node.replace_children(
                vec![input.data],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "latest_per_series"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether `aggregate` depends only on each series' latest rows (see the module's header).
fn latest_per_series(aggregate: &AggregateExec) -> bool {
    let group_by = aggregate.group_expr();
    matches!(
        aggregate.mode(),
        AggregateMode::Partial | AggregateMode::Single
    ) && group_by.is_single()
        && !group_by.expr().is_empty()
        && group_by
            .expr()
            .iter()
            .all(|(expr, _)| is_column(expr, &["node_id", "sensor"]))
        && aggregate.filter_expr().iter().all(Option::is_none)
        && aggregate.limit_options().is_none()
        && aggregate.aggr_expr().iter().all(|a| latest_only(a))
}

/// `max(ingest_time)`, `last_value(x ORDER BY ingest_time)` or `first_value(x ORDER BY
/// ingest_time DESC)`.
fn latest_only(aggregate: &AggregateFunctionExpr) -> bool {
    if aggregate.is_distinct() || aggregate.ignore_nulls() {
        return false;
    }
    let by_time = |descending: bool| {
        let order = aggregate.order_bys();
        order.len() == 1
            && is_column(&order[0].expr, &["ingest_time"])
            && order[0].options.descending == descending
    };
    match aggregate.fun().name() {
        "max" => {
            let args = aggregate.expressions();
            args.len() == 1 && is_column(&args[0], &["ingest_time"])
        }
        "last_value" => by_time(false),
        "first_value" => by_time(true),
        _ => false,
    }
}

/// Whether `expr` is a column named one of `names`.
fn is_column(expr: &Arc<dyn PhysicalExpr>, names: &[&str]) -> bool {
    expr.downcast_ref::<Column>()
        .is_some_and(|c| names.contains(&c.name()))
}

/// Whether every node from `plan` down to the scans passes each row on unchanged, keeping
/// column names (so `node_id` above is `node_id` in the files).
fn passes_rows_unchanged(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut unchanged = true;
    let _ = plan.apply(|node| {
        let ok = node.downcast_ref::<UnionExec>().is_some()
            || node.downcast_ref::<RepartitionExec>().is_some()
            || node.downcast_ref::<DataSourceExec>().is_some()
            || node.downcast_ref::<EmptyExec>().is_some()
            || node.downcast_ref::<ProjectionExec>().is_some_and(|p| {
                p.expr().iter().all(|e| {
                    e.expr
                        .downcast_ref::<Column>()
                        .is_some_and(|c| c.name() == e.alias)
                })
            });
        unchanged &= ok;
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    unchanged
}

/// A file scan reading only each run's last row in every file with a series index (and no
/// access plan of its own); `None` for any other node, or a scan without such a file.
fn last_rows_only(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let config = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    // Files narrowed by a filter already, or without an index, are read as planned.
    let narrowable = |f: &PartitionedFile| {
        f.extension::<FileSeries>().is_some() && f.extension::<ParquetAccessPlan>().is_none()
    };
    if !config
        .file_groups
        .iter()
        .flat_map(FileGroup::iter)
        .any(narrowable)
    {
        return None;
    }
    let config = with_files_mapped(config, |file| match file.extension::<FileSeries>() {
        Some(series) if narrowable(file) => file.clone().with_extension(access_plan(series)),
        _ => file.clone(),
    })
    .build();
    Some(DataSourceExec::from_data_source(config))
}

/// Per row group, its runs' last rows; a row group the index leaves out is read whole.
fn access_plan(series: &FileSeries) -> ParquetAccessPlan {
    let access = series
        .row_counts
        .iter()
        .enumerate()
        .map(|(i, &rows)| match series.index.last_rows(i, rows) {
            None => RowGroupAccess::Scan,
            Some(last) if last.is_empty() => RowGroupAccess::Skip,
            Some(last) => RowGroupAccess::Selection(RowSelection::from_consecutive_ranges(
                last.into_iter().map(|r| r..r + 1),
                rows,
            )),
        })
        .collect();
    ParquetAccessPlan::new(access)
}
