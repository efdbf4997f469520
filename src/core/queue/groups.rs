//! Message groups (SPEC §5, §6): each group's queued messages, its owner,
//! its deliveries in flight, hand-overs, idle forgetting and the
//! `max-groups` buckets.
//!
//! A group's queued messages live in the group, not in the queue's ungrouped
//! set, so a group that cannot move (its owner has no credit, a strict group
//! with a delivery in flight, a hand-over in progress) costs dispatch
//! nothing. A group whose head may be delivered now is *listed*: under its
//! owner (`Consumer::heads`) or, with no owner, in `unowned`; each consumer
//! with credit is listed in the queue's `owned_heads` by its best head. So
//! finding the next message never walks groups or consumers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;

use foldhash::HashMap as FoldMap;
use std::sync::Arc;

use super::{Entry, Key, QueueState};
use crate::core::settings::GroupOrdering;
use crate::core::ConsumerId;

/// A group's index in the group table.
pub(super) type Slot = u32;

/// Marks an entry that belongs to no group.
pub(super) const NO_GROUP: Slot = u32::MAX;

/// A group's identity: its id, or one of the `max-groups` buckets that new
/// groups are hashed into once the cap is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum GroupKey {
    /// An exact group.
    Named(Arc<str>),
    /// A bucket of groups past the cap.
    Bucket(u32),
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupKey::Named(id) => f.write_str(id),
            GroupKey::Bucket(n) => write!(f, "#bucket-{n}"),
        }
    }
}

/// Where a group is listed for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listing {
    /// Not dispatchable now.
    No,
    /// Unowned, its head at this position.
    Unowned(Key),
    /// Owned by this consumer, its head at this position.
    Owned(ConsumerId, Key),
}

/// A move of a group to another consumer that waits for the group's
/// deliveries in flight to settle (order is never broken by a move).
#[derive(Debug, Clone, Copy)]
pub(super) struct Handover {
    /// The new owner; None releases the group to whoever takes it next.
    pub to: Option<ConsumerId>,
    /// Past this time (ms) the move is cancelled and the group stays
    /// (operator rebalances); None waits as long as it takes.
    pub deadline: Option<u64>,
}

/// A group's queued messages in order: by priority then arrival, or by
/// arrival alone in a strict group. Messages almost always arrive in order
/// and leave from the front, so a deque beats a tree (and keeps its buffer
/// while the group drains and refills).
#[derive(Debug, Default)]
pub(super) struct GroupQueue {
    /// The messages, sorted by position.
    entries: VecDeque<Entry>,
    /// Order by arrival alone.
    strict: bool,
}

impl GroupQueue {
    /// Messages queued in the group.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// An empty queue.
    fn new(strict: bool) -> Self {
        Self {
            entries: VecDeque::new(),
            strict,
        }
    }

    /// An entry's position in the group.
    fn position(&self, e: &Entry) -> Key {
        if self.strict {
            (std::cmp::Reverse(0), e.seq)
        } else {
            e.key()
        }
    }

    /// Puts an entry at its position (usually the back).
    pub fn push(&mut self, entry: Entry) {
        let p = self.position(&entry);
        match self.entries.back() {
            Some(last) if self.position(last) > p => {
                let at = self.entries.partition_point(|e| self.position(e) < p);
                self.entries.insert(at, entry);
            }
            _ => self.entries.push_back(entry),
        }
    }

    /// The head.
    pub fn front(&self) -> Option<&Entry> {
        self.entries.front()
    }

    /// The head, to mark it.
    pub fn front_mut(&mut self) -> Option<&mut Entry> {
        self.entries.front_mut()
    }

    /// Takes the head.
    pub fn pop_front(&mut self) -> Option<Entry> {
        self.entries.pop_front()
    }

    /// Takes the entry of queue position `key` (priority, seq).
    pub fn remove(&mut self, key: Key) -> Option<Entry> {
        let p = if self.strict {
            (std::cmp::Reverse(0), key.1)
        } else {
            key
        };
        let at = self.entries.partition_point(|e| self.position(e) < p);
        if self.entries.get(at).is_some_and(|e| e.seq == key.1) {
            self.entries.remove(at)
        } else {
            None
        }
    }

    /// The entry of queue position `key`, if queued here.
    pub fn get(&self, key: Key) -> Option<&Entry> {
        self.entries.iter().find(|e| e.seq == key.1)
    }

    /// The oldest entry by arrival.
    pub fn oldest(&self) -> Option<&Entry> {
        self.entries.iter().min_by_key(|e| e.seq)
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Takes every entry.
    pub fn take(&mut self) -> VecDeque<Entry> {
        std::mem::take(&mut self.entries)
    }
}

/// One group.
#[derive(Debug)]
pub(super) struct Group {
    /// Its identity.
    pub key: GroupKey,
    /// Its queued messages.
    pub queue: GroupQueue,
    /// The consumer it is pinned to.
    pub owner: Option<ConsumerId>,
    /// Its deliveries awaiting an outcome (or a commit).
    pub inflight: u32,
    /// The next delivery to the owner is its first since it got the group.
    pub first_for_owner: bool,
    /// A move waiting for `inflight` to reach zero.
    pub handover: Option<Handover>,
    /// Held by a consumer's group filter: never forgotten, never moved.
    pub pinned: bool,
    /// Its head reached `max-delivery-attempts` with `poison = hold`: the
    /// group stops until an operator releases it.
    pub held: bool,
    /// Its head waits out a redelivery delay until then (ms), and the
    /// group with it.
    pub delayed_until: Option<u64>,
    /// Empty and settled since this time (ms): forgotten after the idle timeout.
    pub idle_since: Option<u64>,
    /// It has an entry in the idle list (at most one, so the list stays as
    /// long as the number of groups however often a group empties).
    pub idle_listed: bool,
    /// Where it is listed now.
    pub listed: Listing,
    /// Distinguishes this group from earlier users of the slot.
    pub generation: u64,
    /// When it got its present owner, lost it, or was held or released
    /// (ms; 0 until then), for operators.
    pub since: u64,
    /// When a message of it was last delivered (ms), for operators.
    pub last_delivery: Option<u64>,
}

/// The hash that puts a group id in a bucket past `max-groups`: the same
/// everywhere and always.
const BUCKET_HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x6f72_646f);

/// Every group of a queue.
#[derive(Debug, Default)]
pub(super) struct Groups {
    /// The groups; freed slots are reused.
    pub slots: Vec<Option<Group>>,
    /// Free slots.
    free: Vec<Slot>,
    /// Exact groups by id (foldhash: fast, and seeded per process, so
    /// hostile group ids cannot be chosen to collide).
    named: FoldMap<Arc<str>, Slot>,
    /// Buckets by number.
    buckets: FoldMap<u32, Slot>,
    /// Unowned groups whose head may be delivered, by head position.
    pub unowned: BTreeSet<(Key, Slot)>,
    /// Groups that went idle, roughly oldest first: (since, slot,
    /// generation); a group's entry is renewed, not repeated, when it goes
    /// idle again.
    idle: VecDeque<(u64, Slot, u64)>,
    /// Groups with a hand-over that has a deadline.
    pub deadlines: Vec<Slot>,
    /// Messages queued in groups.
    pub queued: usize,
    /// The next generation number.
    next_generation: u64,
}

impl Groups {
    /// The group in `slot` (which must be live).
    pub fn get(&self, slot: Slot) -> Option<&Group> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The group in `slot`, mutably.
    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut Group> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// Live groups.
    pub fn len(&self) -> usize {
        self.named.len() + self.buckets.len()
    }

    /// The slot of a live group, by the id a message or a filter names.
    pub fn find(&self, id: &str) -> Option<Slot> {
        self.named.get(id).copied()
    }

    /// The group a message of group `id` joins, created if need be. Past
    /// `max_groups` live groups a new id is hashed into a bucket; an id
    /// whose bucket is live joins the bucket too, so a group never has
    /// messages in two places.
    pub fn slot_for(&mut self, id: &str, max_groups: u32, strict: bool) -> Slot {
        if let Some(&slot) = self.named.get(id) {
            return slot;
        }
        if max_groups > 0 {
            // A fixed hash: an id keeps its bucket for the queue's life, across
            // restarts, and on every replica applying the same commands (the
            // map's own hasher is seeded per process). Ids chosen to share a
            // bucket only share it: the map is not at stake.
            let bucket = (BUCKET_HASH.hash_one(id) % u64::from(max_groups)) as u32;
            if let Some(&slot) = self.buckets.get(&bucket) {
                return slot;
            }
            if self.named.len() >= max_groups as usize {
                let slot = self.create(GroupKey::Bucket(bucket), strict);
                self.buckets.insert(bucket, slot);
                return slot;
            }
        }
        let id: Arc<str> = Arc::from(id);
        let slot = self.create(GroupKey::Named(Arc::clone(&id)), strict);
        self.named.insert(id, slot);
        slot
    }

    /// A new, empty, unowned group.
    fn create(&mut self, key: GroupKey, strict: bool) -> Slot {
        self.next_generation += 1;
        let group = Group {
            key,
            queue: GroupQueue::new(strict),
            owner: None,
            inflight: 0,
            first_for_owner: false,
            handover: None,
            pinned: false,
            held: false,
            delayed_until: None,
            idle_since: None,
            idle_listed: false,
            listed: Listing::No,
            generation: self.next_generation,
            since: 0,
            last_delivery: None,
        };
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(group);
                slot
            }
            None => {
                self.slots.push(Some(group));
                (self.slots.len() - 1) as Slot
            }
        }
    }

    /// Removes a group (it must be empty, settled and unlisted).
    fn remove(&mut self, slot: Slot) -> Option<Group> {
        let group = self.slots.get_mut(slot as usize)?.take()?;
        match &group.key {
            GroupKey::Named(id) => {
                self.named.remove(id);
            }
            GroupKey::Bucket(n) => {
                self.buckets.remove(n);
            }
        }
        self.free.push(slot);
        self.deadlines.retain(|&s| s != slot);
        Some(group)
    }

    /// Slots of live groups.
    pub fn live_slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, g)| g.is_some())
            .map(|(i, _)| i as Slot)
    }
}

impl QueueState {
    /// Whether the queue keeps at most one delivery of a group in flight.
    pub(super) fn strict(&self) -> bool {
        self.settings.group_ordering == GroupOrdering::Strict
    }

    /// Where a group should be listed now.
    fn listing(&self, slot: Slot) -> Listing {
        let Some(g) = self.groups.get(slot) else {
            return Listing::No;
        };
        let Some(head) = g.queue.front() else {
            return Listing::No;
        };
        if g.handover.is_some()
            || g.held
            || (self.strict() && g.inflight > 0)
            || self.group_delayed(slot)
        {
            return Listing::No;
        }
        match g.owner {
            None => Listing::Unowned(head.key()),
            // A head its owner said it cannot take waits for another owner.
            Some(owner) if head.refused_by(owner) => Listing::No,
            Some(owner) => Listing::Owned(owner, head.key()),
        }
    }

    /// Brings a group's listing up to date after anything about it changed.
    /// Returns whether the listing changed.
    pub(super) fn relist(&mut self, slot: Slot) -> bool {
        let want = self.listing(slot);
        let Some(g) = self.groups.get_mut(slot) else {
            return false;
        };
        let was = std::mem::replace(&mut g.listed, want);
        if was == want {
            return false;
        }
        match was {
            Listing::No => {}
            Listing::Unowned(k) => {
                self.groups.unowned.remove(&(k, slot));
            }
            Listing::Owned(c, k) => {
                if let Some(i) = self.consumer_index(c) {
                    self.consumers[i].heads.remove(&(k, slot));
                    self.refresh_consumer(i);
                }
            }
        }
        match want {
            Listing::No => {}
            Listing::Unowned(k) => {
                self.groups.unowned.insert((k, slot));
            }
            Listing::Owned(c, k) => {
                if let Some(i) = self.consumer_index(c) {
                    self.consumers[i].heads.insert((k, slot));
                    self.refresh_consumer(i);
                }
            }
        }
        true
    }

    /// Puts an entry into its group's queue.
    pub(super) fn insert_grouped(&mut self, slot: Slot, entry: Entry) {
        let Some(g) = self.groups.get_mut(slot) else {
            return;
        };
        g.idle_since = None;
        g.queue.push(entry);
        self.groups.queued += 1;
        self.relist(slot);
    }

    /// Takes the entry at queue position `key` out of its group's queue,
    /// or the group's head with `None`.
    pub(super) fn remove_grouped(&mut self, slot: Slot, key: Option<Key>) -> Option<Entry> {
        let queue = &mut self.groups.get_mut(slot)?.queue;
        let entry = match key {
            Some(k) => queue.remove(k)?,
            None => queue.pop_front()?,
        };
        self.groups.queued -= 1;
        self.ready_bytes -= entry.size as usize;
        self.relist(slot);
        Some(entry)
    }

    /// Makes `owner` the group's owner.
    pub(super) fn assign(&mut self, slot: Slot, owner: ConsumerId) {
        let Some(g) = self.groups.get_mut(slot) else {
            return;
        };
        let before = g.owner.replace(owner);
        g.first_for_owner = true;
        g.since = self.now;
        let key = g.key.to_string();
        if let Some(i) = before.and_then(|b| self.consumer_index(b)) {
            self.consumers[i].owned -= 1;
        }
        if let Some(i) = self.consumer_index(owner) {
            self.consumers[i].owned += 1;
        }
        tracing::debug!(queue = %self.name, group = %key, consumer = owner.0, before = before.map(|b| b.0), "group assigned");
        self.relist(slot);
    }

    /// The group has no owner any more (its deliveries in flight are back
    /// or settled); it is forgotten if it is also empty.
    pub(super) fn unassign(&mut self, slot: Slot) {
        let Some(g) = self.groups.get_mut(slot) else {
            return;
        };
        let before = g.owner.take();
        g.pinned = false;
        g.first_for_owner = false;
        g.since = self.now;
        let key = g.key.to_string();
        if let Some(i) = before.and_then(|b| self.consumer_index(b)) {
            self.consumers[i].owned -= 1;
        }
        if let Some(before) = before {
            tracing::debug!(queue = %self.name, group = %key, consumer = before.0, "group released");
        }
        self.relist(slot);
        self.settle_idle(slot);
    }

    /// A delivery of the group settled or came back: completes a hand-over
    /// that waited for it, and forgets or idles the group if it is done.
    /// Returns whether something may now be dispatched that could not be.
    pub(super) fn group_settled(&mut self, slot: Slot) -> bool {
        let Some(g) = self.groups.get_mut(slot) else {
            return false;
        };
        g.inflight = g.inflight.saturating_sub(1);
        let mut moved = false;
        if g.inflight == 0 {
            if let Some(h) = g.handover.take() {
                let key = g.key.to_string();
                tracing::info!(queue = %self.name, group = %key, to = h.to.map(|t| t.0), "group handed over");
                match h.to.filter(|t| self.consumer_index(*t).is_some()) {
                    Some(to) => self.assign(slot, to),
                    None => self.unassign(slot),
                }
                moved = true;
            }
        }
        let listed = self.relist(slot);
        self.settle_idle(slot);
        moved || listed
    }

    /// An empty group with nothing in flight: forgotten now if it has no
    /// owner or the idle timeout is zero, else remembered as idle.
    pub(super) fn settle_idle(&mut self, slot: Slot) {
        let timeout = self.settings.group_idle_timeout.as_millis() as u64;
        let now = self.now;
        let Some(g) = self.groups.get_mut(slot) else {
            return;
        };
        if !g.queue.is_empty() || g.inflight > 0 || g.pinned || g.handover.is_some() || g.held {
            return;
        }
        if g.owner.is_none() || timeout == 0 {
            self.forget(slot);
        } else if g.idle_since.is_none() {
            g.idle_since = Some(now);
            if !g.idle_listed {
                g.idle_listed = true;
                let generation = g.generation;
                self.groups.idle.push_back((now, slot, generation));
            }
        }
    }

    /// Drops a group's state.
    fn forget(&mut self, slot: Slot) {
        let owner = self.groups.get(slot).and_then(|g| g.owner);
        if let Some(g) = self.groups.get_mut(slot) {
            g.queue.take();
        }
        self.relist(slot);
        if let Some(i) = owner.and_then(|o| self.consumer_index(o)) {
            self.consumers[i].owned -= 1;
        }
        self.groups.remove(slot);
    }

    /// Forgets groups idle past the timeout and cancels hand-overs past
    /// their deadline (the owner's timer).
    pub(super) fn tick_groups(&mut self) {
        let timeout = self.settings.group_idle_timeout.as_millis() as u64;
        let now = self.now;
        let mut renewed = Vec::new();
        while let Some(&(since, slot, generation)) = self.groups.idle.front() {
            if since.saturating_add(timeout) > now {
                break;
            }
            self.groups.idle.pop_front();
            let Some(g) = self
                .groups
                .get_mut(slot)
                .filter(|g| g.generation == generation)
            else {
                continue;
            };
            match g.idle_since {
                // Idle all along: forgotten.
                Some(s) if s.saturating_add(timeout) <= now => self.forget(slot),
                // Busy since, and idle again more recently: check it later.
                Some(s) => renewed.push((s, slot, generation)),
                None => g.idle_listed = false,
            }
        }
        self.groups.idle.extend(renewed);
        let due: Vec<Slot> = self
            .groups
            .deadlines
            .iter()
            .copied()
            .filter(|&s| {
                self.groups
                    .get(s)
                    .and_then(|g| g.handover)
                    .and_then(|h| h.deadline)
                    .is_some_and(|d| d <= now)
            })
            .collect();
        for slot in due {
            self.groups.deadlines.retain(|&s| s != slot);
            if let Some(g) = self.groups.get_mut(slot) {
                g.handover = None;
                let key = g.key.to_string();
                tracing::warn!(queue = %self.name, group = %key, "group hand-over timed out with deliveries still unsettled: the group stays with its owner");
            }
            self.relist(slot);
        }
    }

    /// Releases every group a consumer owns (it left, or lost the active
    /// role). Their deliveries in flight must already be back.
    pub(super) fn release_groups_of(&mut self, consumer: ConsumerId) {
        let owned: Vec<Slot> = self
            .groups
            .live_slots()
            .filter(|&s| {
                self.groups
                    .get(s)
                    .is_some_and(|g| g.owner == Some(consumer))
            })
            .collect();
        for slot in owned {
            let Some(g) = self.groups.get_mut(slot) else {
                continue;
            };
            if g.inflight == 0 {
                self.unassign(slot);
                continue;
            }
            // Deliveries still locked to a transaction: the group moves once
            // they are committed or rolled back (a rollback puts them back at
            // its head), never before, so nothing overtakes them.
            g.pinned = false;
            match &mut g.handover {
                Some(h) => h.deadline = None,
                None => {
                    g.handover = Some(Handover {
                        to: None,
                        deadline: None,
                    })
                }
            }
            self.groups.deadlines.retain(|&s| s != slot);
            self.relist(slot);
        }
        let moving: Vec<Slot> = self
            .groups
            .live_slots()
            .filter(|&s| {
                self.groups
                    .get(s)
                    .and_then(|g| g.handover)
                    .is_some_and(|h| h.to == Some(consumer))
            })
            .collect();
        for slot in moving {
            if let Some(g) = self.groups.get_mut(slot) {
                g.handover = None;
            }
            self.relist(slot);
        }
    }

    /// Moves a group to `to` once its deliveries in flight settle (at once
    /// if there are none). With a deadline, the move is cancelled if they
    /// take longer.
    pub(super) fn hand_over(&mut self, slot: Slot, to: Option<ConsumerId>, deadline: Option<u64>) {
        let Some(g) = self.groups.get_mut(slot) else {
            return;
        };
        if g.inflight == 0 {
            match to {
                Some(to) => self.assign(slot, to),
                None => self.unassign(slot),
            }
            return;
        }
        g.handover = Some(Handover { to, deadline });
        if deadline.is_some() {
            self.groups.deadlines.push(slot);
        }
        self.relist(slot);
    }

    /// Spreads the groups evenly over the consumers that take groups (an
    /// operator's rebalance). A group with deliveries in flight moves once
    /// they settle, or stays if that takes longer than
    /// `group-handover-timeout`. Returns how many groups were moved or set
    /// to move.
    pub fn rebalance(&mut self) -> usize {
        if self.exclusive_mode() {
            return 0;
        }
        let takers: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|c| !c.options.browse && c.options.group_filter.is_none())
            .map(|c| c.id)
            .collect();
        if takers.len() < 2 {
            return 0;
        }
        let mut by_owner: HashMap<ConsumerId, Vec<Slot>> =
            takers.iter().map(|&t| (t, Vec::new())).collect();
        for slot in self.groups.live_slots() {
            if let Some(g) = self.groups.get(slot) {
                if let (Some(owner), false, None) = (g.owner, g.pinned, g.handover) {
                    if let Some(list) = by_owner.get_mut(&owner) {
                        list.push(slot);
                    }
                }
            }
        }
        let deadline = self
            .now
            .saturating_add(self.settings.group_handover_timeout.as_millis() as u64);
        let mut moved = 0;
        while let (Some(most), Some(least)) = (
            takers.iter().max_by_key(|t| by_owner[t].len()).copied(),
            takers.iter().min_by_key(|t| by_owner[t].len()).copied(),
        ) {
            if by_owner[&most].len() <= by_owner[&least].len() + 1 {
                break;
            }
            // Prefer a group with nothing in flight: it moves at once.
            let list = by_owner
                .get_mut(&most)
                .map(std::mem::take)
                .unwrap_or_default();
            let pick = list
                .iter()
                .position(|&s| self.groups.get(s).is_some_and(|g| g.inflight == 0))
                .unwrap_or(0);
            let mut list = list;
            let slot = list.remove(pick);
            by_owner.insert(most, list);
            if let Some(l) = by_owner.get_mut(&least) {
                l.push(slot);
            }
            self.hand_over(slot, Some(least), Some(deadline));
            moved += 1;
        }
        if moved > 0 {
            tracing::info!(queue = %self.name, moved, "groups rebalanced");
        }
        moved
    }

    /// Lets a group held by `poison = hold` go on (an operator decided):
    /// its head is delivered again. Returns whether the group was held.
    pub fn release_held(&mut self, id: &str) -> bool {
        let Some(slot) = self.groups.find(id) else {
            return false;
        };
        let Some(g) = self.groups.get_mut(slot) else {
            return false;
        };
        let was = std::mem::replace(&mut g.held, false);
        if was {
            g.since = self.now;
            tracing::info!(queue = %self.name, group = id, "held group released");
            self.relist(slot);
        }
        was
    }

    /// Groups stopped by `poison = hold`.
    pub fn held_groups(&self) -> Vec<String> {
        self.groups
            .slots
            .iter()
            .flatten()
            .filter(|g| g.held)
            .map(|g| g.key.to_string())
            .collect()
    }

    /// Live groups of the queue.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The owner of a group, if the group is live and owned.
    pub fn group_owner(&self, id: &str) -> Option<ConsumerId> {
        self.groups
            .find(id)
            .and_then(|s| self.groups.get(s))
            .and_then(|g| g.owner)
    }
}
