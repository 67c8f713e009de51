//! How far a bridge has got, durably: `bridges/{name}.json` in the data directory, replaced
//! whole (temporary file, fsync, rename) every time it moves.
//!
//! A [`Position`] counts only what the upstream broker acknowledged: every WAL record through
//! `wal_seq`, the first `wal_done` messages of record `wal_seq + 1`, and every line of
//! `events.jsonl` before byte `events_offset`. `wal_done` is meaningful only for the same
//! forward rules (which decide a record's messages), so the file keeps the rules it was
//! counted with; under other rules a resumed record is sent whole.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The acknowledged prefix of what a bridge forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    pub wal_seq: u64,
    pub wal_done: u64,
    pub events_offset: u64,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    position: Position,
    /// The forward rules `wal_done` was counted under.
    forwards: serde_json::Value,
}

/// One bridge's checkpoint file.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    forwards: serde_json::Value,
}

impl Checkpoint {
    pub fn new(data_dir: &Path, bridge: &str, forwards: serde_json::Value) -> Checkpoint {
        Checkpoint {
            path: data_dir.join("bridges").join(format!("{bridge}.json")),
            forwards,
        }
    }

    /// The saved position; `None` for a bridge that never ran here.
    pub fn load(&self) -> std::io::Result<Option<Position>> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_slice(&text).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path.display()),
            )
        })?;
        let mut position = saved.position;
        if saved.forwards != self.forwards {
            position.wal_done = 0;
        }
        Ok(Some(position))
    }

    pub fn store(&self, position: Position) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let saved = Saved {
            position,
            forwards: self.forwards.clone(),
        };
        samos_store::file::write_atomically(
            &self.path,
            &serde_json::to_vec(&saved).expect("a checkpoint serializes"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_and_a_partial_record_counts_only_under_the_same_rules() {
        let dir = tempfile::tempdir().unwrap();
        let rules = serde_json::json!([{"source": "readings"}]);
        let c = Checkpoint::new(dir.path(), "cloud", rules.clone());
        assert_eq!(c.load().unwrap(), None);
        let p = Position {
            wal_seq: 9,
            wal_done: 3,
            events_offset: 120,
        };
        c.store(p).unwrap();
        assert_eq!(c.load().unwrap(), Some(p));
        let other = Checkpoint::new(dir.path(), "cloud", serde_json::json!([]));
        assert_eq!(
            other.load().unwrap(),
            Some(Position { wal_done: 0, ..p }),
            "other rules: the record is sent whole"
        );
        std::fs::write(dir.path().join("bridges/cloud.json"), b"{").unwrap();
        assert!(
            c.load().is_err(),
            "a damaged checkpoint is an error, not a restart"
        );
    }
}
