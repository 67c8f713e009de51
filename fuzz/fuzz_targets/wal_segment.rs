//! Untrusted bytes as a WAL segment on disk (a damaged or foreign file): recovery and a
//! follower's tail must refuse it as corruption or cut it, never panic, never return a record
//! whose checksum fails, and never allocate what a damaged length claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samos_store::wal::{Wal, WalTail};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = dir.path().join("wal");
    std::fs::create_dir_all(&wal).expect("wal dir");
    std::fs::write(wal.join("00000000000000000001.wal"), data).expect("segment");
    let mut tail = WalTail::new(&wal, 0);
    let followed = tail.read(u64::MAX, 1 << 16);
    match Wal::open(&wal, 1 << 20, |_| {}) {
        Ok((_, recovery)) => {
            // What recovery keeps is what a follower reads, record for record.
            if let Ok(records) = followed {
                let kept: Vec<u64> = recovery.pending.iter().map(|r| r.seq).collect();
                let read: Vec<u64> = records.iter().map(|r| r.seq).collect();
                assert!(kept.starts_with(&read) || read.starts_with(&kept), "{kept:?} vs {read:?}");
            }
        }
        Err(_) => {}
    }
});
