//! A WAL record's payload: `u8` format · `u32` LE length of the session section · the
//! session section (the engine's session changes, opaque here) · the readings, absent when
//! the record holds only session changes, in one of two encodings:
//!
//! - format 1: an Arrow IPC stream (schema, dictionaries, one record batch), for any batch;
//! - format 2: the compact encoding of [`compact`], for `readings` batches of up to
//!   [`COMPACT_MAX_ROWS`] rows. A lone reading's record shrinks from 8.4 KB to about 350 bytes
//!   and its encoding from tens of microseconds to a few copies: what one node publishing one
//!   reading at a time waits for, once per reading (BENCHMARKS, "Ingest at the machine's
//!   limits"). Larger batches spread the IPC stream's fixed cost over their rows.
//!
//! Both decode to the same `RecordBatch`; every reader accepts both.

mod compact;

use arrow::record_batch::RecordBatch;

/// Format byte of a payload whose readings are an Arrow IPC stream.
const FORMAT_IPC: u8 = 1;
/// Format byte of a payload whose readings are in the compact encoding.
const FORMAT_COMPACT: u8 = 2;

/// Batches of up to this many `readings` rows are written in the compact encoding.
pub const COMPACT_MAX_ROWS: usize = 256;

/// Builds a payload: `sessions` appends the session section, then `batch` follows.
pub fn encode(sessions: impl FnOnce(&mut Vec<u8>), batch: Option<&RecordBatch>) -> Vec<u8> {
    let compact = batch.filter(|b| b.num_rows() <= COMPACT_MAX_ROWS && compact::encodable(b));
    let format = if compact.is_some() {
        FORMAT_COMPACT
    } else {
        FORMAT_IPC
    };
    let mut buf = vec![format, 0, 0, 0, 0];
    sessions(&mut buf);
    let sessions_len = u32::try_from(buf.len() - 5).expect("session section under 4 GiB");
    buf[1..5].copy_from_slice(&sessions_len.to_le_bytes());
    match (compact, batch) {
        (Some(batch), _) => compact::encode(batch, &mut buf),
        (None, Some(batch)) => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())
                .expect("IPC writer into memory");
            w.write(batch).expect("IPC write into memory");
            w.finish().expect("IPC finish into memory");
        }
        (None, None) => {}
    }
    buf
}

/// Splits a payload into its format, its session section and its readings.
fn parts(payload: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    match payload {
        [f @ (FORMAT_IPC | FORMAT_COMPACT), a, b, c, d, rest @ ..] => {
            let n = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            if rest.len() < n {
                return Err(format!(
                    "session section of {n} bytes in {} left",
                    rest.len()
                ));
            }
            let (sessions, readings) = rest.split_at(n);
            Ok((*f, sessions, readings))
        }
        [f, ..] => Err(format!("unknown WAL record format {f}")),
        [] => Err("empty WAL record".into()),
    }
}

/// The session section of a payload.
pub fn sessions(payload: &[u8]) -> Result<&[u8], String> {
    parts(payload).map(|(_, sessions, _)| sessions)
}

/// The readings of a payload (none when it holds only session changes).
pub fn decode_batches(payload: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let (format, _, readings) = parts(payload)?;
    if readings.is_empty() {
        return Ok(Vec::new());
    }
    if format == FORMAT_COMPACT {
        return compact::decode(readings).map(|b| vec![b]);
    }
    check_ipc_lengths(readings)?;
    // Arrow's IPC reader panics on some malformed metadata (a schema without its fields
    // vector: `unwrap` in `fb_to_schema`, found by the `wal_record` fuzz target); a damaged
    // record is an error here, not a panic of the thread that reads it.
    std::panic::catch_unwind(|| {
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(readings), None)
                .map_err(|e| e.to_string())?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|_| Err("malformed Arrow IPC stream (the reader panicked)".into()))
}

/// Arrow's stream reader sizes its buffer from each message's length prefix before it reads
/// the message, so a damaged prefix would allocate up to 2 GiB (found by the `wal_record` fuzz
/// target). Every message's metadata and body must fit in the bytes there are.
fn check_ipc_lengths(mut ipc: &[u8]) -> Result<(), String> {
    fn length(ipc: &mut &[u8]) -> Result<i32, String> {
        let Some((head, rest)) = ipc.split_first_chunk::<4>() else {
            return Err("IPC stream cut inside a message length".into());
        };
        *ipc = rest;
        Ok(i32::from_le_bytes(*head))
    }
    while !ipc.is_empty() {
        let mut meta = length(&mut ipc)?;
        if meta == -1 {
            // The continuation marker of the current IPC format; the length follows.
            meta = length(&mut ipc)?;
        }
        if meta == 0 {
            return Ok(());
        }
        let meta = usize::try_from(meta)
            .ok()
            .filter(|&n| n <= ipc.len())
            .ok_or_else(|| format!("IPC message of {meta} bytes in {} left", ipc.len()))?;
        let (metadata, rest) = ipc.split_at(meta);
        let message = arrow::ipc::root_as_message(metadata).map_err(|e| e.to_string())?;
        let body = usize::try_from(message.bodyLength())
            .ok()
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| {
                format!(
                    "IPC body of {} bytes in {} left",
                    message.bodyLength(),
                    rest.len()
                )
            })?;
        ipc = &rest[body..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::UInt64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn sessions_and_batch_come_back_apart() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::UInt64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![1, 2, 3]))]).unwrap();
        let payload = encode(|b| b.extend_from_slice(b"ops"), Some(&batch));
        assert_eq!(payload[0], FORMAT_IPC, "not the readings schema: IPC");
        assert_eq!(sessions(&payload).unwrap(), b"ops");
        assert_eq!(decode_batches(&payload).unwrap(), vec![batch]);
        let only_sessions = encode(|b| b.push(7), None);
        assert!(decode_batches(&only_sessions).unwrap().is_empty());
        assert!(sessions(&[3, 0]).unwrap_err().contains("format 3"));
        assert!(sessions(&[1, 9, 0, 0, 0]).is_err());
    }

    /// Found by the `wal_record` fuzz target: an IPC message length claiming far more than
    /// the record holds made Arrow's reader allocate it (out of memory) before reading.
    #[test]
    fn an_ipc_length_past_the_record_is_an_error_not_an_allocation() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::UInt64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![1, 2, 3]))]).unwrap();
        let mut payload = encode(|_| {}, Some(&batch));
        // The first message's length, after the format, the session length and the marker.
        payload[9..13].copy_from_slice(&0x7fff_fff0_i32.to_le_bytes());
        let err = decode_batches(&payload).unwrap_err();
        assert!(err.contains("IPC message of"), "{err}");
        let mut body = encode(|_| {}, Some(&batch));
        // Past the end-of-stream marker (8 bytes) into the batch's body.
        let cut = body.len() - 24;
        body.truncate(cut);
        assert!(decode_batches(&body).is_err(), "a stream cut short");
        let oom = include_bytes!("../../fuzz/regressions/wal_record/oom-ipc-length");
        assert!(decode_batches(oom).is_err());
        let panic = include_bytes!("../../fuzz/regressions/wal_record/arrow-schema-panic");
        assert!(decode_batches(panic).is_err());
    }
}
