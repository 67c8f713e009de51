//! The `readings` table: every acknowledged reading, whether already in Parquet or still only
//! in the write-ahead log.
//!
//! Each scan takes a snapshot in an order that neither loses nor doubles a row while the
//! server writes: first the WAL records after the checkpoint are read (everything
//! acknowledged is there: acknowledgements follow the fsync), then the Parquet store is
//! listed (a file is only ever published before the WAL segments it covers are freed). A
//! Parquet file's name carries the WAL sequences it holds, so the WAL records covered by a
//! listed file are dropped and the rest are scanned from memory beside the files. A listing
//! caught in the middle of a compaction (the merged file renamed in, its inputs not yet
//! deleted) is taken again.
//!
//! Where the history lives on an object store (the server recorded the table in
//! `data/lake.json`), the Parquet part is the newest snapshot of the Delta table instead of a
//! directory listing. The same order holds (the WAL checkpoint only moves after a commit),
//! the snapshot's data files carry their WAL ranges in their names too, and a snapshot is
//! atomic, so no compaction is ever caught half done. Delta's column types (microsecond
//! timestamps, plain strings, signed integers) are cast back to the table's.
//!
//! Several instances may share a dataset, each writing a table of its own: the scan is the
//! union of every instance's snapshot, and only this data directory's instance has a WAL tail
//! here. The `instance` column names the instance that accepted a reading (a constant per
//! table, so it costs nothing to store); `(instance, key)` identifies a reading everywhere.
//!
//! Over the local store, a filter on nodes or sensors reads only their rows through each
//! file's series index, and is exact ([`series`]); the latest reading per series reads each
//! run's last row ([`latest`]); the WAL tail is decoded once per record and session
//! ([`wal_tail`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, Literal, cast};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use samos_lake::{DatasetHandle, LakeReader};
use samos_store::layout::{READINGS_DIR, WAL_DIR, file_range, merged_into_another};

pub(crate) mod latest;
mod series;
mod wal_tail;
use series::{SeriesFilter, SeriesIndexCache};
use wal_tail::DecodedTail;

/// The Hive partition column Parquet paths carry: the UTC date of `ingest_time`.
pub const DATE_COLUMN: &str = "date";

/// How often a listing caught mid-compaction is taken again before giving up.
const LISTING_ATTEMPTS: usize = 20;

/// The column naming the instance that accepted a reading.
pub const INSTANCE_COLUMN: &str = "instance";

/// The schema of `readings` as SQL sees it: the stored columns plus `date` and `instance`.
pub fn table_schema() -> SchemaRef {
    let stored = samos_schemas::readings::readings_schema();
    let fields = stored.fields().iter().cloned().chain([
        Arc::new(Field::new(DATE_COLUMN, DataType::Utf8, false)),
        Arc::new(Field::new(INSTANCE_COLUMN, DataType::Utf8, false)),
    ]);
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

/// `readings` over one data directory.
#[derive(Debug)]
pub struct ReadingsTable {
    data_dir: PathBuf,
    schema: SchemaRef,
    /// The instance whose WAL and local store the data directory holds.
    instance: String,
    /// The object-store dataset, where the history lives there.
    lake: Option<LakeReader>,
    /// The local files' series indexes, parsed once.
    series_indexes: SeriesIndexCache,
    /// The WAL tail's records, decoded once.
    wal_tail: DecodedTail,
}

/// One instance's part of a scan: a plan of the requested stored columns (and `date`).
type Part = (String, Arc<dyn ExecutionPlan>);

impl ReadingsTable {
    /// `readings` of a data directory whose history is the local Parquet store, or the
    /// object-store dataset `lake`; `instance` is the data directory's own.
    pub fn new(data_dir: &Path, instance: &str, lake: Option<Arc<DatasetHandle>>) -> ReadingsTable {
        ReadingsTable {
            data_dir: data_dir.to_path_buf(),
            schema: table_schema(),
            instance: instance.to_owned(),
            lake: lake.map(LakeReader::new),
            series_indexes: SeriesIndexCache::default(),
            wal_tail: DecodedTail::default(),
        }
    }

    /// The newest snapshot of every instance's table, each as a plan of the columns
    /// `projection` names (never `instance`), and the WAL ranges this instance's table covers.
    async fn lake_scan(
        &self,
        lake: &LakeReader,
        state: &dyn Session,
        projection: &[usize],
        filters: &[Expr],
    ) -> Result<(Vec<Part>, Vec<(u64, u64)>)> {
        let external = |e: samos_lake::LakeError| DataFusionError::External(e.into());
        let mut parts = Vec::new();
        let mut covered = Vec::new();
        for (instance, snapshot) in lake.snapshots().await.map_err(external)? {
            if instance == self.instance {
                covered = snapshot.covered().await.map_err(external)?;
            }
            let plan = self
                .snapshot_scan(&snapshot, state, projection, filters)
                .await?;
            parts.push((instance, plan));
        }
        Ok((parts, covered))
    }

    /// One instance's snapshot as a plan of the table's columns `projection` names.
    async fn snapshot_scan(
        &self,
        snapshot: &samos_lake::reader::LakeSnapshot,
        state: &dyn Session,
        projection: &[usize],
        filters: &[Expr],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let external = |e: samos_lake::LakeError| DataFusionError::External(e.into());
        let projected = Arc::new(self.schema.project(projection)?);
        let provider = snapshot.provider(state).await.map_err(external)?;
        // Columns by name: the Delta schema lists the stored columns and `date`, as ours does.
        let indices = projected
            .fields()
            .iter()
            .map(|f| provider.schema().index_of(f.name()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let plan = provider.scan(state, Some(&indices), filters, None).await?;
        let input = plan.schema();
        let casts = projected
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let column = Arc::new(Column::new(input.field(i).name(), i));
                Ok((
                    cast(column, &input, field.data_type().clone())?,
                    field.name().clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(casts, plan)?))
    }

    /// The Parquet store as a listing table (pruning by `date`, file statistics), or `None`
    /// while nothing has been written; with a session, its Parquet options and statistics
    /// cache.
    fn parquet(&self, state: Option<&dyn Session>) -> Result<Option<ListingTable>> {
        parquet_listing(
            &self.data_dir.join(READINGS_DIR),
            samos_schemas::readings::readings_schema(),
            &[DATE_COLUMN],
            state,
        )
    }

    /// The readings of WAL records not in `covered`, each batch with its `date` and
    /// `instance` columns (each record decoded once per session: `wal_tail`).
    fn unflushed(
        &self,
        records: Vec<samos_store::wal::WalRecord>,
        covered: &[(u64, u64)],
    ) -> Result<Vec<RecordBatch>> {
        let not_in_a_file = |record: &samos_store::wal::WalRecord| {
            !covered
                .iter()
                .any(|&(first, last)| first <= record.seq && record.seq <= last)
        };
        self.wal_tail.batches(&records, not_in_a_file, |record| {
            let batches = samos_store::record::decode_batches(&record.payload).map_err(|e| {
                DataFusionError::External(
                    format!("WAL record {} is unreadable: {e}", record.seq).into(),
                )
            })?;
            batches
                .iter()
                .filter(|b| b.num_rows() > 0)
                .map(|b| with_date(b, &self.schema, &self.instance))
                .collect()
        })
    }
}

/// The `*.parquet` files under `dir` as a table of `schema`, Hive-partitioned by `partitions`
/// (string columns), read with the session's Parquet options (`SET datafusion.execution.
/// parquet.…`; the defaults without a session) except bloom filters: Samos writes none (the
/// page index prunes instead), and looking for them cost a tenth of a chart query (82 row
/// groups, 5 ms); `None` while `dir` does not exist. Built per scan: files come and go. A
/// file's statistics are kept in the session's cache (by path, size and modification time:
/// a published file never changes), not computed again from its footer by every query.
pub(crate) fn parquet_listing(
    dir: &Path,
    schema: SchemaRef,
    partitions: &[&str],
    state: Option<&dyn Session>,
) -> Result<Option<ListingTable>> {
    let dir = match dir.canonicalize() {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(DataFusionError::External(
                format!("cannot read {}: {e}", dir.display()).into(),
            ));
        }
    };
    let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
    let mut options = state.map_or_else(TableParquetOptions::default, |s| {
        s.table_options().parquet.clone()
    });
    options.global.bloom_filter_on_read = false;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default().with_options(options)))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            partitions
                .iter()
                .map(|p| (p.to_string(), DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    let statistics = state.and_then(|s| s.runtime_env().cache_manager.get_file_statistic_cache());
    Ok(Some(ListingTable::try_new(config)?.with_cache(statistics)))
}

/// `batch` (the stored columns) with the `date` column (a batch never spans two UTC dates)
/// and the `instance` column.
fn with_date(batch: &RecordBatch, schema: &SchemaRef, instance: &str) -> Result<RecordBatch> {
    let times = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| DataFusionError::Internal("ingest_time is not a timestamp".into()))?;
    let date = chrono_date(times.value(0));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![
        date.as_str();
        batch.num_rows()
    ])));
    columns.push(Arc::new(StringArray::from(vec![
        instance;
        batch.num_rows()
    ])));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `YYYY-MM-DD` of a UTC millisecond timestamp: the partition the engine files it under.
fn chrono_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The WAL ranges of the Parquet files a plan reads.
fn planned_files(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<(u64, u64)>) {
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
    {
        for group in &config.file_groups {
            for file in group.iter() {
                if let Some(range) = file_range(Path::new(file.object_meta.location.as_ref())) {
                    out.push(range);
                }
            }
        }
    }
    for child in plan.children() {
        planned_files(child, out);
    }
}

#[async_trait]
impl TableProvider for ReadingsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters go down to the Parquet scan (partition pruning, statistics) and are applied
    /// again above it, so they hold for the in-memory part too; except that a filter on `date`
    /// alone over the local store is exact: the listing keeps only the files of matching
    /// partitions, and the scan applies it to the WAL tail itself (a filter above the scan
    /// would compare every row's date again: a third of a one-date query's time). So is a
    /// filter on nodes or sensors (`=`, `IN`) over the local store: the files' series index
    /// selects exactly their rows, and the scan filters the WAL tail and whatever has no
    /// index itself (no filter above it reads `node_id` and `sensor` to compare them again,
    /// and the Parquet reader does not prune by them).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        use TableProviderFilterPushDown::{Exact, Inexact};
        if self.lake.is_some() {
            return Ok(vec![Inexact; filters.len()]);
        }
        // Exact only where the listing itself can apply the filter to partition values.
        let listing = match self.parquet(None)? {
            Some(table) => table.supports_filters_pushdown(filters)?,
            None => vec![Exact; filters.len()],
        };
        Ok(filters
            .iter()
            .zip(listing)
            .map(|(f, verdict)| {
                if (on_date_alone(f) && verdict == Exact) || series::is_series_conjunct(f) {
                    Exact
                } else {
                    Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The limit is left to the operator above: a listing cut short by it would not show
        // which WAL records the files cover.
        let instance_at = self.schema.fields().len() - 1;
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        // The files do not hold `instance`: it is added per part, and filters on it are
        // applied above the scan (they are inexact).
        let stored: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&i| i != instance_at)
            .collect();
        let filters: Vec<Expr> = filters
            .iter()
            .filter(|f| !f.column_refs().iter().any(|c| c.name == INSTANCE_COLUMN))
            .cloned()
            .collect();
        let wal_dir = self.data_dir.join(WAL_DIR);
        let records =
            tokio::task::spawn_blocking(move || samos_store::wal::read_unflushed(&wal_dir))
                .await
                .map_err(|e| DataFusionError::External(e.into()))?
                .map_err(|e| DataFusionError::External(e.into()))?;
        let (parts, covered) = match &self.lake {
            Some(lake) => self.lake_scan(lake, state, &stored, &filters).await?,
            None => {
                let (plan, covered) = self.local_scan(state, &stored, &filters).await?;
                (
                    plan.map(|p| (self.instance.clone(), p))
                        .into_iter()
                        .collect(),
                    covered,
                )
            }
        };
        let mut plans = parts
            .into_iter()
            .map(|(instance, plan)| with_instance(plan, &wanted, instance_at, &instance))
            .collect::<Result<Vec<_>>>()?;
        let mut unflushed = self.unflushed(records, &covered)?;
        if self.lake.is_none() {
            unflushed = self.filter_exactly(state, &filters, unflushed)?;
        }
        if !unflushed.is_empty() {
            plans.push(MemorySourceConfig::try_new_exec(
                &[unflushed],
                self.schema.clone(),
                Some(wanted.clone()),
            )?);
        }
        match plans.len() {
            0 => Ok(Arc::new(EmptyExec::new(Arc::new(
                self.schema.project(&wanted)?,
            )))),
            1 => Ok(plans.remove(0)),
            _ => UnionExec::try_new(plans),
        }
    }
}

impl ReadingsTable {
    /// The local Parquet store as a plan of the columns `projection` names (`None` while
    /// nothing has been written), and the WAL ranges of its files.
    async fn local_scan(
        &self,
        state: &dyn Session,
        projection: &[usize],
        filters: &[Expr],
    ) -> Result<(Option<Arc<dyn ExecutionPlan>>, Vec<(u64, u64)>)> {
        // Filters on nodes and sensors are exact (`supports_filters_pushdown`): the series
        // index answers them; where a file or row group has no index, the scan filters its
        // rows itself, on `node_id` and `sensor` read for that even if the query does not ask
        // for them.
        let on_series: Vec<Expr> = filters
            .iter()
            .filter(|f| series::is_series_conjunct(f))
            .cloned()
            .collect();
        let asked = projection.len();
        let mut projection = projection.to_vec();
        if !on_series.is_empty() {
            for column in ["node_id", "sensor"] {
                let i = self.schema.index_of(column)?;
                if !projection.contains(&i) {
                    projection.push(i);
                }
            }
        }
        let (plan, covered) = self.listed_scan(state, &projection, filters).await?;
        let Some(plan) = plan else {
            return Ok((None, covered));
        };
        // The files' series indexes serve a filter on series, or the latest reading per series
        // (which reads `ingest_time` and groups by `node_id` or `sensor`); other scans skip
        // looking them up.
        let series = SeriesFilter::from_filters(filters);
        let reads = |column: &str| {
            self.schema
                .index_of(column)
                .is_ok_and(|i| projection.contains(&i))
        };
        let latest_may_apply = reads("ingest_time") && (reads("node_id") || reads("sensor"));
        let (plan, exact) = if series.is_some() || latest_may_apply {
            series::annotate(plan, series.as_ref(), state, &self.series_indexes).await?
        } else {
            (plan, true)
        };
        let plan = if on_series.is_empty() || exact {
            plan
        } else {
            let schema = DFSchema::try_from(plan.schema().as_ref().clone())?;
            let predicate = conjunction(on_series).expect("not empty");
            let predicate = state.create_physical_expr(predicate, &schema)?;
            Arc::new(FilterExec::try_new(predicate, plan)?)
        };
        let plan = if projection.len() > asked {
            let schema = plan.schema();
            let columns = (0..asked)
                .map(|i| {
                    let name = schema.field(i).name().clone();
                    (
                        Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                        name,
                    )
                })
                .collect::<Vec<_>>();
            Arc::new(ProjectionExec::try_new(columns, plan)?)
        } else {
            plan
        };
        Ok((Some(plan), covered))
    }

    /// The listing's scan of the Parquet store (`None` while nothing has been written), and
    /// the WAL ranges of its files.
    async fn listed_scan(
        &self,
        state: &dyn Session,
        projection: &[usize],
        filters: &[Expr],
    ) -> Result<(Option<Arc<dyn ExecutionPlan>>, Vec<(u64, u64)>)> {
        let projection = projection.to_vec();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(table) = self.parquet(Some(state))? else {
                return Ok((None, Vec::new()));
            };
            let files = table.scan(state, Some(&projection), filters, None).await?;
            let mut covered = Vec::new();
            planned_files(&files, &mut covered);
            let mid_compaction = covered.iter().any(|r| merged_into_another(*r, &covered));
            if !mid_compaction {
                return Ok((Some(files), covered));
            }
            if attempt == LISTING_ATTEMPTS {
                return Err(DataFusionError::External(
                    "the Parquet store is being compacted; try the query again".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A filter that names `date` and no other column: the local store applies it exactly.
fn on_date_alone(filter: &Expr) -> bool {
    let columns = filter.column_refs();
    !columns.is_empty() && columns.iter().all(|c| c.name == DATE_COLUMN) && !filter.is_volatile()
}

impl ReadingsTable {
    /// `batches` (WAL-tail rows of the whole table schema) without the rows the filters the
    /// scan answers exactly refuse (`supports_filters_pushdown`: on `date` alone, on nodes
    /// and sensors).
    fn filter_exactly(
        &self,
        state: &dyn Session,
        filters: &[Expr],
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let exact_filters: Vec<&Expr> = filters
            .iter()
            .filter(|f| on_date_alone(f) || series::is_series_conjunct(f))
            .collect();
        if exact_filters.is_empty() || batches.is_empty() {
            return Ok(batches);
        }
        let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let predicates = exact_filters
            .into_iter()
            .map(|f| state.create_physical_expr(f.clone(), &schema))
            .collect::<Result<Vec<_>>>()?;
        let mut kept = Vec::with_capacity(batches.len());
        for mut batch in batches {
            for predicate in &predicates {
                let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Internal("a filter is not boolean".into()))?;
                batch = filter_record_batch(&batch, mask)?;
            }
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        Ok(kept)
    }
}

/// `plan` (the columns of `wanted` but `instance`, in order) with the `instance` column put
/// where `wanted` asks for it, as the constant `instance`.
fn with_instance(
    plan: Arc<dyn ExecutionPlan>,
    wanted: &[usize],
    instance_at: usize,
    instance: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    if !wanted.contains(&instance_at) {
        return Ok(plan);
    }
    let input = plan.schema();
    let mut next = 0;
    let exprs = wanted
        .iter()
        .map(|&i| -> (Arc<dyn PhysicalExpr>, String) {
            if i == instance_at {
                (
                    Arc::new(Literal::new(ScalarValue::Utf8(Some(instance.to_owned())))),
                    INSTANCE_COLUMN.to_owned(),
                )
            } else {
                let name = input.field(next).name().clone();
                next += 1;
                (Arc::new(Column::new(&name, next - 1)), name)
            }
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(chrono_date(0), "1970-01-01");
        assert_eq!(chrono_date(-1), "1969-12-31");
        assert_eq!(chrono_date(951_782_400_000), "2000-02-29");
        assert_eq!(chrono_date(4_102_444_800_000), "2100-01-01");
    }
}
