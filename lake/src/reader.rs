//! The reading side of the `readings` table: one snapshot per query.
//!
//! A [`LakeReader`] keeps the table it loaded and brings it up to the newest version before
//! every [`LakeReader::snapshot`], reading only the commits added since (the Delta log is the
//! listing: data directories are never listed, so nothing cached can be stale). A snapshot
//! names the WAL ranges of its files, so the caller can add what the WAL holds beyond them.

use std::path::Path;
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::datafusion::catalog::{Session, TableProvider};
use futures_util::TryStreamExt as _;
use samos_store::layout;
use tokio::sync::Mutex;

use crate::{LakeError, TableLocation};

/// One version of the table, for one query.
pub struct LakeSnapshot {
    table: DeltaTable,
    /// The WAL ranges of the snapshot's data files.
    pub covered: Vec<(u64, u64)>,
}

impl std::fmt::Debug for LakeSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSnapshot")
            .field("version", &self.table.version())
            .field("files", &self.covered.len())
            .finish()
    }
}

impl LakeSnapshot {
    /// The table's version this snapshot is.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
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

/// Queries' access to the table at one location.
#[derive(Debug)]
pub struct LakeReader {
    location: TableLocation,
    table: Mutex<Option<DeltaTable>>,
}

impl LakeReader {
    pub fn new(location: TableLocation) -> LakeReader {
        LakeReader {
            location,
            table: Mutex::new(None),
        }
    }

    pub fn location(&self) -> &TableLocation {
        &self.location
    }

    /// The newest snapshot, or `None` while the table has not been created.
    pub async fn snapshot(&self) -> Result<Option<LakeSnapshot>, LakeError> {
        let mut cached = self.table.lock().await;
        let table = match cached.as_mut() {
            Some(table) => {
                table.update_state().await?;
                table
            }
            None => {
                let mut table = crate::table_at(&self.location)?;
                if !table.verify_deltatable_existence().await? {
                    return Ok(None);
                }
                table.load().await?;
                cached.insert(table)
            }
        };
        let table = table.clone();
        drop(cached);
        let covered = table
            .snapshot()?
            .snapshot()
            .file_views(table.log_store().as_ref(), None)
            .map_ok(|view| layout::file_range(Path::new(view.path().as_ref())))
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(Some(LakeSnapshot { table, covered }))
    }
}
