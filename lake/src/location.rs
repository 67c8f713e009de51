//! Where the history table lives and how to reach it.
//!
//! A location is a base URL (`s3://bucket/prefix`, `file:///srv/history`) and the storage
//! options `object_store` and `deltalake` take (`AWS_ENDPOINT_URL`, `AWS_REGION`, `allow_http`,
//! …); the `readings` table is `{base}/readings`. Credentials come from the standard `AWS_*`
//! environment variables unless the options carry them.
//!
//! The server writes the location, without its secrets, beside the WAL
//! (`data/lake.json`, see [`TableLocation::write_marker`]), so that `samos sql`, `samos mine`
//! and the HTTP API find the history from the data directory alone, as they do for the local
//! store; they take credentials from their own environment.

use std::collections::HashMap;
use std::path::Path;

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

/// The `readings` table's place on object storage (or a local directory).
#[derive(Clone, PartialEq, Eq)]
pub struct TableLocation {
    /// The table's root: `{base}/readings`.
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

#[derive(Serialize, Deserialize)]
struct Marker {
    url: String,
    options: HashMap<String, String>,
}

impl TableLocation {
    /// The `readings` table under `base` (`s3://bucket/prefix`, `s3a://…` or `file:///dir`),
    /// reached with `options`.
    pub fn readings(base: &str, options: HashMap<String, String>) -> Result<Self, LakeError> {
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
        let path = format!("{}/readings", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let options = options
            .into_iter()
            .map(|(k, v)| (normalise_key(&k), v))
            .collect();
        Ok(TableLocation { url, options })
    }

    /// The table's root URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The storage options, credentials included.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The options as the `AWS_*` environment variables a child process (`samos mine`) reads
    /// the table with.
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

    /// Writes the location without its secrets to `dir/lake.json` (atomically).
    pub fn write_marker(&self, dir: &Path) -> Result<(), LakeError> {
        let marker = Marker {
            url: self.url.to_string(),
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

    /// The location a server recorded in `dir/lake.json`, or `None` where the history is the
    /// local Parquet store. Credentials are left to the reader's environment.
    pub fn read_marker(dir: &Path) -> Result<Option<TableLocation>, LakeError> {
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
            why: e.to_string(),
        })?;
        let url = Url::parse(&marker.url).map_err(|e| LakeError::Marker {
            path,
            why: e.to_string(),
        })?;
        Ok(Some(TableLocation {
            url,
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
    fn the_readings_table_lies_under_the_base() {
        let l = TableLocation::readings("s3://bucket/history/", HashMap::new()).unwrap();
        assert_eq!(l.url().as_str(), "s3://bucket/history/readings");
        let l = TableLocation::readings("s3://bucket", HashMap::new()).unwrap();
        assert_eq!(l.url().as_str(), "s3://bucket/readings");
        let l = TableLocation::readings("file:///srv/h", HashMap::new()).unwrap();
        assert_eq!(l.url().as_str(), "file:///srv/h/readings");
        assert!(TableLocation::readings("s3:///x", HashMap::new()).is_err());
        assert!(TableLocation::readings("http://x/y", HashMap::new()).is_err());
        assert!(TableLocation::readings("not a url", HashMap::new()).is_err());
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
        let l = TableLocation::readings("s3://b/p", options).unwrap();
        assert!(!format!("{l:?}").contains("s3cr3t"));
        assert_eq!(
            l.options()["AWS_ENDPOINT_URL"].as_str(),
            "http://127.0.0.1:3900"
        );
        assert!(TableLocation::read_marker(dir.path()).unwrap().is_none());
        l.write_marker(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MARKER_FILE)).unwrap();
        assert!(!text.contains("s3cr3t") && !text.contains("GK1"), "{text}");
        let read = TableLocation::read_marker(dir.path()).unwrap().unwrap();
        assert_eq!(read.url(), l.url());
        assert_eq!(read.options().len(), 2);
        TableLocation::remove_marker(dir.path()).unwrap();
        assert!(TableLocation::read_marker(dir.path()).unwrap().is_none());
    }
}
