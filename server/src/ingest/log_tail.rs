//! Following an append-only JSON-lines file (`events.jsonl`, `rejected.jsonl`) by byte
//! offset, as the PostgreSQL sink and the bridges do.
//!
//! Only whole lines are returned: a line still being written (no newline yet) is read next
//! time. A line that is not JSON (torn by a crash before the writer's newline) is reported and
//! stepped over, so it never blocks the follower. The caller moves `offset` once it has done
//! with what it read (loaded, acknowledged), so a crash re-reads rather than skips.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::PathBuf;

use tracing::warn;

#[derive(Debug)]
pub struct LogTail {
    pub path: PathBuf,
    /// The byte offset of the first line not yet done with.
    pub offset: u64,
}

/// One line and the offset just past it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    pub end: u64,
}

/// Lines read in one call and the offset past all of them (skipped ones included).
#[derive(Debug, Default)]
pub struct Chunk {
    pub lines: Vec<Line>,
    pub next: u64,
}

impl LogTail {
    pub fn new(path: PathBuf, offset: u64) -> LogTail {
        LogTail { path, offset }
    }

    /// Up to `max` whole JSON lines after `offset`; `None` when there is nothing new. Each
    /// line that is not JSON is passed to `skipped` (its offset) and left out. A file shorter
    /// than `offset` was replaced: it is read from its start.
    pub fn read(&mut self, max: usize, mut skipped: impl FnMut(u64)) -> Option<Chunk> {
        let file = std::fs::File::open(&self.path).ok()?;
        let len = file.metadata().ok()?.len();
        if len < self.offset {
            warn!(file = %self.path.display(), "file is shorter than the followed offset (replaced?): following it from the start");
            self.offset = 0;
        }
        if len == self.offset {
            return None;
        }
        let mut reader = std::io::BufReader::new(file);
        reader.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut chunk = Chunk {
            lines: Vec::new(),
            next: self.offset,
        };
        let mut line = String::new();
        while chunk.lines.len() < max {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    let start = chunk.next;
                    chunk.next += n as u64;
                    let text = line.trim_end();
                    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                        chunk.lines.push(Line {
                            text: text.to_owned(),
                            end: chunk.next,
                        });
                    } else {
                        warn!(file = %self.path.display(), offset = start, "skipping a line that is not JSON");
                        skipped(start);
                    }
                }
                // End of file, or a line still being written: read it next time.
                _ => break,
            }
        }
        (chunk.next > self.offset).then_some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn whole_json_lines_are_read_a_torn_one_skipped_a_partial_one_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"{\"a\":1}\n{\"a\":\nnot json\n{\"a\":2}\n{\"a\":")
            .unwrap();
        let mut tail = LogTail::new(path.clone(), 0);
        let mut torn = Vec::new();
        let chunk = tail.read(10, |at| torn.push(at)).unwrap();
        let texts: Vec<_> = chunk.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["{\"a\":1}", "{\"a\":2}"]);
        assert_eq!(torn, [8, 14]);
        assert_eq!(chunk.lines[0].end, 8);
        assert_eq!(chunk.next, 31, "up to the partial last line");
        tail.offset = chunk.next;
        assert!(tail.read(10, |_| {}).is_none(), "the partial line waits");
        f.write_all(b"3}\n").unwrap();
        let chunk = tail.read(10, |_| {}).unwrap();
        assert_eq!(chunk.lines[0].text, "{\"a\":3}");

        let mut limited = LogTail::new(path.clone(), 0);
        assert_eq!(limited.read(1, |_| {}).unwrap().next, 8);
        let mut replaced = LogTail::new(path, 10_000);
        assert_eq!(replaced.read(1, |_| {}).unwrap().lines[0].text, "{\"a\":1}");
    }
}
