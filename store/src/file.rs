//! Publishing a small file whole: written under a temporary name beside its destination,
//! fsync'd, renamed over it, and the directory fsync'd, so a reader (or a restart after a
//! crash) sees the old content or the new, never a mix, and the rename itself is durable.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `dest` atomically (see the module header). The temporary file is
/// `dest` with `.tmp` appended to its name.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let mut f = File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(tmp, dest)?;
    sync_parent(dest)
}

/// Fsyncs the directory holding `path`, making a rename or a new name in it durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
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
