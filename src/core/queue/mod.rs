//! One queue's state machine: messages in priority and arrival order,
//! consumers with credit, deliveries awaiting an outcome.
//!
//! `QueueState` is a plain struct whose methods decide and return
//! [`Action`]s; it never touches an outbox, a lock or a clock (the owner
//! tells it the time), so every dispatch decision is unit-testable.
//! [`super::Queue`] owns one behind a lock and carries the actions out.
//! Dispatch itself is in `dispatch.rs`.

mod dispatch;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use super::error::CoreError;
use super::message::Message;
use super::outbox::{Delivery, FlowState};
use super::persist::{self, Persistence};
use super::settings::{OverflowPolicy, QueueSettings};
use super::ConsumerId;
use crate::store::Record;

/// What a queue decided; the owner performs it after the decision.
#[derive(Debug)]
pub enum Action {
    /// Hand a message to a consumer.
    Deliver(Delivery),
    /// Tell a consumer its link's flow state (drain finished, or echo asked).
    Flow(FlowState),
    /// Move a message to another address (dead-lettering, expiry).
    Forward {
        /// Where it goes.
        address: String,
        /// The message, annotated with why.
        message: Message,
        /// The store record removing it here, submitted only after the
        /// destination stored it, so a crash in between never loses it.
        release: Option<Record>,
    },
    /// Persist a record (in the order decided).
    Store(Record),
}

/// The consumer's verdict on a delivery, in protocol-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: the message is removed.
    Accepted,
    /// Not processed and not attempted: back to its original position,
    /// delivery count unchanged.
    Released,
    /// Not processed: back to its original position.
    Modified {
        /// The attempt counts as a failed delivery (delivery count + 1).
        delivery_failed: bool,
        /// Never deliver it to this consumer again.
        undeliverable_here: bool,
    },
    /// Invalid: dead-lettered.
    Rejected,
}

/// How a consumer wants its deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Pre-settled link: at-most-once, the queue forgets a message once it
    /// is handed over.
    pub presettled: bool,
    /// Consumers of higher priority that have credit get messages first.
    pub priority: i32,
    /// A browser sees messages without acquiring them.
    pub browse: bool,
}

/// Position in the queue: higher priority first, then arrival order.
type Key = (Reverse<u8>, u64);

/// A message waiting in the queue.
#[derive(Debug, Clone)]
struct Entry {
    /// Arrival order; a returned message goes back to this position.
    seq: u64,
    /// The message itself, shared with deliveries in flight.
    message: Arc<Message>,
    /// Producer's delivery count plus failed attempts here.
    delivery_count: u32,
    /// Some consumer acquired it before (so `first-acquirer` is false).
    acquired: bool,
    /// When it expires (ms since the epoch), from its ttl or absolute expiry.
    expires_at: Option<u64>,
    /// Consumers that said `undeliverable-here` (boxed: almost always none).
    // One pointer instead of a Vec's three words in every queued entry.
    #[allow(clippy::box_collection)]
    excluded: Option<Box<Vec<ConsumerId>>>,
    /// Bytes of the message (kept here: a paged-out message holds none).
    size: u32,
    /// The message is in the store (durable message on a durable queue).
    persisted: bool,
    /// Its body is not in memory: read back from the store on delivery.
    paged: bool,
}

impl Entry {
    /// Its position in the queue.
    fn key(&self) -> Key {
        (Reverse(self.message.header.priority.min(9)), self.seq)
    }
}

/// A delivery handed to a consumer and not yet settled.
#[derive(Debug)]
struct Unacked {
    /// The message, ready to go back at its position.
    entry: Entry,
    /// Who holds it.
    consumer: ConsumerId,
}

/// A consumer attached to the queue.
#[derive(Debug)]
struct Consumer {
    /// Its identity, used in actions and by the protocol layer.
    id: ConsumerId,
    /// Deliveries it may still receive.
    credit: u32,
    /// Deliveries sent plus credit consumed by drains (AMQP link
    /// delivery-count), so credit can be recomputed from the consumer's view.
    delivery_count: u32,
    /// The consumer asked to use up its credit now.
    drain: bool,
    /// Delivery mode and priority.
    options: ConsumerOptions,
    /// For a browser: the last position it saw.
    browsed_to: Option<Key>,
}

/// Counters for management and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages that expired.
    pub expired: u64,
    /// Messages moved to the dead-letter address.
    pub dead_lettered: u64,
    /// Messages dropped by `overflow = drop-oldest`.
    pub dropped: u64,
}

/// The state of one queue.
#[derive(Debug)]
pub struct QueueState {
    /// The queue's name, for logs and errors.
    name: String,
    /// The address messages came to (the topic, for a subscription), put in
    /// `x-opt-original-address` when they move elsewhere.
    origin: String,
    /// Limits, dead-letter and expiry addresses.
    settings: QueueSettings,
    /// Messages ready for delivery, by priority then arrival.
    ready: BTreeMap<Key, Entry>,
    /// Bytes of the ready messages (for `max-bytes`).
    ready_bytes: usize,
    /// Ready messages that expire, soonest first (entries may be stale).
    expiries: BinaryHeap<Reverse<(u64, Key)>>,
    /// Sequence number of the next message to arrive.
    next_seq: u64,
    /// Attached consumers, in attach order.
    consumers: Vec<Consumer>,
    /// Round-robin position in `consumers`.
    cursor: usize,
    /// Deliveries awaiting an outcome, by delivery id.
    unacked: HashMap<u64, Unacked>,
    /// Next delivery id.
    next_delivery_id: u64,
    /// The time, ms since the epoch, as the owner last told it.
    now: u64,
    /// Counters.
    counters: Counters,
    /// The queue's id in the store, if it is durable and there is a store.
    store_id: Option<u64>,
    /// The broker's store link and memory gauge, if there is a store.
    persistence: Option<Arc<Persistence>>,
}

impl QueueState {
    /// An empty queue.
    pub fn new(name: impl Into<String>, settings: QueueSettings) -> Self {
        let name = name.into();
        Self {
            origin: name.clone(),
            name,
            settings,
            ready: BTreeMap::new(),
            ready_bytes: 0,
            expiries: BinaryHeap::new(),
            next_seq: 0,
            consumers: Vec::new(),
            cursor: 0,
            unacked: HashMap::new(),
            next_delivery_id: 0,
            now: 0,
            counters: Counters::default(),
            store_id: None,
            persistence: None,
        }
    }

    /// Connects the queue to the broker's store: `store_id` when the queue
    /// is durable (its durable messages are persisted), and the memory gauge.
    pub fn set_persistence(&mut self, store_id: Option<u64>, persistence: Arc<Persistence>) {
        self.store_id = store_id;
        self.persistence = Some(persistence);
    }

    /// The queue's id in the store, if its durable messages are persisted.
    pub fn store_id(&self) -> Option<u64> {
        self.store_id
    }

    /// Sets the address put in `x-opt-original-address` (a subscription's topic).
    pub fn set_origin(&mut self, origin: impl Into<String>) {
        self.origin = origin.into();
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Tells the queue the time (ms since the epoch).
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Messages waiting for a consumer.
    pub fn depth(&self) -> usize {
        self.ready.len()
    }

    /// Deliveries handed out and not yet settled.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Number of attached consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Accepts a message from a producer and dispatches what can be.
    /// Refused with [`CoreError::QueueFull`] when a limit with
    /// `overflow = reject` is reached.
    pub fn enqueue(
        &mut self,
        message: Arc<Message>,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let ttl_expiry = message
            .header
            .ttl
            .map(|ttl| self.now.saturating_add(u64::from(ttl)));
        let expires_at = match (ttl_expiry, message.absolute_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let size = message.size();
        self.make_room(size, actions)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let delivery_count = message.header.delivery_count;
        let entry = self.new_entry(seq, message, delivery_count, expires_at, false, actions);
        self.insert(entry, actions);
        self.dispatch(actions);
        Ok(())
    }

    /// A new entry: persisted if durable here, paged out if memory is over
    /// its limit (durable ones only), counted in the memory gauge otherwise.
    fn new_entry(
        &mut self,
        seq: u64,
        message: Arc<Message>,
        delivery_count: u32,
        expires_at: Option<u64>,
        acquired: bool,
        actions: &mut Vec<Action>,
    ) -> Entry {
        let size = message.size();
        let persisted = message.header.durable && self.store_id.is_some();
        if let (true, Some(queue)) = (persisted, self.store_id) {
            actions.push(Action::Store(Record::Put {
                queue,
                seq,
                value: persist::encode_entry(&message, delivery_count, expires_at),
            }));
        }
        let in_memory = self
            .persistence
            .as_ref()
            .is_none_or(|p| p.admit(size, persisted));
        let message = if in_memory {
            message
        } else {
            Arc::new(slim(&message))
        };
        Entry {
            seq,
            message,
            delivery_count,
            acquired,
            expires_at,
            excluded: None,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            persisted,
            paged: !in_memory,
        }
    }

    /// Puts back a message read from the store at recovery (no dispatch:
    /// nothing is attached yet). It counts as acquired before: a consumer
    /// may have had it when the broker stopped. Its body is dropped again
    /// if memory is over the limit.
    pub fn restore(&mut self, seq: u64, stored: persist::StoredEntry, actions: &mut Vec<Action>) {
        let size = stored.size;
        let paged = stored.message.bare.is_empty() && size > 0;
        let in_memory = !paged
            && self
                .persistence
                .as_ref()
                .is_none_or(|p| p.admit(size, true));
        let message = if in_memory {
            stored.message
        } else {
            slim(&stored.message)
        };
        let entry = Entry {
            seq,
            message: Arc::new(message),
            delivery_count: stored.delivery_count,
            acquired: true,
            expires_at: stored.expires_at,
            excluded: None,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            persisted: true,
            paged: !in_memory,
        };
        self.next_seq = self.next_seq.max(seq + 1);
        // A message that expired while the broker was down expires now.
        self.insert(entry, actions);
    }

    /// Whether memory is over the limit, so recovery need not keep bodies.
    pub fn memory_full(&self) -> bool {
        self.persistence.as_ref().is_some_and(|p| p.over_limit())
    }

    /// Like [`Self::enqueue`], but over any limit: a message the broker
    /// moves here (dead-letter, expiry) is never refused.
    pub fn enqueue_forced(&mut self, message: Arc<Message>, actions: &mut Vec<Action>) {
        let limits = (
            self.settings.max_length.take(),
            self.settings.max_bytes.take(),
        );
        let result = self.enqueue(message, actions);
        (self.settings.max_length, self.settings.max_bytes) = limits;
        debug_assert!(result.is_ok());
    }

    /// Applies `max-length` / `max-bytes` before a message of `size` bytes
    /// goes in: refuses it, or drops the oldest ready messages.
    fn make_room(&mut self, size: usize, actions: &mut Vec<Action>) -> Result<(), CoreError> {
        let over = |q: &Self| {
            q.settings
                .max_length
                .is_some_and(|max| q.ready.len() as u64 >= max)
                || q.settings
                    .max_bytes
                    .is_some_and(|max| (q.ready_bytes + size) as u64 > max)
        };
        if !over(self) {
            return Ok(());
        }
        match self.settings.overflow {
            OverflowPolicy::Reject => Err(CoreError::QueueFull {
                queue: self.name.clone(),
            }),
            OverflowPolicy::DropOldest => {
                while over(self) {
                    // The oldest by arrival, whatever its priority: the
                    // first entry of each priority level, lowest sequence.
                    let oldest = (0..=9u8)
                        .filter_map(|p| {
                            self.ready
                                .range((Reverse(p), 0)..=(Reverse(p), u64::MAX))
                                .next()
                                .map(|(k, _)| *k)
                        })
                        .min_by_key(|k| k.1);
                    let Some(entry) = oldest.and_then(|k| self.remove_ready(&k)) else {
                        break;
                    };
                    if let Some(r) = self.retire(&entry) {
                        actions.push(Action::Store(r));
                    }
                    self.counters.dropped += 1;
                }
                Ok(())
            }
        }
    }

    /// Attaches a consumer with no credit yet.
    pub fn add_consumer(&mut self, id: ConsumerId, options: ConsumerOptions) {
        self.consumers.push(Consumer {
            id,
            credit: 0,
            delivery_count: 0,
            drain: false,
            options,
            browsed_to: None,
        });
    }

    /// Detaches a consumer: its unsettled deliveries go back to their
    /// original positions with delivery count + 1, then the queue dispatches
    /// to whoever is left.
    pub fn remove_consumer(&mut self, id: ConsumerId, actions: &mut Vec<Action>) {
        let Some(index) = self.consumers.iter().position(|c| c.id == id) else {
            return;
        };
        self.consumers.remove(index);
        if self.cursor > index {
            self.cursor -= 1;
        }
        let mut returned: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer == id)
            .map(|(d, _)| *d)
            .collect();
        returned.sort_unstable();
        for delivery_id in returned {
            if let Some(unacked) = self.unacked.remove(&delivery_id) {
                self.give_back(unacked.entry, true, None, actions);
            }
        }
        self.dispatch(actions);
    }

    /// Applies a consumer's flow: `delivery_count` and `credit` as the
    /// consumer sees them (AMQP: the link's credit limit is their sum).
    /// `drain` asks to use up the credit now; `echo` asks for our state.
    pub fn flow(
        &mut self,
        id: ConsumerId,
        delivery_count: u32,
        credit: u32,
        drain: bool,
        echo: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let consumer = self
            .consumers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(CoreError::UnknownConsumer { consumer: id })?;
        let limit = delivery_count.wrapping_add(credit);
        let left = limit.wrapping_sub(consumer.delivery_count);
        // Serial-number arithmetic (RFC 1982): a limit behind what we already
        // sent means no credit, not four billion.
        consumer.credit = if left <= i32::MAX as u32 { left } else { 0 };
        consumer.drain = drain;
        self.dispatch(actions);
        if echo {
            if let Some(state) = self.flow_state(id) {
                actions.push(Action::Flow(state));
            }
        }
        Ok(())
    }

    /// Settles a delivery with the consumer's outcome.
    pub fn settle(
        &mut self,
        consumer: ConsumerId,
        delivery_id: u64,
        outcome: Outcome,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        match self.unacked.get(&delivery_id) {
            Some(u) if u.consumer == consumer => {}
            _ => return Err(CoreError::UnknownDelivery { delivery_id }),
        }
        let Some(unacked) = self.unacked.remove(&delivery_id) else {
            return Err(CoreError::UnknownDelivery { delivery_id });
        };
        let entry = unacked.entry;
        match outcome {
            Outcome::Accepted => {
                if let Some(r) = self.retire(&entry) {
                    actions.push(Action::Store(r));
                }
            }
            Outcome::Rejected => self.dead_letter(entry, "rejected", actions),
            Outcome::Released => {
                self.give_back(entry, false, None, actions);
                self.dispatch(actions);
            }
            Outcome::Modified {
                delivery_failed,
                undeliverable_here,
            } => {
                let exclude = undeliverable_here.then_some(consumer);
                self.give_back(entry, delivery_failed, exclude, actions);
                self.dispatch(actions);
            }
        }
        Ok(())
    }

    /// Expires what is due; called by the owner's timer.
    pub fn expire_due(&mut self, actions: &mut Vec<Action>) {
        while let Some(Reverse((at, key))) = self.expiries.peek().copied() {
            if at > self.now {
                break;
            }
            self.expiries.pop();
            if self
                .ready
                .get(&key)
                .is_some_and(|e| e.expires_at == Some(at))
            {
                if let Some(entry) = self.remove_ready(&key) {
                    self.expire(entry, actions);
                }
            }
        }
    }

    /// Removes every ready message; returns how many.
    pub fn purge(&mut self, actions: &mut Vec<Action>) -> usize {
        let n = self.ready.len();
        let ready = std::mem::take(&mut self.ready);
        for entry in ready.into_values() {
            if let Some(r) = self.retire(&entry) {
                actions.push(Action::Store(r));
            }
        }
        self.ready_bytes = 0;
        self.expiries.clear();
        n
    }

    /// Drops every message because the queue itself is deleted (its store
    /// records go with the queue's own record).
    pub fn discard_all(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        let unacked = std::mem::take(&mut self.unacked);
        for entry in ready
            .into_values()
            .chain(unacked.into_values().map(|u| u.entry))
        {
            self.retire(&entry);
        }
        self.ready_bytes = 0;
        self.expiries.clear();
    }

    /// A message leaves the queue for good: it no longer counts in memory,
    /// and the record that removes it from the store, if it is stored.
    fn retire(&self, entry: &Entry) -> Option<Record> {
        if let Some(p) = &self.persistence {
            if !entry.paged {
                p.release(entry.size as usize);
            }
        }
        match (entry.persisted, self.store_id) {
            (true, Some(queue)) => Some(Record::Delete {
                queue,
                seq: entry.seq,
                counted: entry.delivery_count > entry.message.header.delivery_count,
            }),
            _ => None,
        }
    }

    /// The whole message of an entry: read back from the store if its body
    /// is paged out (for the rare paths that move a message elsewhere).
    fn full_message(&self, entry: &Entry) -> Arc<Message> {
        if !entry.paged {
            return Arc::clone(&entry.message);
        }
        let loaded = match (&self.persistence, self.store_id) {
            (Some(p), Some(queue)) => p.load(queue, entry.seq),
            _ => Ok(None),
        };
        match loaded {
            Ok(Some(m)) => Arc::new(m),
            other => {
                tracing::error!(queue = %self.name, seq = entry.seq, result = ?other.err(), "paged-out message body not found in the store");
                Arc::clone(&entry.message)
            }
        }
    }

    /// A message returns from a consumer: counted as a failed attempt if
    /// `failed`, dead-lettered past `max-delivery-attempts`, kept away from
    /// `exclude`, and put back at its original position.
    fn give_back(
        &mut self,
        mut entry: Entry,
        failed: bool,
        exclude: Option<ConsumerId>,
        actions: &mut Vec<Action>,
    ) {
        if failed {
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            let max = self.settings.max_delivery_attempts;
            if max > 0 && entry.delivery_count >= max {
                self.dead_letter(entry, "max-delivery-attempts exceeded", actions);
                return;
            }
            if let (true, Some(queue)) = (entry.persisted, self.store_id) {
                actions.push(Action::Store(Record::SetCount {
                    queue,
                    seq: entry.seq,
                    count: entry.delivery_count,
                }));
            }
        }
        if let Some(c) = exclude {
            entry.excluded.get_or_insert_with(Default::default).push(c);
        }
        self.insert(entry, actions);
    }

    /// Puts an entry into the ready set (or expires it if it is due).
    fn insert(&mut self, entry: Entry, actions: &mut Vec<Action>) {
        if entry.expires_at.is_some_and(|at| at <= self.now) {
            self.expire(entry, actions);
            return;
        }
        let key = entry.key();
        if let Some(at) = entry.expires_at {
            self.expiries.push(Reverse((at, key)));
        }
        self.ready_bytes += entry.size as usize;
        self.ready.insert(key, entry);
    }

    /// Takes an entry out of the ready set.
    fn remove_ready(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.ready.remove(key)?;
        self.ready_bytes -= entry.size as usize;
        Some(entry)
    }

    /// Moves a message to the dead-letter address with the reason.
    fn dead_letter(&mut self, entry: Entry, reason: &str, actions: &mut Vec<Action>) {
        use super::message::AnnotationValue::String as S;
        let address = self.settings.dead_letter_address.clone();
        self.counters.dead_lettered += 1;
        let full = self.full_message(&entry);
        let release = self.retire(&entry);
        if address == self.name {
            // The dead-letter queue itself (or a queue that is its own
            // dead-letter address): never lose the message. It goes to the
            // back of this queue, so it does not block the ones behind it.
            tracing::info!(queue = %self.name, reason, "dead-lettered within its own queue: moved to the back");
            let message = full.with_annotation("x-opt-dead-letter-reason", S(reason.to_string()));
            let seq = self.next_seq;
            self.next_seq += 1;
            let moved = self.new_entry(
                seq,
                Arc::new(message),
                entry.delivery_count,
                entry.expires_at,
                entry.acquired,
                actions,
            );
            // Stored at its new position before it leaves the old one.
            if let Some(r) = release {
                actions.push(Action::Store(r));
            }
            self.insert(moved, actions);
            return;
        }
        let mut message = full
            .with_annotation("x-opt-dead-letter-reason", S(reason.to_string()))
            .with_annotation("x-opt-original-address", S(self.origin.clone()));
        message.header.delivery_count = entry.delivery_count;
        actions.push(Action::Forward {
            address,
            message,
            release,
        });
    }

    /// Drops an expired message, or moves it to the expiry address.
    fn expire(&mut self, entry: Entry, actions: &mut Vec<Action>) {
        use super::message::AnnotationValue::String as S;
        self.counters.expired += 1;
        let address = match self.settings.expiry_address.clone() {
            Some(address) if address != self.name => address,
            _ => {
                if let Some(r) = self.retire(&entry) {
                    actions.push(Action::Store(r));
                }
                return;
            }
        };
        let full = self.full_message(&entry);
        let release = self.retire(&entry);
        let mut message = full.with_annotation("x-opt-original-address", S(self.origin.clone()));
        // It expired here; it does not expire again where it goes.
        message.header.ttl = None;
        if let Some(r) = message.routing.as_mut() {
            r.absolute_expiry = None;
        }
        message.header.delivery_count = entry.delivery_count;
        actions.push(Action::Forward {
            address,
            message,
            release,
        });
    }

    /// The flow state of one consumer, as the protocol layer reports it.
    fn flow_state(&self, id: ConsumerId) -> Option<FlowState> {
        let available = u32::try_from(self.ready.len()).unwrap_or(u32::MAX);
        self.consumers
            .iter()
            .find(|c| c.id == id)
            .map(|c| FlowState {
                consumer: c.id,
                delivery_count: c.delivery_count,
                credit: c.credit,
                available,
                drain: c.drain,
            })
    }
}

/// A message without its body: what a paged-out entry keeps in memory.
fn slim(message: &Message) -> Message {
    Message {
        header: message.header,
        routing: message.routing.clone(),
        annotations: bytes::Bytes::new(),
        broker_annotations: message.broker_annotations.clone(),
        bare: bytes::Bytes::new(),
    }
}

#[cfg(test)]
mod tests;
