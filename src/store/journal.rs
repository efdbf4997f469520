//! Group commit: one writer thread in front of a [`Store`].
//!
//! Queues submit records (under their own lock, so a queue's records keep
//! its order) and get a [`Ticket`]: a number that grows with every record.
//! The writer takes every record submitted since its last batch, applies
//! them as one batch, syncs once (`sync = always`), then marks every ticket
//! up to the batch's last one durable and wakes whoever registered for
//! them. One fsync covers as many messages as arrived while the previous
//! one ran, so the batch grows with the load.
//!
//! A failed write or sync poisons the journal: the batch's tickets and every
//! later one fail, and new durable work is refused, until the broker
//! restarts. Nothing settled before the failure is affected.
//!
//! The disk never gets that far: a free-space floor refuses new durable work
//! (as RabbitMQ's disk alarm does) before the disk is full, counting what
//! was submitted but not yet written, and each batch is checked against the
//! space left before it is written (one that would not fit fails alone,
//! without poisoning anything). The alarm clears as soon as space returns;
//! when the store has no live messages, or the alarm is on, the writer has
//! the store give back the space of removed messages ([`Store::reclaim`]).
//!
//! Lock order: a queue's lock, then the journal's submission lock (a leaf).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::{Record, Store, StoreError};
use crate::lock_order::{self, Rank};

/// Identifies submitted records: durable once the journal's durable mark
/// reaches it.
pub type Ticket = u64;

/// Where a ticket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketStatus {
    /// Not yet written and synced.
    Pending,
    /// Durable (as the sync policy promises).
    Durable,
    /// Its batch failed; the journal is poisoned.
    Failed {
        /// The disk was full (a resource limit) rather than broken.
        full: bool,
        /// What failed.
        reason: String,
    },
}

/// Something to wake when tickets become durable (a connection's outbox).
pub trait Wake: Send + Sync {
    /// Called by the writer thread; must not block.
    fn wake(&self);
}

/// When the journal forces writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every batch is fsynced before its tickets are durable.
    Always,
    /// Tickets are durable once written to the OS; fsync at most this often.
    Interval(Duration),
}

/// How the journal runs.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The sync policy.
    pub sync: SyncMode,
    /// Directory whose file system's free space is watched (none: not watched).
    pub watch_dir: Option<PathBuf>,
    /// Refuse new durable work while less than this is free.
    pub min_free_bytes: u64,
    /// How the free space of `watch_dir` is read (tests give their own).
    pub free_space: fn(&std::path::Path) -> std::io::Result<u64>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            sync: SyncMode::Always,
            watch_dir: None,
            min_free_bytes: 0,
            free_space: disk_free,
        }
    }
}

/// Free bytes of the file system holding `path`.
fn disk_free(path: &std::path::Path) -> std::io::Result<u64> {
    fs4::available_space(path)
}

/// Counters for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Batches written.
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Fsyncs done.
    pub syncs: u64,
    /// Messages stored ([`Record::Put`]s written), so a benchmark can
    /// compare messages per fsync with a plain append-and-fsync loop.
    pub puts: u64,
    /// Time spent applying batches to the store, in microseconds.
    pub write_us: u64,
    /// Time spent in fsync, in microseconds.
    pub sync_us: u64,
    /// Fsyncs by latency: `sync_buckets[i]` counts those that took at most
    /// [`SYNC_BUCKETS_US`]`[i]`; the last counts the slower ones.
    pub sync_buckets: [u64; SYNC_BUCKETS_US.len() + 1],
    /// Batches by their number of records: `batch_buckets[i]` counts those
    /// of at most [`BATCH_BUCKETS`]`[i]` records; the last the larger ones.
    pub batch_buckets: [u64; BATCH_BUCKETS.len() + 1],
}

/// How often, at most, the store is asked to give space back while the
/// disk is below its floor and the writer is busy.
const RECLAIM_UNDER_PRESSURE: Duration = Duration::from_secs(5);

/// How old a sample of the disk's free space may be before a batch.
const SPACE_SAMPLE_AGE: Duration = Duration::from_millis(10);

/// Refused batches remembered (their tickets keep failing).
const MAX_REFUSED_RANGES: usize = 4096;

/// Upper bounds (records) of the batch size histogram's buckets.
pub const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Upper bounds (µs) of the fsync latency histogram's buckets.
pub const SYNC_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

impl JournalStats {
    /// Counts one batch of `records` records.
    fn count_batch(&mut self, records: u64) {
        self.batches += 1;
        self.records += records;
        let bucket = BATCH_BUCKETS.partition_point(|&bound| bound < records);
        self.batch_buckets[bucket] += 1;
    }

    /// Counts one fsync that took `us` microseconds.
    fn count_sync(&mut self, us: u64) {
        self.syncs += 1;
        self.sync_us += us;
        let bucket = SYNC_BUCKETS_US.partition_point(|&bound| bound < us);
        self.sync_buckets[bucket] += 1;
    }
}

/// Records waiting for the writer.
#[derive(Debug, Default)]
struct Submissions {
    /// In submission order.
    records: Vec<Record>,
    /// Ticket of the last record submitted.
    last: Ticket,
    /// The writer should finish and exit.
    stop: bool,
}

/// Why the journal stopped accepting work.
#[derive(Debug, Clone)]
struct Failure {
    /// The disk was full.
    full: bool,
    /// What failed.
    reason: String,
}

/// The group-commit writer and its shared state.
pub struct Journal {
    /// Where records go.
    store: Arc<dyn Store>,
    /// How it runs.
    options: JournalOptions,
    /// Records not yet taken by the writer.
    submissions: lock_order::Mutex<Submissions>,
    /// Wakes the writer.
    work: Condvar,
    /// Highest durable ticket.
    durable: AtomicU64,
    /// Highest ticket applied to the store (readable, maybe not synced).
    written: Mutex<Ticket>,
    /// Signals `written` moving.
    written_moved: Condvar,
    /// Set once a write or sync failed.
    failure: Mutex<Option<Failure>>,
    /// Mirrors `failure.is_some()` for the fast path.
    failed: AtomicBool,
    /// The free-space floor is crossed.
    disk_low: AtomicBool,
    /// Free bytes on the store's disk when last sampled (by the writer,
    /// before each batch and each second).
    free: AtomicU64,
    /// Bytes of message values submitted and not yet written.
    pending_bytes: AtomicU64,
    /// Batches refused for lack of space, as ticket ranges: their tickets
    /// failed, later ones did not.
    refused: Mutex<Vec<(Ticket, Ticket)>>,
    /// Whether `refused` ever had a range.
    any_refused: AtomicBool,
    /// When `free` was sampled.
    sampled: Mutex<Instant>,
    /// Who to wake at which ticket.
    waiters: Mutex<Vec<(Ticket, Arc<dyn Wake>)>>,
    /// Counters.
    stats: Mutex<JournalStats>,
    /// The writer thread, joined at shutdown.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("durable", &self.durable.load(Ordering::Relaxed))
            .field("failed", &self.failed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts the writer thread in front of `store`.
    pub fn start(store: Arc<dyn Store>, options: JournalOptions) -> Arc<Self> {
        let journal = Arc::new(Self {
            store,
            options,
            submissions: lock_order::Mutex::new(Rank::Journal, Submissions::default()),
            work: Condvar::new(),
            durable: AtomicU64::new(0),
            written: Mutex::new(0),
            written_moved: Condvar::new(),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            disk_low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            pending_bytes: AtomicU64::new(0),
            refused: Mutex::new(Vec::new()),
            any_refused: AtomicBool::new(false),
            sampled: Mutex::new(Instant::now()),
            waiters: Mutex::new(Vec::new()),
            stats: Mutex::new(JournalStats::default()),
            thread: Mutex::new(None),
        });
        journal.check_space();
        let writer = Arc::clone(&journal);
        let handle = std::thread::Builder::new()
            .name("ordo-journal".into())
            .spawn(move || writer.run());
        match handle {
            Ok(h) => *journal.thread.lock() = Some(h),
            Err(e) => journal.fail(false, format!("cannot start the journal thread: {e}")),
        }
        journal
    }

    /// The store behind the journal (recovery reads it directly).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether new durable work of `bytes` may be submitted: refused once
    /// the journal failed, or while the disk is below its free-space floor
    /// counting what waits to be written (each byte is written twice: to
    /// the store's log, then to its tables).
    pub fn check_accepting(&self, bytes: u64) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Acquire) {
            let f = self.failure.lock().clone();
            return Err(match f {
                Some(f) if f.full => StoreError::Full(f.reason),
                Some(f) => StoreError::Poisoned(f.reason),
                None => StoreError::Poisoned("unknown failure".into()),
            });
        }
        let floor = self.options.min_free_bytes;
        let coming = self
            .pending_bytes
            .load(Ordering::Relaxed)
            .saturating_add(bytes)
            .saturating_mul(2);
        let free = self.free.load(Ordering::Relaxed);
        if self.disk_low.load(Ordering::Relaxed)
            || (floor > 0 && free.saturating_sub(coming) < floor)
        {
            return Err(StoreError::Full(format!(
                "less than {floor} bytes would be left free for the store"
            )));
        }
        Ok(())
    }

    /// Queues records for the next batch; returns the ticket of the last.
    pub fn submit(&self, records: impl IntoIterator<Item = Record>) -> Ticket {
        let mut s = self.submissions.lock();
        let was_empty = s.records.is_empty();
        let mut bytes = 0;
        for r in records {
            bytes += r.value_bytes();
            s.records.push(r);
            s.last += 1;
        }
        self.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
        let last = s.last;
        drop(s);
        if was_empty {
            self.work.notify_one();
        }
        last
    }

    /// Where a ticket stands.
    pub fn status(&self, ticket: Ticket) -> TicketStatus {
        if ticket <= self.durable.load(Ordering::Acquire) {
            // (Nothing ever refused, the common case: no lock.)
            let refused = self.any_refused.load(Ordering::Acquire)
                && self
                    .refused
                    .lock()
                    .iter()
                    .any(|(first, last)| (*first..=*last).contains(&ticket));
            if refused {
                return TicketStatus::Failed {
                    full: true,
                    reason: "the store's disk had no room for it".into(),
                };
            }
            return TicketStatus::Durable;
        }
        if self.failed.load(Ordering::Acquire) {
            if let Some(f) = self.failure.lock().clone() {
                return TicketStatus::Failed {
                    full: f.full,
                    reason: f.reason,
                };
            }
        }
        TicketStatus::Pending
    }

    /// Highest durable ticket.
    pub fn durable_mark(&self) -> Ticket {
        self.durable.load(Ordering::Acquire)
    }

    /// Wakes `waker` once `ticket` is durable or failed (at once if it is).
    pub fn wake_when(&self, ticket: Ticket, waker: Arc<dyn Wake>) {
        let mut waiters = self.waiters.lock();
        if self.status(ticket) != TicketStatus::Pending {
            drop(waiters);
            waker.wake();
            return;
        }
        waiters.push((ticket, waker));
    }

    /// Reads a stored value, waiting for the writer if it was submitted but
    /// not yet applied (a body paged out moments ago).
    pub fn read(&self, queue: u64, seq: u64) -> Result<Option<Bytes>, StoreError> {
        if let Some(v) = self.store.read(queue, seq)? {
            return Ok(Some(v));
        }
        let wanted = self.submissions.lock().last;
        let mut written = self.written.lock();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *written < wanted && !self.failed.load(Ordering::Acquire) {
            if self
                .written_moved
                .wait_until(&mut written, deadline)
                .timed_out()
            {
                break;
            }
        }
        drop(written);
        self.store.read(queue, seq)
    }

    /// Counters so far.
    pub fn stats(&self) -> JournalStats {
        *self.stats.lock()
    }

    /// Writes and syncs what is pending, then stops the writer thread.
    pub fn shutdown(&self) {
        self.submissions.lock().stop = true;
        self.work.notify_one();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }

    /// The writer thread.
    fn run(self: Arc<Self>) {
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        let mut last_space_check = Instant::now();
        // Removals since the store last gave space back (unknown at start).
        let mut removed = true;
        let mut last_reclaim = Instant::now();
        loop {
            let tick = match self.options.sync {
                SyncMode::Interval(d) if unsynced => d.min(Duration::from_secs(1)),
                _ => Duration::from_secs(1),
            };
            let (records, last, stop) = {
                let mut s = self.submissions.lock();
                if s.records.is_empty() && !s.stop {
                    self.work.wait_for(s.raw(), tick);
                }
                (std::mem::take(&mut s.records), s.last, s.stop)
            };
            if last_space_check.elapsed() >= Duration::from_secs(1) {
                last_space_check = Instant::now();
                self.check_space();
            }
            if !records.is_empty() {
                removed |= records.iter().any(Record::removes);
                self.write_batch(&records, last, &mut unsynced, &mut last_sync);
            } else if removed {
                // Idle: give back what removed messages held, if the store
                // thinks it worth it (it has no live messages, or the disk
                // is low). Under pressure, every few seconds even if busy.
                removed = !self.reclaim();
                last_reclaim = Instant::now();
            }
            if removed
                && self.disk_low.load(Ordering::Relaxed)
                && last_reclaim.elapsed() >= RECLAIM_UNDER_PRESSURE
            {
                removed = !self.reclaim();
                last_reclaim = Instant::now();
            }
            if records.is_empty() && unsynced {
                if let SyncMode::Interval(d) = self.options.sync {
                    if last_sync.elapsed() >= d {
                        self.sync_now(&mut unsynced, &mut last_sync);
                    }
                }
            }
            if stop {
                if unsynced {
                    self.sync_now(&mut unsynced, &mut last_sync);
                }
                return;
            }
        }
    }

    /// Applies one batch and makes it durable per the sync policy.
    fn write_batch(
        &self,
        records: &[Record],
        last: Ticket,
        unsynced: &mut bool,
        last_sync: &mut Instant,
    ) {
        if self.failed.load(Ordering::Acquire) {
            self.wake_all();
            return;
        }
        let bytes: u64 = records.iter().map(Record::value_bytes).sum();
        self.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
        if !self.room_for(bytes) {
            // Written, it would fill the disk and poison the store: fail
            // this batch alone; the alarm refuses new work until there is
            // room again.
            let first = last + 1 - records.len() as Ticket;
            tracing::warn!(
                records = records.len(),
                bytes,
                free = self.free.load(Ordering::Relaxed),
                "store disk has no room for a batch: its messages are refused"
            );
            self.refuse(first, last);
            return;
        }
        let started = Instant::now();
        if let Err(e) = self.store.write(records) {
            self.fail(e.is_full(), e.to_string());
            return;
        }
        let wrote = started.elapsed();
        *self.written.lock() = last;
        self.written_moved.notify_all();
        {
            let mut st = self.stats.lock();
            st.count_batch(records.len() as u64);
            st.write_us += wrote.as_micros() as u64;
            st.puts += records
                .iter()
                .filter(|r| matches!(r, Record::Put { .. }))
                .count() as u64;
        }
        let result = match self.options.sync {
            SyncMode::Always => {
                *last_sync = Instant::now();
                let r = self.store.sync();
                self.stats
                    .lock()
                    .count_sync(last_sync.elapsed().as_micros() as u64);
                r
            }
            SyncMode::Interval(d) => {
                *unsynced = true;
                let r = self.store.flush();
                if r.is_ok() && last_sync.elapsed() >= d {
                    self.sync_now(unsynced, last_sync);
                }
                r
            }
        };
        match result {
            Ok(()) => {
                self.durable.store(last, Ordering::Release);
                self.wake_durable(last);
            }
            Err(e) => self.fail(e.is_full(), e.to_string()),
        }
    }

    /// An fsync outside a batch (interval policy, shutdown).
    fn sync_now(&self, unsynced: &mut bool, last_sync: &mut Instant) {
        *last_sync = Instant::now();
        *unsynced = false;
        let r = self.store.sync();
        self.stats
            .lock()
            .count_sync(last_sync.elapsed().as_micros() as u64);
        if let Err(e) = r {
            self.fail(e.is_full(), e.to_string());
        }
    }

    /// Poisons the journal: pending and later tickets fail.
    fn fail(&self, full: bool, reason: String) {
        tracing::error!(
            full,
            reason = %reason,
            "STORE FAILURE: the message store failed a write or fsync; durable messages \
             are refused until the broker restarts (already accepted messages are safe)"
        );
        {
            let mut f = self.failure.lock();
            if f.is_none() {
                *f = Some(Failure { full, reason });
            }
        }
        self.failed.store(true, Ordering::Release);
        self.written_moved.notify_all();
        self.wake_all();
    }

    /// Wakes every waiter up to `durable`.
    fn wake_durable(&self, durable: Ticket) {
        let mut due = Vec::new();
        self.waiters.lock().retain(|(t, w)| {
            if *t <= durable {
                due.push(Arc::clone(w));
                false
            } else {
                true
            }
        });
        for w in due {
            w.wake();
        }
    }

    /// Wakes every waiter (after a failure).
    fn wake_all(&self) {
        let all = std::mem::take(&mut *self.waiters.lock());
        for (_, w) in all {
            w.wake();
        }
    }

    /// Whether a batch of `bytes` of values fits on the disk: written
    /// twice, with a mebibyte to spare for the store's own files. Free space
    /// is sampled again when the last sample is older than
    /// [`SPACE_SAMPLE_AGE`] or the batch is large next to what the last one
    /// left (cheap as a sample is, small batches come fast without an
    /// fsync each).
    fn room_for(&self, bytes: u64) -> bool {
        let need = bytes.saturating_mul(2).saturating_add(1 << 20);
        let stale = self.sampled.lock().elapsed() >= SPACE_SAMPLE_AGE;
        if stale || need.saturating_mul(16) > self.free.load(Ordering::Relaxed) {
            self.check_space();
        }
        let free = self.free.load(Ordering::Relaxed);
        free == u64::MAX || need <= free
    }

    /// Fails tickets `first..=last` (a batch that did not fit) without
    /// poisoning the journal, and wakes their waiters.
    fn refuse(&self, first: Ticket, last: Ticket) {
        {
            let mut refused = self.refused.lock();
            refused.push((first, last));
            // Bounded: the oldest ranges were answered long ago.
            if refused.len() > MAX_REFUSED_RANGES {
                refused.remove(0);
            }
        }
        self.any_refused.store(true, Ordering::Release);
        self.disk_low.store(true, Ordering::Relaxed);
        *self.written.lock() = last;
        self.written_moved.notify_all();
        self.durable.store(last, Ordering::Release);
        self.wake_durable(last);
    }

    /// Has the store give back the space of removed messages, if it thinks
    /// it worth it; whether it did (or failed trying: not retried at once).
    fn reclaim(&self) -> bool {
        let pressure = self
            .disk_low
            .load(Ordering::Relaxed)
            .then(|| self.free.load(Ordering::Relaxed));
        let started = Instant::now();
        match self.store.reclaim(pressure) {
            Ok(false) => false,
            Ok(true) => {
                tracing::info!(
                    pressure = pressure.is_some(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "store gave back the space of removed messages"
                );
                self.check_space();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "store could not give back space");
                true
            }
        }
    }

    /// Samples the disk's free space, less what the store still has to
    /// write out (it needs that room), and updates the alarm.
    fn check_space(&self) {
        let Some(dir) = &self.options.watch_dir else {
            return;
        };
        let Ok(free) = (self.options.free_space)(dir) else {
            return;
        };
        let free = free.saturating_sub(self.store.unflushed_bytes());
        self.free.store(free, Ordering::Relaxed);
        *self.sampled.lock() = Instant::now();
        if self.options.min_free_bytes == 0 {
            return;
        }
        let low = free < self.options.min_free_bytes;
        let was = self.disk_low.swap(low, Ordering::Relaxed);
        if low && !was {
            tracing::warn!(
                free,
                floor = self.options.min_free_bytes,
                "store disk below its free-space floor: durable messages are refused"
            );
        } else if was && !low {
            tracing::info!(
                free,
                "store disk has room again: durable messages are accepted"
            );
        }
    }
}

#[cfg(test)]
mod histogram_tests {
    use super::*;

    #[test]
    fn each_fsync_is_counted_in_the_first_bucket_that_holds_it() {
        let mut stats = JournalStats::default();
        for us in [50, 100, 101, 3_000, 2_000_000] {
            stats.count_sync(us);
        }
        assert_eq!(stats.syncs, 5);
        assert_eq!(stats.sync_us, 2_003_251);
        assert_eq!(stats.sync_buckets[0], 2, "≤ 100 µs");
        assert_eq!(stats.sync_buckets[1], 1, "≤ 250 µs");
        assert_eq!(stats.sync_buckets[5], 1, "≤ 5 ms");
        assert_eq!(
            stats.sync_buckets[SYNC_BUCKETS_US.len()],
            1,
            "slower than 1 s"
        );
    }
}
