//! The queue's accounting: slots and `pending` come back exactly, however records are cut,
//! and readings are committed on the sender's thread only when nothing is queued.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use samos_schemas::fleet::node_document;
use samos_schemas::node_config::validate;
use samos_schemas::payload::{Severity, Value};

use super::{AckCursor, Ingest, Reading, Ticket, Work};
use crate::config::StorageConfig;
use crate::metrics::Metrics;

const SLOTS: usize = 8;
/// 2026-12-06T00:00:00Z.
const MIDNIGHT_MS: i64 = 1_796_515_200_000;

fn start(data: &std::path::Path, metrics: &Arc<Metrics>) -> Arc<Ingest> {
    let storage = StorageConfig {
        queue_capacity: SLOTS,
        ..StorageConfig::default()
    };
    Ingest::start(&storage, data, "test", &[], metrics.clone()).expect("start")
}

fn reading(i: u64, ingest_time_ms: i64, ack: Option<Ticket>) -> Reading {
    let config = Arc::new(validate(&node_document("net", "SN", 1)).expect("valid document"));
    Reading {
        ingest_time_ms,
        config,
        sensor: 0,
        value: Value::Float(i as f64),
        severity: Severity::Normal,
        qos: 1,
        client_id: Arc::from("node"),
        ack,
        qos2_pkid: None,
    }
}

#[test]
fn readings_either_side_of_midnight_give_back_exactly_their_slots() {
    let data = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::default());
    let ingest = start(data.path(), &metrics);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    {
        // Held, so that the batcher finds all of them queued and cuts the record at midnight,
        // carrying the first reading of the new day into the next record.
        let _held = ingest
            .inline
            .as_ref()
            .expect("batcher")
            .lock()
            .expect("lock");
        for i in 0..6 {
            let t = MIDNIGHT_MS - 3 + i as i64;
            runtime
                .block_on(ingest.send(Work::Reading(reading(i, t, None)), &metrics))
                .expect("queued");
        }
    }
    ingest.flush_parquet();
    assert_eq!(metrics.readings_committed.load(Relaxed), 6);
    assert!(
        metrics.wal_batches.load(Relaxed) >= 2,
        "a record never spans two days"
    );
    assert_eq!(
        ingest.slots.available_permits(),
        SLOTS,
        "every slot back, none twice"
    );
    assert_eq!(ingest.pending.load(Relaxed), 0);
}

#[test]
fn a_lone_reading_commits_on_its_own_thread_but_never_ahead_of_queued_work() {
    let data = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(Metrics::default());
    let ingest = start(data.path(), &metrics);
    let cursor = Arc::new(AckCursor::default());
    let ticket = |seq| {
        Some(Ticket {
            cursor: cursor.clone(),
            seq,
        })
    };
    let now = crate::clock::now_ms();

    assert!(ingest.commit_inline(reading(1, now, ticket(1))).is_ok());
    assert_eq!(
        cursor.durable.load(Relaxed),
        1,
        "durable when the call returns"
    );
    assert_eq!(metrics.wal_inline_commits.load(Relaxed), 1);

    // Something queued and not yet committed: the next reading goes behind it.
    ingest.pending.fetch_add(1, Relaxed);
    assert!(ingest.commit_inline(reading(2, now, ticket(2))).is_err());
    ingest.pending.fetch_sub(1, Relaxed);
    // ... and inline commits pause for a while after that sign of a second publisher.
    let since_start = u64::try_from(ingest.epoch.elapsed().as_millis()).expect("ms");
    assert!(ingest.inline_resume_ms.load(Relaxed) >= since_start.max(super::INLINE_PAUSE_MS));
    ingest.inline_resume_ms.store(0, Relaxed);
    assert!(ingest.commit_inline(reading(2, now, ticket(2))).is_ok());
    assert_eq!(cursor.durable.load(Relaxed), 2);

    // A reading whose acknowledgement does not wait (QoS 0, ack-on-receive) is never inline.
    assert!(ingest.commit_inline(reading(3, now, None)).is_err());
    assert_eq!(metrics.wal_inline_commits.load(Relaxed), 2);
    // Everything written before the directory goes: a Parquet write that fails later would
    // end the process (status 75), as it should in a server.
    ingest.flush_parquet();
}
