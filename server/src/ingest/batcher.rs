//! The batcher thread: takes readings and session changes off the queue in arrival order,
//! gathers what is waiting into one WAL record (group commit: a lone reading commits at once,
//! under load records grow while the previous fsync runs), appends and fsyncs it, releases the
//! acknowledgement tickets it held, and hands the Arrow batch to the Parquet sink (small ones
//! a few at a time: [`SinkHold`]).
//!
//! A write that finds the disk full is retried (the WAL is left as it was) until space is
//! freed: the batcher holds the record, the queue fills, publishers pause. A failed fsync is
//! never retried: the process exits ([`EXIT_WAL_FAILED`]).
//!
//! A lone reading is committed on its connection's own thread when nothing else is queued or
//! being committed ([`Batcher::commit_inline`]): the batcher sits behind a mutex that its
//! thread holds only while it gathers and commits, and a connection that finds the mutex
//! free, nothing pending and no follower behind appends and fsyncs its reading itself. One
//! node publishing one reading at a time (the paper's mode) so pays no hand-off to the batcher
//! thread and back: two cross-CPU wake-ups, about a fifth of its exchange on this machine.
//! Under load the queue is never empty and the batcher thread commits groups as before: any
//! sign of another publisher (work queued, the batcher busy, a record of several readings)
//! pauses inline commits for a while (`Ingest`), since group commit then shares each fsync
//! and a worker's time is worth more than the hand-off. The tokio worker is blocked for that
//! one fsync; it never waits here for anything else (a full disk, a follower behind, a busy
//! batcher: the reading goes to the queue).
//!
//! Invariants: a ticket is released only after the record holding its reading or session
//! change is fsync'd; a record never spans two UTC days; the queue's slots are given back as
//! work leaves the queue, and closed when the batcher stops; a reading is committed inline
//! only while `pending` (work sent to the queue and not yet committed) is zero, checked under
//! the mutex, so it never overtakes anything queued before it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use samos_store::layout::utc_day;
use tokio::sync::Semaphore;
use tracing::{error, warn};

use super::columns::{build_batch, encode_record};
use super::parquet_sink::SinkMsg;
use super::wal::{Wal, WalError};
use super::watermark::{Follower, Watermark};
use super::{Reading, Ticket, Work};
use crate::broker::durable::{SessionOp, SessionTable};
use crate::disk_space::{Writer, retry_delay};
use crate::metrics::Metrics;

/// Owns the column builders, the WAL and the durable session table.
pub(super) struct Batcher {
    /// The sessions as the committed records leave them.
    pub(super) sessions: SessionTable,
    pub(super) durable_clients: Arc<Mutex<HashSet<Arc<str>>>>,
    /// Last committed sequence, for sinks that follow the WAL.
    pub(super) committed: Arc<Watermark>,
    /// The PostgreSQL sink and the bridges.
    pub(super) followers: Arc<[Follower]>,
    /// The PostgreSQL sink's checkpoint (one of `followers`), for its lag gauge.
    pub(super) pg: Option<Arc<Watermark>>,
    /// The last WAL sequence in the object-store table, when there is one.
    pub(super) lake: Option<Arc<Watermark>>,
    /// Committed batches a follower or the object store may fall behind before commits (and
    /// so publishers) wait.
    pub(super) max_backlog: u64,
    /// Readings and session changes sent to the queue and not yet committed (the sender
    /// counts up before sending, the batcher thread down after the commit).
    pub(super) pending: Arc<AtomicUsize>,
    /// Queue slots: given back for every reading or session change taken off `rx`, once per
    /// record.
    pub(super) slots: Arc<Semaphore>,
    pub(super) wal: Wal,
    pub(super) max_rows: usize,
    pub(super) sink: Sender<SinkMsg>,
    pub(super) metrics: Arc<Metrics>,
    /// Test hook (`SAMOS_FAILPOINT=wal-fsync-eio:N`): the fsync after the first N records
    /// fails with EIO, as a failing disk's would.
    pub(super) fail_fsync_after: Option<u64>,
    /// Small committed batches not yet handed to the Parquet sink (see [`SinkHold`]).
    pub(super) held: SinkHold,
    /// An inline commit left batches held and asked the batcher thread to hand them over
    /// within [`SinkHold::LINGER`]; cleared once the hold is empty.
    pub(super) nudged: bool,
    /// Readings in the last record committed: inline commits only follow a record of at most
    /// one (a lone node), never a group (several nodes: group commit shares the fsync).
    pub(super) last_record_readings: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("next_seq", &self.wal.next_seq())
            .field("held_batches", &self.held.batches.len())
            .finish_non_exhaustive()
    }
}

/// Committed batches of a few rows wait here, in order, until they add up to
/// [`SinkHold::ROWS`] rows or as many batches as the sink's queue holds
/// (`storage.sink_queue_batches`), or the queue has been quiet for [`SinkHold::LINGER`]: a
/// node publishing one reading at a time would otherwise wake the Parquet sink once a
/// reading, and on two cores that thread competes with the exchange being timed. They are
/// committed (in the WAL) already; the sink only turns them into Parquet. Whatever waits on
/// the sink's progress hands them over first: a commit held back by the object store's
/// backlog, a full disk, a flush, the batcher's end. A slow sink still holds commits back once
/// the hold is full: memory stays bounded.
pub(super) struct SinkHold {
    batches: Vec<(u64, RecordBatch)>,
    rows: usize,
    max_batches: usize,
}

impl SinkHold {
    const ROWS: usize = 1024;
    const LINGER: Duration = Duration::from_millis(20);

    pub(super) fn new(max_batches: usize) -> SinkHold {
        SinkHold {
            batches: Vec::new(),
            rows: 0,
            max_batches,
        }
    }

    fn is_full(&self) -> bool {
        self.rows >= Self::ROWS || self.batches.len() >= self.max_batches
    }
}

/// The exit status after a failed WAL write or fsync (`EX_TEMPFAIL`): restart, and recovery
/// starts from what is durable.
pub const EXIT_WAL_FAILED: i32 = 75;

/// What one WAL record gathers: readings of one UTC day and session changes, in queue order.
#[derive(Default)]
struct Group {
    readings: Vec<Reading>,
    ops: Vec<SessionOp>,
    /// Acknowledgements to release once the record is durable, in queue order.
    acks: Vec<Ticket>,
    day: Option<i64>,
}

impl Group {
    /// Adds `work` unless it must go into the next record (a reading of another day, a flush).
    fn add(&mut self, work: Work) -> Option<Work> {
        match work {
            Work::Reading(r) => {
                let day = utc_day(r.ingest_time_ms);
                if self.day.is_some_and(|d| d != day) {
                    return Some(Work::Reading(r));
                }
                self.day = Some(day);
                if let Some(pkid) = r.qos2_pkid {
                    self.ops.push(SessionOp::Received {
                        client: r.client_id.clone(),
                        pkid,
                    });
                }
                if let Some(ack) = &r.ack {
                    self.acks.push(ack.clone());
                }
                self.readings.push(r);
            }
            Work::Session { op, ack } => {
                self.ops.push(op);
                self.acks.extend(ack);
            }
            flush @ Work::Flush(_) => return Some(flush),
            Work::Nudge => {}
        }
        None
    }

    fn len(&self) -> usize {
        self.readings.len() + self.ops.len()
    }
}

/// Whether `work` is a reading or a session change: it took a queue slot and counts in
/// `pending` (a flush or a nudge does neither).
pub(super) fn is_data(work: &Work) -> bool {
    matches!(work, Work::Reading(_) | Work::Session { .. })
}

/// Closes the queue's slots when the batcher stops, however it stops: connections waiting
/// for room get an error instead of waiting forever.
struct CloseOnDrop(Arc<Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The batcher thread: takes work off the queue and commits it in groups, holding the
/// batcher's mutex only while it gathers and commits.
pub(super) fn run(batcher: &Mutex<Batcher>, rx: &Receiver<Work>) {
    let lock = || batcher.lock().expect("batcher");
    let _close = CloseOnDrop(lock().slots.clone());
    let mut carry: Option<Work> = None;
    loop {
        let holding = !lock().held.batches.is_empty();
        // Work carried over from the last record gave its slot back when it was taken.
        let (next, taken_now) = match carry.take() {
            Some(w) => (Ok(w), false),
            None if !holding => (rx.recv().map_err(|_| RecvTimeoutError::Disconnected), true),
            None => (rx.recv_timeout(SinkHold::LINGER), true),
        };
        let mut b = lock();
        let work = match next {
            Ok(Work::Nudge) => continue,
            Ok(w) => w,
            Err(RecvTimeoutError::Timeout) => {
                b.hand_to_sink();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                b.hand_to_sink();
                return;
            }
        };
        if let Work::Flush(done) = work {
            b.hand_to_sink();
            let _ = b.sink.send(SinkMsg::Flush(done));
            continue;
        }
        // Slots of the work taken off the queue for this record, given back in one call
        // (each `add_permits` takes the semaphore's waiter lock); the work in the record,
        // counted off `pending` once it is committed.
        let mut freed = usize::from(taken_now && is_data(&work));
        let mut committing = 0;
        let mut group = Group::default();
        carry = group.add(work);
        committing += usize::from(carry.is_none());
        while carry.is_none() && group.len() < b.max_rows {
            match rx.try_recv() {
                Ok(w) => {
                    let data = is_data(&w);
                    freed += usize::from(data);
                    carry = group.add(w);
                    committing += usize::from(carry.is_none() && data);
                }
                Err(_) => break,
            }
        }
        b.slots.add_permits(freed);
        if let Err(e) = b.commit(group) {
            fatal(&e);
        }
        b.pending.fetch_sub(committing, Ordering::Release);
    }
}

/// After a failed WAL write or fsync. Nothing of the record is acknowledged, and the fsync is
/// never retried: after a failed fsync the kernel may have dropped the unwritten pages and
/// cleared the error, so a retry that succeeds proves nothing (PostgreSQL's "fsyncgate"). The
/// process exits; at the restart recovery keeps exactly what the disk holds whole (every
/// record checksummed), and clients resend what was not acknowledged.
fn fatal(e: &WalError) -> ! {
    error!(error = %e, exit_status = EXIT_WAL_FAILED, "WAL write or fsync failed: exiting without acknowledging the batch; a restart recovers from what is durable");
    std::process::exit(EXIT_WAL_FAILED);
}

/// A WAL record ready to append.
struct Encoded {
    seq: u64,
    batch: Option<RecordBatch>,
    payload: Vec<u8>,
}

impl Batcher {
    /// Commits `reading` on the calling thread if nothing is queued or being committed and no
    /// follower is behind; otherwise, or if the disk is full, hands it back untouched (for the
    /// queue). `Ok(true)`: committed, and batches are held for the Parquet sink that the
    /// batcher thread should be woken (`Work::Nudge`) to hand over in time.
    pub(super) fn commit_inline(&mut self, reading: Reading) -> Result<bool, Reading> {
        if self.last_record_readings > 1
            || self.pending.load(Ordering::Acquire) != 0
            || self.is_behind()
        {
            return Err(reading);
        }
        let started = Instant::now();
        let mut group = Group::default();
        let _ = group.add(Work::Reading(reading));
        let record = self.encode(&group);
        match self.wal.append(&record.payload) {
            Ok(_) => {}
            // The WAL is as it was: the batcher thread waits for space with it in the queue.
            Err(WalError::NoSpace { .. }) => {
                return Err(group.readings.pop().expect("the reading"));
            }
            Err(e) => fatal(&e),
        }
        if let Err(e) = self.sync_and_release(group, record, started, false) {
            fatal(&e);
        }
        self.metrics.wal_inline_commits.fetch_add(1, Relaxed);
        let nudge = !self.held.batches.is_empty() && !self.nudged;
        self.nudged |= nudge;
        Ok(nudge)
    }

    /// Waits while PostgreSQL, a bridge or the object store is more than `max_backlog`
    /// batches behind: the WAL backlog on disk stays bounded, the queue fills, and publishers
    /// are paused instead.
    fn wait_for_backlog(&mut self) {
        if self.is_behind() {
            // The object store follows the published Parquet files: batches still held here
            // must reach the sink first, or it could never catch up.
            self.hand_to_sink();
        }
        for f in self.followers.iter() {
            self.wait_for_follower(&f.name, &f.checkpoint);
        }
        if let Some(lake) = &self.lake {
            self.wait_for_follower("the object store", lake);
        }
    }

    /// Whether a commit now would wait for a follower or the object store.
    fn is_behind(&self) -> bool {
        let next = self.wal.next_seq();
        let behind =
            |checkpoint: &Watermark| next.saturating_sub(checkpoint.get() + 1) >= self.max_backlog;
        self.followers.iter().any(|f| behind(&f.checkpoint))
            || self.lake.as_deref().is_some_and(behind)
    }

    fn wait_for_follower(&self, follower: &str, checkpoint: &Watermark) {
        let next = self.wal.next_seq();
        let caught_up = |checkpoint: u64| next.saturating_sub(checkpoint + 1) < self.max_backlog;
        if caught_up(checkpoint.get()) {
            return;
        }
        warn!(
            backlog = self.max_backlog,
            "{follower} is too far behind: holding commits (publishers are paused, nothing is dropped)"
        );
        self.metrics.ingest_backpressure.fetch_add(1, Relaxed);
        while !caught_up(checkpoint.wait_blocking(caught_up, Duration::from_secs(60))) {}
    }

    fn commit(&mut self, group: Group) -> Result<(), WalError> {
        self.wait_for_backlog();
        let started = Instant::now();
        let record = self.encode(&group);
        self.append_waiting_for_space(&record.payload)?;
        self.sync_and_release(group, record, started, true)
    }

    /// The record for `group`: its readings as one Arrow batch and its session changes (the
    /// whole session table first, when it opens a segment).
    fn encode(&mut self, group: &Group) -> Encoded {
        let seq = self.wal.next_seq();
        let batch = (!group.readings.is_empty()).then(|| build_batch(&group.readings, seq));
        let payload = if self.wal.next_append_starts_segment() {
            // Every segment opens with the whole session table, so freeing older segments
            // never loses a session; sessions expired by now are left out.
            let gone = self.sessions.drop_expired(crate::clock::now_ms());
            if !gone.is_empty() {
                let mut clients = self.durable_clients.lock().expect("durable clients");
                for c in &gone {
                    clients.remove(c);
                }
                self.metrics
                    .durable_sessions
                    .store(self.sessions.len() as u64, Relaxed);
            }
            let mut ops = self.sessions.snapshot();
            ops.extend(group.ops.iter().cloned());
            encode_record(&ops, batch.as_ref())
        } else {
            encode_record(&group.ops, batch.as_ref())
        };
        Encoded {
            seq,
            batch,
            payload,
        }
    }

    /// Makes the appended `record` durable, then releases `group`'s acknowledgements and holds
    /// its batch for the Parquet sink; `blocking`: the batcher thread, which may wait for the
    /// sink (an inline commit hands over only what the sink takes at once).
    fn sync_and_release(
        &mut self,
        group: Group,
        record: Encoded,
        started: Instant,
        blocking: bool,
    ) -> Result<(), WalError> {
        let Encoded {
            seq,
            batch,
            payload,
        } = record;
        if self.fail_fsync_after.is_some_and(|n| seq > n) {
            return Err(WalError::Io {
                path: "wal (failpoint wal-fsync-eio)".into(),
                source: std::io::Error::from_raw_os_error(5),
            });
        }
        self.wal.commit()?;
        self.committed.set(seq);
        if !group.ops.is_empty() {
            self.apply_sessions(&group.ops);
        }
        if let Some(pg) = &self.pg {
            // Kept current here too, so an outage (no sink loop running) still shows its lag.
            let lag = seq.saturating_sub(pg.get());
            self.metrics.postgres_lag.store(lag, Relaxed);
        }
        if let Some(lake) = &self.lake {
            let lag = seq.saturating_sub(lake.get());
            self.metrics.lake_lag.store(lag, Relaxed);
        }
        let m = &self.metrics;
        m.wal_commit_latency.observe(started.elapsed());
        m.wal_bytes.fetch_add(payload.len() as u64 + 16, Relaxed);
        m.readings_committed
            .fetch_add(group.readings.len() as u64, Relaxed);
        m.wal_batches.fetch_add(1, Relaxed);
        self.last_record_readings = group.readings.len();
        // Release acknowledgements: each connection's sequence numbers arrive in its order,
        // so of a run of one connection's tickets only the last needs a wake-up.
        for (i, ticket) in group.acks.iter().enumerate() {
            let next_same = group
                .acks
                .get(i + 1)
                .is_some_and(|n| Arc::ptr_eq(&n.cursor, &ticket.cursor));
            if !next_same {
                release(ticket);
            }
        }
        drop(group);
        if let Some(batch) = batch {
            self.held.rows += batch.num_rows();
            self.held.batches.push((seq, batch));
            if self.held.is_full() {
                if blocking {
                    self.hand_to_sink();
                } else {
                    self.offer_to_sink();
                }
            }
        }
        Ok(())
    }

    /// Hands the held batches to the Parquet sink, in order. A slow sink blocks here, which
    /// stops commits, which fills the queue, which pauses publishers: the WAL backlog stays
    /// bounded.
    fn hand_to_sink(&mut self) {
        for (seq, batch) in self.held.batches.drain(..) {
            let _ = self.sink.send(SinkMsg::Batch(seq, batch));
        }
        self.held.rows = 0;
        self.nudged = false;
    }

    /// Hands the held batches to the Parquet sink as far as its queue has room, in order,
    /// without waiting; the rest stay held (for the batcher thread).
    fn offer_to_sink(&mut self) {
        let mut taken = 0;
        for (seq, batch) in &self.held.batches {
            if self
                .sink
                .try_send(SinkMsg::Batch(*seq, batch.clone()))
                .is_err()
            {
                break;
            }
            taken += 1;
            self.held.rows -= batch.num_rows();
        }
        self.held.batches.drain(..taken);
        if self.held.batches.is_empty() {
            self.nudged = false;
        }
    }

    /// Appends `payload`, waiting as long as the disk is full: nothing is acknowledged
    /// meanwhile, the queue fills and publishers are paused (see `crate::disk_space`).
    fn append_waiting_for_space(&mut self, payload: &[u8]) -> Result<(), WalError> {
        let mut attempt = 0;
        loop {
            match self.wal.append(payload) {
                Ok(_) => {
                    if attempt > 0 {
                        self.metrics.disk.freed(Writer::Wal);
                    }
                    return Ok(());
                }
                Err(e @ WalError::NoSpace { .. }) => {
                    self.metrics.disk.full(Writer::Wal, &e);
                    // Published Parquet files free WAL segments: let the sink have everything.
                    self.hand_to_sink();
                    std::thread::sleep(retry_delay(attempt));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn apply_sessions(&mut self, ops: &[SessionOp]) {
        let mut clients = self.durable_clients.lock().expect("durable clients");
        for op in ops {
            self.sessions.apply(op);
            if let Some(client) = op.client() {
                if self.sessions.contains(client) {
                    clients.insert(client.clone());
                } else {
                    clients.remove(client);
                }
            }
        }
        self.metrics
            .durable_sessions
            .store(self.sessions.len() as u64, Relaxed);
    }
}

/// Marks `ticket`'s sequence durable on its connection's cursor and wakes the connection.
fn release(ticket: &Ticket) {
    ticket
        .cursor
        .durable
        .fetch_max(ticket.seq, Ordering::Release);
    ticket.cursor.notify.notify_one();
}
