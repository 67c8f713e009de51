//! The protocol's files on the object store, so that every instance of a dataset and every
//! reader sees the `nodes`, `events` and `rejected` of all of them.
//!
//! ```text
//! {base}/protocol/{instance}/nodes.json                                 the registry, replaced
//! {base}/protocol/{instance}/peers.json     its fields another instance carries over, replaced
//! {base}/protocol/{instance}/events/{epoch:013}-{first:020}-{end:020}.jsonl    a run of lines
//! {base}/protocol/{instance}/rejected/…                                 likewise
//! ```
//!
//! Each instance is the one writer of its own prefix ([`ProtocolMirror`]). The registry is
//! uploaded whole (for the `nodes` table) when the local file changed, at most once a second
//! per megabyte of it, so at most about 1 MB/s however many nodes an instance holds (a registry
//! of 50,000 nodes, about 150 MB with their configurations, at most once a minute). What the
//! other instances follow every second to carry a moving node over is `peers.json`: each
//! node's record cut to the fields the caller names (no configuration, about 150 bytes a
//! node), under the same rule — 50,000 nodes, about 7 MB, at most every 7 seconds. The logs are append-only local files
//! (`events.jsonl`, `rejected.jsonl`) followed by byte offset: each sync uploads the complete
//! lines past the offset as one object named by its byte range, then records the new offset
//! locally (`data/lake-protocol.json`). A crash between the two uploads from the same offset
//! again: the same name if no line arrived meanwhile, else a longer run starting at the same
//! byte (the file only grows, so it holds the first run's bytes), and readers leave out a run
//! inside another; either way no line is read twice. Should the local file ever shrink (replaced by hand), a new
//! epoch starts the names afresh rather than overwrite what is stored.
//!
//! Readers ([`instances`], [`registries`], [`logs`]) list the prefix and read every instance;
//! an object whose range lies inside another's of the same epoch (a future merge of small
//! runs) is left out, so a listing taken during such a merge neither loses nor doubles lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use crate::LakeError;
use crate::location::PROTOCOL_PREFIX;

/// The local file recording how far the logs have been uploaded.
pub const MIRROR_STATE_FILE: &str = "lake-protocol.json";

/// The append-only logs mirrored, by their local file name and their folder on the store.
pub const LOGS: [(&str, &str); 2] = [
    (samos_store::layout::EVENTS_FILE, "events"),
    (samos_store::layout::REJECTED_FILE, "rejected"),
];

/// The registry's object name in an instance's folder.
const NODES_OBJECT: &str = "nodes.json";
/// The registry cut to what another instance carries over.
const PEERS_OBJECT: &str = "peers.json";

/// Reads at most this many objects at once.
const READ_CONCURRENCY: usize = 16;

#[derive(Debug, Default, Serialize, Deserialize)]
struct MirrorState {
    /// Per log folder: the epoch of its names and the local offset uploaded through.
    logs: HashMap<String, LogState>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct LogState {
    epoch: i64,
    offset: u64,
}

/// What one sync uploaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub registry: bool,
    pub peers: bool,
    pub log_bytes: u64,
}

/// One instance's writer of its protocol folder.
#[derive(Debug)]
pub struct ProtocolMirror {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    data_dir: PathBuf,
    state: MirrorState,
    /// Length and modification time of the registry file last uploaded, and when.
    registry_uploaded: Option<((u64, SystemTime), std::time::Instant)>,
    /// The same for `peers.json`, and its size.
    peers_uploaded: Option<((u64, SystemTime), std::time::Instant, u64)>,
    /// The fields of a registry record `peers.json` keeps.
    peer_fields: &'static [&'static str],
}

impl ProtocolMirror {
    /// The mirror of `data_dir`'s protocol files into `instance`'s folder of `store`;
    /// `peer_fields` are the fields of a registry record the other instances carry over.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        instance: &str,
        data_dir: &Path,
        peer_fields: &'static [&'static str],
    ) -> Result<ProtocolMirror, LakeError> {
        let path = data_dir.join(MIRROR_STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LakeError::Marker {
                path: path.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MirrorState::default(),
            Err(source) => return Err(LakeError::Io { path, source }),
        };
        Ok(ProtocolMirror {
            store,
            prefix: format!("{PROTOCOL_PREFIX}/{instance}"),
            data_dir: data_dir.to_path_buf(),
            state,
            registry_uploaded: None,
            peers_uploaded: None,
            peer_fields,
        })
    }

    /// Uploads what changed since the last sync: the registry if its file changed, the new
    /// complete lines of each log.
    pub async fn sync(&mut self) -> Result<Synced, LakeError> {
        let mut synced = Synced::default();
        let registry = self.data_dir.join(samos_store::layout::NODES_FILE);
        if let Ok(meta) = std::fs::metadata(&registry) {
            let seen = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            let due = match self.registry_uploaded {
                None => true,
                Some((last, at)) => last != seen && at.elapsed() >= registry_interval(seen.0),
            };
            let peers_due = match self.peers_uploaded {
                None => true,
                Some((last, at, size)) => last != seen && at.elapsed() >= registry_interval(size),
            };
            if due || peers_due {
                let bytes = read(&registry)?;
                if peers_due {
                    let peers = cut(&bytes, self.peer_fields).map_err(|why| LakeError::Marker {
                        path: registry.clone(),
                        why,
                    })?;
                    let size = peers.len() as u64;
                    self.put(&format!("{}/{PEERS_OBJECT}", self.prefix), peers)
                        .await?;
                    self.peers_uploaded = Some((seen, std::time::Instant::now(), size));
                    synced.peers = true;
                }
                if due {
                    self.put(&format!("{}/{NODES_OBJECT}", self.prefix), bytes)
                        .await?;
                    self.registry_uploaded = Some((seen, std::time::Instant::now()));
                    synced.registry = true;
                }
            }
        }
        for (file, folder) in LOGS {
            synced.log_bytes += self.sync_log(file, folder).await?;
        }
        Ok(synced)
    }

    async fn sync_log(&mut self, file: &str, folder: &str) -> Result<u64, LakeError> {
        let path = self.data_dir.join(file);
        let len = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(LakeError::Io { path, source }),
        };
        let now = chrono::Utc::now().timestamp_millis();
        let mut log = *self
            .state
            .logs
            .entry(folder.to_owned())
            .or_insert(LogState {
                epoch: now,
                offset: 0,
            });
        if len < log.offset {
            tracing::warn!(file = %path.display(), "a protocol log shrank: mirroring it afresh under a new epoch");
            log = LogState {
                epoch: now.max(log.epoch + 1),
                offset: 0,
            };
        }
        if len == log.offset {
            return Ok(0);
        }
        let tail = read_from(&path, log.offset)?;
        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
            return Ok(0);
        };
        let lines = tail.slice(..=end);
        let first = log.offset;
        let last = first + lines.len() as u64;
        let name = format!(
            "{}/{folder}/{:013}-{first:020}-{last:020}.jsonl",
            self.prefix, log.epoch
        );
        self.put(&name, lines).await?;
        log.offset = last;
        self.state.logs.insert(folder.to_owned(), log);
        self.save()?;
        Ok(last - first)
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), LakeError> {
        self.store
            .put(&ObjectPath::from(name), bytes.into())
            .await
            .map_err(|e| LakeError::Upload {
                path: name.to_owned(),
                why: e.to_string(),
            })?;
        Ok(())
    }

    fn save(&self) -> Result<(), LakeError> {
        let path = self.data_dir.join(MIRROR_STATE_FILE);
        let bytes = serde_json::to_vec(&self.state).expect("mirror state serializes");
        samos_store::file::write_atomically(&path, &bytes)
            .map_err(|source| LakeError::Io { path, source })
    }
}

/// A registry (a JSON array of records) with each record cut to `fields`.
fn cut(registry: &[u8], fields: &[&str]) -> Result<Bytes, String> {
    let records: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(registry).map_err(|e| e.to_string())?;
    let cut: Vec<serde_json::Map<String, serde_json::Value>> = records
        .into_iter()
        .map(|mut r| {
            r.retain(|k, _| fields.contains(&k.as_str()));
            r
        })
        .collect();
    Ok(serde_json::to_vec(&cut).map_err(|e| e.to_string())?.into())
}

/// The least time between two uploads of a registry of `bytes`: a second per megabyte,
/// between one second and a minute.
fn registry_interval(bytes: u64) -> std::time::Duration {
    std::time::Duration::from_secs_f64((bytes as f64 / 1e6).clamp(1.0, 60.0))
}

fn read(path: &Path) -> Result<Bytes, LakeError> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|source| LakeError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn read_from(path: &Path, offset: u64) -> Result<Bytes, LakeError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let io = |source| LakeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes.into())
}

/// The instances with a folder under `prefix` (`readings` or `protocol`), sorted.
pub async fn instances(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>, LakeError> {
    let listing = store
        .list_with_delimiter(Some(&ObjectPath::from(prefix)))
        .await?;
    let mut names: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Every instance's registry file as stored, except `except`'s (the caller has its own).
pub async fn registries(
    store: &dyn ObjectStore,
    except: Option<&str>,
) -> Result<Vec<(String, Bytes)>, LakeError> {
    RegistryFollower::new(NODES_OBJECT)
        .read(store, except)
        .await
}

/// Reads the instances' registry files (or their `peers.json`) again and again, fetching only
/// those whose object changed since (a HEAD each, a GET for a changed one).
#[derive(Debug)]
pub struct RegistryFollower {
    object: &'static str,
    /// By instance: the object's e-tag (or modification time) and its bytes.
    seen: HashMap<String, (String, Bytes)>,
}

impl RegistryFollower {
    /// A follower of the instances' `peers.json`: what a moving node is carried over with.
    pub fn peers() -> RegistryFollower {
        RegistryFollower::new(PEERS_OBJECT)
    }

    fn new(object: &'static str) -> RegistryFollower {
        RegistryFollower {
            object,
            seen: HashMap::new(),
        }
    }

    /// Every instance's object, except `except`'s, sorted by instance.
    pub async fn read(
        &mut self,
        store: &dyn ObjectStore,
        except: Option<&str>,
    ) -> Result<Vec<(String, Bytes)>, LakeError> {
        let names = instances(store, PROTOCOL_PREFIX).await?;
        let (seen, object) = (&self.seen, self.object);
        let fetched: Vec<(String, String, Bytes)> =
            futures_util::stream::iter(names.into_iter().filter(|n| Some(n.as_str()) != except))
                .map(|instance| async move {
                    let path = ObjectPath::from(format!("{PROTOCOL_PREFIX}/{instance}/{object}"));
                    let meta = match store.head(&path).await {
                        Ok(meta) => meta,
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(e) => return Err(LakeError::from(e)),
                    };
                    let tag = meta
                        .e_tag
                        .clone()
                        .unwrap_or_else(|| format!("{}/{}", meta.last_modified, meta.size));
                    if let Some((old, bytes)) = seen.get(&instance)
                        && *old == tag
                    {
                        return Ok(Some((instance, tag, bytes.clone())));
                    }
                    match store.get(&path).await {
                        Ok(got) => Ok(Some((instance, tag, got.bytes().await?))),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(LakeError::from(e)),
                    }
                })
                .buffered(READ_CONCURRENCY)
                .try_filter_map(|x| async move { Ok(x) })
                .try_collect()
                .await?;
        self.seen = fetched
            .iter()
            .map(|(i, tag, bytes)| (i.clone(), (tag.clone(), bytes.clone())))
            .collect();
        Ok(fetched.into_iter().map(|(i, _, b)| (i, b)).collect())
    }
}

/// Every instance's lines of one log (`events` or `rejected`) in the order they were written,
/// except `except`'s (the caller reads its own local file).
pub async fn logs(
    store: &dyn ObjectStore,
    folder: &str,
    except: Option<&str>,
) -> Result<Vec<(String, Bytes)>, LakeError> {
    let names = instances(store, PROTOCOL_PREFIX).await?;
    let mut objects = Vec::new();
    for instance in names.into_iter().filter(|n| Some(n.as_str()) != except) {
        let prefix = ObjectPath::from(format!("{PROTOCOL_PREFIX}/{instance}/{folder}"));
        let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        let runs: Vec<(Run, ObjectPath)> = listed
            .into_iter()
            .filter_map(|meta| Some((Run::parse(meta.location.filename()?)?, meta.location)))
            .collect();
        let mut kept: Vec<(Run, ObjectPath)> = runs
            .iter()
            .filter(|(run, _)| !runs.iter().any(|(other, _)| run.inside(other)))
            .cloned()
            .collect();
        kept.sort_by_key(|(run, _)| *run);
        objects.extend(kept.into_iter().map(|(_, path)| (instance.clone(), path)));
    }
    futures_util::stream::iter(objects)
        .map(|(instance, path)| async move {
            Ok::<_, LakeError>((instance, store.get(&path).await?.bytes().await?))
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
}

/// A stored run of log lines: epoch and local byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Run {
    epoch: i64,
    first: u64,
    end: u64,
}

impl Run {
    fn parse(name: &str) -> Option<Run> {
        let mut parts = name.strip_suffix(".jsonl")?.split('-');
        let run = Run {
            epoch: parts.next()?.parse().ok()?,
            first: parts.next()?.parse().ok()?,
            end: parts.next()?.parse().ok()?,
        };
        (parts.next().is_none() && run.first < run.end).then_some(run)
    }

    /// Strictly inside `other` (a merged run holds it).
    fn inside(&self, other: &Run) -> bool {
        self != other
            && self.epoch == other.epoch
            && other.first <= self.first
            && self.end <= other.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;

    fn store(dir: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())
    }

    fn append(path: &Path, text: &str) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn text(parts: &[(String, Bytes)]) -> String {
        parts
            .iter()
            .map(|(_, b)| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn logs_are_mirrored_once_line_by_line_and_read_back_in_order() {
        let data = tempfile::tempdir().unwrap();
        let bucket = tempfile::tempdir().unwrap();
        let store = store(bucket.path());
        let events = data.path().join("events.jsonl");
        let mut mirror = ProtocolMirror::new(store.clone(), "a", data.path(), &[]).unwrap();
        assert_eq!(mirror.sync().await.unwrap(), Synced::default());
        append(&events, "{\"n\":1}\n{\"n\":2}\n{\"n\":");
        assert_eq!(mirror.sync().await.unwrap().log_bytes, 16);
        assert_eq!(
            mirror.sync().await.unwrap().log_bytes,
            0,
            "a torn line waits"
        );
        append(&events, "3}\n");
        assert_eq!(mirror.sync().await.unwrap().log_bytes, 8);
        // A restart resumes from the recorded offset.
        let mut again = ProtocolMirror::new(store.clone(), "a", data.path(), &[]).unwrap();
        assert_eq!(again.sync().await.unwrap().log_bytes, 0);
        let got = logs(store.as_ref(), "events", None).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(text(&got), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
        assert!(
            logs(store.as_ref(), "events", Some("a"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            logs(store.as_ref(), "rejected", None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_merged_run_hides_the_runs_inside_it() {
        let bucket = tempfile::tempdir().unwrap();
        let store = store(bucket.path());
        for (name, body) in [
            ("1-00000000000000000000-00000000000000000002.jsonl", "a\n"),
            ("1-00000000000000000002-00000000000000000004.jsonl", "b\n"),
            (
                "1-00000000000000000000-00000000000000000004.jsonl",
                "a\nb\n",
            ),
            ("1-00000000000000000004-00000000000000000006.jsonl", "c\n"),
        ] {
            let path = ObjectPath::from(format!("protocol/x/events/{name}"));
            store.put(&path, Bytes::from(body).into()).await.unwrap();
        }
        let got = logs(store.as_ref(), "events", None).await.unwrap();
        assert_eq!(text(&got), "a\nb\nc\n");
    }

    #[tokio::test]
    async fn the_registry_is_uploaded_when_it_changes_and_read_per_instance() {
        let data = tempfile::tempdir().unwrap();
        let bucket = tempfile::tempdir().unwrap();
        let store = store(bucket.path());
        let nodes = data.path().join("nodes.json");
        std::fs::write(&nodes, "[]").unwrap();
        let mut mirror =
            ProtocolMirror::new(store.clone(), "b", data.path(), &["node_id"]).unwrap();
        assert!(mirror.sync().await.unwrap().registry);
        assert!(!mirror.sync().await.unwrap().registry);
        std::fs::write(&nodes, r#"[{"node_id":"CN1","config_xml":"<big/>"}]"#).unwrap();
        // Changed, but uploaded less than a second ago: it waits.
        assert!(!mirror.sync().await.unwrap().registry);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(mirror.sync().await.unwrap().registry);
        assert_eq!(registry_interval(150_000_000).as_secs(), 60);
        let got = registries(store.as_ref(), None).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "b");
        assert!(String::from_utf8_lossy(&got[0].1).contains("<big/>"));
        // What the other instances follow: the record cut to the fields named.
        let peers = RegistryFollower::peers()
            .read(store.as_ref(), Some("a"))
            .await
            .unwrap();
        assert_eq!(&peers[0].1[..], br#"[{"node_id":"CN1"}]"#);
        assert!(
            registries(store.as_ref(), Some("b"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
