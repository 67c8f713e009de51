//! The write-ahead log: every batch of readings is appended here and fsync'd before any of
//! its readings is acknowledged.
//!
//! On disk: `wal/{first sequence:020}.wal` segments of records
//!
//! ```text
//! u32 LE  length of the payload
//! u32 LE  CRC-32 of (sequence ‖ payload)
//! u64 LE  sequence (one per batch, strictly increasing across segments)
//! [u8]    payload: see [`crate::record`] (session changes, then the batch)
//! ```
//!
//! A record never has an all-zero header (its sequence is at least 1), so zeros mark the end
//! of the log. Small records are written over a runway of zeros kept ahead of the write
//! position: overwriting allocated blocks lets `fdatasync` skip the file-size update (on ext4,
//! about 130 µs instead of 195 µs here), which is what a lone client waits for on every
//! message. Large records simply extend the file, their fsync shared by many readings.
//!
//! and `wal/checkpoint`, the last sequence whose rows are safely in Parquet. Recovery reads the
//! segments in order, keeps the records after the checkpoint, and cuts a torn tail — a last
//! record that is incomplete or fails its checksum, as a crash mid-write leaves — reporting
//! what it cut. Non-zero bytes after the end of the log (a later page that reached the disk
//! before an earlier one) are a torn tail too. A bad record anywhere but the tail of the last
//! segment is corruption, and an error: nothing is skipped silently.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const HEADER: usize = 16;
/// Zeroed bytes kept ahead of the write position for small records.
const RUNWAY: u64 = 1 << 20;
/// Records larger than this extend the file instead of using the runway.
const RUNWAY_MAX_RECORD: usize = 64 << 10;

/// Why the WAL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A write found no space (ENOSPC, or the quota): the log is as it was before the
    /// append, and the same append may be tried again once space is freed.
    #[error("WAL write on {path} found no space: {source}")]
    NoSpace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WAL segment {path} is corrupt at byte {offset}: {message}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        message: String,
    },
}

impl WalError {
    /// Whether the error is a write that found no space.
    pub fn is_no_space(&self) -> bool {
        match self {
            WalError::NoSpace { .. } => true,
            WalError::Io { source, .. } => crate::file::is_no_space(source),
            WalError::Corrupt { .. } => false,
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    pub seq: u64,
    pub payload: Vec<u8>,
    /// The CRC-32 of sequence ‖ payload its header carries, checked on reading: a reader that
    /// keeps what it decoded from a record can tell the same record from another of that
    /// sequence without hashing it again.
    pub crc: u32,
}

/// A torn tail that recovery removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records after the checkpoint, in sequence order: not yet in Parquet.
    pub pending: Vec<WalRecord>,
    pub cut: Option<TornTail>,
    pub checkpoint: u64,
}

/// The open log.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    /// Write position: the end of the records in the current segment.
    bytes: u64,
    /// Length of the current segment file (records, then zeros).
    file_len: u64,
    max_segment_bytes: u64,
    next_seq: u64,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    crate::file::sync_dir(dir).map_err(io(dir))
}

/// Reads the checkpoint (0 when there is none).
pub fn read_checkpoint(dir: &Path) -> Result<u64, WalError> {
    let path = dir.join("checkpoint");
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| WalError::Corrupt {
            path,
            offset: 0,
            message: format!("checkpoint {s:?} is not a number"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Records that every batch up to `seq` is in Parquet (atomically).
pub fn write_checkpoint(dir: &Path, seq: u64) -> Result<(), WalError> {
    let path = dir.join("checkpoint");
    crate::file::write_atomically(&path, seq.to_string().as_bytes()).map_err(io(&path))
}

/// The file in the WAL directory naming its store.
pub const STORE_ID_FILE: &str = "store-id";

/// This WAL's identity, created with it: sinks outside the data directory (PostgreSQL) record
/// it, so a database filled from another data directory is noticed.
pub fn store_id(dir: &Path) -> Result<String, WalError> {
    let path = dir.join(STORE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) => return Ok(id.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    crate::file::create_dir_durably(dir).map_err(io(dir))?;
    let id = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    crate::file::write_atomically(&path, id.as_bytes()).map_err(io(&path))?;
    Ok(id)
}

/// Deletes the segments of `dir` whose every record is at or below `checkpoint`. The newest
/// segment (the one being appended to) is never deleted.
pub fn remove_segments_through(dir: &Path, checkpoint: u64) -> Result<usize, WalError> {
    let segs = segments(dir)?;
    let mut removed = 0;
    for w in segs.windows(2) {
        let ((_, path), (next_first, _)) = (&w[0], &w[1]);
        if *next_first <= checkpoint + 1 {
            std::fs::remove_file(path).map_err(io(path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Where a segment stops being readable: the byte offset, how many bytes from there on are
/// not zero padding, and why.
type BadRecord = Option<(u64, u64, String)>;

/// Whether `header` is the end-of-log marker: all zeros.
fn is_end(header: &[u8]) -> bool {
    header.iter().all(|b| *b == 0)
}

/// A record header's payload length and sequence (the CRC: [`checksum_ok`]).
fn parse_header(header: &[u8]) -> (usize, u64) {
    (
        u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize,
        u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
    )
}

/// The CRC a record header carries (of sequence ‖ payload).
fn header_crc(header: &[u8]) -> u32 {
    u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"))
}

/// Whether `payload` matches the CRC of its header (which covers sequence ‖ payload).
fn checksum_ok(header: &[u8], payload: &[u8]) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..16]);
    h.update(payload);
    h.finalize() == header_crc(header)
}

/// Parses one segment; returns its records and, where it ends early, the bad record.
fn read_segment(path: &Path) -> Result<(Vec<WalRecord>, BadRecord), WalError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io(path))?;
    let mut records = Vec::new();
    let mut at = 0usize;
    let bad = |at: usize, message: &str| {
        let last = data.iter().rposition(|b| *b != 0).map_or(at, |i| i + 1);
        Some((
            at as u64,
            last.saturating_sub(at).max(1) as u64,
            message.to_string(),
        ))
    };
    while at < data.len() {
        let rest = &data[at..];
        if is_end(&rest[..rest.len().min(HEADER)]) {
            if is_end(rest) {
                break;
            }
            return Ok((records, bad(at, "data after the end of the log")));
        }
        if rest.len() < HEADER {
            return Ok((records, bad(at, "incomplete header")));
        }
        let (len, seq) = parse_header(rest);
        if rest.len() - HEADER < len {
            return Ok((records, bad(at, "incomplete record")));
        }
        let payload = &rest[HEADER..HEADER + len];
        if !checksum_ok(rest, payload) {
            return Ok((records, bad(at, "checksum mismatch")));
        }
        records.push(WalRecord {
            seq,
            payload: payload.to_vec(),
            crc: header_crc(rest),
        });
        at += HEADER + len;
    }
    Ok((records, None))
}

/// Opens a segment for writing at explicit offsets.
fn open_segment(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(io(path))
}

impl Wal {
    /// Recovers `dir` and opens a fresh segment for appending. `visit` sees every intact
    /// record still on disk, checkpointed or not, in order (for state kept across segments).
    pub fn open(
        dir: &Path,
        max_segment_bytes: u64,
        mut visit: impl FnMut(&WalRecord),
    ) -> Result<(Wal, Recovery), WalError> {
        crate::file::create_dir_durably(dir).map_err(io(dir))?;
        let checkpoint = read_checkpoint(dir)?;
        let segs = segments(dir)?;
        let mut recovery = Recovery {
            checkpoint,
            ..Recovery::default()
        };
        let mut last_seq = checkpoint;
        for (i, (_, path)) in segs.iter().enumerate() {
            let (records, bad) = read_segment(path)?;
            if let Some((offset, bytes, message)) = bad {
                if i + 1 != segs.len() {
                    return Err(WalError::Corrupt {
                        path: path.clone(),
                        offset,
                        message,
                    });
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                f.set_len(offset).map_err(io(path))?;
                crate::file::fsync(&f, path).map_err(io(path))?;
                recovery.cut = Some(TornTail {
                    segment: path.clone(),
                    offset,
                    bytes,
                });
            }
            for r in records {
                if r.seq <= last_seq && r.seq > checkpoint {
                    return Err(WalError::Corrupt {
                        path: path.clone(),
                        offset: 0,
                        message: format!("sequence {} after {last_seq}", r.seq),
                    });
                }
                last_seq = last_seq.max(r.seq);
                visit(&r);
                if r.seq > checkpoint {
                    recovery.pending.push(r);
                }
            }
        }
        let next_seq = last_seq + 1;
        let path = dir.join(segment_name(next_seq));
        let file = open_segment(&path)?;
        // A segment of this name exists only if an earlier start opened it and wrote nothing.
        file.set_len(0).map_err(io(&path))?;
        sync_dir(dir)?;
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                file,
                path,
                bytes: 0,
                file_len: 0,
                max_segment_bytes,
                next_seq,
            },
            recovery,
        ))
    }

    /// The sequence the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether the next append is the first record of a segment.
    pub fn next_append_starts_segment(&self) -> bool {
        self.bytes == 0 || self.bytes >= self.max_segment_bytes
    }

    /// Appends a record (not yet durable: see [`Wal::commit`]); returns its sequence.
    ///
    /// [`WalError::NoSpace`] leaves the log as it was: whatever part of the record reached
    /// the file is cut off again (so the segment ends at its last whole record, and the space
    /// is given back), and the same payload may be appended again later. Any other error
    /// leaves the log unusable.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        if self.bytes >= self.max_segment_bytes {
            self.rotate()?;
        }
        match self.write_record(payload) {
            Err(WalError::Io { path, source }) if crate::file::is_no_space(&source) => {
                // Truncating past the last whole record needs no space and discards nothing
                // appended before; the runway is rebuilt by the next append.
                self.file.set_len(self.bytes).map_err(io(&self.path))?;
                self.file_len = self.bytes;
                Err(WalError::NoSpace { path, source })
            }
            other => other,
        }
    }

    fn write_record(&mut self, payload: &[u8]) -> Result<u64, WalError> {
        let seq = self.next_seq;
        let seq_bytes = seq.to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&seq_bytes);
        h.update(payload);
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&h.finalize().to_le_bytes());
        record.extend_from_slice(&seq_bytes);
        record.extend_from_slice(payload);
        let end = self.bytes + record.len() as u64;
        if end > self.file_len && record.len() <= RUNWAY_MAX_RECORD {
            match self.extend_runway((end + RUNWAY).min(self.max_segment_bytes.max(end))) {
                Ok(()) => {}
                // Short of space for the runway: the record alone may still fit.
                Err(e) if e.is_no_space() => {}
                Err(e) => return Err(e),
            }
        }
        self.file
            .write_all_at(&record, self.bytes)
            .map_err(io(&self.path))?;
        self.bytes = end;
        self.file_len = self.file_len.max(end);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Writes zeros from the end of the file up to `len` (made durable by the next commit).
    fn extend_runway(&mut self, len: u64) -> Result<(), WalError> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while self.file_len < len {
            let n = (len - self.file_len).min(ZEROS.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROS[..n], self.file_len)
                .map_err(io(&self.path))?;
            self.file_len += n as u64;
        }
        Ok(())
    }

    /// Makes everything appended so far durable (one fsync for the whole group).
    pub fn commit(&mut self) -> Result<(), WalError> {
        crate::file::fdatasync(&self.file, &self.path).map_err(io(&self.path))
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        self.commit()?;
        let path = self.dir.join(segment_name(self.next_seq));
        self.file = open_segment(&path)?;
        self.path = path;
        self.bytes = 0;
        self.file_len = 0;
        sync_dir(&self.dir)
    }

    /// Deletes segments whose every record is at or below `checkpoint`.
    pub fn remove_through(&self, checkpoint: u64) -> Result<usize, WalError> {
        remove_segments_through(&self.dir, checkpoint)
    }
}

/// Follows the log from a sequence on, reading each segment incrementally: for sinks that
/// load committed batches at their own pace (PostgreSQL), surviving their outages.
#[derive(Debug)]
pub struct WalTail {
    dir: PathBuf,
    segment: Option<PathBuf>,
    offset: u64,
    /// Last sequence returned.
    pub position: u64,
}

impl WalTail {
    /// Starts after `position` (a sink's checkpoint).
    pub fn new(dir: &Path, position: u64) -> WalTail {
        WalTail {
            dir: dir.to_path_buf(),
            segment: None,
            offset: 0,
            position,
        }
    }

    /// Up to `max` records after `position` and at most `up_to` (the last committed sequence:
    /// records past it may be half written).
    pub fn read(&mut self, up_to: u64, max: usize) -> Result<Vec<WalRecord>, WalError> {
        let mut out = Vec::new();
        while out.len() < max && self.position < up_to {
            let segs = segments(&self.dir)?;
            let current = match &self.segment {
                Some(p) if p.exists() => p.clone(),
                _ => {
                    // The segment holding position + 1: the last that starts at or before it.
                    let Some((_, p)) = segs
                        .iter()
                        .rev()
                        .find(|(first, _)| *first <= self.position + 1)
                        .or(segs.first())
                    else {
                        break;
                    };
                    self.offset = 0;
                    self.segment = Some(p.clone());
                    p.clone()
                }
            };
            let f = File::open(&current).map_err(io(&current))?;
            // The file's length as last seen: asked again only when a record seems to pass it
            // (the writer may have extended the file since).
            let mut file_len = 0;
            let mut ended = false;
            while out.len() < max {
                // One record at a time: a segment may hold a megabyte of zeros past its end.
                let mut header = [0u8; HEADER];
                match f.read_exact_at(&mut header, self.offset) {
                    Ok(()) if !is_end(&header) => {}
                    Ok(()) => {
                        ended = true;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        ended = true;
                        break;
                    }
                    Err(e) => return Err(io(&current)(e)),
                }
                let (len, seq) = parse_header(&header);
                if seq > up_to {
                    break;
                }
                // A committed record lies within its file: a length past the end is damage,
                // refused before anything that size is allocated.
                let end = self.offset + (HEADER + len) as u64;
                if end > file_len {
                    file_len = f.metadata().map_err(io(&current))?.len();
                }
                if end > file_len {
                    return Err(WalError::Corrupt {
                        path: current.clone(),
                        offset: self.offset,
                        message: format!("a record of {len} bytes runs past the segment's end"),
                    });
                }
                let mut payload = vec![0u8; len];
                f.read_exact_at(&mut payload, self.offset + HEADER as u64)
                    .map_err(io(&current))?;
                if !checksum_ok(&header, &payload) {
                    return Err(WalError::Corrupt {
                        path: current.clone(),
                        offset: self.offset,
                        message: "checksum mismatch".into(),
                    });
                }
                self.offset += (HEADER + len) as u64;
                if seq > self.position {
                    self.position = seq;
                    out.push(WalRecord {
                        seq,
                        payload,
                        crc: header_crc(&header),
                    });
                }
            }
            if !ended {
                break;
            }
            // End of this segment: move on if a newer one exists (it is complete, then).
            match segs.iter().find(|(_, p)| *p > current) {
                Some((_, next)) => {
                    self.segment = Some(next.clone());
                    self.offset = 0;
                }
                None => break,
            }
        }
        Ok(out)
    }
}

/// The records after the checkpoint as they stand now, for a reader beside the writer (SQL over
/// readings not yet in Parquet). Everything acknowledged is in them: acknowledgements leave
/// after the fsync. A record still being written ends the read (it is not acknowledged yet),
/// and a segment deleted meanwhile is skipped (its records were in Parquet, or the checkpoint
/// would not have freed it). A bad record before the end of the last segment is corruption.
pub fn read_unflushed(dir: &Path) -> Result<Vec<WalRecord>, WalError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let checkpoint = read_checkpoint(dir)?;
    let segs = segments(dir)?;
    // Segments wholly at or below the checkpoint hold nothing unflushed.
    let start = segs
        .iter()
        .rposition(|(first, _)| *first <= checkpoint + 1)
        .unwrap_or(0);
    let mut out = Vec::new();
    for (i, (_, path)) in segs.iter().enumerate().skip(start) {
        let last = i + 1 == segs.len();
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(path)(e)),
        };
        let len = f.metadata().map_err(io(path))?.len();
        let mut offset = 0u64;
        let mut header = [0u8; HEADER];
        while offset + HEADER as u64 <= len {
            f.read_exact_at(&mut header, offset).map_err(io(path))?;
            if is_end(&header) {
                break;
            }
            let (n, seq) = parse_header(&header);
            let n = n as u64;
            let torn = |message: &str| WalError::Corrupt {
                path: path.clone(),
                offset,
                message: message.to_string(),
            };
            if offset + HEADER as u64 + n > len {
                if last {
                    break;
                }
                return Err(torn("incomplete record"));
            }
            if seq > checkpoint {
                let mut payload = vec![0u8; n as usize];
                f.read_exact_at(&mut payload, offset + HEADER as u64)
                    .map_err(io(path))?;
                if !checksum_ok(&header, &payload) {
                    if last {
                        break;
                    }
                    return Err(torn("checksum mismatch"));
                }
                out.push(WalRecord {
                    seq,
                    payload,
                    crc: header_crc(&header),
                });
            }
            offset += HEADER as u64 + n;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
