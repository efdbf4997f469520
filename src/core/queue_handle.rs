//! The owner of a queue's state: a lock held for microseconds around each
//! decision, after which the decided deliveries are pushed to the
//! consumers' outboxes (still under the lock, so each consumer sees them in
//! the order they were decided). Messages moved to other addresses
//! (dead-letter, expiry) are routed after the lock is released.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::lock_order::{Mutex, MutexGuard, Rank, RwLock};

use super::broker::Broker;
use super::error::CoreError;
use super::message::Message;
use super::outbox::{Outbox, OutboxItem};
use super::persist::{Persistence, StoredEntry};
use super::queue::{Action, ConsumerOptions, Counters, MoveReport, MoveTo, Outcome, QueueState};
use super::selector::Filter;
use super::settings::QueueSettings;
use super::ConsumerId;
use crate::store::{Record, Ticket};

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
    settings: RwLock<QueueSettings>,
    /// State, outboxes and a reusable action buffer.
    inner: Mutex<Inner>,
    /// Where dead-lettered and expired messages are routed.
    broker: Weak<Broker>,
    /// The store link, if the broker has a store.
    persistence: Option<Arc<Persistence>>,
    /// The queue's id in the store, if it is durable.
    store_id: Option<u64>,
    /// For a topic subscription: which copies it takes.
    subscription: RwLock<SubscriptionFilter>,
}

/// Which of a topic's messages a subscription queue takes.
#[derive(Debug, Default, Clone)]
struct SubscriptionFilter {
    /// Only those its selector matches.
    filter: Option<Arc<Filter>>,
    /// Not those published by this connection (no-local).
    no_local: Option<u64>,
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
    /// The wake-up asked of the broker's timer, if one is pending.
    wake_at: Option<u64>,
}

/// A message to move elsewhere once the queue's lock is released, and the
/// record that removes it here once it is stored there.
#[derive(Debug)]
pub(crate) struct Forward {
    /// Where it goes.
    address: String,
    /// The message (without its bytes when `body` is set).
    message: Message,
    /// Where its paged-out body is stored.
    body: Option<(u64, u64)>,
    /// The record removing it here.
    release: Option<Record>,
}

impl Inner {
    /// Carries out the actions the state machine decided: deliveries to
    /// outboxes, records to the journal (one submission, in order). Returns
    /// the journal ticket and the messages to route elsewhere once the lock
    /// is released.
    fn apply(&mut self, persistence: Option<&Persistence>) -> (Option<Ticket>, Vec<Forward>) {
        let (records, forwards) = self.take_actions();
        let ticket = match persistence {
            Some(p) if !records.is_empty() => Some(p.journal().submit(records)),
            _ => None,
        };
        (ticket, forwards)
    }

    /// Hands deliveries to outboxes; returns the records to persist (in the
    /// order decided) and the messages to route elsewhere.
    fn take_actions(&mut self) -> (Vec<Record>, Vec<Forward>) {
        let mut forwards = Vec::new();
        let mut records = Vec::new();
        for action in self.actions.drain(..) {
            let (consumer, item) = match action {
                Action::Deliver(d) => (d.consumer, OutboxItem::Deliver(d)),
                Action::Flow(f) => (f.consumer, OutboxItem::Flow(f)),
                Action::Forward {
                    address,
                    message,
                    body,
                    release,
                } => {
                    forwards.push(Forward {
                        address,
                        message,
                        body,
                        release,
                    });
                    continue;
                }
                Action::Store(record) => {
                    records.push(record);
                    continue;
                }
            };
            if let Some(outbox) = self.outboxes.get(&consumer) {
                outbox.push(item);
            }
        }
        (records, forwards)
    }
}

/// A queue locked for a transaction's commit, which locks every queue it
/// touches (in address order, see docs/ARCHITECTURE.md) so that all its
/// records go to the journal in one submission: after a crash the commit
/// is there entirely or not at all.
pub(crate) struct Locked<'a> {
    /// The queue.
    queue: &'a Queue,
    /// Its state, locked.
    inner: MutexGuard<'a, Inner>,
}

impl Locked<'_> {
    /// The state machine and its action buffer.
    pub(crate) fn state(&mut self) -> (&mut QueueState, &mut Vec<Action>) {
        let inner = &mut *self.inner;
        (&mut inner.state, &mut inner.actions)
    }

    /// Whether the queue was deleted.
    pub(crate) fn deleted(&self) -> bool {
        self.inner.deleted
    }

    /// Whether a durable message is stored here (durable queue with a store).
    pub(crate) fn stores_durable(&self) -> bool {
        self.queue.store_id.is_some() && self.queue.persistence.is_some()
    }

    /// Hands out the decided deliveries; returns the records to persist and
    /// the messages to route once every lock is released.
    pub(crate) fn take_actions(&mut self) -> (Vec<Record>, Vec<Forward>) {
        self.inner.take_actions()
    }
}

/// A message to move elsewhere after a commit: the queue it leaves, and what
/// its `with_state` would have routed.
pub(crate) type Forwarded = (Arc<Queue>, Vec<Forward>);

/// What the queue made of a consumer's attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The group a `GroupFilter::Any` consumer was given.
    pub group: Option<String>,
    /// The consumer is exclusive (one active at a time on this queue).
    pub exclusive: bool,
}

/// The queue settings an operator may change while the queue runs; the
/// others shape state the queue has built (groups, ordering, durability,
/// duplicate history) and are fixed at creation.
pub const RUNTIME_SETTINGS: &[&str] = &[
    "max-length",
    "max-bytes",
    "overflow",
    "max-delivery-attempts",
    "poison",
    "dead-letter-address",
    "expiry-address",
    "redelivery-delay",
    "group-idle-timeout",
    "group-handover-timeout",
];

/// A snapshot of a queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting.
    pub depth: usize,
    /// Deliveries awaiting an outcome.
    pub unacked: usize,
    /// Attached consumers.
    pub consumers: usize,
    /// Live message groups.
    pub groups: usize,
    /// The active exclusive consumer, if the queue is exclusive.
    pub active: Option<ConsumerId>,
    /// Expired, dead-lettered and dropped messages so far.
    pub counters: Counters,
    /// Bytes of the queued messages.
    pub bytes: usize,
    /// Groups held at a poison message.
    pub held_groups: usize,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: String, settings: QueueSettings, broker: Weak<Broker>) -> Self {
        Self::with_store(name, settings, broker, None, None)
    }

    /// An empty queue linked to the broker's store: with a `store_id`, its
    /// durable messages are persisted.
    pub fn with_store(
        name: String,
        settings: QueueSettings,
        broker: Weak<Broker>,
        persistence: Option<Arc<Persistence>>,
        store_id: Option<u64>,
    ) -> Self {
        let mut state = QueueState::new(name.clone(), settings.clone());
        if let Some(p) = &persistence {
            state.set_persistence(store_id, Arc::clone(p));
        }
        Self {
            inner: Mutex::new(
                Rank::Queue,
                Inner {
                    state,
                    outboxes: HashMap::new(),
                    actions: Vec::new(),
                    deleted: false,
                    wake_at: None,
                },
            ),
            name,
            settings: RwLock::new(Rank::QueueSettings, settings),
            broker,
            persistence,
            store_id,
            subscription: RwLock::new(Rank::QueueSettings, SubscriptionFilter::default()),
        }
    }

    /// Sets which copies a subscription queue takes.
    pub(crate) fn set_subscription_filter(
        &self,
        filter: Option<Arc<Filter>>,
        no_local: Option<u64>,
    ) {
        *self.subscription.write() = SubscriptionFilter { filter, no_local };
    }

    /// The selector of a subscription queue, if it has one.
    pub fn subscription_selector(&self) -> Option<String> {
        self.subscription
            .read()
            .filter
            .as_ref()
            .map(|f| f.selector.text().to_string())
    }

    /// Whether a subscription queue takes a copy of `message`, published
    /// by connection `origin`.
    pub(crate) fn takes_copy(&self, message: &Message, origin: Option<u64>) -> bool {
        let s = self.subscription.read();
        if s.no_local.is_some() && s.no_local == origin {
            return false;
        }
        s.filter.as_ref().is_none_or(|f| f.matches(message))
    }

    /// The queue's id in the store, if its durable messages are persisted.
    pub fn store_id(&self) -> Option<u64> {
        self.store_id
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings now.
    pub fn settings(&self) -> QueueSettings {
        self.settings.read().clone()
    }

    /// Changes settings at run time: each `(key, value)` as in the config's
    /// `[queues."NAME"]` tables, only those in [`RUNTIME_SETTINGS`]. All or
    /// nothing; returns the new settings. The caller persists them.
    pub fn change_settings(
        &self,
        changes: &[(String, String)],
    ) -> Result<QueueSettings, CoreError> {
        let mut inner = self.inner.lock();
        let mut wanted = self.settings.read().clone();
        for (key, value) in changes {
            if !RUNTIME_SETTINGS.contains(&key.as_str()) {
                return Err(CoreError::InvalidSetting {
                    message: format!(
                        "{key} cannot change at run time (these can: {})",
                        RUNTIME_SETTINGS.join(", ")
                    ),
                });
            }
            wanted
                .set(key, value)
                .map_err(|e| CoreError::InvalidSetting {
                    message: e.to_string(),
                })?;
        }
        inner.state.set_settings(wanted.clone());
        *self.settings.write() = wanted.clone();
        Ok(wanted)
    }

    /// Moves up to `limit` waiting messages, oldest first, to `to` (see
    /// `QueueState::move_out`); `existing` are the broker's queue names.
    pub fn move_messages(
        &self,
        to: &MoveTo,
        limit: usize,
        existing: &std::collections::HashSet<String>,
    ) -> (MoveReport, Option<Ticket>) {
        let exists = |name: &str| existing.contains(name);
        self.with_state(|s, a| s.move_out(to, limit, &exists, a))
    }

    /// Locks the queue for a commit; see [`Locked`].
    pub(crate) fn lock(&self) -> Locked<'_> {
        let mut inner = self.inner.lock();
        inner.state.set_now(now_ms());
        Locked { queue: self, inner }
    }

    /// Routes messages moved elsewhere (dead-letter, expiry), then submits
    /// the records that remove them here. Returns the highest ticket.
    /// A message whose body is paged out is moved by the loader once its
    /// body is read (see `core::loader`): not here, and not in the ticket.
    pub(crate) fn route_forwards(&self, forwards: Vec<Forward>) -> Option<Ticket> {
        let mut ticket = None;
        let broker = self.broker.upgrade()?;
        for forward in forwards {
            match (forward.body, &self.persistence) {
                (Some((queue, seq)), Some(p)) => {
                    let journal = Arc::clone(p.journal());
                    let broker = Arc::downgrade(&broker);
                    let Forward {
                        address,
                        mut message,
                        release,
                        ..
                    } = forward;
                    p.load_later(
                        queue,
                        seq,
                        Box::new(move |loaded| match (loaded, broker.upgrade()) {
                            (Ok(Some(full)), Some(broker)) => {
                                message.annotations = full.annotations;
                                message.bare = full.bare;
                                broker.forward(&address, message);
                                if let Some(record) = release {
                                    journal.submit([record]);
                                }
                            }
                            (other, _) => {
                                // Kept where it is stored: it comes back at the
                                // next start rather than being lost.
                                tracing::error!(queue, seq, %address, result = ?other.err(), "a paged-out message to move could not be read; left in the store");
                            }
                        }),
                    );
                }
                _ => {
                    ticket = ticket.max(broker.forward(&forward.address, forward.message));
                    if let (Some(record), Some(p)) = (forward.release, &self.persistence) {
                        ticket = ticket.max(Some(p.journal().submit([record])));
                    }
                }
            }
        }
        ticket
    }

    /// The journal, if the broker has a store.
    pub(crate) fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// Locks deliveries to a transaction: their outcome waits for the
    /// commit (see `QueueState::lock_to_transaction`).
    pub fn lock_to_transaction(&self, consumer: ConsumerId, ids: &[u64]) -> Result<(), CoreError> {
        let mut inner = self.inner.lock();
        for &id in ids {
            inner.state.lock_to_transaction(consumer, id)?;
        }
        Ok(())
    }

    /// A transaction rolled back: its locked deliveries go back to their
    /// positions with delivery count + 1.
    pub fn roll_back(&self, ids: &[u64]) -> Option<Ticket> {
        self.with_state(|s, a| s.roll_back_retirements(ids, a)).1
    }

    /// Releases a group held by `poison = hold`; returns whether it was held.
    pub fn release_held(&self, group: &str) -> bool {
        self.with_state(|s, a| {
            let was = s.release_held(group);
            s.tick(a);
            was
        })
        .0
    }

    /// Runs a decision under the lock, applies it, then routes what moved.
    /// Also returns the journal ticket covering every record it wrote.
    fn with_state<R>(
        &self,
        f: impl FnOnce(&mut QueueState, &mut Vec<Action>) -> R,
    ) -> (R, Option<Ticket>) {
        let (result, mut ticket, forwards, wake) = {
            let mut inner = self.inner.lock();
            let inner = &mut *inner;
            let now = now_ms();
            inner.state.set_now(now);
            let result = f(&mut inner.state, &mut inner.actions);
            let (ticket, forwards) = inner.apply(self.persistence.as_deref());
            // Ask the broker's timer for a wake-up when something scheduled
            // comes due before the one already asked for (or that one passed).
            let due = inner.state.next_due();
            let wake = match (due, inner.wake_at) {
                (Some(d), Some(w)) if d >= w && w > now => None,
                (Some(d), _) => Some(d),
                (None, _) => None,
            };
            if wake.is_some() {
                inner.wake_at = wake;
            }
            (result, ticket, forwards, wake)
        };
        if let (Some(at), Some(broker)) = (wake, self.broker.upgrade()) {
            broker.wake_at(at, &self.name);
        }
        if !forwards.is_empty() {
            ticket = ticket.max(self.route_forwards(forwards));
        }
        (result, ticket)
    }

    /// Accepts a message. Refused when a limit with `overflow = reject` is
    /// reached, when the queue was deleted, or when a durable message cannot
    /// be stored (the store failed, or its disk is full). Returns the
    /// journal ticket to wait for when the message was persisted.
    pub fn publish(&self, message: Arc<Message>) -> Result<Option<Ticket>, CoreError> {
        self.publish_with(message, None)
    }

    /// Whether the queue detects duplicates (`duplicate-window`).
    pub fn detects_duplicates(&self) -> bool {
        let settings = self.settings.read();
        settings.duplicate_window > 0 || !settings.duplicate_window_time.is_zero()
    }

    /// [`Self::publish`] of a message with a duplicate-detection id: one
    /// whose id the queue remembers is accepted and dropped.
    pub fn publish_with(
        &self,
        message: Arc<Message>,
        duplicate_id: Option<&bytes::Bytes>,
    ) -> Result<Option<Ticket>, CoreError> {
        if self.inner.lock().deleted {
            return Err(CoreError::NotFound {
                address: self.name.clone(),
            });
        }
        if let (Some(p), Some(_), true) = (&self.persistence, self.store_id, message.header.durable)
        {
            p.journal()
                .check_accepting(message.size() as u64)
                .map_err(|e| CoreError::Store {
                    full: e.is_full(),
                    reason: e.to_string(),
                })?;
        }
        let (result, ticket) = self.with_state(|s, a| s.enqueue_with(message, duplicate_id, a));
        result.map(|_| ticket)
    }

    /// Accepts a message moved here by the broker (dead-letter, expiry),
    /// ignoring `overflow = reject` so the move never loses it. Returns the
    /// journal ticket of its record, if stored.
    pub(crate) fn publish_forced(&self, message: Arc<Message>) -> Option<Ticket> {
        self.with_state(|s, a| s.enqueue_forced(message, a)).1
    }

    /// Puts back the message ids duplicate detection remembered.
    pub(crate) fn restore_duplicates(&self, ids: Vec<(bytes::Bytes, u64)>) {
        self.with_state(|s, a| s.restore_duplicates(ids, a));
    }

    /// Puts back a message read from the store at recovery.
    pub(crate) fn restore(&self, seq: u64, stored: StoredEntry) {
        self.with_state(|s, a| s.restore(seq, stored, a));
    }

    /// Attaches a consumer whose deliveries go to `outbox`. Returns the
    /// group it was given for a `GroupFilter::Any`, and whether it is
    /// exclusive (to echo in the attach). Refused when its group filter
    /// names a group another consumer holds, or no group is available.
    pub fn attach_consumer(
        &self,
        id: ConsumerId,
        outbox: Arc<Outbox>,
        options: ConsumerOptions,
    ) -> Result<Attached, CoreError> {
        // The outbox goes in first: the attach may already tell the
        // consumer something (whether it is the active one).
        self.inner.lock().outboxes.insert(id, outbox);
        let (result, _) = self.with_state(|s, a| {
            let group = s.attach_consumer(id, options, a)?;
            Ok(Attached {
                group,
                exclusive: s.is_exclusive(id),
            })
        });
        if result.is_err() {
            self.inner.lock().outboxes.remove(&id);
        }
        result
    }

    /// Moves groups so that each consumer owns about as many (SPEC §5's
    /// operator rebalance); returns how many groups move.
    pub fn rebalance(&self) -> usize {
        self.with_state(|s, a| {
            let moved = s.rebalance();
            s.tick(a);
            moved
        })
        .0
    }

    /// Detaches a consumer; its unsettled messages return in order.
    pub fn detach_consumer(&self, id: ConsumerId) {
        let _ = self.with_state(|s, a| s.remove_consumer(id, a));
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
            .0
    }

    /// Settles deliveries of one consumer with one outcome. Returns the
    /// journal ticket to wait for before telling the consumer the outcome
    /// is final (its records, when the messages were stored).
    pub fn settle(
        &self,
        consumer: ConsumerId,
        delivery_ids: &[u64],
        outcome: Outcome,
    ) -> (Result<(), CoreError>, Option<Ticket>) {
        self.with_state(|s, a| s.settle_many(consumer, delivery_ids, outcome, a))
    }

    /// Time-driven work: expiry, idle groups, hand-over deadlines (the
    /// broker's timer calls this every second).
    pub fn tick(&self) {
        let _ = self.with_state(|s, a| s.tick(a));
    }

    /// Removes every ready message; returns how many.
    pub fn purge(&self) -> usize {
        self.with_state(|s, a| s.purge(a)).0
    }

    /// Marks the queue deleted and drops its messages (the broker removes
    /// its store records with the queue's own).
    pub(crate) fn delete(&self) {
        let mut inner = self.inner.lock();
        inner.deleted = true;
        inner.state.discard_all();
    }

    /// Whether the queue was deleted (its link went, for a dynamic node):
    /// holders of the handle stop using it.
    pub fn is_deleted(&self) -> bool {
        self.inner.lock().deleted
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
            groups: inner.state.group_count(),
            active: inner.state.active_consumer(),
            counters: inner.state.counters(),
            bytes: inner.state.bytes(),
            held_groups: inner.state.held_groups().len(),
        }
    }

    /// How long its oldest waiting message has waited (ms), to within a
    /// second; None when no message waits.
    pub fn oldest_age(&self) -> Option<u64> {
        let mut inner = self.inner.lock();
        inner.state.set_now(now_ms());
        inner.state.oldest_age()
    }

    /// Its consumers, for the management API.
    pub fn consumers(&self) -> Vec<crate::core::queue::ConsumerView> {
        self.inner.lock().state.consumers_view()
    }

    /// Up to `limit` of its groups (held ones first), for the management API.
    pub fn groups(&self, limit: usize) -> Vec<crate::core::queue::GroupView> {
        self.inner.lock().state.groups_view(limit)
    }
}
