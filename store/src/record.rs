//! A WAL record's payload: `u8` format (1) · `u32` LE length of the session section · the
//! session section (the engine's session changes, opaque here) · the readings as an Arrow IPC
//! stream (absent when the record holds only session changes).

use arrow::record_batch::RecordBatch;

/// Format byte that opens every WAL record payload.
const RECORD_FORMAT: u8 = 1;

/// Builds a payload: `sessions` appends the session section, then `batch` follows as IPC.
pub fn encode(sessions: impl FnOnce(&mut Vec<u8>), batch: Option<&RecordBatch>) -> Vec<u8> {
    let mut buf = vec![RECORD_FORMAT, 0, 0, 0, 0];
    sessions(&mut buf);
    let sessions_len = (buf.len() - 5) as u32;
    buf[1..5].copy_from_slice(&sessions_len.to_le_bytes());
    if let Some(batch) = batch {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())
            .expect("IPC writer into memory");
        w.write(batch).expect("IPC write into memory");
        w.finish().expect("IPC finish into memory");
    }
    buf
}

/// Splits a payload into its session section and its IPC stream.
pub fn sections(payload: &[u8]) -> Result<(&[u8], &[u8]), String> {
    match payload {
        [RECORD_FORMAT, a, b, c, d, rest @ ..] => {
            let n = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            if rest.len() < n {
                return Err(format!(
                    "session section of {n} bytes in {} left",
                    rest.len()
                ));
            }
            Ok(rest.split_at(n))
        }
        [f, ..] => Err(format!("unknown WAL record format {f}")),
        [] => Err("empty WAL record".into()),
    }
}

/// The readings of a payload (none when it holds only session changes).
pub fn decode_batches(payload: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let (_, ipc) = sections(payload)?;
    if ipc.is_empty() {
        return Ok(Vec::new());
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
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
        assert_eq!(sections(&payload).unwrap().0, b"ops");
        assert_eq!(decode_batches(&payload).unwrap(), vec![batch]);
        let only_sessions = encode(|b| b.push(7), None);
        assert!(decode_batches(&only_sessions).unwrap().is_empty());
        assert!(sections(&[2, 0]).unwrap_err().contains("format 2"));
        assert!(sections(&[1, 9, 0, 0, 0]).is_err());
    }
}
