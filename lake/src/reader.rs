//! The reading side of the `readings` tables: one snapshot of each instance's table per query.
//!
//! A [`LakeReader`] lists the instances' tables (one LIST of `{base}/readings/`), keeps each
//! table it loaded and brings it up to the newest version before every
//! [`LakeReader::snapshots`], reading only the commits added since (the Delta log is the
//! listing: data directories are never listed, so nothing cached can be stale). A snapshot
//! names the WAL ranges of its files, so the caller can add what its own WAL holds beyond them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::datafusion::catalog::{Session, TableProvider};
use futures_util::TryStreamExt as _;
use samos_store::layout;
use tokio::sync::Mutex;

use crate::location::DatasetHandle;
use crate::location::READINGS_PREFIX;
use crate::{Dataset, LakeError};

/// One version of one instance's table, for one query.
pub struct LakeSnapshot {
    table: DeltaTable,
}

impl std::fmt::Debug for LakeSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSnapshot")
            .field("version", &self.table.version())
            .finish()
    }
}

impl LakeSnapshot {
    /// The table's version this snapshot is.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// The WAL ranges of the snapshot's data files (of the instance that wrote them).
    pub async fn covered(&self) -> Result<Vec<(u64, u64)>, LakeError> {
        Ok(self
            .table
            .snapshot()?
            .snapshot()
            .file_views(self.table.log_store().as_ref(), None)
            .map_ok(|view| layout::file_range(Path::new(view.path().as_ref())))
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// The URLs of the snapshot's data files, each with the date of its partition
    /// (`YYYY-MM-DD`): what a reader outside Delta (a Ballista cluster) scans.
    pub async fn files(&self) -> Result<Vec<(String, url::Url)>, LakeError> {
        let mut root = self.table.table_url().clone();
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let paths: Vec<String> = self
            .table
            .snapshot()?
            .snapshot()
            .file_views(self.table.log_store().as_ref(), None)
            .map_ok(|view| view.path().as_ref().to_owned())
            .try_collect()
            .await?;
        paths
            .into_iter()
            .map(|path| {
                let date = path
                    .split('/')
                    .find_map(|part| part.strip_prefix("date="))
                    .unwrap_or_default()
                    .to_owned();
                let url = root.join(&path).map_err(|e| LakeError::Location {
                    url: format!("{root}{path}"),
                    why: e.to_string(),
                })?;
                Ok((date, url))
            })
            .collect()
    }

    /// A DataFusion provider scanning exactly this snapshot (partition and statistics
    /// pruning included); registers the table's object store with `session` first.
    pub async fn provider(
        &self,
        session: &dyn Session,
    ) -> Result<Arc<dyn TableProvider>, LakeError> {
        self.table.update_datafusion_session(session)?;
        self.table
            .table_provider()
            .await
            .map_err(|e| LakeError::Delta(e.into()))
    }
}

/// Queries' access to the `readings` tables of every instance of a dataset.
#[derive(Debug)]
pub struct LakeReader {
    dataset: Arc<DatasetHandle>,
    /// The tables loaded so far, by instance: brought up to date, never reloaded.
    tables: Mutex<HashMap<String, DeltaTable>>,
}

impl LakeReader {
    /// A reader of `dataset` (whose store it shares with the caller's other reads).
    pub fn new(dataset: Arc<DatasetHandle>) -> LakeReader {
        LakeReader {
            dataset,
            tables: Mutex::new(HashMap::new()),
        }
    }

    pub fn dataset(&self) -> &Dataset {
        self.dataset.dataset()
    }

    /// The newest snapshot of every instance's table, by instance (sorted); instances whose
    /// table has no commit yet are left out.
    pub async fn snapshots(&self) -> Result<Vec<(String, LakeSnapshot)>, LakeError> {
        let instances =
            crate::protocol::instances(self.dataset.store()?.as_ref(), READINGS_PREFIX).await?;
        if instances.iter().any(|i| i == "_delta_log") {
            return Err(LakeError::OldLayout {
                table: self.dataset().single_table().url().to_string(),
            });
        }
        let mut cached = self.tables.lock().await;
        let loads = instances.into_iter().map(|instance| {
            let table = cached.remove(&instance);
            let location = self.dataset().readings(&instance);
            async move {
                let table = match table {
                    Some(mut table) => {
                        table.update_state().await?;
                        Some(table)
                    }
                    None => {
                        let mut table = crate::table_at(&location)?;
                        if table.verify_deltatable_existence().await? {
                            table.load().await?;
                            Some(table)
                        } else {
                            None
                        }
                    }
                };
                Ok::<_, LakeError>((instance, table))
            }
        });
        let loaded = futures_util::future::try_join_all(loads).await?;
        let mut snapshots = Vec::new();
        for (instance, table) in loaded {
            if let Some(table) = table {
                cached.insert(instance.clone(), table.clone());
                snapshots.push((instance, LakeSnapshot { table }));
            }
        }
        Ok(snapshots)
    }
}
