//! Deliveries whose paged-out bodies are being read. A connection has the
//! store's loader read each body (`core::loader`) and holds everything
//! after it for the same consumer until it is there, so a link's deliveries
//! and flows keep the order the queue decided, while no thread of the
//! connection waits on the disk and other consumers' deliveries go on.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::core::outbox::Loaded;
use crate::core::{ConsumerId, Delivery, Outbox, OutboxItem, Persistence};

/// What waits, by consumer.
#[derive(Debug, Default)]
pub struct Loads {
    /// Each consumer's items after (and including) its first delivery whose
    /// body is not here yet, oldest first.
    waiting: HashMap<ConsumerId, VecDeque<Waiting>>,
}

/// An item held back.
#[derive(Debug)]
enum Waiting {
    /// A delivery whose body the loader is reading.
    Loading(Delivery),
    /// An item that may go once everything before it went.
    Ready(OutboxItem),
}

impl Loads {
    /// Takes one item from the connection's outbox and appends to `ready`
    /// what may be sent now, in order: the item itself when nothing of its
    /// consumer waits and it needs no read; the items a read completed
    /// held back. A delivery with a paged-out body starts a read that
    /// pushes its result into `outbox` (without a store there is nothing to
    /// read: it goes on as it is, and is returned to its queue).
    pub fn admit(
        &mut self,
        item: OutboxItem,
        persistence: Option<&Arc<Persistence>>,
        outbox: &Arc<Outbox>,
        ready: &mut Vec<OutboxItem>,
    ) {
        let consumer = match &item {
            OutboxItem::Loaded(loaded) => {
                self.loaded(loaded, ready);
                return;
            }
            OutboxItem::Deliver(d) => d.consumer,
            OutboxItem::Flow(f) => f.consumer,
        };
        let held = self.waiting.get(&consumer).is_some_and(|w| !w.is_empty());
        match (item, persistence) {
            (OutboxItem::Deliver(mut d), Some(p)) if d.paged.is_some() => {
                let (queue, seq) = d.paged.unwrap_or_default();
                let (outbox, delivery_id) = (Arc::clone(outbox), d.delivery_id);
                let release = d.release.take();
                let journal = Arc::clone(p.journal());
                p.load_later(
                    queue,
                    seq,
                    Box::new(move |result| {
                        let message = match result {
                            Ok(m) => m.map(Arc::new),
                            Err(e) => {
                                tracing::error!(queue, seq, error = %e, "paged-out body could not be read");
                                None
                            }
                        };
                        // A pre-settled delivery is gone from its queue: its
                        // stored copy goes once it was read.
                        if let (Some(record), Some(_)) = (release, &message) {
                            journal.submit([record]);
                        }
                        outbox.push(OutboxItem::Loaded(Loaded {
                            consumer,
                            delivery_id,
                            message,
                        }));
                    }),
                );
                self.hold(consumer, Waiting::Loading(d));
            }
            (item, _) if held => self.hold(consumer, Waiting::Ready(item)),
            (item, _) => ready.push(item),
        }
    }

    /// Holds `item` back behind what already waits for `consumer`.
    fn hold(&mut self, consumer: ConsumerId, item: Waiting) {
        self.waiting.entry(consumer).or_default().push_back(item);
    }

    /// A read completed: the delivery it was for may go (with its body, or
    /// still without one when it could not be read: the connection then
    /// returns it to its queue), and so may what waited behind it.
    fn loaded(&mut self, loaded: &Loaded, ready: &mut Vec<OutboxItem>) {
        let Some(waiting) = self.waiting.get_mut(&loaded.consumer) else {
            return;
        };
        for w in waiting.iter_mut() {
            if let Waiting::Loading(d) = w {
                if d.delivery_id == loaded.delivery_id {
                    let mut d = d.clone();
                    if let Some(message) = &loaded.message {
                        d.message = Arc::clone(message);
                        d.paged = None;
                    }
                    *w = Waiting::Ready(OutboxItem::Deliver(d));
                    break;
                }
            }
        }
        while let Some(Waiting::Ready(_)) = waiting.front() {
            if let Some(Waiting::Ready(item)) = waiting.pop_front() {
                ready.push(item);
            }
        }
        if waiting.is_empty() {
            self.waiting.remove(&loaded.consumer);
        }
    }

    /// How many items are held back.
    pub fn len(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Whether nothing is held back.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}
