//! A store that keeps records in memory: for tests, and for brokers that
//! persist nothing. It passes the same test body as the fjall store.

use std::collections::BTreeMap;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Record, Store, StoreError, StoredMessage};

/// What the memory store holds.
#[derive(Debug, Default)]
struct Contents {
    /// Queue metadata by id.
    queues: BTreeMap<u64, Bytes>,
    /// Messages by (queue, seq): value and recorded delivery count.
    messages: BTreeMap<(u64, u64), (Bytes, Option<u32>)>,
    /// Remembered message ids by (queue, id): when they arrived.
    duplicates: BTreeMap<(u64, Bytes), u64>,
}

/// Records kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Everything written so far.
    contents: Mutex<Contents>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn write(&self, batch: &[Record]) -> Result<(), StoreError> {
        let mut c = self.contents.lock();
        for record in batch {
            match record {
                Record::PutQueue { id, meta } => {
                    c.queues.insert(*id, meta.clone());
                }
                Record::DeleteQueue { id } => {
                    c.queues.remove(id);
                    let keys: Vec<_> = c
                        .messages
                        .range((*id, 0)..=(*id, u64::MAX))
                        .map(|(k, _)| *k)
                        .collect();
                    for k in keys {
                        c.messages.remove(&k);
                    }
                    c.duplicates.retain(|(q, _), _| q != id);
                }
                Record::PutDuplicate { queue, id, at } => {
                    c.duplicates.insert((*queue, id.clone()), *at);
                }
                Record::DeleteDuplicate { queue, id } => {
                    c.duplicates.remove(&(*queue, id.clone()));
                }
                Record::Put { queue, seq, value } => {
                    c.messages.insert((*queue, *seq), (value.clone(), None));
                }
                Record::SetCount { queue, seq, count } => {
                    if let Some(m) = c.messages.get_mut(&(*queue, *seq)) {
                        m.1 = Some(*count);
                    }
                }
                Record::Delete { queue, seq, .. } => {
                    c.messages.remove(&(*queue, *seq));
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn queues(&self) -> Result<Vec<(u64, Bytes)>, StoreError> {
        Ok(self
            .contents
            .lock()
            .queues
            .iter()
            .map(|(id, meta)| (*id, meta.clone()))
            .collect())
    }

    fn messages(&self, queue: u64, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        let c = self.contents.lock();
        for ((_, seq), (value, count)) in c.messages.range((queue, 0)..=(queue, u64::MAX)) {
            visit(StoredMessage {
                seq: *seq,
                value: value.clone(),
                count: *count,
            });
        }
        Ok(())
    }

    fn read(&self, queue: u64, seq: u64) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .contents
            .lock()
            .messages
            .get(&(queue, seq))
            .map(|(v, _)| v.clone()))
    }

    fn duplicates(&self, queue: u64) -> Result<Vec<(Bytes, u64)>, StoreError> {
        Ok(self
            .contents
            .lock()
            .duplicates
            .iter()
            .filter(|((q, _), _)| *q == queue)
            .map(|((_, id), at)| (id.clone(), *at))
            .collect())
    }
}
