//! The queue's consumers: credit, who may take which messages, and the
//! active exclusive consumer (SPEC §4).
//!
//! Consumers that may take ungrouped messages and new groups right now
//! ("takers": credit, not browsing, no group filter, and the active one when
//! the queue is exclusive) sit in rings by consumer priority, so picking the
//! next one is O(1) and round-robin among equals. Exclusive queues (the
//! `exclusive` setting, or any consumer that asked to be exclusive) have one
//! active consumer: highest priority, then earliest attached. A newcomer of
//! higher priority takes over once the active one has nothing unsettled;
//! until then nobody gets messages, so order never breaks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::groups::Slot;
use super::{Action, ConsumerOptions, Entry, Key, QueueState};
use crate::core::outbox::FlowState;
use crate::core::ConsumerId;

/// A consumer attached to the queue.
#[derive(Debug)]
pub(super) struct Consumer {
    /// Its identity, used in actions and by the protocol layer.
    pub id: ConsumerId,
    /// Deliveries it may still receive.
    pub credit: u32,
    /// Deliveries sent plus credit consumed by drains (AMQP link
    /// delivery-count), so credit can be recomputed from the consumer's view.
    pub delivery_count: u32,
    /// The consumer asked to use up its credit now.
    pub drain: bool,
    /// Delivery mode, priority, exclusivity, group filter.
    pub options: ConsumerOptions,
    /// For a browser: the last position it saw.
    pub browsed_to: Option<Key>,
    /// Attach order: among exclusive consumers of equal priority the
    /// earliest becomes active.
    pub attached: u64,
    /// Groups it owns (for the fewest-groups assignment and rebalancing).
    pub owned: u32,
    /// Its deliveries awaiting an outcome (a takeover waits for zero).
    pub unsettled: u32,
    /// Groups it owns whose head may be delivered now, by head position.
    pub heads: BTreeSet<(Key, Slot)>,
    /// The position under which it is listed in the queue's `owned_heads`.
    pub listed: Option<Key>,
    /// It is in the takers ring.
    pub taker: bool,
    /// What it was last told about being the active exclusive consumer.
    pub reported_active: Option<bool>,
}

/// Who is active on an exclusive queue.
#[derive(Debug, Default)]
pub(super) struct Exclusive {
    /// The active consumer.
    pub active: Option<ConsumerId>,
    /// A consumer of higher priority waiting for the active one's unsettled
    /// deliveries to settle; nobody is dispatched to meanwhile.
    pub takeover: Option<ConsumerId>,
    /// Consumers that asked to be exclusive (the queue setting aside).
    pub requested: usize,
}

/// Consumers that may take messages now, by consumer priority, each ring in
/// round-robin order.
pub(super) type Takers = BTreeMap<Reverse<i32>, VecDeque<ConsumerId>>;

impl QueueState {
    /// The consumer's index in `consumers`.
    pub(super) fn consumer_index(&self, id: ConsumerId) -> Option<usize> {
        self.consumer_slots.get(&id).copied()
    }

    /// Rebuilds the id → index map after a removal.
    pub(super) fn reindex_consumers(&mut self) {
        self.consumer_slots.clear();
        for (i, c) in self.consumers.iter().enumerate() {
            self.consumer_slots.insert(c.id, i);
        }
    }

    /// Whether the queue has one active consumer at a time: its setting,
    /// an exclusive consumer attached, or an active one that went and still
    /// holds deliveries locked to a transaction.
    pub(super) fn exclusive_mode(&self) -> bool {
        self.settings.exclusive || self.exclusive.requested > 0 || self.exclusive.active.is_some()
    }

    /// Whether a consumer may be the active one of an exclusive queue.
    fn candidate(&self, c: &Consumer) -> bool {
        !c.options.browse
            && c.options.group_filter.is_none()
            && (self.settings.exclusive || c.options.exclusive)
    }

    /// Whether a consumer may receive messages at all now (credit aside).
    pub(super) fn eligible(&self, c: &Consumer) -> bool {
        if c.options.browse {
            return false;
        }
        if c.options.group_filter.is_some() || !self.exclusive_mode() {
            return true;
        }
        self.exclusive.active == Some(c.id) && self.exclusive.takeover.is_none()
    }

    /// Whether a consumer may take ungrouped messages and new groups now.
    fn wants_taker(&self, c: &Consumer) -> bool {
        has_room(c) && c.options.group_filter.is_none() && self.eligible(c)
    }

    /// Puts the consumer in or out of the takers ring, and re-lists its
    /// owned group heads, after its credit or eligibility changed.
    pub(super) fn refresh_consumer(&mut self, index: usize) {
        let want_taker = self.wants_taker(&self.consumers[index]);
        let c = &self.consumers[index];
        let (id, priority) = (c.id, Reverse(c.options.priority));
        if want_taker != c.taker {
            if want_taker {
                self.takers.entry(priority).or_default().push_back(id);
            } else if let Some(ring) = self.takers.get_mut(&priority) {
                ring.retain(|&t| t != id);
                if ring.is_empty() {
                    self.takers.remove(&priority);
                }
            }
            self.consumers[index].taker = want_taker;
        }
        let c = &self.consumers[index];
        let want = if has_room(c) && self.eligible(c) {
            c.heads.first().map(|(k, _)| *k)
        } else {
            None
        };
        if want != c.listed {
            if let Some(k) = c.listed {
                self.owned_heads.remove(&(k, id));
            }
            if let Some(k) = want {
                self.owned_heads.insert((k, id));
            }
            self.consumers[index].listed = want;
        }
    }

    /// After a delivery to a taker: to the back of its ring (round-robin).
    pub(super) fn rotate_taker(&mut self, id: ConsumerId, priority: i32) {
        if let Some(ring) = self.takers.get_mut(&Reverse(priority)) {
            if ring.front() == Some(&id) {
                ring.rotate_left(1);
            } else if let Some(pos) = ring.iter().position(|&t| t == id) {
                if let Some(t) = ring.remove(pos) {
                    ring.push_back(t);
                }
            }
        }
    }

    /// The taker that should get `entry`: the highest consumer priority
    /// first, round-robin among equals, skipping those it is not for.
    pub(super) fn pick_taker(&self, entry: &Entry) -> Option<usize> {
        self.takers
            .values()
            .flat_map(|ring| ring.iter())
            .find(|id| !entry.refused_by(**id))
            .and_then(|id| self.consumer_index(*id))
    }

    /// The taker a new group with head `entry` goes to: the highest
    /// priority, then the one owning the fewest groups, round-robin among
    /// equals; skipping those `skip` says.
    pub(super) fn pick_group_owner_where(
        &self,
        entry: &Entry,
        skip: &dyn Fn(ConsumerId) -> bool,
    ) -> Option<usize> {
        for ring in self.takers.values() {
            let best = ring
                .iter()
                .filter(|id| !entry.refused_by(**id) && !skip(**id))
                .filter_map(|id| self.consumer_index(*id))
                .min_by_key(|&i| self.consumers[i].owned);
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// Whether consumer `index` wants `entry`: it has no selector, or its
    /// selector matches. A non-match is remembered in the entry.
    pub(super) fn selects(&self, index: usize, entry: &Entry) -> bool {
        self.consumers[index]
            .options
            .filter
            .as_ref()
            .is_none_or(|f| f.matches(&entry.message))
    }

    /// Re-decides the active exclusive consumer after an attach, a detach or
    /// a settlement, and tells the consumers whose state changed.
    pub(super) fn update_active(&mut self, actions: &mut Vec<Action>) {
        let best = self
            .consumers
            .iter()
            .filter(|c| self.candidate(c))
            .max_by_key(|c| (c.options.priority, Reverse(c.attached)))
            .map(|c| c.id);
        if let Some(a) = self.exclusive.active {
            if self.consumer_index(a).is_none() && self.holds_deliveries(a) {
                // The active consumer went with deliveries locked to a
                // transaction: nobody gets messages until they are
                // committed or rolled back (back at the head, first).
                if self.exclusive.takeover != best {
                    self.exclusive.takeover = best;
                    self.refresh_all();
                }
                self.report_active(actions);
                return;
            }
        }
        if !self.settings.exclusive && self.exclusive.requested == 0 {
            if self.exclusive.active.take().is_some() {
                self.exclusive.takeover = None;
                self.refresh_all();
            }
            return;
        }
        let current = self
            .exclusive
            .active
            .filter(|a| self.consumer_index(*a).is_some());
        match (current, best) {
            (_, None) => {
                self.exclusive.active = None;
                self.exclusive.takeover = None;
            }
            (None, Some(b)) => self.switch_active(b),
            (Some(a), Some(b)) if a == b => {
                if self.exclusive.takeover.take().is_some() {
                    self.refresh_all();
                }
            }
            (Some(a), Some(b)) => {
                // A newcomer of higher priority: stop dispatching to the
                // active one; switch once it has nothing unsettled.
                let unsettled = self
                    .consumer_index(a)
                    .map_or(0, |i| self.consumers[i].unsettled);
                if unsettled == 0 {
                    self.switch_active(b);
                } else if self.exclusive.takeover != Some(b) {
                    tracing::info!(queue = %self.name, active = a.0, next = b.0, unsettled, "exclusive takeover waits for the active consumer's unsettled deliveries");
                    self.exclusive.takeover = Some(b);
                    self.refresh_all();
                }
            }
        }
        self.report_active(actions);
    }

    /// Makes `next` the active consumer; the groups of the one before are
    /// released (it has nothing unsettled by now).
    fn switch_active(&mut self, next: ConsumerId) {
        let before = self.exclusive.active.replace(next);
        self.exclusive.takeover = None;
        if let Some(before) = before {
            self.release_groups_of(before);
        }
        tracing::info!(queue = %self.name, active = next.0, before = before.map(|b| b.0), "active exclusive consumer");
        self.refresh_all();
    }

    /// Flows telling exclusive consumers whether they are active, for those
    /// whose state changed since they were last told.
    fn report_active(&mut self, actions: &mut Vec<Action>) {
        let available = self.available();
        for i in 0..self.consumers.len() {
            let c = &self.consumers[i];
            if !self.candidate(c) {
                continue;
            }
            let active = self.exclusive.active == Some(c.id);
            if c.reported_active == Some(active) {
                continue;
            }
            actions.push(Action::Flow(FlowState {
                consumer: c.id,
                delivery_count: c.delivery_count,
                credit: c.credit,
                available,
                drain: c.drain,
                active: Some(active),
            }));
            self.consumers[i].reported_active = Some(active);
        }
    }

    /// Re-lists every consumer (eligibility changed for all).
    pub(super) fn refresh_all(&mut self) {
        for i in 0..self.consumers.len() {
            self.refresh_consumer(i);
        }
    }

    /// Whether the consumer was granted the exclusivity it asked for (the
    /// protocol layer echoes it in its attach).
    pub fn is_exclusive(&self, id: ConsumerId) -> bool {
        self.consumer_index(id)
            .is_some_and(|i| self.candidate(&self.consumers[i]))
    }

    /// The active exclusive consumer, if the queue is exclusive.
    pub fn active_consumer(&self) -> Option<ConsumerId> {
        self.exclusive.active
    }
}

/// Whether a consumer can take one more delivery: credit, and fewer
/// unsettled deliveries than its limit.
pub(super) fn has_room(c: &Consumer) -> bool {
    c.credit > 0 && (c.options.max_unsettled == 0 || c.unsettled < c.options.max_unsettled)
}
