//! Dispatch: which queued message goes to which consumer next.
//!
//! Messages go in priority order, then arrival order, across three kinds of
//! candidates, each found without walking groups or consumers:
//! - the first ungrouped message, to the next taker (highest consumer
//!   priority with credit, round-robin among equals, skipping those that
//!   said `undeliverable-here` for it);
//! - the first unowned group's head, which assigns the group to the taker
//!   owning the fewest groups;
//! - the best head among groups whose owner has credit (`owned_heads`).
//!
//! Browsers see copies without acquiring; drains complete last.

use std::ops::Bound;
use std::sync::Arc;

use super::groups::{Slot, NO_GROUP};
use super::{Action, Entry, Key, QueueState, Unacked};
use crate::core::outbox::{Delivery, FlowState};
use crate::core::ConsumerId;

/// How many queued candidates one dispatch step looks past when the first
/// is excluded for every taker (only `undeliverable-here` does that);
/// bounds the work per step.
const SCAN_LIMIT: usize = 1024;

/// The next delivery decided.
#[derive(Debug, Clone, Copy)]
enum Choice {
    /// An ungrouped message, to consumer `index`.
    Ungrouped(Key, usize),
    /// The head of an unowned group, which consumer `index` will own.
    NewGroup(Key, Slot, usize),
    /// The head of a group consumer `index` owns.
    Owned(Key, Slot, usize),
}

impl Choice {
    /// The position of the message it delivers.
    fn key(&self) -> Key {
        match *self {
            Choice::Ungrouped(k, _) | Choice::NewGroup(k, _, _) | Choice::Owned(k, _, _) => k,
        }
    }
}

impl QueueState {
    /// Hands queued messages to consumers with credit, feeds browsers, then
    /// completes drains that ran out of messages.
    pub(super) fn dispatch(&mut self, actions: &mut Vec<Action>) {
        loop {
            let mut expired = false;
            let owned = self.owned_choice(actions, &mut expired);
            let (ungrouped, unowned) = if self.takers.is_empty() {
                (None, None)
            } else {
                (
                    self.ungrouped_choice(actions, &mut expired),
                    self.unowned_choice(actions, &mut expired),
                )
            };
            let best = [owned, ungrouped, unowned]
                .into_iter()
                .flatten()
                .min_by_key(Choice::key);
            match best {
                Some(Choice::Ungrouped(key, index)) => {
                    if let Some(entry) = self.remove_ready(&key) {
                        self.deliver(entry, index, false, actions);
                    }
                }
                Some(Choice::NewGroup(_, slot, index)) => {
                    let owner = self.consumers[index].id;
                    self.assign(slot, owner);
                    self.deliver_from_group(slot, index, actions);
                }
                Some(Choice::Owned(_, slot, index)) => {
                    self.deliver_from_group(slot, index, actions)
                }
                None if expired => continue,
                None => break,
            }
        }
        if self.browsers > 0 {
            self.feed_browsers(actions);
        }
        if !std::mem::take(&mut self.drains) {
            return;
        }
        let available = self.available();
        for index in 0..self.consumers.len() {
            let consumer = &mut self.consumers[index];
            if !consumer.drain {
                continue;
            }
            // Nothing left for it: the drain uses up the rest of its credit.
            consumer.delivery_count = consumer.delivery_count.wrapping_add(consumer.credit);
            consumer.credit = 0;
            consumer.drain = false;
            actions.push(Action::Flow(FlowState {
                consumer: consumer.id,
                delivery_count: consumer.delivery_count,
                credit: 0,
                available,
                drain: true,
                active: None,
            }));
            self.refresh_consumer(index);
        }
    }

    /// The best head among groups whose owner has credit. An expired head
    /// is expired on the way (and `expired` set); a head the owner's
    /// selector does not match is marked so and its group unlisted.
    fn owned_choice(&mut self, actions: &mut Vec<Action>, expired: &mut bool) -> Option<Choice> {
        loop {
            let &(key, consumer) = self.owned_heads.first()?;
            let index = self.consumer_index(consumer)?;
            let &(_, slot) = self.consumers[index].heads.first()?;
            if self.expire_group_head(slot, actions) {
                *expired = true;
                continue;
            }
            let selected = self
                .groups
                .get(slot)
                .and_then(|g| g.queue.front())
                .is_some_and(|head| self.selects(index, head));
            if !selected {
                // Waits at the head of its group for an owner that selects it.
                if let Some(head) = self.groups.get_mut(slot).and_then(|g| g.queue.front_mut()) {
                    head.filtered_out(consumer);
                }
                self.relist(slot);
                continue;
            }
            return Some(Choice::Owned(key, slot, index));
        }
    }

    /// The first taker, in priority and round-robin order, that `entry` is
    /// for and whose selector matches it; consumers whose selector does not
    /// match are added to `marks`.
    fn choose_taker(&self, entry: &Entry, marks: &mut Vec<ConsumerId>) -> Option<usize> {
        for id in self.takers.values().flat_map(|ring| ring.iter()) {
            if entry.refused_by(*id) {
                continue;
            }
            let index = self.consumer_index(*id)?;
            if self.selects(index, entry) {
                return Some(index);
            }
            marks.push(*id);
        }
        None
    }

    /// The first ungrouped message some taker may have.
    fn ungrouped_choice(
        &mut self,
        actions: &mut Vec<Action>,
        expired: &mut bool,
    ) -> Option<Choice> {
        if self.ungrouped_held() {
            return None;
        }
        let mut due = Vec::new();
        let mut marks: Vec<(Key, ConsumerId)> = Vec::new();
        let mut choice = None;
        // An exclusive queue keeps its order: a head its one consumer cannot
        // take (undeliverable-here) waits for another consumer, and nothing
        // overtakes it. (A head the consumer's selector does not match is
        // simply not for it.)
        let exclusive = self.exclusive_mode();
        let filters = self.filters > 0;
        let mut refused = Vec::new();
        for (key, entry) in self.ready.iter().take(SCAN_LIMIT) {
            if entry.expires_at.is_some_and(|at| at <= self.now) {
                due.push(*key);
                continue;
            }
            let index = if filters {
                refused.clear();
                let index = self.choose_taker(entry, &mut refused);
                marks.extend(refused.iter().map(|c| (*key, *c)));
                index
            } else {
                self.pick_taker(entry)
            };
            if let Some(index) = index {
                choice = Some(Choice::Ungrouped(*key, index));
                break;
            }
            if exclusive && entry.undeliverable_somewhere() {
                break;
            }
        }
        for (key, consumer) in marks {
            if let Some(entry) = self.ready.get_mut(&key) {
                entry.filtered_out(consumer);
            }
        }
        for key in due {
            if let Some(entry) = self.remove_ready(&key) {
                self.expire(entry, actions);
                *expired = true;
            }
        }
        choice
    }

    /// The first unowned group whose head some taker may have.
    fn unowned_choice(&mut self, actions: &mut Vec<Action>, expired: &mut bool) -> Option<Choice> {
        let mut due = Vec::new();
        let mut marks: Vec<(Slot, ConsumerId)> = Vec::new();
        let mut choice = None;
        let filters = self.filters > 0;
        for &(key, slot) in self.groups.unowned.iter().take(SCAN_LIMIT) {
            let Some(head) = self.groups.get(slot).and_then(|g| g.queue.front()) else {
                continue;
            };
            if head.expires_at.is_some_and(|at| at <= self.now) {
                due.push(slot);
                continue;
            }
            if filters {
                // Consumers whose selector does not match the head are
                // not candidates (and are remembered as such).
                for id in self.takers.values().flat_map(|ring| ring.iter()) {
                    if head.refused_by(*id) {
                        continue;
                    }
                    if let Some(index) = self.consumer_index(*id) {
                        if !self.selects(index, head) {
                            marks.push((slot, *id));
                        }
                    }
                }
            }
            let refused = |id: ConsumerId| marks.iter().any(|(s, c)| *s == slot && *c == id);
            let index = self.pick_group_owner_where(head, &refused);
            if let Some(index) = index {
                choice = Some(Choice::NewGroup(key, slot, index));
                break;
            }
        }
        for (slot, consumer) in marks {
            if let Some(head) = self.groups.get_mut(slot).and_then(|g| g.queue.front_mut()) {
                head.filtered_out(consumer);
            }
        }
        for slot in due {
            *expired |= self.expire_group_head(slot, actions);
        }
        choice
    }

    /// Expires a group's head if it is due; true if it did.
    fn expire_group_head(&mut self, slot: Slot, actions: &mut Vec<Action>) -> bool {
        let now = self.now;
        match self.groups.get(slot).and_then(|g| g.queue.front()) {
            Some(head) if head.expires_at.is_some_and(|at| at <= now) => {}
            _ => return false,
        }
        if let Some(entry) = self.remove_grouped(slot, None) {
            self.expire(entry, actions);
        }
        self.settle_idle(slot);
        true
    }

    /// Delivers the head of a group to consumer `index` (its owner).
    fn deliver_from_group(&mut self, slot: Slot, index: usize, actions: &mut Vec<Action>) {
        let presettled = self.consumers[index].options.presettled;
        let Some(g) = self.groups.get_mut(slot) else {
            return;
        };
        if g.queue.is_empty() {
            return;
        }
        let first = std::mem::take(&mut g.first_for_owner);
        g.last_delivery = Some(self.now);
        if !presettled {
            g.inflight += 1;
        }
        let Some(entry) = self.remove_grouped(slot, None) else {
            return;
        };
        self.deliver(entry, index, first, actions);
    }

    /// Gives `entry` to consumer `index`.
    fn deliver(
        &mut self,
        mut entry: Entry,
        index: usize,
        group_first: bool,
        actions: &mut Vec<Action>,
    ) {
        let consumer = &mut self.consumers[index];
        consumer.credit -= 1;
        consumer.delivery_count = consumer.delivery_count.wrapping_add(1);
        let (id, priority, settled) = (
            consumer.id,
            consumer.options.priority,
            consumer.options.presettled,
        );
        if !settled {
            consumer.unsettled += 1;
        }
        let delivery_id = self.next_delivery_id;
        self.next_delivery_id += 1;
        let first_acquirer = !entry.acquired;
        self.counters.delivered += 1;
        if !first_acquirer {
            self.counters.redelivered += 1;
        }
        if settled {
            self.counters.acked += 1;
        }
        entry.acquired = true;
        // A paged-out body is read by the loader for the connection; a
        // pre-settled delivery leaves the queue now, but the record removing
        // it from the store waits for that read (it travels with it).
        let paged = self.body_of(&entry);
        let release = if settled { self.retire(&entry) } else { None };
        let (release, store) = match release {
            Some(r) if paged.is_some() => (Some(r), None),
            r => (None, r),
        };
        actions.push(Action::Deliver(Delivery {
            consumer: id,
            delivery_id,
            message: Arc::clone(&entry.message),
            delivery_count: entry.delivery_count,
            first_acquirer,
            settled,
            paged,
            release,
            group_first,
        }));
        let slot = entry.group;
        if settled {
            let closes = entry.closes;
            if let Some(r) = store {
                actions.push(Action::Store(r));
            }
            if slot != NO_GROUP {
                if closes {
                    self.close_group(slot, id);
                }
                self.settle_idle(slot);
            }
        } else {
            self.unacked.insert(
                delivery_id,
                Unacked {
                    entry,
                    consumer: id,
                    locked: false,
                },
            );
        }
        self.rotate_taker(id, priority);
        self.refresh_consumer(index);
    }

    /// Browsers with credit see the next messages after where they were,
    /// without acquiring them (pre-settled copies), grouped or not.
    fn feed_browsers(&mut self, actions: &mut Vec<Action>) {
        for index in 0..self.consumers.len() {
            let consumer = &self.consumers[index];
            if !consumer.options.browse || consumer.credit == 0 {
                continue;
            }
            let start = match consumer.browsed_to {
                Some(key) => Bound::Excluded(key),
                None => Bound::Unbounded,
            };
            let credit = consumer.credit as usize;
            let now = self.now;
            let filter = consumer.options.filter.clone();
            let wanted = |e: &Entry| {
                e.expires_at.is_none_or(|at| at > now)
                    && filter.as_ref().is_none_or(|f| f.matches(&e.message))
            };
            // The next `credit` live messages after the cursor, ungrouped
            // and grouped merged by position.
            let mut next: Vec<(Key, &Entry)> = self
                .ready
                .range((start, Bound::Unbounded))
                .filter(|(_, e)| wanted(e))
                .take(credit)
                .map(|(k, e)| (*k, e))
                .collect();
            if self.groups.queued > 0 {
                for g in self.groups.slots.iter().flatten() {
                    next.extend(
                        g.queue
                            .iter()
                            .filter(|e| {
                                let k = e.key();
                                (match start {
                                    Bound::Excluded(s) => k > s,
                                    _ => true,
                                }) && wanted(e)
                            })
                            .map(|e| (e.key(), e)),
                    );
                }
                next.sort_by_key(|(k, _)| *k);
                next.truncate(credit);
            }
            let deliveries: Vec<(Key, Delivery)> = next
                .iter()
                .map(|(key, entry)| {
                    (
                        *key,
                        Delivery {
                            consumer: consumer.id,
                            delivery_id: 0,
                            message: Arc::clone(&entry.message),
                            delivery_count: entry.delivery_count,
                            first_acquirer: false,
                            settled: true,
                            paged: self.body_of(entry),
                            release: None,
                            group_first: false,
                        },
                    )
                })
                .collect();
            let sent = deliveries.len() as u32;
            let mut last = consumer.browsed_to;
            for (key, mut d) in deliveries {
                d.delivery_id = self.next_delivery_id;
                self.next_delivery_id += 1;
                last = Some(key);
                actions.push(Action::Deliver(d));
            }
            let consumer = &mut self.consumers[index];
            consumer.credit -= sent;
            consumer.delivery_count = consumer.delivery_count.wrapping_add(sent);
            consumer.browsed_to = last;
        }
    }
}
