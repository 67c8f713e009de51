//! The power-cut model: the real WAL, batcher and Parquet sink run in a directory while every
//! completed fsync is observed ([`samos_store::file::observe_syncs`]). After each one the test
//! records what a power cut at that moment would leave on disk — only what completed syncs
//! cover: each file's content as of its last fsync (empty if it never had one), each
//! directory's entries as of its last directory fsync (none if it never had one), every later
//! write, rename and unlink dropped. Then, for every cut, that image is recovered by a fresh
//! `Ingest::start` and every reading acknowledged before the cut must be in Parquet exactly
//! once, with nothing stored twice.
//!
//! Dropping *all* unsynced writes is the harshest reordering for whole files and names; a
//! torn or reordered WAL tail inside one file is the WAL's own property test
//! (`store/src/wal/tests.rs`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use samos_schemas::fleet::node_document;
use samos_schemas::node_config::validate;
use samos_schemas::payload::{Severity, Value};
use samos_store::file::Synced;

use super::{AcceptedReading, AckCursor, Ingest, Origin, Ticket};
use crate::config::StorageConfig;
use crate::metrics::Metrics;

/// A file's identity across renames: inode and birth time (inode numbers are reused).
type FileKey = (u64, Option<std::time::SystemTime>);

#[derive(Clone, Default)]
struct Durable {
    /// Content as of each file's last fsync.
    files: HashMap<FileKey, Vec<u8>>,
    /// Entries (name, file or directory) as of each directory's last fsync.
    dirs: HashMap<PathBuf, Vec<(OsString, Entry)>>,
}

#[derive(Clone)]
enum Entry {
    File(FileKey),
    Dir,
}

struct Model {
    root: PathBuf,
    now: Durable,
    /// The durable state after each completed sync, in order.
    cuts: Vec<Durable>,
}

static MODEL: Mutex<Option<Model>> = Mutex::new(None);

fn key(meta: &std::fs::Metadata) -> FileKey {
    (meta.ino(), meta.created().ok())
}

fn observe(synced: Synced<'_>) {
    let mut guard = MODEL.lock().expect("model");
    let Some(m) = guard.as_mut() else {
        return;
    };
    match synced {
        Synced::File(path) if path.starts_with(&m.root) => {
            let meta = std::fs::metadata(path).expect("synced file");
            let bytes = std::fs::read(path).expect("synced file");
            m.now.files.insert(key(&meta), bytes);
        }
        Synced::Dir(dir) if dir.starts_with(&m.root) => {
            // Another thread may unlink an entry meanwhile (the sink frees WAL segments while
            // the batcher starts one): it counts as removed, one of the outcomes a sync racing
            // an unlink may have.
            let entries = std::fs::read_dir(dir)
                .expect("synced directory")
                .filter_map(|e| {
                    let e = e.ok()?;
                    let meta = std::fs::symlink_metadata(e.path()).ok()?;
                    let entry = if meta.is_dir() {
                        Entry::Dir
                    } else {
                        Entry::File(key(&meta))
                    };
                    Some((e.file_name(), entry))
                })
                .collect();
            m.now.dirs.insert(dir.to_path_buf(), entries);
        }
        _ => return,
    }
    let state = m.now.clone();
    m.cuts.push(state);
}

/// Writes what `state` says survives under `root` into `to`.
fn materialize(state: &Durable, root: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("image directory");
    for (name, entry) in state.dirs.get(root).into_iter().flatten() {
        match entry {
            Entry::Dir => materialize(state, &root.join(name), &to.join(name)),
            Entry::File(k) => {
                let content = state.files.get(k).map_or(&[][..], Vec::as_slice);
                std::fs::write(to.join(name), content).expect("image file");
            }
        }
    }
}

fn storage() -> StorageConfig {
    StorageConfig {
        // Small files and segments: many publishes, rotations and merges in a short run.
        parquet_max_rows: 3,
        parquet_compact_files: 3,
        wal_segment_bytes: 12 * 1024,
        ..StorageConfig::default()
    }
}

/// The numbered readings in the Parquet store of `data`, with how often each is there.
fn stored(data: &Path) -> HashMap<u32, u32> {
    use arrow::array::{Array, Float64Array};
    let mut seen = HashMap::new();
    for file in walk(&data.join(samos_store::layout::READINGS_DIR)) {
        if file.extension().and_then(|e| e.to_str()) != Some("parquet") {
            continue;
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).expect("parquet file"),
        )
        .and_then(parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::build)
        .expect("parquet reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let values = batch
                .column_by_name("value")
                .expect("value column")
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("float values")
                .clone();
            for i in 0..values.len() {
                *seen.entry(values.value(i) as u32).or_insert(0) += 1;
            }
        }
    }
    seen
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_power_cut_after_any_sync_keeps_every_acknowledged_reading_exactly_once() {
    const READINGS: u32 = 40;
    assert!(samos_store::file::observe_syncs(observe));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data directory");
    *MODEL.lock().expect("model") = Some(Model {
        root: data.clone(),
        now: Durable::default(),
        cuts: vec![Durable::default()],
    });

    // Run: numbered readings, one at a time, each waited for until acknowledged (durable).
    let config = Arc::new(validate(&node_document("net", "SN", 1)).expect("valid document"));
    let metrics = Arc::new(Metrics::default());
    let ingest = Ingest::start(&storage(), &data, "test", &[], metrics.clone()).expect("start");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // Files also closed at arbitrary moments (as by their age), while later records commit:
    // boundaries a replay, which rotates by rows, does not reproduce.
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (ingest, stop) = (ingest.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                ingest.flush_parquet();
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let cursor = Arc::new(AckCursor::default());
    // (reading, number of syncs completed when its acknowledgement was seen)
    let mut acked = Vec::new();
    for i in 1..=READINGS {
        let reading = AcceptedReading {
            config: config.clone(),
            sensor: 0,
            value: Value::Float(f64::from(i)),
            severity: Severity::Normal,
        };
        let origin = Origin {
            client_id: Arc::from("node"),
            qos: 1,
            qos2_pkid: None,
        };
        let ticket = Ticket {
            cursor: cursor.clone(),
            seq: u64::from(i),
        };
        runtime
            .block_on(ingest.push(reading, origin, Some(ticket), &metrics))
            .expect("push");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cursor.durable.load(Ordering::Acquire) < u64::from(i) {
            assert!(Instant::now() < deadline, "reading {i} never acknowledged");
            std::thread::sleep(Duration::from_millis(1));
        }
        let syncs = MODEL
            .lock()
            .expect("model")
            .as_ref()
            .expect("model")
            .cuts
            .len();
        acked.push((i, syncs));
    }
    stop.store(true, Ordering::Relaxed);
    flusher.join().expect("flusher");
    assert!(
        metrics.wal_inline_commits.load(Ordering::Relaxed) > 0,
        "readings sent one at a time are committed on the sender's thread (the path modelled)"
    );
    ingest.flush_parquet();
    drop(ingest);
    let model = MODEL.lock().expect("model").take().expect("model");
    assert!(
        model.cuts.len() > 100,
        "the run should sync often: {} syncs",
        model.cuts.len()
    );

    // Every cut: recover the image, then count.
    for (cut, state) in model.cuts.iter().enumerate() {
        let image = tempfile::tempdir().expect("tempdir");
        let image_data = image.path().join("data");
        materialize(state, &model.root, &image_data);
        let recovered = Ingest::start(
            &storage(),
            &image_data,
            "test",
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap_or_else(|e| panic!("cut {cut}: recovery failed: {e}"));
        recovered.flush_parquet();
        drop(recovered);
        let seen = stored(&image_data);
        for (i, n) in &seen {
            assert_eq!(*n, 1, "cut {cut}: reading {i} stored {n} times");
            assert!(
                (1..=READINGS).contains(i),
                "cut {cut}: reading {i} never sent"
            );
        }
        for (i, at) in &acked {
            if *at <= cut + 1 {
                assert!(
                    seen.contains_key(i),
                    "cut {cut}: reading {i}, acknowledged after sync {at}, is lost"
                );
            }
        }
    }
}
