//! The WAL tail, decoded once per record for a long-lived session.
//!
//! Every scan of `readings` reads the WAL records past the checkpoint (readings not yet in a
//! published Parquet file) and decodes them into Arrow. With the defaults that is up to
//! `parquet_rotate_secs` (10 s) of ingest, and decoding it was most of a query's time on a busy
//! server: 200,000 unflushed readings cost every query ~70 ms, whatever it asked (malloc and
//! free of thousands of small batches). A record never changes once written, so the session
//! (`ReadingsTable`, one per `History`: the HTTP API's, a `samos sql` shell's) keeps each
//! record's decoded batches and decodes only the records it has not seen.
//!
//! Invariants: an entry is used only for the record it was decoded from — same sequence,
//! length and CRC-32 (the one the record's header carries, checked by the WAL reader; a WAL
//! directory replaced under a running session numbers its records anew), and an entry that
//! does not match is dropped; entries for records no longer in the tail (checkpointed, or now
//! held by a published file) are dropped at the next scan, so the cache holds at most the
//! tail; past [`CACHE_BYTES`] of decoded batches, further records are decoded per query as
//! before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use samos_store::wal::WalRecord;

/// The most memory the decoded tail of one session holds.
const CACHE_BYTES: usize = 256 << 20;

/// Decoded WAL records by sequence.
#[derive(Debug, Default)]
pub(super) struct DecodedTail {
    records: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    by_seq: HashMap<u64, Decoded>,
    bytes: usize,
}

#[derive(Debug)]
struct Decoded {
    len: usize,
    crc: u32,
    batches: Arc<[RecordBatch]>,
    bytes: usize,
}

impl DecodedTail {
    /// The batches of `records` (those `wanted`), from the cache where this exact record was
    /// decoded before, else from `decode`; the cache then holds the wanted records only.
    pub(super) fn batches(
        &self,
        records: &[WalRecord],
        wanted: impl Fn(&WalRecord) -> bool,
        decode: impl Fn(&WalRecord) -> Result<Vec<RecordBatch>>,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut kept = HashSet::new();
        for record in records.iter().filter(|r| wanted(r)) {
            kept.insert(record.seq);
            let crc = record.crc;
            let cached = {
                let cache = self.lock();
                cache
                    .by_seq
                    .get(&record.seq)
                    .filter(|d| d.len == record.payload.len() && d.crc == crc)
                    .map(|d| Arc::clone(&d.batches))
            };
            let batches = match cached {
                Some(batches) => batches,
                None => {
                    let batches: Arc<[RecordBatch]> = decode(record)?.into();
                    let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
                    let mut cache = self.lock();
                    // A stale entry under this sequence (another record's bytes) goes first,
                    // whether or not the new one fits.
                    if let Some(stale) = cache.by_seq.remove(&record.seq) {
                        cache.bytes -= stale.bytes;
                    }
                    if cache.bytes + bytes <= CACHE_BYTES {
                        let decoded = Decoded {
                            len: record.payload.len(),
                            crc,
                            batches: Arc::clone(&batches),
                            bytes,
                        };
                        cache.by_seq.insert(record.seq, decoded);
                        cache.bytes += bytes;
                    }
                    batches
                }
            };
            out.extend(batches.iter().cloned());
        }
        let mut cache = self.lock();
        let mut freed = 0;
        cache.by_seq.retain(|seq, d| {
            let keep = kept.contains(seq);
            if !keep {
                freed += d.bytes;
            }
            keep
        });
        cache.bytes -= freed;
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.lock().by_seq.len()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn record(seq: u64, payload: &[u8]) -> WalRecord {
        WalRecord {
            seq,
            payload: payload.to_vec(),
            crc: crc32fast::hash(payload),
        }
    }

    #[test]
    fn each_record_is_decoded_once_and_only_its_own_bytes_reuse_it() {
        let tail = DecodedTail::default();
        let decoded = Cell::new(0);
        let decode = |r: &WalRecord| {
            decoded.set(decoded.get() + 1);
            let column = Int64Array::from(vec![r.seq as i64; r.payload.len()]);
            Ok(vec![
                RecordBatch::try_from_iter([("v", Arc::new(column) as _)]).unwrap(),
            ])
        };
        let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
        let all = |_: &WalRecord| true;
        let first = [record(1, b"ab"), record(2, b"abc")];
        assert_eq!(rows(&tail.batches(&first, all, decode).unwrap()), 5);
        assert_eq!(rows(&tail.batches(&first, all, decode).unwrap()), 5);
        assert_eq!(decoded.get(), 2);
        // Record 2 now holds other bytes (a new WAL under the same numbers): decoded again.
        // Record 1 is left out (in a file now): dropped from the cache.
        let second = [record(1, b"ab"), record(2, b"xyzw"), record(3, b"q")];
        let wanted = |r: &WalRecord| r.seq != 1;
        assert_eq!(rows(&tail.batches(&second, wanted, decode).unwrap()), 5);
        assert_eq!(decoded.get(), 4);
        assert_eq!(tail.cached(), 2);
        // A decoding error is the scan's error, and caches nothing.
        let failing = |_: &WalRecord| Err(datafusion::error::DataFusionError::Internal("x".into()));
        assert!(tail.batches(&[record(4, b"z")], all, failing).is_err());
    }
}
