//! Reads of paged-out message bodies, on threads of their own: a caller
//! asks for a body with what to do once it is read, and goes on. No queue
//! lock is held and no connection task waits while the disk is read; a
//! connection holds the consumer's later deliveries back meanwhile, so its
//! link keeps its order (`amqp::loads`).

use std::sync::mpsc;
use std::sync::Arc;

use parking_lot::Mutex;

use super::message::Message;
use super::persist::decode_entry;
use crate::store::{Journal, StoreError};

/// Threads reading bodies: a few, so that one slow read does not hold up
/// the others, and few enough for a small machine.
const THREADS: usize = 2;

/// What a read is for: called on a loader thread with the message (None if
/// the store no longer has it) or the store's error.
pub type Done = Box<dyn FnOnce(Result<Option<Message>, StoreError>) + Send>;

/// One read to do.
struct Request {
    /// The queue's store id.
    queue: u64,
    /// The message's sequence number.
    seq: u64,
    /// What to do with the result.
    done: Done,
}

/// The loader: a queue of reads and the threads doing them (started with
/// the first read; they end when the loader is dropped).
pub struct Loader {
    /// Where reads are queued (None until the threads are started).
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    /// What the threads read from.
    journal: Arc<Journal>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader reading from `journal` (bodies written moments ago, not yet
    /// in the store, are waited for there).
    pub fn new(journal: Arc<Journal>) -> Self {
        Self {
            requests: Mutex::new(None),
            journal,
        }
    }

    /// Reads message `seq` of queue `queue` and calls `done` with it, on a
    /// loader thread. If no thread can be started, reads it here.
    pub fn load(&self, queue: u64, seq: u64, done: Done) {
        let request = Request { queue, seq, done };
        let mut requests = self.requests.lock();
        if requests.is_none() {
            *requests = self.start();
        }
        let refused = match requests.as_ref() {
            Some(tx) => tx.send(request).err().map(|e| e.0),
            None => Some(request),
        };
        drop(requests);
        if let Some(request) = refused {
            (request.done)(read(&self.journal, request.queue, request.seq));
        }
    }

    /// Starts the threads; the sender of their queue, if any started.
    fn start(&self) -> Option<mpsc::Sender<Request>> {
        let (tx, rx) = mpsc::channel::<Request>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for n in 0..THREADS {
            let rx = Arc::clone(&rx);
            let journal = Arc::clone(&self.journal);
            let spawned = std::thread::Builder::new()
                .name(format!("ordo-loader-{n}"))
                .spawn(move || loop {
                    // One request at a time; the receiver is shared.
                    let next = rx.lock().recv();
                    let Ok(request) = next else {
                        return;
                    };
                    (request.done)(read(&journal, request.queue, request.seq));
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "cannot start a loader thread"),
            }
        }
        (started > 0).then_some(tx)
    }
}

/// Reads and decodes one stored message.
fn read(journal: &Journal, queue: u64, seq: u64) -> Result<Option<Message>, StoreError> {
    match journal.read(queue, seq)? {
        Some(value) => Ok(Some(decode_entry(value, true)?.message)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Record, Store};

    #[test]
    fn bodies_are_read_on_another_thread_and_handed_back() {
        let journal = Journal::start(
            Arc::new(MemoryStore::new()) as Arc<dyn Store>,
            Default::default(),
        );
        let message = Message::from_bare(bytes::Bytes::from_static(b"\x00\x53\x77\xa1\x01x"));
        let value = crate::core::persist::encode_entry(&message, 0, None, None);
        let ticket = journal.submit([Record::Put {
            queue: 1,
            seq: 7,
            value,
        }]);
        while journal.status(ticket) == crate::store::TicketStatus::Pending {
            std::thread::yield_now();
        }
        let loader = Loader::new(Arc::clone(&journal));
        let (tx, rx) = std::sync::mpsc::channel();
        let here = std::thread::current().id();
        for seq in [7, 8] {
            let tx = tx.clone();
            loader.load(
                1,
                seq,
                Box::new(move |result| {
                    let elsewhere = std::thread::current().id() != here;
                    let _ = tx.send((seq, result.ok().flatten(), elsewhere));
                }),
            );
        }
        let mut got: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(got[0], (7, Some(message), true));
        assert_eq!(got[1], (8, None, true), "a missing body is None");
        journal.shutdown();
    }
}
