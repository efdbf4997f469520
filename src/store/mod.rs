//! Durable messages and queue metadata.
//!
//! This is the seam the broker core persists through. Today only the
//! in-memory implementation exists and messages live in memory; the fjall
//! implementation with group commit comes with the durable-store work and
//! must pass the same tests.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// One thing to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A queue exists (with its settings, serialised by the caller).
    QueueDeclared {
        /// Queue name.
        queue: String,
    },
    /// A message was enqueued.
    Enqueued {
        /// Queue name.
        queue: String,
        /// Position in the queue.
        seq: u64,
        /// The encoded message.
        message: Bytes,
    },
    /// A message was removed (acknowledged, dead-lettered or expired).
    Removed {
        /// Queue name.
        queue: String,
        /// Position in the queue.
        seq: u64,
    },
}

/// What can go wrong while persisting.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk failed; the store refuses further writes.
    #[error("store I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The interface every store implements.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Persists a batch of records; returns once they are durable.
    fn commit(&self, batch: Vec<Record>) -> Result<(), StoreError>;
    /// Every record still live, in commit order, for recovery.
    fn recover(&self) -> Result<Vec<Record>, StoreError>;
}

/// A store that keeps records in memory: for non-durable use and tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Records committed so far.
    records: Mutex<Vec<Record>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl Store for MemoryStore {
    fn commit(&self, batch: Vec<Record>) -> Result<(), StoreError> {
        let mut records = self.records.lock();
        for record in batch {
            if let Record::Removed { queue, seq } = &record {
                records.retain(|r| !matches!(r, Record::Enqueued { queue: q, seq: s, .. } if q == queue && s == seq));
            } else {
                records.push(record);
            }
        }
        Ok(())
    }

    fn recover(&self) -> Result<Vec<Record>, StoreError> {
        Ok(self.records.lock().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body every store implementation must pass.
    fn removed_records_are_not_recovered(store: &dyn Store) {
        let m = |seq| Record::Enqueued {
            queue: "q".into(),
            seq,
            message: Bytes::from_static(b"x"),
        };
        store
            .commit(vec![
                Record::QueueDeclared { queue: "q".into() },
                m(1),
                m(2),
            ])
            .unwrap();
        store
            .commit(vec![Record::Removed {
                queue: "q".into(),
                seq: 1,
            }])
            .unwrap();
        let live = store.recover().unwrap();
        assert_eq!(
            live,
            vec![Record::QueueDeclared { queue: "q".into() }, m(2)]
        );
    }

    #[test]
    fn memory_store() {
        removed_records_are_not_recovered(&*MemoryStore::new());
    }
}
