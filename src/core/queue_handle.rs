//! The owner of a queue's state: a lock held for microseconds around each
//! decision, after which the decided deliveries are pushed to the
//! consumers' outboxes (still under the lock, so each consumer sees them in
//! the order they were decided). Messages moved to other addresses
//! (dead-letter, expiry) are routed after the lock is released.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::broker::Broker;
use super::error::CoreError;
use super::message::Message;
use super::outbox::{Outbox, OutboxItem};
use super::queue::{Action, ConsumerOptions, Counters, Outcome, QueueState};
use super::settings::QueueSettings;
use super::ConsumerId;

/// Milliseconds since the epoch (the time base of AMQP timestamps).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A queue shared by connections.
#[derive(Debug)]
pub struct Queue {
    /// The queue's name, readable without the lock.
    name: String,
    /// Settings, readable without the lock (they do not change).
    settings: QueueSettings,
    /// State, outboxes and a reusable action buffer.
    inner: Mutex<Inner>,
    /// Where dead-lettered and expired messages are routed.
    broker: Weak<Broker>,
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
    /// Set when the queue is deleted: producers still holding it are refused.
    deleted: bool,
}

impl Inner {
    /// Carries out the actions the state machine decided; returns the
    /// messages to route elsewhere once the lock is released.
    fn apply(&mut self) -> Vec<(String, Message)> {
        let mut forwards = Vec::new();
        for action in self.actions.drain(..) {
            let (consumer, item) = match action {
                Action::Deliver(d) => (d.consumer, OutboxItem::Deliver(d)),
                Action::Flow(f) => (f.consumer, OutboxItem::Flow(f)),
                Action::Forward { address, message } => {
                    forwards.push((address, message));
                    continue;
                }
            };
            if let Some(outbox) = self.outboxes.get(&consumer) {
                outbox.push(item);
            }
        }
        forwards
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
    /// Expired, dead-lettered and dropped messages so far.
    pub counters: Counters,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: String, settings: QueueSettings, broker: Weak<Broker>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: QueueState::new(name.clone(), settings.clone()),
                outboxes: HashMap::new(),
                actions: Vec::new(),
                deleted: false,
            }),
            name,
            settings,
            broker,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Runs a decision under the lock, applies it, then routes what moved.
    fn with_state<R>(&self, f: impl FnOnce(&mut QueueState, &mut Vec<Action>) -> R) -> R {
        let (result, forwards) = {
            let mut inner = self.inner.lock();
            let inner = &mut *inner;
            inner.state.set_now(now_ms());
            let result = f(&mut inner.state, &mut inner.actions);
            (result, inner.apply())
        };
        if !forwards.is_empty() {
            if let Some(broker) = self.broker.upgrade() {
                for (address, message) in forwards {
                    broker.forward(&address, message);
                }
            }
        }
        result
    }

    /// Accepts a message. Refused when a limit with `overflow = reject` is
    /// reached, or when the queue was deleted.
    pub fn publish(&self, message: Arc<Message>) -> Result<(), CoreError> {
        if self.inner.lock().deleted {
            return Err(CoreError::NotFound {
                address: self.name.clone(),
            });
        }
        self.with_state(|s, a| s.enqueue(message, a))
    }

    /// Accepts a message moved here by the broker (dead-letter, expiry),
    /// ignoring `overflow = reject` so the move never loses it.
    pub(crate) fn publish_forced(&self, message: Arc<Message>) {
        self.with_state(|s, a| s.enqueue_forced(message, a));
    }

    /// Attaches a consumer whose deliveries go to `outbox`.
    pub fn attach_consumer(&self, id: ConsumerId, outbox: Arc<Outbox>, options: ConsumerOptions) {
        let mut inner = self.inner.lock();
        inner.outboxes.insert(id, outbox);
        inner.state.add_consumer(id, options);
    }

    /// Detaches a consumer; its unsettled messages return in order.
    pub fn detach_consumer(&self, id: ConsumerId) {
        self.with_state(|s, a| s.remove_consumer(id, a));
        self.inner.lock().outboxes.remove(&id);
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
        self.with_state(|s, a| s.flow(id, delivery_count, credit, drain, echo, a))
    }

    /// Settles deliveries of one consumer with one outcome.
    pub fn settle(
        &self,
        consumer: ConsumerId,
        delivery_ids: &[u64],
        outcome: Outcome,
    ) -> Result<(), CoreError> {
        self.with_state(|s, a| {
            let mut result = Ok(());
            for &delivery_id in delivery_ids {
                if let Err(e) = s.settle(consumer, delivery_id, outcome, a) {
                    result = Err(e);
                }
            }
            result
        })
    }

    /// Expires what is due (the broker's timer calls this).
    pub fn expire_due(&self) {
        self.with_state(|s, a| s.expire_due(a));
    }

    /// Removes every ready message; returns how many.
    pub fn purge(&self) -> usize {
        self.inner.lock().state.purge()
    }

    /// Marks the queue deleted and drops its messages.
    pub(crate) fn delete(&self) {
        let mut inner = self.inner.lock();
        inner.deleted = true;
        inner.state.purge();
    }

    /// Sets the address named in `x-opt-original-address`.
    pub(crate) fn set_origin(&self, origin: &str) {
        self.inner.lock().state.set_origin(origin);
    }

    /// Current counters.
    pub fn stats(&self) -> QueueStats {
        let inner = self.inner.lock();
        QueueStats {
            depth: inner.state.depth(),
            unacked: inner.state.unacked(),
            consumers: inner.state.consumer_count(),
            counters: inner.state.counters(),
        }
    }
}
