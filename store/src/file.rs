//! Durability on the file system: every fsync of the store goes through here.
//!
//! - [`write_atomically`] publishes a small file whole: written under a temporary name beside
//!   its destination, fsync'd, renamed over it, and the directory fsync'd, so a reader (or a
//!   restart after a crash) sees the old content or the new, never a mix, and the rename
//!   itself is durable.
//! - [`replace_file`] does the same without either sync, for a file that is only a view of
//!   state kept elsewhere and rewritten often (a lost update costs nothing after a crash).
//! - [`create_dir_durably`] makes a new directory's name durable in its parent (a file
//!   fsync'd inside a directory whose own entry was never fsync'd may vanish with it).
//! - [`fsync`], [`fdatasync`] and [`sync_dir`] report each completed sync to an observer a
//!   test may install ([`observe_syncs`]): the power-cut model rebuilds, after each one, the
//!   state a power cut at that moment would leave (only what a completed fsync covers).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// A sync that completed: from now on this file's content, or this directory's entries,
/// survive a power cut.
#[derive(Debug, Clone, Copy)]
pub enum Synced<'a> {
    File(&'a Path),
    Dir(&'a Path),
}

static OBSERVER: OnceLock<fn(Synced<'_>)> = OnceLock::new();

/// Installs the observer of completed syncs, called on the syncing thread right after each
/// (once per process; returns false if one was installed already). For crash-model tests.
#[doc(hidden)]
pub fn observe_syncs(observer: fn(Synced<'_>)) -> bool {
    OBSERVER.set(observer).is_ok()
}

fn synced(what: Synced<'_>) {
    if let Some(observe) = OBSERVER.get() {
        observe(what);
    }
}

/// `fsync(2)` of `file` (at `path`): its data and metadata are durable.
pub fn fsync(file: &File, path: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    synced(Synced::File(path));
    Ok(())
}

/// `fdatasync(2)` of `file` (at `path`): its data, and its size, are durable.
pub fn fdatasync(file: &File, path: &Path) -> std::io::Result<()> {
    file.sync_data()?;
    synced(Synced::File(path));
    Ok(())
}

/// Fsyncs directory `dir`: the names in it (new, renamed, removed) are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()?;
    synced(Synced::Dir(dir));
    Ok(())
}

/// `create_dir_all`, then each directory it created made durable in its parent.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_parent(created)?;
    }
    Ok(())
}

/// Writes `bytes` to `dest` atomically (see the module header). The temporary file is
/// `dest` with `.tmp` appended to its name.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let written = File::create(tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        fsync(&f, tmp)
    });
    if let Err(e) = written {
        // A full disk is the likely cause: give the space back now.
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::rename(tmp, dest)?;
    sync_parent(dest)
}

/// Replaces `dest` with `bytes` whole — readers see the old content or the new — without
/// syncing: for views rewritten every second, which would otherwise put an fsync beside the
/// WAL's on the same disk each time. The temporary file is `dest` with `.tmp` appended.
pub fn replace_file(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    if let Err(e) = std::fs::write(tmp, bytes) {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::rename(tmp, dest)
}

/// Whether an I/O error means the file system (or the user's quota) has no room left: the
/// write may succeed later, unlike a failed fsync.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Fsyncs the directory holding `path`, making a rename or a new name in it durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("nodes.json");
        write_atomically(&dest, b"old").unwrap();
        write_atomically(&dest, b"new content").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new content");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("nodes.json")]);
    }
}
