//! Untrusted bytes as a WAL record's payload (a damaged record whose checksum happens to
//! match, or a foreign file): the session section and the readings, in either encoding
//! (Arrow IPC or the compact one), decode or fail with an error, never panic, never allocate
//! what a damaged length claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_store::record;

fuzz_target!(|data: &[u8]| {
    let _ = record::sessions(data);
    if let Ok(batches) = record::decode_batches(data) {
        for b in batches {
            // A batch that decodes is whole: every column as long as the batch.
            assert!(b.columns().iter().all(|c| c.len() == b.num_rows()));
        }
    }
});
