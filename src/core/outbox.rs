//! The mailbox through which queues hand work to a connection.
//!
//! Queues push deliveries (and flow updates that must follow them in order)
//! while they hold their own lock; the connection task drains the whole box
//! at once. The box is bounded by AMQP credit: a queue only dispatches to a
//! consumer that has credit, and credit is granted by the connection, so the
//! box never holds more than the credit its links granted.
//!
//! Lock order: a queue's lock, then an outbox's lock (a leaf lock, held only
//! to push or swap a `Vec`). See docs/ARCHITECTURE.md.

use std::sync::Arc;

use crate::lock_order::{Mutex, Rank};
use tokio::sync::Notify;

use super::message::Message;
use super::ConsumerId;

/// One piece of work for a consumer link, in the order the queue decided it.
#[derive(Debug)]
pub enum OutboxItem {
    /// Send this message on the consumer's link.
    Deliver(Delivery),
    /// The link's flow state after a drain completed or an echo was asked
    /// for: the connection sends it as a flow frame.
    Flow(FlowState),
    /// The body of a paged-out delivery, read by the loader (None: the
    /// store could not give it).
    Loaded(Loaded),
}

/// A paged-out body read back for a delivery.
#[derive(Debug)]
pub struct Loaded {
    /// The consumer the delivery is for.
    pub consumer: ConsumerId,
    /// The queue's id of the delivery.
    pub delivery_id: u64,
    /// The whole message, or None if it could not be read.
    pub message: Option<Arc<Message>>,
}

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The consumer (link) it is for.
    pub consumer: ConsumerId,
    /// The queue's id for this delivery, used to settle it.
    pub delivery_id: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivery count to put in the header (producer's count + failed attempts here).
    pub delivery_count: u32,
    /// Whether this is the first time any consumer acquires it.
    pub first_acquirer: bool,
    /// The consumer link is pre-settled: the queue already forgot the message.
    pub settled: bool,
    /// The message's body is paged out: (queue id, seq) to read it from the
    /// store before sending (the connection has the loader read it).
    pub paged: Option<(u64, u64)>,
    /// For a pre-settled delivery of a paged-out body: the record removing
    /// it from the store, submitted once the body was read.
    pub release: Option<crate::store::Record>,
    /// The first message of its group this consumer gets since it became
    /// the group's owner (annotated `x-opt-group-first-for-consumer`).
    pub group_first: bool,
}

/// Sender-side flow state of a consumer link (AMQP link flow control, in
/// protocol-neutral terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowState {
    /// The consumer it is for.
    pub consumer: ConsumerId,
    /// Deliveries sent (or consumed by drain) on the link, serial arithmetic.
    pub delivery_count: u32,
    /// Credit left.
    pub credit: u32,
    /// Messages waiting in the queue.
    pub available: u32,
    /// Whether the consumer is draining.
    pub drain: bool,
    /// For an exclusive consumer whose state changed: whether it is now the
    /// queue's active consumer (sent as the flow property `active`).
    pub active: Option<bool>,
}

/// A connection's mailbox: items pushed by queues, drained by the connection.
#[derive(Debug)]
pub struct Outbox {
    /// Items not yet taken by the connection.
    items: Mutex<Vec<OutboxItem>>,
    /// Wakes the connection task when the box goes from empty to non-empty.
    notify: Notify,
}

impl Outbox {
    /// A new, empty outbox.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            items: Mutex::new(Rank::Outbox, Vec::new()),
            notify: Notify::new(),
        })
    }

    /// Adds an item and wakes the connection if the box was empty.
    pub fn push(&self, item: OutboxItem) {
        let was_empty = {
            let mut items = self.items.lock();
            let was_empty = items.is_empty();
            items.push(item);
            was_empty
        };
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Takes every item, oldest first, into `into` (which is cleared first).
    pub fn take_all(&self, into: &mut Vec<OutboxItem>) {
        into.clear();
        std::mem::swap(&mut *self.items.lock(), into);
    }

    /// Resolves when items may be waiting.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Wakes the connection without an item (store tickets completed).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

impl crate::store::Wake for Outbox {
    fn wake(&self) {
        Outbox::wake(self);
    }
}
