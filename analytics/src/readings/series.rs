//! Reading only the rows of the series a query names.
//!
//! A query for one node's sensor (a dashboard chart, a node's day) names `node_id` and often
//! `sensor` with `=` or `IN`. Each readings file the store writes carries a series index
//! (`samos_store::parquet::series_index`): where each series' run of rows lies in each row
//! group. [`annotate`] gives every file of the Parquet scan a [`ParquetAccessPlan`] that
//! reads those runs only — row groups without them are skipped, the rest read as an exact
//! row selection — where the page index alone would decode every row of each page that
//! holds a piece of the series (a 4,096-row page holds a dozen series) and filter them again.
//!
//! Invariants: in an indexed row group the plan reads exactly the rows whose node and
//! sensor the filters accept; a file without an index, with an index that does not describe
//! its row groups, or a row group the index leaves out, is read as before, and [`annotate`]
//! says so — the filters on nodes and sensors are exact (`ReadingsTable::
//! supports_filters_pushdown`), so the scan then filters those rows itself, as it filters
//! the WAL tail. Other filters still apply above the scan. Parsed indexes are cached per
//! file (path, size and modification time: a published file never changes, a compaction
//! writes a new one).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::DataSourceExec;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;
use samos_store::parquet::PAGE_ROWS;
use samos_store::parquet::series_index::{SERIES_INDEX_KEY, SeriesIndex};

/// The series a query's filters restrict it to: the nodes and sensors it may read (`None`:
/// any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SeriesFilter {
    nodes: Option<Vec<String>>,
    sensors: Option<Vec<String>>,
}

impl SeriesFilter {
    /// The restriction the conjuncts `filters` put on `node_id` and `sensor` (`=` a string or
    /// `IN` strings; several on one column: the names all of them allow), or `None` where
    /// they restrict neither.
    pub(super) fn from_filters(filters: &[Expr]) -> Option<SeriesFilter> {
        let mut filter = SeriesFilter {
            nodes: None,
            sensors: None,
        };
        for conjunct in filters
            .iter()
            .flat_map(datafusion::logical_expr::utils::split_conjunction)
        {
            let Some((column, names)) = names_allowed(conjunct) else {
                continue;
            };
            let slot = match column {
                "node_id" => &mut filter.nodes,
                "sensor" => &mut filter.sensors,
                _ => continue,
            };
            *slot = Some(match slot.take() {
                None => names,
                Some(before) => before.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        (filter.nodes.is_some() || filter.sensors.is_some()).then_some(filter)
    }

    /// The access plan for a file of `metadata` with `index`: per row group, skip it, read it
    /// whole, or read the runs of the series this filter allows.
    fn access_plan(&self, metadata: &ParquetMetaData, index: &SeriesIndex) -> FilePlan {
        let (nodes, sensors) = (as_refs(&self.nodes), as_refs(&self.sensors));
        let mut within_a_page = true;
        let mut exact = true;
        let access = metadata
            .row_groups()
            .iter()
            .enumerate()
            .map(|(i, row_group)| {
                let rows = row_group.num_rows() as usize;
                let ranges = index.rows(i, rows, nodes.as_deref(), sensors.as_deref());
                let selected = ranges
                    .as_ref()
                    .map_or(rows, |r| r.iter().map(ExactSizeIterator::len).sum());
                within_a_page &= selected <= PAGE_ROWS;
                exact &= ranges.is_some();
                match ranges {
                    None => RowGroupAccess::Scan,
                    Some(ranges) if ranges.is_empty() => RowGroupAccess::Skip,
                    Some(_) if selected == rows => RowGroupAccess::Scan,
                    Some(ranges) => RowGroupAccess::Selection(
                        RowSelection::from_consecutive_ranges(ranges.into_iter(), rows),
                    ),
                }
            })
            .collect();
        FilePlan {
            access: ParquetAccessPlan::new(access),
            within_a_page,
            exact,
        }
    }
}

/// What one file reads.
struct FilePlan {
    access: ParquetAccessPlan,
    /// Whether each row group it reads reads at most a page's worth of rows
    /// ([`PAGE_ROWS`]): the page index then has nothing left to prune but whole runs.
    within_a_page: bool,
    /// Whether every row group is indexed: the file reads exactly the filter's rows.
    exact: bool,
}

/// Whether `conjunct` is one [`SeriesFilter`] answers exactly where the files are indexed:
/// `node_id` or `sensor` `=` a string or `IN` strings.
pub(super) fn is_series_conjunct(conjunct: &Expr) -> bool {
    names_allowed(conjunct).is_some_and(|(column, _)| matches!(column, "node_id" | "sensor"))
}

fn as_refs(names: &Option<Vec<String>>) -> Option<Vec<&str>> {
    names
        .as_ref()
        .map(|n| n.iter().map(String::as_str).collect())
}

/// The column a conjunct restricts and the names it allows: `col = 'x'`, `'x' = col`,
/// `col IN ('x', …)`; the column may be cast to a string type.
fn names_allowed(conjunct: &Expr) -> Option<(&str, Vec<String>)> {
    match conjunct {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            let (column, value) = match (column_name(left), column_name(right)) {
                (Some(c), None) => (c, right),
                (None, Some(c)) => (c, left),
                _ => return None,
            };
            Some((column, vec![string_literal(value)?]))
        }
        Expr::InList(list) if !list.negated => Some((
            column_name(&list.expr)?,
            list.list
                .iter()
                .map(string_literal)
                .collect::<Option<Vec<_>>>()?,
        )),
        _ => None,
    }
}

/// The column `expr` is, itself or cast to a string type.
fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        Expr::Cast(cast) if cast.field.data_type().is_string() => column_name(&cast.expr),
        Expr::TryCast(cast) if cast.field.data_type().is_string() => column_name(&cast.expr),
        _ => None,
    }
}

/// The text of a non-null string literal (a dictionary literal's value too).
fn string_literal(expr: &Expr) -> Option<String> {
    fn text(value: &ScalarValue) -> Option<String> {
        match value {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
            ScalarValue::Dictionary(_, inner) => text(inner),
            _ => None,
        }
    }
    match expr {
        Expr::Literal(value, _) => text(value),
        _ => None,
    }
}

/// Parsed series indexes by file path, at most
/// [`CACHE_BYTES`] of them (a file's index is up to ~50 KB a row group: a fleet of thousands
/// of series); past that the cache starts afresh.
#[derive(Debug)]
pub(super) struct SeriesIndexCache {
    entries: Mutex<CachedIndexes>,
    limit_bytes: usize,
}

impl Default for SeriesIndexCache {
    fn default() -> Self {
        SeriesIndexCache {
            entries: Mutex::default(),
            limit_bytes: CACHE_BYTES,
        }
    }
}

#[derive(Debug, Default)]
struct CachedIndexes {
    by_path: HashMap<String, CachedIndex>,
    bytes: usize,
}

/// A file's parsed index (if it has one), for the file of that size and modification time.
#[derive(Debug)]
struct CachedIndex {
    size: u64,
    modified_us: i64,
    index: Option<Arc<SeriesIndex>>,
    bytes: usize,
}

/// The most memory the parsed indexes of one `readings` table hold.
const CACHE_BYTES: usize = 64 << 20;

impl SeriesIndexCache {
    fn get(&self, file: &PartitionedFile) -> Option<Option<Arc<SeriesIndex>>> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = entries.by_path.get(file.path().as_ref())?;
        let meta = &file.object_meta;
        (cached.size == meta.size && cached.modified_us == meta.last_modified.timestamp_micros())
            .then(|| cached.index.clone())
    }

    fn insert(&self, file: &PartitionedFile, index: Option<Arc<SeriesIndex>>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes =
            file.path().as_ref().len() + 64 + index.as_deref().map_or(0, SeriesIndex::memory_size);
        if entries.bytes + bytes > self.limit_bytes {
            entries.by_path.clear();
            entries.bytes = 0;
        }
        let meta = &file.object_meta;
        let cached = CachedIndex {
            size: meta.size,
            modified_us: meta.last_modified.timestamp_micros(),
            index,
            bytes,
        };
        entries.bytes += bytes;
        if let Some(old) = entries.by_path.insert(file.path().to_string(), cached) {
            entries.bytes -= old.bytes;
        }
    }
}

/// A file's series index, attached to the file in the scan (for the optimizer rules that read
/// runs: [`super::latest`]), with its row groups' row counts.
#[derive(Debug, Clone)]
pub(crate) struct FileSeries {
    pub(crate) index: Arc<SeriesIndex>,
    pub(crate) row_counts: Vec<usize>,
}

/// `plan` (a scan of the Parquet store) with each file's series index attached to it, and,
/// with a `filter`, each file reading only the rows of the series it allows, where the index
/// says where they are; and whether that is exactly the filter's rows in every file.
pub(super) async fn annotate(
    plan: Arc<dyn ExecutionPlan>,
    filter: Option<&SeriesFilter>,
    state: &dyn Session,
    cache: &SeriesIndexCache,
) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
    // First every file's plan (reading footers where not cached: async), then the rewrite.
    let mut plans: HashMap<String, (FileSeries, Option<FilePlan>)> = HashMap::new();
    let mut seen = HashSet::new();
    let mut every_file_exact = true;
    for config in scans(&plan) {
        let store = state.runtime_env().object_store(&config.object_store_url)?;
        let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        for file in config.file_groups.iter().flat_map(FileGroup::iter) {
            if !seen.insert(file.path().to_string()) {
                continue;
            }
            let mut exact = false;
            let metadata = DFParquetMetadata::new(store.as_ref(), &file.object_meta)
                .with_file_metadata_cache(Some(Arc::clone(&metadata_cache)))
                .fetch_metadata()
                .await?;
            let index = match cache.get(file) {
                Some(index) => index,
                None => {
                    let index = parse_index(&metadata).map(Arc::new);
                    cache.insert(file, index.clone());
                    index
                }
            };
            if let Some(index) = index {
                let plan = filter.map(|f| f.access_plan(&metadata, &index));
                exact = plan.as_ref().is_some_and(|p| p.exact);
                let row_counts = metadata
                    .row_groups()
                    .iter()
                    .map(|rg| rg.num_rows() as usize)
                    .collect();
                plans.insert(
                    file.path().to_string(),
                    (FileSeries { index, row_counts }, plan),
                );
            }
            every_file_exact &= exact;
        }
    }
    if plans.is_empty() {
        return Ok((plan, every_file_exact));
    }
    plan.transform_up(|node| {
        let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok(Transformed::no(node));
        };
        let mut every_file_within_pages = true;
        let mut builder = with_files_mapped(config, |file| match plans.get(file.path().as_ref()) {
            Some((series, Some(plan))) => {
                every_file_within_pages &= plan.within_a_page;
                file.clone()
                    .with_extension(series.clone())
                    .with_extension(plan.access.clone())
            }
            Some((series, None)) => {
                every_file_within_pages = false;
                file.clone().with_extension(series.clone())
            }
            None => {
                every_file_within_pages = false;
                file.clone()
            }
        });
        // Where every file reads at most a page of rows per row group, evaluating the page
        // index (a fifth of a chart query's CPU) could only drop runs the filters drop anyway.
        // The offset index still serves the reads: only the pages of the runs are read.
        if every_file_within_pages
            && let Some(source) = config.file_source().downcast_ref::<ParquetSource>()
        {
            builder = builder.with_source(Arc::new(source.clone().with_enable_page_index(false)));
        }
        let config = builder.build();
        Ok(Transformed::yes(
            DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| (t.data, every_file_exact))
}

/// A builder for `config` with each of its files replaced by `map`'s (groups and their
/// statistics kept).
pub(super) fn with_files_mapped(
    config: &FileScanConfig,
    mut map: impl FnMut(&PartitionedFile) -> PartitionedFile,
) -> FileScanConfigBuilder {
    let groups = config
        .file_groups
        .iter()
        .map(|group| {
            let mapped = FileGroup::new(group.iter().map(&mut map).collect());
            match group.file_statistics(None) {
                Some(stats) => mapped.with_statistics(Arc::new(stats.clone())),
                None => mapped,
            }
        })
        .collect();
    FileScanConfigBuilder::from(config.clone()).with_file_groups(groups)
}

/// The file scans in `plan`.
fn scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<FileScanConfig> {
    let mut out = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        {
            out.push(config.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    out
}

/// The series index in a file's footer, if it has one that describes its row groups.
fn parse_index(metadata: &ParquetMetaData) -> Option<SeriesIndex> {
    let text = metadata
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == SERIES_INDEX_KEY)?
        .value
        .as_deref()?;
    let rows: Vec<usize> = metadata
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows() as usize)
        .collect();
    SeriesIndex::parse(text, &rows)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{cast, col, lit};

    use super::*;

    fn names(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_cache_holds_what_it_may_and_starts_afresh_past_it() {
        let index = Arc::new(SeriesIndex::default());
        let file = |name: &str, size: u64| PartitionedFile::new(name.to_owned(), size);
        let cache = SeriesIndexCache {
            entries: Mutex::default(),
            limit_bytes: 3 * (64 + 10 + index.memory_size()),
        };
        for name in ["a.parquet", "b.parquet", "c.parquet"] {
            cache.insert(&file(name, 10), Some(Arc::clone(&index)));
        }
        assert!(cache.get(&file("a.parquet", 10)).is_some());
        // Another size is another file: not this entry.
        assert!(cache.get(&file("a.parquet", 11)).is_none());
        cache.insert(&file("d.parquet", 10), None);
        assert!(cache.get(&file("a.parquet", 10)).is_none());
        assert_eq!(cache.get(&file("d.parquet", 10)), Some(None));
    }

    #[test]
    fn filters_on_nodes_and_sensors_are_recognised() {
        let f = SeriesFilter::from_filters(&[
            col("node_id").eq(lit("N1")),
            lit("temp").eq(cast(col("sensor"), DataType::Utf8)),
            col("value").gt(lit(3.0)),
        ])
        .unwrap();
        assert_eq!((f.nodes, f.sensors), (names(&["N1"]), names(&["temp"])));
        let f = SeriesFilter::from_filters(&[
            col("node_id").in_list(vec![lit("a"), lit("b"), lit("c")], false),
            col("node_id")
                .in_list(vec![lit("b"), lit("c"), lit("d")], false)
                .and(col("ingest_time").is_not_null()),
        ])
        .unwrap();
        assert_eq!((f.nodes, f.sensors), (names(&["b", "c"]), None));
        let dictionary = ScalarValue::Dictionary(
            Box::new(DataType::Int32),
            Box::new(ScalarValue::Utf8(Some("x".into()))),
        );
        let f = SeriesFilter::from_filters(&[col("sensor").eq(lit(dictionary))]).unwrap();
        assert_eq!(f.sensors, names(&["x"]));
        // Not a restriction: NOT IN, <>, OR, a non-string literal, other columns.
        for other in [
            col("node_id").in_list(vec![lit("a")], true),
            col("node_id").not_eq(lit("a")),
            col("node_id").eq(lit("a")).or(col("node_id").eq(lit("b"))),
            col("node_id").eq(lit(3)),
            col("network").eq(lit("a")),
            col("node_id").eq(col("sensor")),
        ] {
            assert_eq!(
                SeriesFilter::from_filters(std::slice::from_ref(&other)),
                None,
                "{other}"
            );
        }
    }
}
