//! Durable messages and queue metadata.
//!
//! - [`Store`]: the narrow interface the broker persists through: apply a
//!   batch of records, make everything applied so far durable, read queues
//!   and messages back. Implementations: [`FjallStore`] (on disk) and
//!   [`MemoryStore`] (tests, and brokers that keep nothing). The same test
//!   body runs against both (`tests.rs`).
//! - [`Journal`] (`journal.rs`): the group-commit writer in front of a store.
//!   Queues submit records and get a ticket; one writer thread takes every
//!   record submitted since its last batch, applies them as one batch, syncs
//!   once, and then marks all their tickets durable.
//!
//! The store knows nothing of messages or AMQP: values are bytes the core
//! encoded. Keys are a queue's numeric id and a message's sequence number.

mod fjall_store;
mod journal;
mod memory;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use fjall_store::{FjallOptions, FjallStore};
pub use journal::{
    Journal, JournalOptions, SyncMode, Ticket, TicketStatus, Wake, BATCH_BUCKETS, SYNC_BUCKETS_US,
};
pub use memory::MemoryStore;

/// One change to persist. A batch of records is applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A durable queue exists (or its metadata changed).
    PutQueue {
        /// The queue's numeric id (keys of its messages start with it).
        id: u64,
        /// The core's encoding of its name, kind and settings.
        meta: Bytes,
    },
    /// A queue is gone, and every message it held with it.
    DeleteQueue {
        /// The queue's id.
        id: u64,
    },
    /// A message was enqueued.
    Put {
        /// The queue's id.
        queue: u64,
        /// Its position in the queue (arrival order).
        seq: u64,
        /// The core's encoding of the message and its queue entry.
        value: Bytes,
    },
    /// A message's delivery count changed (a failed delivery attempt).
    SetCount {
        /// The queue's id.
        queue: u64,
        /// The message's position.
        seq: u64,
        /// Its delivery count now.
        count: u32,
    },
    /// A message left the queue (acknowledged, dead-lettered, expired, dropped).
    Delete {
        /// The queue's id.
        queue: u64,
        /// The message's position.
        seq: u64,
        /// A [`Record::SetCount`] was written for it (so that goes too).
        counted: bool,
    },
    /// A queue remembers a message id for duplicate detection.
    PutDuplicate {
        /// The queue's id.
        queue: u64,
        /// The message id, as the core encodes it.
        id: Bytes,
        /// When the message arrived, ms since the epoch.
        at: u64,
    },
    /// A queue forgets a message id.
    DeleteDuplicate {
        /// The queue's id.
        queue: u64,
        /// The message id.
        id: Bytes,
    },
}

impl Record {
    /// Bytes of message value it writes (what fills a disk).
    pub fn value_bytes(&self) -> u64 {
        match self {
            Record::Put { value, .. } => value.len() as u64,
            Record::PutQueue { meta, .. } => meta.len() as u64,
            _ => 0,
        }
    }

    /// Whether it removes stored data (whose space the store can give back).
    pub fn removes(&self) -> bool {
        matches!(self, Record::Delete { .. } | Record::DeleteQueue { .. })
    }
}

/// A message read back at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its position in the queue.
    pub seq: u64,
    /// What the core stored.
    pub value: Bytes,
    /// The delivery count recorded after it was stored, if any.
    pub count: Option<u32>,
}

/// What can go wrong while persisting.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk failed. The store refuses every later write until the
    /// broker restarts (a failed fsync leaves the file in an unknown state).
    #[error("store I/O failed: {0}")]
    Io(String),
    /// The disk is full (or below the configured free-space floor).
    #[error("store disk is full: {0}")]
    Full(String),
    /// An earlier failure poisoned the store.
    #[error("the store failed earlier and accepts no more writes: {0}")]
    Poisoned(String),
    /// Stored bytes could not be read back.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the failure is a full disk (resource limit) rather than a broken one.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }
}

/// The interface every store implements. Calls come from one writer thread
/// (writes and syncs) and from any thread (reads).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies a batch atomically: after a crash either all of it or none of
    /// it is there, once [`Store::sync`] returned. Not durable by itself.
    fn write(&self, batch: &[Record]) -> Result<(), StoreError>;
    /// Makes everything written so far durable (fsync).
    fn sync(&self) -> Result<(), StoreError>;
    /// Hands written data to the operating system without an fsync (survives
    /// a broker crash, not a machine crash).
    fn flush(&self) -> Result<(), StoreError>;
    /// Every stored queue: (id, metadata), in id order.
    fn queues(&self) -> Result<Vec<(u64, Bytes)>, StoreError>;
    /// Every message of a queue, in sequence order, from the queue's head
    /// (acknowledged messages before the head are not visited).
    fn messages(&self, queue: u64, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError>;
    /// One message's stored value (to page a body back in).
    fn read(&self, queue: u64, seq: u64) -> Result<Option<Bytes>, StoreError>;
    /// The message ids a queue remembers for duplicate detection, with when
    /// each arrived (in no particular order).
    fn duplicates(&self, queue: u64) -> Result<Vec<(Bytes, u64)>, StoreError>;
    /// Gives the space of removed messages back to the file system, when
    /// worth it: when no message is live (then it is cheap), or under
    /// pressure (the disk is below its floor, with `Some(free)` bytes free)
    /// when what is live is small enough to be rewritten in what is free.
    /// Slow: the writer calls it when idle. Returns whether it ran.
    fn reclaim(&self, pressure: Option<u64>) -> Result<bool, StoreError> {
        let _ = pressure;
        Ok(false)
    }

    /// Bytes written but not yet in their final files (an LSM tree's
    /// memtables): writing them out takes that much disk again, so it is
    /// kept free on top of the floor.
    fn unflushed_bytes(&self) -> u64 {
        0
    }
}
