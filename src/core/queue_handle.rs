//! The owner of a queue's state: a lock held for microseconds around each
//! decision, after which the decided deliveries are pushed to the
//! consumers' outboxes (still under the lock, so each consumer sees them in
//! the order they were decided).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::error::CoreError;
use super::message::Message;
use super::outbox::{Outbox, OutboxItem};
use super::queue::{Action, ConsumerOptions, Outcome, QueueState};
use super::ConsumerId;

/// A queue shared by connections.
#[derive(Debug)]
pub struct Queue {
    /// The queue's name, readable without the lock.
    name: String,
    /// State, outboxes and a reusable action buffer.
    inner: Mutex<Inner>,
}

/// What the lock protects.
#[derive(Debug)]
struct Inner {
    /// The queue's state machine.
    state: QueueState,
    /// Where each consumer's deliveries go.
    outboxes: HashMap<ConsumerId, Arc<Outbox>>,
    /// Reused between calls to avoid an allocation per message.
    actions: Vec<Action>,
}

impl Inner {
    /// Carries out the actions the state machine decided.
    fn apply(&mut self) {
        for action in self.actions.drain(..) {
            let (consumer, item) = match action {
                Action::Deliver(d) => (d.consumer, OutboxItem::Deliver(d)),
                Action::Flow(f) => (f.consumer, OutboxItem::Flow(f)),
            };
            if let Some(outbox) = self.outboxes.get(&consumer) {
                outbox.push(item);
            }
        }
    }
}

/// A snapshot of a queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting.
    pub depth: usize,
    /// Deliveries awaiting an outcome.
    pub unacked: usize,
    /// Attached consumers.
    pub consumers: usize,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: String) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: QueueState::new(name.clone()),
                outboxes: HashMap::new(),
                actions: Vec::new(),
            }),
            name,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Accepts a message.
    pub fn publish(&self, message: Arc<Message>) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.state.enqueue(message, &mut inner.actions);
        inner.apply();
    }

    /// Attaches a consumer whose deliveries go to `outbox`.
    pub fn attach_consumer(&self, id: ConsumerId, outbox: Arc<Outbox>, options: ConsumerOptions) {
        let mut inner = self.inner.lock();
        inner.outboxes.insert(id, outbox);
        inner.state.add_consumer(id, options);
    }

    /// Detaches a consumer; its unsettled messages return in order.
    pub fn detach_consumer(&self, id: ConsumerId) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.state.remove_consumer(id, &mut inner.actions);
        inner.outboxes.remove(&id);
        inner.apply();
    }

    /// Applies a consumer's credit (see [`QueueState::flow`]).
    pub fn flow(
        &self,
        id: ConsumerId,
        delivery_count: u32,
        credit: u32,
        drain: bool,
        echo: bool,
    ) -> Result<(), CoreError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let result = inner
            .state
            .flow(id, delivery_count, credit, drain, echo, &mut inner.actions);
        inner.apply();
        result
    }

    /// Settles deliveries of one consumer with one outcome.
    pub fn settle(
        &self,
        consumer: ConsumerId,
        delivery_ids: &[u64],
        outcome: Outcome,
    ) -> Result<(), CoreError> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let mut result = Ok(());
        for &delivery_id in delivery_ids {
            if let Err(e) = inner
                .state
                .settle(consumer, delivery_id, outcome, &mut inner.actions)
            {
                result = Err(e);
            }
        }
        inner.apply();
        result
    }

    /// Current counters.
    pub fn stats(&self) -> QueueStats {
        let inner = self.inner.lock();
        QueueStats {
            depth: inner.state.depth(),
            unacked: inner.state.unacked(),
            consumers: inner.state.consumer_count(),
        }
    }
}
