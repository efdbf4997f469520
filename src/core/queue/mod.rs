//! One queue's state machine: messages in priority and arrival order,
//! consumers with credit, groups, the active exclusive consumer, and
//! deliveries awaiting an outcome.
//!
//! `QueueState` is a plain struct whose methods decide and return
//! [`Action`]s; it never touches an outbox, a lock or a clock (the owner
//! tells it the time), so every dispatch decision is unit-testable.
//! [`super::Queue`] owns one behind a lock and carries the actions out.
//!
//! - `consumers.rs`: consumers, takers, the active exclusive consumer.
//! - `groups.rs`: message groups, their owners, hand-overs, idle groups.
//! - `dispatch.rs`: which message goes to which consumer next.
//! - `duplicates.rs`: duplicate detection's window of message ids.
//! - `outcomes.rs`: consumers' outcomes: accept, release, modify, reject.
//! - `removal.rs`: messages leaving: expiry, dead-lettering, limits, purge.
//! - `schedule.rs`: scheduled delivery and redelivery delay.
//! - `txn.rs`: deliveries locked to a transaction, commit and rollback.
//! - `views.rs`: consumers and groups as the management API shows them.

mod age;
mod consumers;
mod dispatch;
mod duplicates;
mod entries;
mod groups;
mod outcomes;
mod removal;
mod schedule;
mod txn;
mod views;
pub use removal::{MoveReport, MoveTo};
pub use views::{ConsumerView, GroupView};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use foldhash::HashMap as FoldMap;
use std::sync::Arc;

use super::error::CoreError;
use super::message::Message;
use super::outbox::{Delivery, FlowState};
use super::persist::Persistence;
use super::selector::Filter;
use super::settings::{OverflowPolicy, PoisonPolicy, QueueSettings};
use super::ConsumerId;
use crate::store::Record;
use consumers::{Consumer, Exclusive, Takers};
use duplicates::Duplicates;
use groups::{Groups, Slot, NO_GROUP};
use schedule::Schedule;

/// What a queue decided; the owner performs it after the decision.
#[derive(Debug)]
pub enum Action {
    /// Hand a message to a consumer.
    Deliver(Delivery),
    /// Tell a consumer its link's flow state (drain finished, echo asked,
    /// or its active state as an exclusive consumer changed).
    Flow(FlowState),
    /// Move a message to another address (dead-lettering, expiry).
    Forward {
        /// Where it goes.
        address: String,
        /// The message, annotated with why: without its bytes when its
        /// body is paged out (`body`).
        message: Message,
        /// Where its body is stored, when it is paged out: the loader reads
        /// it before the message goes (no decision reads the disk).
        body: Option<(u64, u64)>,
        /// The store record removing it here, submitted only after the
        /// destination stored it, so a crash in between never loses it.
        release: Option<Record>,
    },
    /// Persist a record (in the order decided).
    Store(Record),
}

/// The consumer's verdict on a delivery, in protocol-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Invalid: dead-lettered, with the consumer's error if it gave one.
    Rejected(Option<Arc<Rejection>>),
}

/// The error a consumer gave with a rejection: kept on the dead-lettered
/// message (`x-opt-dead-letter-reason` and `-description`, and its info
/// as `x-opt-dead-letter-info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The error's condition (`amqp:invalid-field`, or an application's own).
    pub condition: String,
    /// Its description.
    pub description: Option<String>,
    /// Its info map, as the protocol layer encoded it.
    pub info: Option<bytes::Bytes>,
}

/// Which group a consumer is limited to (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupFilter {
    /// Only this group, held exclusively while the consumer is attached.
    Group(String),
    /// Whichever unowned group has messages: the queue picks one at attach
    /// (Azure Service Bus' "next available session").
    Any,
}

/// How a consumer wants its deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Pre-settled link: at-most-once, the queue forgets a message once it
    /// is handed over.
    pub presettled: bool,
    /// Consumers of higher priority that have credit get messages first;
    /// among exclusive consumers the highest is active.
    pub priority: i32,
    /// A browser sees messages without acquiring them.
    pub browse: bool,
    /// The consumer asked to be exclusive: one consumer of the queue active
    /// at a time (the queue's `exclusive` setting makes every consumer so).
    pub exclusive: bool,
    /// The consumer receives only one group.
    pub group_filter: Option<GroupFilter>,
    /// The consumer receives only messages its selector matches.
    pub filter: Option<Arc<Filter>>,
    /// Unsettled (or uncommitted) deliveries it may hold at once, whatever
    /// its credit; 0: no limit.
    pub max_unsettled: u32,
    /// Where it comes from, for the management API: its connection's id
    /// and its link's name.
    pub origin: Option<(u64, Arc<str>)>,
}

/// Position in the queue: higher priority first, then arrival order.
type Key = (Reverse<u8>, u64);

/// Marks an entry's exclusion as a selector's non-match rather than an
/// `undeliverable-here` (consumer ids never reach this bit).
const FILTERED: u64 = 1 << 63;

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
    /// Its group's slot, or `NO_GROUP`.
    group: Slot,
    /// It closes its group (kept here so settling never touches the
    /// message, which is cold by then).
    closes: bool,
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

    /// The consumers it must not go to.
    fn excluded(&self) -> &[ConsumerId] {
        self.excluded.as_deref().map_or(&[], |v| v.as_slice())
    }

    /// Whether the message is not for `consumer`: it said undeliverable-here,
    /// or its selector does not match (remembered, so a selector is
    /// evaluated once per message per consumer).
    fn refused_by(&self, consumer: ConsumerId) -> bool {
        self.excluded()
            .iter()
            .any(|c| c.0 == consumer.0 || c.0 == consumer.0 | FILTERED)
    }

    /// Whether some consumer said undeliverable-here (not just a selector).
    fn undeliverable_somewhere(&self) -> bool {
        self.excluded().iter().any(|c| c.0 & FILTERED == 0)
    }

    /// Remembers that `consumer`'s selector does not match this message.
    fn filtered_out(&mut self, consumer: ConsumerId) {
        self.excluded
            .get_or_insert_with(Default::default)
            .push(ConsumerId(consumer.0 | FILTERED));
    }
}

/// A delivery handed to a consumer and not yet settled.
#[derive(Debug)]
struct Unacked {
    /// The message, ready to go back at its position.
    entry: Entry,
    /// Who holds it (it may have gone, if the delivery is locked).
    consumer: ConsumerId,
    /// Its outcome waits for a transaction: the consumer's own settlement
    /// and its departure do not touch it, only the commit or rollback.
    locked: bool,
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
    /// Groups stopped at a poison message (`poison = hold`).
    pub held: u64,
    /// Duplicates accepted and dropped (duplicate detection).
    pub duplicates: u64,
    /// Messages put on the queue.
    pub enqueued: u64,
    /// Deliveries handed to consumers (redeliveries included).
    pub delivered: u64,
    /// Deliveries handed out again after a release, a rollback or a lost
    /// consumer.
    pub redelivered: u64,
    /// Messages consumed for good: accepted, or delivered pre-settled.
    pub acked: u64,
}

/// The state of one queue.
#[derive(Debug)]
pub struct QueueState {
    /// The queue's name, for logs and errors.
    name: String,
    /// The address messages came to (the topic, for a subscription), put in
    /// `x-opt-original-address` when they move elsewhere.
    origin: String,
    /// Limits, dead-letter and expiry addresses, exclusivity, groups.
    settings: QueueSettings,
    /// Ungrouped messages ready for delivery, by priority then arrival.
    ready: BTreeMap<Key, Entry>,
    /// Bytes of every queued message, grouped or not (for `max-bytes`).
    ready_bytes: usize,
    /// Queued messages that expire, soonest first: (when, position, group);
    /// entries may be stale.
    expiries: BinaryHeap<Reverse<(u64, Key, Slot)>>,
    /// Sequence number of the next message to arrive.
    next_seq: u64,
    /// When messages arrived, sampled (the oldest message's age).
    arrivals: age::Arrivals,
    /// Attached consumers, in attach order.
    consumers: Vec<Consumer>,
    /// Index of each consumer in `consumers`.
    consumer_slots: FoldMap<ConsumerId, usize>,
    /// Attach order of the next consumer.
    next_attach: u64,
    /// Consumers that may take ungrouped messages and new groups now.
    takers: Takers,
    /// Consumers with credit and an owned group ready, by that group's head.
    owned_heads: BTreeSet<(Key, ConsumerId)>,
    /// The active consumer of an exclusive queue.
    exclusive: Exclusive,
    /// Attached browsers (dispatch feeds them only when there are some).
    browsers: usize,
    /// Attached consumers with a selector (dispatch evaluates selectors
    /// only when there are some).
    filters: usize,
    /// Some consumer asked to drain since the last dispatch (so dispatch
    /// looks for drains to complete only then).
    drains: bool,
    /// Message groups.
    groups: Groups,
    /// Scheduled messages, delayed redeliveries.
    schedule: Schedule,
    /// Message ids remembered for duplicate detection.
    duplicates: Duplicates,
    /// Deliveries awaiting an outcome, by delivery id.
    unacked: FoldMap<u64, Unacked>,
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
            arrivals: age::Arrivals::default(),
            consumers: Vec::new(),
            consumer_slots: FoldMap::default(),
            next_attach: 0,
            takers: Takers::new(),
            owned_heads: BTreeSet::new(),
            exclusive: Exclusive::default(),
            browsers: 0,
            filters: 0,
            drains: false,
            groups: Groups::default(),
            schedule: Schedule::default(),
            duplicates: Duplicates::default(),
            unacked: FoldMap::default(),
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

    /// Replaces its settings (the run-time changeable ones differ).
    pub fn set_settings(&mut self, settings: QueueSettings) {
        self.settings = settings;
    }

    /// Tells the queue the time (ms since the epoch).
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    /// Messages waiting for a consumer (scheduled ones included).
    pub fn depth(&self) -> usize {
        self.ready.len() + self.groups.queued + self.schedule.waiting.len()
    }

    /// Messages waiting, as a flow's `available`.
    fn available(&self) -> u32 {
        u32::try_from(self.depth()).unwrap_or(u32::MAX)
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

    /// Bytes of the queued messages.
    pub fn bytes(&self) -> usize {
        self.ready_bytes
    }

    /// Accepts a message from a producer and dispatches what can be.
    /// Refused with [`CoreError::QueueFull`] when a limit with
    /// `overflow = reject` is reached.
    pub fn enqueue(
        &mut self,
        message: Arc<Message>,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.enqueue_with(message, None, actions).map(|_| ())
    }

    /// [`Self::enqueue`] of a message whose duplicate-detection id is
    /// `duplicate_id`: a message whose id the queue remembers is dropped
    /// (returns `false`; the producer is told it was accepted).
    pub fn enqueue_with(
        &mut self,
        message: Arc<Message>,
        duplicate_id: Option<&bytes::Bytes>,
        actions: &mut Vec<Action>,
    ) -> Result<bool, CoreError> {
        let duplicate_id = duplicate_id.filter(|_| self.detects_duplicates());
        if let Some(id) = duplicate_id {
            if self.is_duplicate(id, actions) {
                self.counters.duplicates += 1;
                tracing::debug!(queue = %self.name, "duplicate message dropped");
                return Ok(false);
            }
        }
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
        let deliver_at = message.scheduled_for(self.now).filter(|&at| at > self.now);
        let entry = self.new_entry(
            seq,
            message,
            (delivery_count, expires_at, deliver_at),
            false,
            actions,
        );
        if let Some(id) = duplicate_id {
            self.remember_id(id.clone(), entry.persisted, actions);
        }
        self.counters.enqueued += 1;
        self.insert_at(entry, deliver_at, actions);
        self.dispatch(actions);
        Ok(true)
    }

    /// The group slot a message joins (created if need be), or `NO_GROUP`.
    fn group_of(&mut self, message: &Message) -> Slot {
        match message.group_id() {
            Some(id) => self
                .groups
                .slot_for(id, self.settings.max_groups, self.strict()),
            None => NO_GROUP,
        }
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

    /// Attaches a consumer with no credit yet. A group filter naming a group
    /// another consumer's filter holds is refused; `GroupFilter::Any` picks
    /// an unowned group with messages, whose id is returned.
    pub fn attach_consumer(
        &mut self,
        id: ConsumerId,
        mut options: ConsumerOptions,
        actions: &mut Vec<Action>,
    ) -> Result<Option<String>, CoreError> {
        let mut claimed = None;
        let filter_slot = match &options.group_filter {
            None => None,
            Some(GroupFilter::Group(group)) => {
                let slot = self
                    .groups
                    .slot_for(group, self.settings.max_groups, self.strict());
                if self.groups.get(slot).is_some_and(|g| g.pinned) {
                    return Err(CoreError::GroupLocked {
                        group: group.clone(),
                    });
                }
                Some(slot)
            }
            Some(GroupFilter::Any) => {
                let found = self.groups.unowned.iter().find_map(|&(_, slot)| {
                    match &self.groups.get(slot)?.key {
                        groups::GroupKey::Named(n) => Some((slot, n.to_string())),
                        groups::GroupKey::Bucket(_) => None,
                    }
                });
                let Some((slot, group)) = found else {
                    return Err(CoreError::NoGroupAvailable {
                        queue: self.name.clone(),
                    });
                };
                options.group_filter = Some(GroupFilter::Group(group.clone()));
                claimed = Some(group);
                Some(slot)
            }
        };
        if options.exclusive {
            self.exclusive.requested += 1;
        }
        if options.browse {
            self.browsers += 1;
        }
        if options.filter.is_some() {
            self.filters += 1;
        }
        self.consumers.push(Consumer {
            id,
            credit: 0,
            delivery_count: 0,
            drain: false,
            options,
            browsed_to: None,
            attached: self.next_attach,
            owned: 0,
            unsettled: 0,
            heads: BTreeSet::new(),
            listed: None,
            taker: false,
            reported_active: None,
        });
        self.next_attach += 1;
        self.consumer_slots.insert(id, self.consumers.len() - 1);
        if let Some(slot) = filter_slot {
            if let Some(g) = self.groups.get_mut(slot) {
                g.pinned = true;
                let owner = g.owner;
                match owner {
                    Some(owner) if owner == id => {}
                    Some(_) => self.hand_over(slot, Some(id), None),
                    None => self.assign(slot, id),
                }
            }
        }
        self.update_active(actions);
        self.dispatch(actions);
        Ok(claimed)
    }

    /// Attaches a consumer with default handling of the result (tests).
    #[cfg(test)]
    pub fn add_consumer(&mut self, id: ConsumerId, options: ConsumerOptions) {
        let mut actions = Vec::new();
        self.attach_consumer(id, options, &mut actions)
            .expect("consumer attaches");
    }

    /// Detaches a consumer: its unsettled deliveries go back to their
    /// original positions with delivery count + 1, its groups are released,
    /// another exclusive consumer may become active, then the queue
    /// dispatches to whoever is left.
    pub fn remove_consumer(&mut self, id: ConsumerId, actions: &mut Vec<Action>) {
        let Some(index) = self.consumer_index(id) else {
            return;
        };
        self.consumers[index].credit = 0;
        self.consumers[index].drain = false;
        self.refresh_consumer(index);
        let mut returned: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer == id && !u.locked)
            .map(|(d, _)| *d)
            .collect();
        returned.sort_unstable();
        for delivery_id in returned {
            if let Some(unacked) = self.unacked.remove(&delivery_id) {
                let slot = unacked.entry.group;
                self.give_back(unacked.entry, true, None, actions);
                if slot != NO_GROUP {
                    self.group_settled(slot);
                }
            }
        }
        if self.consumers[index].options.exclusive {
            self.exclusive.requested -= 1;
        }
        if self.consumers[index].options.browse {
            self.browsers -= 1;
        }
        if self.consumers[index].options.filter.is_some() {
            self.filters -= 1;
        }
        self.release_groups_of(id);
        let removed = self.consumers.remove(index);
        debug_assert!(removed.heads.is_empty());
        self.reindex_consumers();
        self.update_active(actions);
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
        let index = self
            .consumer_index(id)
            .ok_or(CoreError::UnknownConsumer { consumer: id })?;
        let consumer = &mut self.consumers[index];
        // Our count may be ahead of the consumer's by the deliveries it had
        // not seen when it sent the flow: they use up that much credit.
        consumer.credit =
            crate::core::serial::remaining(credit, delivery_count, consumer.delivery_count);
        consumer.drain = drain;
        self.drains |= drain;
        self.refresh_consumer(index);
        self.dispatch(actions);
        if echo {
            if let Some(state) = self.flow_state(id) {
                actions.push(Action::Flow(state));
            }
        }
        Ok(())
    }

    /// Time-driven work: scheduled messages and delays that are due, expiry,
    /// idle groups, hand-over deadlines; called
    /// by the owner's timer.
    pub fn tick(&mut self, actions: &mut Vec<Action>) {
        self.release_due(actions);
        self.expire_due(actions);
        self.tick_groups();
        self.dispatch(actions);
    }

    /// Puts an entry into the ready set or its group (or expires it if it
    /// is due).
    fn insert(&mut self, entry: Entry, actions: &mut Vec<Action>) {
        if entry.expires_at.is_some_and(|at| at <= self.now) {
            self.expire(entry, actions);
            return;
        }
        let key = entry.key();
        if let Some(at) = entry.expires_at {
            self.expiries.push(Reverse((at, key, entry.group)));
        }
        self.ready_bytes += entry.size as usize;
        if entry.group == NO_GROUP {
            self.ready.insert(key, entry);
        } else {
            self.insert_grouped(entry.group, entry);
        }
    }

    /// Takes an ungrouped entry out of the ready set.
    fn remove_ready(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.ready.remove(key)?;
        self.ready_bytes -= entry.size as usize;
        Some(entry)
    }

    /// The flow state of one consumer, as the protocol layer reports it.
    fn flow_state(&self, id: ConsumerId) -> Option<FlowState> {
        let available = self.available();
        self.consumer_index(id)
            .map(|i| &self.consumers[i])
            .map(|c| FlowState {
                consumer: c.id,
                delivery_count: c.delivery_count,
                credit: c.credit,
                available,
                drain: c.drain,
                active: None,
            })
    }
}

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;
