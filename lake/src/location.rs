//! Where the history lives and how to reach it.
//!
//! A [`Dataset`] is a base URL (`s3://bucket/prefix`, `file:///srv/history`) and the storage
//! options `object_store` and `deltalake` take (`AWS_ENDPOINT_URL`, `AWS_REGION`, `allow_http`,
//! …). Every Samos instance that shares the dataset writes its own `readings` Delta table,
//! `{base}/readings/{instance}` (a [`TableLocation`]), and mirrors its protocol files under
//! `{base}/protocol/{instance}/`; readers take the union. Credentials come from the standard
//! `AWS_*` environment variables unless the options carry them.
//!
//! The server writes the dataset, without its secrets, beside the WAL (`data/lake.json`, see
//! [`Dataset::write_marker`]; its instance id is `data/instance-id`), so that `samos sql`, `samos mine` and
//! the HTTP API find the history from the data directory alone, as they do for the local
//! store; they take credentials from their own environment.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use object_store::ObjectStore;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::LakeError;

/// The file beside the WAL that names the table a data directory's history lives in.
pub const MARKER_FILE: &str = "lake.json";

/// Option names never written to the marker file.
const SECRET_OPTIONS: [&str; 3] = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
];

/// One Delta table's place on object storage (or in a local directory).
#[derive(Clone, PartialEq, Eq)]
pub struct TableLocation {
    /// The table's root.
    url: Url,
    options: HashMap<String, String>,
}

impl std::fmt::Debug for TableLocation {
    /// Shows option names, never their values (they may be credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLocation")
            .field("url", &self.url.as_str())
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TableLocation {
    /// The table's root URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The storage options, credentials included.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }
}

/// The history shared by every instance pointed at one base URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    base: Url,
    options: HashMap<String, String>,
}

impl std::fmt::Debug for Dataset {
    /// Shows option names, never their values (they may be credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("base", &self.base.as_str())
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    /// The dataset's base URL.
    base: String,
    options: HashMap<String, String>,
}

/// Where the readings tables of all instances lie, under the base.
pub const READINGS_PREFIX: &str = "readings";
/// Where the instances' protocol files lie, under the base.
pub const PROTOCOL_PREFIX: &str = "protocol";

impl Dataset {
    /// The dataset at `base` (`s3://bucket/prefix`, `s3a://…` or `file:///dir`), reached with
    /// `options`.
    pub fn new(base: &str, options: HashMap<String, String>) -> Result<Self, LakeError> {
        let bad = |why: &str| LakeError::Location {
            url: base.to_owned(),
            why: why.to_owned(),
        };
        let mut url = Url::parse(base.trim_end_matches('/')).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "s3" | "s3a" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad("an S3 URL names its bucket: s3://bucket/prefix"));
                }
            }
            "file" => {}
            other => {
                return Err(bad(&format!(
                    "unsupported scheme {other}: use s3://bucket/prefix or file:///directory"
                )));
            }
        }
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        let options = options
            .into_iter()
            .map(|(k, v)| (normalise_key(&k), v))
            .collect();
        Ok(Dataset { base: url, options })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The storage options, credentials included.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// `{base}/{relative}`.
    fn under(&self, relative: &str) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}/{relative}", self.base.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    /// The `readings` table `instance` writes: `{base}/readings/{instance}`.
    pub fn readings(&self, instance: &str) -> TableLocation {
        TableLocation {
            url: self.under(&format!("{READINGS_PREFIX}/{instance}")),
            options: self.options.clone(),
        }
    }

    /// Where the single `readings` table of an older layout (one writer) lay.
    pub(crate) fn single_table(&self) -> TableLocation {
        TableLocation {
            url: self.under(READINGS_PREFIX),
            options: self.options.clone(),
        }
    }

    /// Refuses a dataset whose base holds the single `readings` table of an older Samos: its
    /// files would be misread as instances' tables.
    pub async fn refuse_old_layout(&self) -> Result<(), LakeError> {
        let single = self.single_table();
        if crate::table_at(&single)?
            .verify_deltatable_existence()
            .await?
        {
            return Err(LakeError::OldLayout {
                table: single.url().to_string(),
            });
        }
        Ok(())
    }

    /// The store, its paths relative to the base (`readings/…`, `protocol/…`).
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, LakeError> {
        if self.base.scheme() == "file" {
            // The local store wants its root to exist.
            let dir = self.base.to_file_path().map_err(|()| LakeError::Location {
                url: self.base.to_string(),
                why: "not a local path".into(),
            })?;
            std::fs::create_dir_all(&dir).map_err(|source| LakeError::Io { path: dir, source })?;
        }
        Ok(deltalake::DeltaTableBuilder::from_url(self.base.clone())?
            .with_storage_options(self.options.clone())
            .build_storage()?
            .object_store(None))
    }

    /// The options as the `AWS_*` environment variables a child process (`samos mine`) reads
    /// the dataset with.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.options
            .iter()
            .map(|(k, v)| match k.as_str() {
                "allow_http" => ("AWS_ALLOW_HTTP".to_owned(), v.clone()),
                _ => (k.clone(), v.clone()),
            })
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect()
    }

    /// Writes the dataset without its secrets to `dir/lake.json` (atomically).
    pub fn write_marker(&self, dir: &Path) -> Result<(), LakeError> {
        let marker = Marker {
            base: self.base.to_string(),
            options: self
                .options
                .iter()
                .filter(|(k, _)| !SECRET_OPTIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let path = dir.join(MARKER_FILE);
        let bytes = serde_json::to_vec_pretty(&marker).map_err(|e| LakeError::Marker {
            path: path.clone(),
            why: e.to_string(),
        })?;
        samos_store::file::write_atomically(&path, &bytes).map_err(|e| LakeError::Marker {
            path,
            why: e.to_string(),
        })
    }

    /// The dataset a server recorded in `dir/lake.json`, or `None` where the history is the
    /// local Parquet store. Credentials are left to the reader's environment.
    pub fn read_marker(dir: &Path) -> Result<Option<Dataset>, LakeError> {
        let path = dir.join(MARKER_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LakeError::Marker {
                    path,
                    why: e.to_string(),
                });
            }
        };
        let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| LakeError::Marker {
            path: path.clone(),
            why: format!("{e} (written by an older Samos? start the server once to rewrite it)"),
        })?;
        let base = Url::parse(&marker.base).map_err(|e| LakeError::Marker {
            path,
            why: e.to_string(),
        })?;
        Ok(Some(Dataset {
            base,
            options: marker.options,
        }))
    }

    /// Removes the marker: the data directory's history is local again.
    pub fn remove_marker(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(dir.join(MARKER_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A dataset and its object store, built at the first use and kept (one client, its
/// connections pooled, for every read of a long-lived session).
#[derive(Debug)]
pub struct DatasetHandle {
    dataset: Dataset,
    store: OnceLock<Arc<dyn ObjectStore>>,
}

impl DatasetHandle {
    pub fn new(dataset: Dataset) -> DatasetHandle {
        DatasetHandle {
            dataset,
            store: OnceLock::new(),
        }
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The dataset's store (see [`Dataset::store`]).
    pub fn store(&self) -> Result<&Arc<dyn ObjectStore>, LakeError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = self.dataset.store()?;
        Ok(self.store.get_or_init(|| store))
    }
}

/// Option names as `deltalake` reads them from the environment: `endpoint` and
/// `aws_endpoint_url` both become `AWS_ENDPOINT_URL`; `allow_http` stays as it is.
fn normalise_key(key: &str) -> String {
    let upper = key.to_ascii_uppercase();
    match upper.as_str() {
        "ENDPOINT" | "AWS_ENDPOINT" => "AWS_ENDPOINT_URL".into(),
        "REGION" => "AWS_REGION".into(),
        "ACCESS_KEY_ID" => "AWS_ACCESS_KEY_ID".into(),
        "SECRET_ACCESS_KEY" => "AWS_SECRET_ACCESS_KEY".into(),
        "ALLOW_HTTP" | "AWS_ALLOW_HTTP" => "allow_http".into(),
        _ => upper,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_has_a_readings_table_under_the_base() {
        let d = Dataset::new("s3://bucket/history/", HashMap::new()).unwrap();
        assert_eq!(
            d.readings("a").url().as_str(),
            "s3://bucket/history/readings/a"
        );
        assert_eq!(
            d.single_table().url().as_str(),
            "s3://bucket/history/readings"
        );
        let d = Dataset::new("s3://bucket", HashMap::new()).unwrap();
        assert_eq!(d.readings("i-2").url().as_str(), "s3://bucket/readings/i-2");
        let d = Dataset::new("file:///srv/h", HashMap::new()).unwrap();
        assert_eq!(d.readings("x").url().as_str(), "file:///srv/h/readings/x");
        assert!(Dataset::new("s3:///x", HashMap::new()).is_err());
        assert!(Dataset::new("http://x/y", HashMap::new()).is_err());
        assert!(Dataset::new("not a url", HashMap::new()).is_err());
    }

    #[test]
    fn the_marker_keeps_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let options = HashMap::from([
            ("endpoint".to_owned(), "http://127.0.0.1:3900".to_owned()),
            ("secret_access_key".to_owned(), "s3cr3t".to_owned()),
            ("access_key_id".to_owned(), "GK1".to_owned()),
            ("allow_http".to_owned(), "true".to_owned()),
        ]);
        let d = Dataset::new("s3://b/p", options).unwrap();
        assert!(!format!("{d:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", d.readings("i")).contains("s3cr3t"));
        assert_eq!(
            d.options()["AWS_ENDPOINT_URL"].as_str(),
            "http://127.0.0.1:3900"
        );
        assert!(Dataset::read_marker(dir.path()).unwrap().is_none());
        d.write_marker(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap();
        assert!(!text.contains("s3cr3t") && !text.contains("GK1"), "{text}");
        let read = Dataset::read_marker(dir.path()).unwrap().unwrap();
        assert_eq!(read.base(), d.base());
        assert_eq!(read.options().len(), 2);
        Dataset::remove_marker(dir.path()).unwrap();
        assert!(Dataset::read_marker(dir.path()).unwrap().is_none());
    }
}
