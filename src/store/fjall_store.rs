//! The on-disk store: fjall (an LSM tree with a write-ahead journal).
//!
//! Keyspaces:
//! - `queues`: queue id (8 bytes, big endian) → the core's metadata; queue
//!   id followed by `h` → the queue's head (the lowest sequence that may
//!   still be live), so recovery starts there and never walks the
//!   tombstones of acknowledged messages.
//! - `messages`: queue id + seq (16 bytes) → message; queue id + seq + `c`
//!   (17 bytes) → a delivery count recorded later. Values above the
//!   separation threshold (large messages) go to fjall's blob files
//!   (key-value separation), so compaction does not rewrite them.
//!
//! A batch is one fjall write batch (atomic in the journal); `sync` is one
//! `persist(SyncData)`. fjall poisons itself when a journal write or fsync
//! fails; this store reports that as [`StoreError::Poisoned`] from then on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use parking_lot::Mutex;

use super::{Record, Store, StoreError, StoredMessage};

/// How to open the store.
#[derive(Debug, Clone)]
pub struct FjallOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// Messages at least this large are kept in blob files.
    pub blob_threshold: u32,
}

impl Default for FjallOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
            blob_threshold: 64 << 10,
        }
    }
}

/// Which stored messages of a queue are still live, in order, so the head
/// can be moved past acknowledged ones. Sequence numbers of one queue are
/// stored in increasing order.
#[derive(Debug, Default)]
struct Track {
    /// Live sequence numbers, oldest first (acknowledged ones are popped
    /// once everything before them is gone).
    live: VecDeque<u64>,
    /// Acknowledged out of order, still in `live`.
    gone: HashSet<u64>,
    /// Head last written to the `queues` keyspace.
    written_head: u64,
}

impl Track {
    /// The lowest sequence that may be live.
    fn head(&self, next: u64) -> u64 {
        self.live.front().copied().unwrap_or(next)
    }

    /// A message left: pop it (and anything acknowledged behind it) if it
    /// is at the front, or remember it.
    fn delete(&mut self, seq: u64) {
        match self.live.front() {
            Some(&front) if front == seq => {
                self.live.pop_front();
                while let Some(front) = self.live.front() {
                    if !self.gone.remove(front) {
                        break;
                    }
                    self.live.pop_front();
                }
            }
            Some(&front) if seq > front => {
                self.gone.insert(seq);
            }
            _ => {}
        }
    }
}

/// A write to the messages keyspace, before the batch is built.
enum Op<'a> {
    /// A message.
    Put([u8; 16], &'a Bytes),
    /// A delivery count.
    Count([u8; 17], u32),
    /// A message's removal.
    Remove([u8; 16]),
    /// A delivery count's removal.
    RemoveCount([u8; 17]),
}

/// Per-queue head tracking, touched only by the writer thread and recovery.
#[derive(Debug, Default)]
struct Heads {
    /// Tracks by queue id.
    tracks: HashMap<u64, Track>,
    /// The highest sequence seen per queue, plus one (head of an empty queue).
    next: HashMap<u64, u64>,
}

/// The fjall-backed store.
pub struct FjallStore {
    /// The database (journal, keyspaces, background maintenance).
    db: Database,
    /// Queue metadata and heads.
    queues: Keyspace,
    /// Messages and recorded delivery counts.
    messages: Keyspace,
    /// Head tracking.
    heads: Mutex<Heads>,
    /// Messages written and their bytes, since the store was opened (for
    /// the average message size).
    written: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

/// Maps a fjall error: a full disk, a poisoned store, or an I/O failure.
fn map_err(e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Poisoned => {
            StoreError::Poisoned("fjall refuses writes after a failure".into())
        }
        fjall::Error::Io(io) if is_disk_full(&io) => StoreError::Full(io.to_string()),
        fjall::Error::Storage(fjall::LsmError::Io(io)) if is_disk_full(&io) => {
            StoreError::Full(io.to_string())
        }
        other => StoreError::Io(other.to_string()),
    }
}

/// ENOSPC or EDQUOT.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Key of a message.
fn message_key(queue: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&queue.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Key of a message's recorded delivery count.
fn count_key(queue: u64, seq: u64) -> [u8; 17] {
    let mut k = [b'c'; 17];
    k[..16].copy_from_slice(&message_key(queue, seq));
    k
}

/// Key of a queue's head.
/// Key of a remembered message id in the `queues` keyspace: the queue id,
/// a 2, then the id (longer than the 8-byte queue and 9-byte head keys).
fn duplicate_key(queue: u64, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + id.len());
    key.extend_from_slice(&queue.to_be_bytes());
    key.push(2);
    key.extend_from_slice(id);
    key
}

fn head_key(queue: u64) -> [u8; 9] {
    let mut k = [b'h'; 9];
    k[..8].copy_from_slice(&queue.to_be_bytes());
    k
}

/// Bytes of fjall journals kept before fjall forces memtables out.
const MAX_JOURNALING: u64 = 128 << 20;

/// A key of the `queues` keyspace written when the store gives space back
/// (shorter than any queue, head or duplicate key, so never read as one).
const QUEUES_MARKER: &[u8] = b"reclaim";

/// A key of the `messages` keyspace written when the store gives space back
/// (one byte: before every queue's keys, and in no queue's prefix).
const MESSAGES_MARKER: &[u8] = &[0];

/// Reads a big-endian u64 from the first 8 bytes.
fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

impl FjallStore {
    /// Opens (or creates) the store in `path`, recovering its journal. A
    /// torn final write (a crash mid-append) is dropped by fjall's recovery.
    pub fn open(path: &Path, options: &FjallOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Io(e.to_string()))?;
        // Journals are written in 64 MiB files and deleted once flushed;
        // fjall lets 512 MiB of them pile up before it forces flushes,
        // which on a small disk is most of the floor: two at most.
        let db = Database::builder(path)
            .cache_size(options.cache_bytes)
            .max_journaling_size(MAX_JOURNALING)
            .open()
            .map_err(map_err)?;
        let queues = db
            .keyspace("queues", KeyspaceCreateOptions::default)
            .map_err(map_err)?;
        let threshold = options.blob_threshold;
        let messages = db
            .keyspace("messages", || {
                KeyspaceCreateOptions::default().with_kv_separation(Some(
                    KvSeparationOptions::default().separation_threshold(threshold),
                ))
            })
            .map_err(map_err)?;
        Ok(Self {
            db,
            queues,
            messages,
            heads: Mutex::new(Heads::default()),
            written: Mutex::new((0, 0)),
        })
    }

    /// Bytes `live` messages take, at the average size of those written.
    fn live_bytes_estimate(&self, live: usize) -> u64 {
        let (count, bytes) = *self.written.lock();
        (bytes / count.max(1)).saturating_mul(live as u64)
    }

    /// Writes `marker` to `keyspace` and flushes its memtable to a table.
    fn flush_with_marker(&self, keyspace: &Keyspace, marker: &[u8]) -> Result<(), StoreError> {
        keyspace.insert(marker, b"").map_err(map_err)?;
        keyspace.rotate_memtable_and_wait().map_err(map_err)
    }

    /// Messages stored and not removed, in every queue.
    fn live_messages(&self) -> usize {
        self.heads
            .lock()
            .tracks
            .values()
            .map(|t| t.live.len() - t.gone.len())
            .sum()
    }

    /// The head recorded for a queue (0 if none).
    fn stored_head(&self, queue: u64) -> Result<u64, StoreError> {
        Ok(self
            .queues
            .get(head_key(queue))
            .map_err(map_err)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0))
    }
}

impl Store for FjallStore {
    fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        // Writes for the messages keyspace, cancellable: a message stored and
        // removed within one batch (consumed within one fsync window, the
        // common case under load) is never written at all. This also keeps
        // one key from being written twice in one fjall batch, whose items
        // share a sequence number.
        let mut ops: Vec<Option<Op<'_>>> = Vec::with_capacity(batch.len());
        let mut pending: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        let mut wb = self.db.batch();
        let mut heads = self.heads.lock();
        let mut touched: Vec<u64> = Vec::new();
        // Remembered ids, last write wins (one key once per fjall batch).
        let mut duplicates: HashMap<Vec<u8>, Option<u64>> = HashMap::new();
        for record in batch {
            match record {
                Record::PutQueue { id, meta } => {
                    wb.insert(&self.queues, id.to_be_bytes(), meta.as_ref());
                }
                Record::DeleteQueue { id } => {
                    wb.remove(&self.queues, id.to_be_bytes());
                    wb.remove(&self.queues, head_key(*id));
                    for kv in self.messages.prefix(id.to_be_bytes()) {
                        let key = kv.key().map_err(map_err)?;
                        wb.remove(&self.messages, key);
                    }
                    pending.retain(|(queue, _), indexes| {
                        if queue == id {
                            for &i in indexes.iter() {
                                ops[i] = None;
                            }
                            false
                        } else {
                            true
                        }
                    });
                    heads.tracks.remove(id);
                    heads.next.remove(id);
                    let prefix = duplicate_key(*id, b"");
                    for (_, at) in duplicates
                        .iter_mut()
                        .filter(|(k, _)| k.starts_with(&prefix))
                    {
                        *at = None;
                    }
                    for kv in self.queues.prefix(&prefix) {
                        let key = kv.key().map_err(map_err)?;
                        duplicates.insert(key.to_vec(), None);
                    }
                }
                Record::PutDuplicate { queue, id, at } => {
                    duplicates.insert(duplicate_key(*queue, id), Some(*at));
                }
                Record::DeleteDuplicate { queue, id } => {
                    duplicates.insert(duplicate_key(*queue, id), None);
                }
                Record::Put { queue, seq, value } => {
                    pending.entry((*queue, *seq)).or_default().push(ops.len());
                    ops.push(Some(Op::Put(message_key(*queue, *seq), value)));
                    heads.tracks.entry(*queue).or_default().live.push_back(*seq);
                    let next = heads.next.entry(*queue).or_default();
                    *next = (*next).max(seq + 1);
                }
                Record::SetCount { queue, seq, count } => {
                    let key = (*queue, *seq);
                    // A count for a message put in this batch joins its put,
                    // replacing an earlier count of this batch.
                    if let Some(indexes) = pending.get_mut(&key) {
                        let keep = usize::from(
                            indexes
                                .first()
                                .is_some_and(|&i| matches!(ops[i], Some(Op::Put(..)))),
                        );
                        for i in indexes.drain(keep..) {
                            ops[i] = None;
                        }
                        indexes.push(ops.len());
                    } else {
                        pending.entry(key).or_default().push(ops.len());
                    }
                    ops.push(Some(Op::Count(count_key(*queue, *seq), *count)));
                }
                Record::Delete {
                    queue,
                    seq,
                    counted,
                } => {
                    match pending.remove(&(*queue, *seq)) {
                        // Written in this batch: cancel those writes instead.
                        Some(indexes)
                            if indexes
                                .first()
                                .is_some_and(|&i| matches!(ops[i], Some(Op::Put(..)))) =>
                        {
                            for i in indexes {
                                ops[i] = None;
                            }
                        }
                        earlier => {
                            for i in earlier.into_iter().flatten() {
                                ops[i] = None;
                            }
                            ops.push(Some(Op::Remove(message_key(*queue, *seq))));
                            if *counted {
                                ops.push(Some(Op::RemoveCount(count_key(*queue, *seq))));
                            }
                        }
                    }
                    heads.tracks.entry(*queue).or_default().delete(*seq);
                    if !touched.contains(queue) {
                        touched.push(*queue);
                    }
                }
            }
        }
        let mut written = (0, 0);
        for op in ops.into_iter().flatten() {
            match op {
                Op::Put(key, value) => {
                    written.0 += 1;
                    written.1 += value.len() as u64;
                    wb.insert(&self.messages, key, Bytes::clone(value))
                }
                Op::Count(key, count) => wb.insert(&self.messages, key, count.to_be_bytes()),
                Op::Remove(key) => wb.remove(&self.messages, key),
                Op::RemoveCount(key) => wb.remove(&self.messages, key),
            }
        }
        for (key, at) in duplicates {
            match at {
                Some(at) => wb.insert(&self.queues, key, at.to_be_bytes()),
                None => wb.remove(&self.queues, key),
            }
        }
        for queue in touched {
            let next = heads.next.get(&queue).copied().unwrap_or(0);
            if let Some(track) = heads.tracks.get_mut(&queue) {
                let head = track.head(next);
                if head != track.written_head {
                    track.written_head = head;
                    wb.insert(&self.queues, head_key(queue), head.to_be_bytes());
                }
            }
        }
        drop(heads);
        wb.commit().map_err(map_err)?;
        let mut total = self.written.lock();
        total.0 += written.0;
        total.1 += written.1;
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncData).map_err(map_err)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::Buffer).map_err(map_err)
    }

    fn queues(&self) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.queues.iter() {
            let (key, value) = kv.into_inner().map_err(map_err)?;
            if key.len() == 8 {
                let id = be_u64(&key).ok_or_else(|| StoreError::Corrupt("queue key".into()))?;
                out.push((id, Bytes::copy_from_slice(&value)));
            }
        }
        Ok(out)
    }

    fn messages(&self, queue: u64, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        let head = self.stored_head(queue)?;
        let start = message_key(queue, head);
        let end = message_key(queue, u64::MAX);
        let mut track = Track::default();
        let mut next = head;
        let mut pending: Option<StoredMessage> = None;
        for kv in self.messages.range(start.as_slice()..=end.as_slice()) {
            let (key, value) = kv.into_inner().map_err(map_err)?;
            let seq = key
                .get(8..16)
                .and_then(be_u64)
                .ok_or_else(|| StoreError::Corrupt("message key".into()))?;
            match key.len() {
                16 => {
                    if let Some(m) = pending.take() {
                        visit(m);
                    }
                    track.live.push_back(seq);
                    next = seq + 1;
                    pending = Some(StoredMessage {
                        seq,
                        value: Bytes::from(value),
                        count: None,
                    });
                }
                17 => {
                    if let Some(m) = pending.as_mut().filter(|m| m.seq == seq) {
                        let count = value
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(u32::from_be_bytes)
                            .ok_or_else(|| StoreError::Corrupt("delivery count".into()))?;
                        m.count = Some(count);
                    }
                }
                _ => return Err(StoreError::Corrupt("message key length".into())),
            }
        }
        if let Some(m) = pending.take() {
            visit(m);
        }
        track.written_head = head;
        let mut heads = self.heads.lock();
        heads.tracks.insert(queue, track);
        heads.next.insert(queue, next);
        Ok(())
    }

    fn duplicates(&self, queue: u64) -> Result<Vec<(Bytes, u64)>, StoreError> {
        let prefix = duplicate_key(queue, b"");
        let mut out = Vec::new();
        for kv in self.queues.prefix(&prefix) {
            let (key, value) = kv.into_inner().map_err(map_err)?;
            let at =
                be_u64(&value).ok_or_else(|| StoreError::Corrupt("duplicate id time".into()))?;
            out.push((Bytes::copy_from_slice(&key[prefix.len()..]), at));
        }
        Ok(out)
    }

    fn reclaim(&self, pressure: Option<u64>) -> Result<bool, StoreError> {
        let live = self.live_messages();
        let worth = match pressure {
            _ if live == 0 => true,
            // Compaction writes what is live before it deletes anything.
            Some(free) => self.live_bytes_estimate(live).saturating_mul(3) / 2 < free,
            None => false,
        };
        if !worth {
            return Ok(false);
        }
        // fjall drops removed data when a major compaction rewrites the
        // tables, and a blob file once a compaction finds every value in it
        // removed (the next one after that deletes it): flush, compact,
        // flush, compact. Old files and journals are deleted when fjall next
        // rotates a memtable, once every keyspace has tables past them: a
        // marker written to each (a key no reader looks at) gives each a
        // memtable to rotate and a table. (`rotate_memtable_and_wait` and
        // `major_compact` are fjall's own maintenance calls, public but
        // hidden from its docs: the store tests measure what they give, to
        // be run again when fjall is upgraded.)
        for _ in 0..2 {
            self.flush_with_marker(&self.messages, MESSAGES_MARKER)?;
            self.messages.major_compact().map_err(map_err)?;
        }
        self.flush_with_marker(&self.queues, QUEUES_MARKER)?;
        self.queues.major_compact().map_err(map_err)?;
        self.flush_with_marker(&self.queues, QUEUES_MARKER)?;
        Ok(true)
    }

    fn unflushed_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    fn read(&self, queue: u64, seq: u64) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .messages
            .get(message_key(queue, seq))
            .map_err(map_err)?
            .map(Bytes::from))
    }
}
