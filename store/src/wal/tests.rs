//! The WAL's recovery, checkpoints and segment lifecycle, by example and by property.

use super::*;
use proptest::prelude::*;

#[test]
fn a_reader_beside_the_writer_sees_what_is_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_unflushed(&dir.path().join("none")).unwrap().is_empty());
    let (mut wal, _) = Wal::open(dir.path(), 200, |_| {}).unwrap();
    for i in 1..=6u8 {
        wal.append(&[i; 90]).unwrap();
    }
    wal.commit().unwrap();
    let seqs = |rs: Vec<WalRecord>| rs.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(read_unflushed(dir.path()).unwrap()),
        [1, 2, 3, 4, 5, 6]
    );
    write_checkpoint(dir.path(), 3).unwrap();
    assert_eq!(seqs(read_unflushed(dir.path()).unwrap()), [4, 5, 6]);
    // A record half written by the writer ends the read.
    let (path, end) = (wal.path.clone(), wal.bytes);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[90, 0, 0, 0, 1, 2, 3, 4, 7, 0, 0, 0, 0, 0, 0, 0, 1], end)
        .unwrap();
    assert_eq!(seqs(read_unflushed(dir.path()).unwrap()), [4, 5, 6]);
    wal.remove_through(3).unwrap();
    assert_eq!(seqs(read_unflushed(dir.path()).unwrap()), [4, 5, 6]);
}

#[test]
fn records_survive_a_reopen_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, rec) = Wal::open(dir.path(), 1 << 20, |_| {}).unwrap();
    assert!(rec.pending.is_empty());
    assert_eq!(wal.append(b"one").unwrap(), 1);
    assert_eq!(wal.append(b"two").unwrap(), 2);
    wal.commit().unwrap();
    let (path, end) = (wal.path.clone(), wal.bytes);
    drop(wal);
    // A crash in the middle of a third record.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[7, 0, 0, 0, 1, 2], end).unwrap();
    let (wal, rec) = Wal::open(dir.path(), 1 << 20, |_| {}).unwrap();
    let seqs: Vec<u64> = rec.pending.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(rec.cut.as_ref().unwrap().bytes, 6);
    assert_eq!(wal.next_seq(), 3);
}

#[test]
fn small_records_overwrite_a_runway_of_zeros_that_reads_as_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 64 << 20, |_| {}).unwrap();
    for i in 1..=3u8 {
        wal.append(&[i; 100]).unwrap();
    }
    wal.commit().unwrap();
    let path = wal.path.clone();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len >= RUNWAY + 116, "runway of zeros ahead: {len}");
    let mut tail = WalTail::new(dir.path(), 0);
    assert_eq!(tail.read(3, 100).unwrap().len(), 3);
    assert!(tail.read(3, 100).unwrap().is_empty());
    wal.append(&[4; 100]).unwrap();
    wal.commit().unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        len,
        "written in place"
    );
    assert_eq!(tail.read(4, 100).unwrap()[0].payload, [4; 100]);
    drop(wal);
    // The zeros are the clean end of the log, not a torn tail…
    let (wal, rec) = Wal::open(dir.path(), 64 << 20, |_| {}).unwrap();
    assert_eq!(rec.pending.len(), 4);
    assert!(rec.cut.is_none());
    drop(wal);
    // …but bytes after them (a later page written before an earlier one) are, in the last
    // segment (the one this reopen started is empty: take it away again).
    std::fs::remove_file(dir.path().join(segment_name(5))).unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[9, 9], 4 * 116 + 1000).unwrap();
    drop(f);
    let (_, rec) = Wal::open(dir.path(), 64 << 20, |_| {}).unwrap();
    assert_eq!(rec.pending.len(), 4);
    let cut = rec.cut.unwrap();
    assert_eq!((cut.offset, cut.bytes), (4 * 116, 1002));
}

#[test]
fn checkpoints_hide_and_free_what_parquet_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 10, |_| {}).unwrap();
    for i in 0..5u8 {
        wal.append(&[i; 20]).unwrap();
    }
    wal.commit().unwrap();
    write_checkpoint(dir.path(), 3).unwrap();
    assert!(wal.remove_through(3).unwrap() >= 2);
    drop(wal);
    let (_, rec) = Wal::open(dir.path(), 10, |_| {}).unwrap();
    let seqs: Vec<u64> = rec.pending.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [4, 5]);
    assert_eq!(rec.checkpoint, 3);
}

#[test]
fn corruption_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 30, |_| {}).unwrap();
    for i in 0..4u8 {
        wal.append(&[i; 20]).unwrap();
    }
    wal.commit().unwrap();
    drop(wal);
    let first = segments(dir.path()).unwrap()[0].1.clone();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[HEADER + 3] ^= 0xFF;
    std::fs::write(&first, bytes).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), 30, |_| {}),
        Err(WalError::Corrupt { .. })
    ));
}

#[test]
fn a_tail_follows_segments_and_stops_at_the_committed_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 50, |_| {}).unwrap();
    for i in 0..10u8 {
        wal.append(&[i; 20]).unwrap();
    }
    wal.commit().unwrap();
    let mut tail = WalTail::new(dir.path(), 2);
    let got: Vec<u64> = tail.read(7, 100).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(got, [3, 4, 5, 6, 7]);
    let got: Vec<u64> = tail.read(10, 2).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(got, [8, 9]);
    wal.append(&[99; 5]).unwrap();
    wal.commit().unwrap();
    let got: Vec<u64> = tail.read(11, 100).unwrap().iter().map(|r| r.seq).collect();
    assert_eq!(got, [10, 11]);
    assert!(tail.read(11, 100).unwrap().is_empty());
}

#[test]
fn a_follower_refuses_a_length_past_the_segment_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), 1 << 20, |_| {}).unwrap();
    wal.append(b"one").unwrap();
    wal.commit().unwrap();
    let path = wal.path.clone();
    drop(wal);
    // The length field now claims 3 GiB.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&(3u32 << 30).to_le_bytes(), 0).unwrap();
    let err = WalTail::new(dir.path(), 0).read(1, 10).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
}

/// Model-based: random appends, commits, crashes that tear the unsynced tail at a random
/// byte, checkpoints and recoveries, against a simple in-memory model of what is durable.
#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Commit,
    Crash { keep: usize },
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Op::Append),
        2 => Just(Op::Commit),
        1 => (0usize..64).prop_map(|keep| Op::Crash { keep }),
        1 => Just(Op::Checkpoint),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn wal_matches_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 100, |_| {}).unwrap();
        // Model: committed records, and appended-but-unsynced ones.
        let mut durable: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut unsynced: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut checkpoint = 0;
        for op in ops {
            match op {
                Op::Append(p) => {
                    let before = wal.path.clone();
                    let seq = wal.append(&p).unwrap();
                    if wal.path != before {
                        // Rotation syncs the old segment first.
                        durable.append(&mut unsynced);
                    }
                    unsynced.push((seq, p));
                }
                Op::Commit => {
                    wal.commit().unwrap();
                    durable.append(&mut unsynced);
                }
                Op::Checkpoint => {
                    if let Some(&(seq, _)) = durable.last() {
                        checkpoint = seq;
                        write_checkpoint(dir.path(), seq).unwrap();
                        wal.remove_through(seq).unwrap();
                    }
                }
                Op::Crash { keep } => {
                    // The OS may have written any prefix of the unsynced bytes.
                    let (path, end) = (wal.path.clone(), wal.bytes);
                    drop(wal);
                    let unsynced_bytes: usize = unsynced.iter().map(|(_, p)| HEADER + p.len()).sum();
                    let cut = (unsynced_bytes.min(keep)) as u64;
                    let lost_from = end - unsynced_bytes as u64 + cut;
                    let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
                    let mut original = vec![0; unsynced_bytes];
                    f.read_exact_at(&mut original, end - unsynced_bytes as u64).unwrap();
                    let zeroed = keep % 2 == 0;
                    if zeroed {
                        // The unwritten part reads as the runway's zeros…
                        f.write_all_at(&vec![0; (end - lost_from) as usize], lost_from).unwrap();
                    } else {
                        // …or the file itself ends there.
                        f.set_len(lost_from).unwrap();
                    }
                    drop(f);
                    let (w, rec) = Wal::open(dir.path(), 100, |_| {}).unwrap();
                    // What survives: every durable record after the checkpoint, then any
                    // unsynced records the OS happened to write whole.
                    let mut expected: Vec<(u64, Vec<u8>)> = durable.iter().filter(|(s, _)| *s > checkpoint).cloned().collect();
                    let mut at = 0;
                    for (s, p) in &unsynced {
                        let next = at + HEADER + p.len();
                        // Whole if written, or if what was lost was zeros anyway.
                        let whole = next <= cut as usize
                            || (zeroed && original[(cut as usize).max(at)..next].iter().all(|b| *b == 0));
                        at = next;
                        if whole {
                            expected.push((*s, p.clone()));
                            durable.push((*s, p.clone()));
                        } else {
                            break;
                        }
                    }
                    unsynced.clear();
                    let got: Vec<(u64, Vec<u8>)> = rec.pending.into_iter().map(|r| (r.seq, r.payload)).collect();
                    prop_assert_eq!(got, expected);
                    wal = w;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    /// Arbitrary damage to a segment — bytes overwritten anywhere, the file cut short — never
    /// panics or exhausts memory in recovery or in a follower's tail, and never yields a
    /// record that was not written: the result is an error naming the corruption, or records
    /// each exactly as appended, in sequence order.
    #[test]
    fn damaged_segments_are_refused_or_cut_never_misread(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 1..12),
        segment in any::<prop::sample::Index>(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 200, |_| {}).unwrap();
        let mut written = std::collections::BTreeMap::new();
        for p in &payloads {
            written.insert(wal.append(p).unwrap(), p.clone());
        }
        wal.commit().unwrap();
        drop(wal);
        let segs = segments(dir.path()).unwrap();
        let path = &segs[segment.index(segs.len())].1;
        let mut bytes = std::fs::read(path).unwrap();
        // Damage within the records, not only in the runway of zeros after them.
        let used = bytes.iter().rposition(|b| *b != 0).map_or(1, |i| i + 1);
        for (at, value) in &damage {
            bytes[at.index(used)] = *value;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        std::fs::write(path, &bytes).unwrap();
        let is_written = |r: &WalRecord| written.get(&r.seq) == Some(&r.payload);
        let mut tail = WalTail::new(dir.path(), 0);
        if let Ok(records) = tail.read(u64::MAX, 1000) {
            prop_assert!(records.iter().all(is_written));
            prop_assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
        }
        match Wal::open(dir.path(), 200, |_| {}) {
            Ok((_, rec)) => {
                prop_assert!(rec.pending.iter().all(is_written));
                prop_assert!(rec.pending.windows(2).all(|w| w[0].seq < w[1].seq));
            }
            Err(WalError::Corrupt { .. }) => {}
            Err(e) => prop_assert!(false, "not a corruption error: {e}"),
        }
    }
}
