//! Untrusted bytes as a WAL record's payload (a damaged record whose checksum happens to
//! match, or a foreign file): the session section and the readings decode or fail with an
//! error, never panic, never allocate what a damaged length claims.
//!
//! Format 1 payloads (Arrow IPC) get only the session section and the length check here:
//! Arrow's own IPC reader panics on some malformed metadata, which `decode_batches` catches,
//! but libFuzzer aborts at any panic, caught or not. Their regressions are unit tests of
//! `samos_store::record` (`fuzz/regressions/wal_record/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_store::record;

fuzz_target!(|data: &[u8]| {
    let _ = record::sessions(data);
    if data.first() == Some(&1) {
        return;
    }
    if let Ok(batches) = record::decode_batches(data) {
        for b in batches {
            // A batch that decodes is whole: every column as long as the batch.
            assert!(b.columns().iter().all(|c| c.len() == b.num_rows()));
        }
    }
});
