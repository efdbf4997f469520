//! The store test body, run against every implementation, plus the fjall
//! store's reopen and torn-write tests and the journal's group commit and
//! poisoning.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::*;

fn put(queue: u64, seq: u64, v: &str) -> Record {
    Record::Put {
        queue,
        seq,
        value: Bytes::copy_from_slice(v.as_bytes()),
    }
}

fn del(queue: u64, seq: u64) -> Record {
    Record::Delete {
        queue,
        seq,
        counted: false,
    }
}

fn all_messages(store: &dyn Store, queue: u64) -> Vec<(u64, String, Option<u32>)> {
    let mut out = Vec::new();
    store
        .messages(queue, &mut |m| {
            out.push((
                m.seq,
                String::from_utf8_lossy(&m.value).into_owned(),
                m.count,
            ))
        })
        .unwrap();
    out
}

/// The body every store passes: queues, messages in order, deletes, counts,
/// queue deletion, point reads.
fn store_body(store: &dyn Store) {
    store
        .write(&[
            Record::PutQueue {
                id: 1,
                meta: Bytes::from_static(b"q1"),
            },
            Record::PutQueue {
                id: 2,
                meta: Bytes::from_static(b"q2"),
            },
            put(1, 0, "a"),
            put(1, 1, "b"),
            put(1, 2, "c"),
            put(2, 0, "x"),
        ])
        .unwrap();
    store.sync().unwrap();
    store
        .write(&[
            del(1, 1),
            Record::SetCount {
                queue: 1,
                seq: 2,
                count: 3,
            },
            put(1, 3, "d"),
            del(1, 0),
        ])
        .unwrap();
    store.sync().unwrap();
    assert_eq!(
        store.queues().unwrap(),
        vec![
            (1, Bytes::from_static(b"q1")),
            (2, Bytes::from_static(b"q2"))
        ]
    );
    assert_eq!(
        all_messages(store, 1),
        vec![(2, "c".into(), Some(3)), (3, "d".into(), None)]
    );
    assert_eq!(store.read(1, 3).unwrap(), Some(Bytes::from_static(b"d")));
    assert_eq!(store.read(1, 1).unwrap(), None);
    store.write(&[Record::DeleteQueue { id: 2 }]).unwrap();
    store.sync().unwrap();
    assert_eq!(store.queues().unwrap().len(), 1);
    assert!(all_messages(store, 2).is_empty());
}

#[test]
fn memory_store_passes_the_body() {
    store_body(&MemoryStore::new());
}

#[test]
fn fjall_store_passes_the_body() {
    let dir = tempfile::tempdir().unwrap();
    store_body(&FjallStore::open(dir.path(), &FjallOptions::default()).unwrap());
}

#[test]
fn fjall_store_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
        store_body(&store);
    }
    let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
    assert_eq!(
        store.queues().unwrap(),
        vec![(1, Bytes::from_static(b"q1"))]
    );
    assert_eq!(
        all_messages(&store, 1),
        vec![(2, "c".into(), Some(3)), (3, "d".into(), None)]
    );
    // Writing after recovery continues the head tracking.
    store.write(&[del(1, 2), put(1, 4, "e")]).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
    assert_eq!(
        all_messages(&store, 1),
        vec![(3, "d".into(), None), (4, "e".into(), None)]
    );
}

#[test]
fn fjall_store_keeps_large_values() {
    let dir = tempfile::tempdir().unwrap();
    let big = Bytes::from(vec![7u8; 2 << 20]);
    {
        let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
        store
            .write(&[Record::Put {
                queue: 1,
                seq: 0,
                value: big.clone(),
            }])
            .unwrap();
        store.sync().unwrap();
    }
    let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
    assert_eq!(store.read(1, 0).unwrap(), Some(big));
}

/// Journal files of a fjall database directory, largest name last.
fn journal_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
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
fn a_torn_final_write_is_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    {
        let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
        store
            .write(&[put(1, 0, "kept"), put(1, 1, "kept too")])
            .unwrap();
        store.sync().unwrap();
        store.write(&[put(1, 2, "torn")]).unwrap();
        store.sync().unwrap();
        // The files as a crash right now would leave them.
        for p in walk(dir.path()) {
            let to = crashed.path().join(p.strip_prefix(dir.path()).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&p, &to).unwrap();
        }
    }
    // Tear the final batch: its last bytes never reached the disk intact.
    let journals = journal_files(crashed.path());
    let last = journals.last().expect("a journal file");
    let mut bytes = std::fs::read(last).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).expect("journal data") + 1;
    for b in &mut bytes[end - 4..end] {
        *b ^= 0x5a;
    }
    std::fs::write(last, bytes).unwrap();

    let store = FjallStore::open(crashed.path(), &FjallOptions::default()).unwrap();
    assert_eq!(
        all_messages(&store, 1),
        vec![(0, "kept".into(), None), (1, "kept too".into(), None)]
    );
    // And it takes writes again.
    store.write(&[put(1, 3, "after")]).unwrap();
    store.sync().unwrap();
    assert_eq!(
        store.read(1, 3).unwrap(),
        Some(Bytes::from_static(b"after"))
    );
}

/// A store whose sync fails on demand, to test poisoning.
#[derive(Debug)]
struct FailingStore {
    inner: MemoryStore,
    fail_sync: AtomicBool,
    full: bool,
    syncs: AtomicUsize,
}

impl Store for FailingStore {
    fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_sync.load(Ordering::SeqCst) {
            if self.full {
                return Err(StoreError::Full("no space left on device".into()));
            }
            return Err(StoreError::Io("fsync: input/output error".into()));
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn queues(&self) -> Result<Vec<(u64, Bytes)>, StoreError> {
        self.inner.queues()
    }
    fn messages(&self, queue: u64, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        self.inner.messages(queue, visit)
    }
    fn read(&self, queue: u64, seq: u64) -> Result<Option<Bytes>, StoreError> {
        self.inner.read(queue, seq)
    }
    fn duplicates(&self, queue: u64) -> Result<Vec<(Bytes, u64)>, StoreError> {
        self.inner.duplicates(queue)
    }
}

/// Counts wakes.
#[derive(Default)]
struct Counter(AtomicUsize, parking_lot::Mutex<()>, parking_lot::Condvar);

impl Wake for Counter {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        let _g = self.1.lock();
        self.2.notify_all();
    }
}

impl Counter {
    fn wait_for(&self, n: usize) {
        let mut g = self.1.lock();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.0.load(Ordering::SeqCst) < n {
            assert!(!self.2.wait_until(&mut g, deadline).timed_out(), "no wake");
        }
    }
}

#[test]
fn journal_completes_tickets_and_wakes_waiters() {
    let journal = Journal::start(Arc::new(MemoryStore::new()), JournalOptions::default());
    let counter = Arc::new(Counter::default());
    let t = journal.submit([put(1, 0, "a"), put(1, 1, "b")]);
    journal.wake_when(t, counter.clone());
    counter.wait_for(1);
    assert_eq!(journal.status(t), TicketStatus::Durable);
    assert_eq!(journal.read(1, 1).unwrap(), Some(Bytes::from_static(b"b")));
    journal.shutdown();
}

#[test]
fn journal_groups_concurrent_submissions_into_few_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(dir.path(), &FjallOptions::default()).unwrap());
    let journal = Journal::start(store, JournalOptions::default());
    let threads: Vec<_> = (0..4u64)
        .map(|q| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                let counter = Arc::new(Counter::default());
                for seq in 0..250u64 {
                    let t = journal.submit([put(q, seq, "m")]);
                    if seq % 50 == 49 {
                        journal.wake_when(t, counter.clone());
                    }
                }
                counter.wait_for(5);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = journal.stats();
    assert_eq!(stats.records, 1000);
    assert!(stats.syncs < 1000, "one fsync per message: {stats:?}");
    journal.shutdown();
}

#[test]
fn a_failed_fsync_poisons_the_journal() {
    for full in [false, true] {
        let store = Arc::new(FailingStore {
            inner: MemoryStore::new(),
            fail_sync: AtomicBool::new(false),
            full,
            syncs: AtomicUsize::new(0),
        });
        let journal = Journal::start(store.clone(), JournalOptions::default());
        let counter = Arc::new(Counter::default());
        let ok = journal.submit([put(1, 0, "safe")]);
        journal.wake_when(ok, counter.clone());
        counter.wait_for(1);
        assert_eq!(journal.status(ok), TicketStatus::Durable);

        store.fail_sync.store(true, Ordering::SeqCst);
        let bad = journal.submit([put(1, 1, "lost")]);
        journal.wake_when(bad, counter.clone());
        counter.wait_for(2);
        assert!(
            matches!(journal.status(bad), TicketStatus::Failed { full: f, .. } if f == full),
            "{:?}",
            journal.status(bad)
        );
        // The earlier ticket stays durable; new work is refused from now on,
        // even though the disk would accept it again.
        assert_eq!(journal.status(ok), TicketStatus::Durable);
        store.fail_sync.store(false, Ordering::SeqCst);
        let err = journal.check_accepting(0).unwrap_err();
        assert_eq!(err.is_full(), full, "{err}");
        let later = journal.submit([put(1, 2, "later")]);
        journal.wake_when(later, counter.clone());
        counter.wait_for(3);
        assert!(matches!(journal.status(later), TicketStatus::Failed { .. }));
        journal.shutdown();
    }
}

/// Records for one key within one batch: put then delete leaves nothing;
/// counts replace each other; a queue deleted in the batch of its puts
/// leaves nothing. Checked after a reopen too (the journal replays batches).
fn same_batch_body(store: &dyn Store) {
    store
        .write(&[
            Record::PutQueue {
                id: 1,
                meta: Bytes::from_static(b"q1"),
            },
            Record::PutQueue {
                id: 2,
                meta: Bytes::from_static(b"q2"),
            },
            put(1, 0, "gone"),
            Record::SetCount {
                queue: 1,
                seq: 0,
                count: 1,
            },
            Record::Delete {
                queue: 1,
                seq: 0,
                counted: true,
            },
            put(1, 1, "kept"),
            Record::SetCount {
                queue: 1,
                seq: 1,
                count: 1,
            },
            Record::SetCount {
                queue: 1,
                seq: 1,
                count: 2,
            },
            put(2, 0, "queue gone"),
            Record::DeleteQueue { id: 2 },
        ])
        .unwrap();
    store.sync().unwrap();
    store
        .write(&[
            Record::SetCount {
                queue: 1,
                seq: 1,
                count: 3,
            },
            Record::SetCount {
                queue: 1,
                seq: 1,
                count: 4,
            },
        ])
        .unwrap();
    store.sync().unwrap();
    assert_eq!(all_messages(store, 1), vec![(1, "kept".into(), Some(4))]);
    assert_eq!(store.read(1, 0).unwrap(), None);
    assert!(all_messages(store, 2).is_empty());
}

#[test]
fn memory_store_handles_one_key_twice_in_a_batch() {
    same_batch_body(&MemoryStore::new());
}

#[test]
fn fjall_store_handles_one_key_twice_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    {
        let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
        same_batch_body(&store);
        for p in walk(dir.path()) {
            let to = crashed.path().join(p.strip_prefix(dir.path()).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&p, &to).unwrap();
        }
    }
    for path in [dir.path(), crashed.path()] {
        let store = FjallStore::open(path, &FjallOptions::default()).unwrap();
        assert_eq!(all_messages(&store, 1), vec![(1, "kept".into(), Some(4))]);
        assert!(all_messages(&store, 2).is_empty());
    }
}

/// Remembered message ids: put, forgotten, put and forgotten in one batch,
/// gone with their queue, and only their own queue's.
fn duplicates_body(store: &dyn Store) {
    let dup = |queue: u64, id: &'static str, at: u64| Record::PutDuplicate {
        queue,
        id: Bytes::from_static(id.as_bytes()),
        at,
    };
    let forget = |queue: u64, id: &'static str| Record::DeleteDuplicate {
        queue,
        id: Bytes::from_static(id.as_bytes()),
    };
    store
        .write(&[
            Record::PutQueue {
                id: 1,
                meta: Bytes::from_static(b"q1"),
            },
            Record::PutQueue {
                id: 2,
                meta: Bytes::from_static(b"q2"),
            },
            dup(1, "a", 10),
            dup(1, "b", 11),
            dup(1, "c", 12),
            forget(1, "c"),
            dup(2, "a", 13),
        ])
        .unwrap();
    store.write(&[forget(1, "a"), dup(1, "d", 14)]).unwrap();
    store.sync().unwrap();
    let mut ids = store.duplicates(1).unwrap();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            (Bytes::from_static(b"b"), 11),
            (Bytes::from_static(b"d"), 14)
        ]
    );
    // Queue metadata is unaffected by the ids kept beside it.
    assert_eq!(store.queues().unwrap().len(), 2);
    store.write(&[Record::DeleteQueue { id: 1 }]).unwrap();
    assert!(store.duplicates(1).unwrap().is_empty());
    assert_eq!(
        store.duplicates(2).unwrap(),
        vec![(Bytes::from_static(b"a"), 13)]
    );
}

#[test]
fn memory_store_keeps_duplicate_ids() {
    duplicates_body(&MemoryStore::new());
}

#[test]
fn fjall_store_keeps_duplicate_ids_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
        duplicates_body(&store);
        store.sync().unwrap();
    }
    let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
    assert_eq!(
        store.duplicates(2).unwrap(),
        vec![(Bytes::from_static(b"a"), 13)]
    );
    assert!(store.duplicates(1).unwrap().is_empty());
}

/// Bytes the files under `dir` take on disk (blocks, not lengths: fjall
/// preallocates), split into (journal files, everything else).
fn disk_usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut usage = (0, 0);
    for path in walk(dir) {
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512);
        if path.extension().is_some_and(|e| e == "jnl") {
            usage.0 += bytes;
        } else {
            usage.1 += bytes;
        }
    }
    usage
}

#[test]
fn fjall_store_gives_back_the_space_of_removed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
    // 70 MB: more than one 64 MB journal, so most of it reaches tables.
    let big = Bytes::from(
        (0..100_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let small = Bytes::from(
        (0..1000u32)
            .map(|i| (i * 31 % 253) as u8)
            .collect::<Vec<_>>(),
    );
    let mut seq = 0;
    for _ in 0..70 {
        let mut batch = Vec::new();
        for _ in 0..5 {
            batch.push(Record::Put {
                queue: 1,
                seq,
                value: big.clone(),
            });
            seq += 1;
        }
        for _ in 0..500 {
            batch.push(Record::Put {
                queue: 1,
                seq,
                value: small.clone(),
            });
            seq += 1;
        }
        store.write(&batch).unwrap();
        store.sync().unwrap();
    }
    assert!(
        !store.reclaim(None).unwrap(),
        "with live messages and no pressure, nothing to do"
    );
    assert!(
        !store.reclaim(Some(10 << 20)).unwrap(),
        "under pressure, not when the live messages would not fit"
    );
    let deletes: Vec<Record> = (0..seq)
        .map(|seq| Record::Delete {
            queue: 1,
            seq,
            counted: false,
        })
        .collect();
    store.write(&deletes).unwrap();
    store.sync().unwrap();
    let (journal, other) = disk_usage(dir.path());
    assert!(other > 5 << 20, "tables hold removed messages: {other}");
    assert!(store.reclaim(None).unwrap(), "no live message: worth it");
    let (journal_after, other_after) = disk_usage(dir.path());
    assert!(
        other_after < 2 << 20,
        "tables and blobs give their space back: {other} -> {other_after} bytes"
    );
    // fjall keeps its active journal (up to 64 MB) until it rotates.
    assert!(
        journal_after <= journal.max(64 << 20),
        "{journal} -> {journal_after}"
    );
    // The store still works, and reopens with nothing in it.
    store.write(&[put(1, seq, "after")]).unwrap();
    store.sync().unwrap();
    drop(store);
    let store = FjallStore::open(dir.path(), &FjallOptions::default()).unwrap();
    let left: Vec<u64> = all_messages(&store, 1).into_iter().map(|m| m.0).collect();
    assert_eq!(left, vec![seq]);
}

/// The free space the journal of [`free_space_follows_the_disk`] sees.
static FREE: AtomicU64 = AtomicU64::new(0);

fn test_free_space(_: &std::path::Path) -> std::io::Result<u64> {
    Ok(FREE.load(Ordering::SeqCst))
}

#[test]
fn free_space_follows_the_disk_and_a_batch_that_does_not_fit_fails_alone() {
    FREE.store(10 << 20, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::start(
        Arc::new(MemoryStore::new()),
        JournalOptions {
            watch_dir: Some(dir.path().to_path_buf()),
            min_free_bytes: 4 << 20,
            free_space: test_free_space,
            ..JournalOptions::default()
        },
    );
    let counter = Arc::new(Counter::default());
    // Each byte counts twice (log and tables): 3 MiB fits above a 4 MiB
    // floor with 10 MiB free; 3 MiB more, waiting to be written, does not.
    journal.check_accepting(3 << 20).unwrap();
    let value = Bytes::from(vec![0u8; 3 << 20]);
    let first = journal.submit([Record::Put {
        queue: 1,
        seq: 0,
        value: value.clone(),
    }]);
    journal.wake_when(first, counter.clone());
    counter.wait_for(1);
    assert_eq!(journal.status(first), TicketStatus::Durable);
    // The disk fills behind the broker's back: a batch that would not fit
    // is refused alone, the journal is not poisoned, new work is refused.
    FREE.store(5 << 20, Ordering::SeqCst);
    let big = journal.submit([Record::Put {
        queue: 1,
        seq: 1,
        value: value.clone(),
    }]);
    journal.wake_when(big, counter.clone());
    counter.wait_for(2);
    assert!(
        matches!(journal.status(big), TicketStatus::Failed { full: true, .. }),
        "{:?}",
        journal.status(big)
    );
    assert!(journal.check_accepting(1).unwrap_err().is_full());
    // Space returns: the alarm clears without a restart.
    FREE.store(100 << 20, Ordering::SeqCst);
    let started = std::time::Instant::now();
    while journal.check_accepting(1).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "still refused"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let later = journal.submit([put(1, 2, "later")]);
    journal.wake_when(later, counter.clone());
    counter.wait_for(3);
    assert_eq!(journal.status(later), TicketStatus::Durable);
    assert!(
        matches!(journal.status(big), TicketStatus::Failed { .. }),
        "the refused batch stays refused"
    );
    journal.shutdown();
}
