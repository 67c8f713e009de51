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
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(readings), None)
        .map_err(|e| e.to_string())?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
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
}
