//! The lock order of docs/ARCHITECTURE.md ("Lock order"), checked.
//!
//! Every lock that may be taken while another is held is one of these
//! wrappers around parking_lot's, with a [`Rank`]. A thread may take a lock
//! only of a higher rank than every ranked lock it holds; queue locks
//! (equal rank) only in increasing address order, as a transaction's commit
//! takes them. In debug builds every acquisition is checked against the
//! thread's held locks and a violation aborts the process with both ranks
//! named (so an integration test's broker dies and the test fails); in
//! release builds the wrappers are parking_lot's locks and nothing more.

use std::ops::{Deref, DerefMut};

/// Where a lock stands in the order: lower ranks are taken first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// The broker's registry of nodes (`core::broker::Broker::nodes`).
    Registry,
    /// A topic's list of subscriptions.
    Topic,
    /// A queue's state (`core::queue_handle::Queue::inner`); several in
    /// increasing address order.
    Queue,
    /// A queue's copy of its settings and its subscription filter, read
    /// without the queue's lock and replaced under it.
    QueueSettings,
    /// A connection's outbox (queues push deliveries under their lock).
    Outbox,
    /// The broker's timer: which queue to wake when.
    Timer,
    /// The journal's submissions (records keep their queue's order).
    Journal,
}

#[cfg(debug_assertions)]
mod held {
    use super::Rank;
    use std::cell::RefCell;

    thread_local! {
        /// The ranked locks this thread holds: (rank, address).
        static HELD: RefCell<Vec<(Rank, usize)>> = const { RefCell::new(Vec::new()) };
    }

    /// Checks that a lock of `rank` at `address` may be taken now, and
    /// records it as held.
    pub(super) fn take(rank: Rank, address: usize) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(&(top, at)) = held.iter().max() {
                let ordered = rank > top || (rank == top && rank == Rank::Queue && address > at);
                if !ordered {
                    eprintln!(
                        "lock order violated: taking {rank:?} at {address:#x} while holding {held:?} (docs/ARCHITECTURE.md, \"Lock order\")\n{}",
                        std::backtrace::Backtrace::force_capture()
                    );
                    std::process::abort();
                }
            }
            held.push((rank, address));
        });
    }

    /// Records that the lock of `rank` at `address` was released.
    pub(super) fn release(rank: Rank, address: usize) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().rposition(|h| *h == (rank, address)) {
                held.remove(i);
            }
        });
    }
}

/// Records a lock as held for as long as it lives (debug builds only).
struct Held {
    /// Its rank.
    #[cfg(debug_assertions)]
    rank: Rank,
    /// Its address (orders locks of equal rank).
    #[cfg(debug_assertions)]
    address: usize,
}

impl Held {
    /// Takes a lock of `rank` at `address` (checked in debug builds).
    #[cfg_attr(not(debug_assertions), allow(unused_variables))]
    fn new(rank: Rank, address: usize) -> Self {
        #[cfg(debug_assertions)]
        held::take(rank, address);
        Self {
            #[cfg(debug_assertions)]
            rank,
            #[cfg(debug_assertions)]
            address,
        }
    }
}

#[cfg(debug_assertions)]
impl Drop for Held {
    fn drop(&mut self) {
        held::release(self.rank, self.address);
    }
}

/// A mutex with a place in the lock order.
#[derive(Debug)]
pub struct Mutex<T> {
    /// Its rank.
    rank: Rank,
    /// The lock.
    inner: parking_lot::Mutex<T>,
}

/// A held [`Mutex`].
pub struct MutexGuard<'a, T> {
    /// The lock's guard.
    guard: parking_lot::MutexGuard<'a, T>,
    /// Its record in the thread's held locks (dropped after the guard).
    _held: Held,
}

impl<T> Mutex<T> {
    /// A mutex of `rank` around `value`.
    pub fn new(rank: Rank, value: T) -> Self {
        Self {
            rank,
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// Locks it (checking the order in debug builds).
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let held = Held::new(self.rank, self as *const Self as usize);
        MutexGuard {
            guard: self.inner.lock(),
            _held: held,
        }
    }
}

impl<'a, T> MutexGuard<'a, T> {
    /// parking_lot's guard, for a condition variable to wait on (the lock
    /// stays recorded as held while the wait releases it: the waiting
    /// thread takes no other lock meanwhile).
    pub fn raw(&mut self) -> &mut parking_lot::MutexGuard<'a, T> {
        &mut self.guard
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A reader-writer lock with a place in the lock order (reads and writes
/// both count: a read held blocks a writer as much).
#[derive(Debug)]
pub struct RwLock<T> {
    /// Its rank.
    rank: Rank,
    /// The lock.
    inner: parking_lot::RwLock<T>,
}

/// A read-held [`RwLock`].
pub struct ReadGuard<'a, T> {
    /// The lock's guard.
    guard: parking_lot::RwLockReadGuard<'a, T>,
    /// Its record in the thread's held locks.
    _held: Held,
}

/// A write-held [`RwLock`].
pub struct WriteGuard<'a, T> {
    /// The lock's guard.
    guard: parking_lot::RwLockWriteGuard<'a, T>,
    /// Its record in the thread's held locks.
    _held: Held,
}

impl<T> RwLock<T> {
    /// A lock of `rank` around `value`.
    pub fn new(rank: Rank, value: T) -> Self {
        Self {
            rank,
            inner: parking_lot::RwLock::new(value),
        }
    }

    /// Locks it for reading (checking the order in debug builds).
    pub fn read(&self) -> ReadGuard<'_, T> {
        let held = Held::new(self.rank, self as *const Self as usize);
        ReadGuard {
            guard: self.inner.read(),
            _held: held,
        }
    }

    /// Locks it for writing (checking the order in debug builds).
    pub fn write(&self) -> WriteGuard<'_, T> {
        let held = Held::new(self.rank, self as *const Self as usize);
        WriteGuard {
            guard: self.inner.write(),
            _held: held,
        }
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn locks_in_order_and_queues_by_address_pass() {
        let registry = RwLock::new(Rank::Registry, ());
        let a = Mutex::new(Rank::Queue, ());
        let b = Mutex::new(Rank::Queue, ());
        let (first, second) = if (&a as *const _ as usize) < (&b as *const _ as usize) {
            (&a, &b)
        } else {
            (&b, &a)
        };
        let journal = Mutex::new(Rank::Journal, ());
        let _r = registry.read();
        let _q1 = first.lock();
        let _q2 = second.lock();
        let _j = journal.lock();
    }

    /// Takes the registry while holding a queue: out of order.
    #[test]
    #[ignore = "run in a child process by a_violation_aborts_the_process"]
    fn violation_child() {
        if std::env::var_os("ORDO_LOCK_ORDER_CHILD").is_some() {
            let queue = Mutex::new(Rank::Queue, ());
            let registry = RwLock::new(Rank::Registry, ());
            let _q = queue.lock();
            let _r = registry.read();
        }
    }

    #[test]
    fn a_violation_aborts_the_process() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "lock_order::tests::violation_child"])
            .args(["--ignored", "--nocapture"])
            .env("ORDO_LOCK_ORDER_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("lock order violated: taking Registry"),
            "{stderr}"
        );
    }

    #[test]
    fn released_locks_are_forgotten() {
        let queue = Mutex::new(Rank::Queue, ());
        let registry = RwLock::new(Rank::Registry, ());
        drop(queue.lock());
        let _r = registry.write();
        let _q = queue.lock();
    }
}
