//! Scheduled delivery and redelivery delay.
//!
//! - A producer schedules a message with the message annotation
//!   `x-opt-delivery-time` (ms since the epoch) or `x-opt-delivery-delay`
//!   (ms after arrival). It waits outside the queue until then, then takes
//!   its place by arrival order among the messages still queued. Messages
//!   sent after it may be delivered before it: it was sent for later.
//! - `redelivery-delay` holds back a message whose delivery failed. An
//!   ungrouped message of a shared queue waits aside, and the queue goes on
//!   (as in Artemis). Inside a group, and for an exclusive queue's ungrouped
//!   messages, it waits at its own position and the messages behind it wait
//!   too: a delay never lets a later message overtake, so order is kept.
//!
//! The queue tells its owner the next time it needs a tick
//! ([`QueueState::next_due`]); the broker's timer wakes it then.

use std::collections::{BTreeMap, BTreeSet};

use super::groups::{Slot, NO_GROUP};
use super::{Action, Entry, QueueState};

/// Messages and groups waiting for a time.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Messages not due yet, by (due, arrival).
    pub waiting: BTreeMap<(u64, u64), Entry>,
    /// Groups whose head waits out a redelivery delay: (due, slot,
    /// generation); entries may be stale.
    pub groups: BTreeSet<(u64, Slot, u64)>,
    /// An exclusive queue's ungrouped messages wait until then, behind a
    /// head that waits out its redelivery delay.
    pub hold_until: Option<u64>,
}

impl QueueState {
    /// Puts an arriving (or recovered) entry into the queue, or holds it
    /// until `deliver_at` if that is still to come.
    pub(super) fn insert_at(
        &mut self,
        entry: Entry,
        deliver_at: Option<u64>,
        actions: &mut Vec<Action>,
    ) {
        match deliver_at {
            Some(at) if at > self.now => self.hold(at, entry),
            _ => self.insert(entry, actions),
        }
    }

    /// Holds an entry aside until `at` (its bytes still count as queued).
    fn hold(&mut self, at: u64, entry: Entry) {
        self.ready_bytes += entry.size as usize;
        self.schedule.waiting.insert((at, entry.seq), entry);
    }

    /// Puts back a message a consumer returned: at once, or, for a failed
    /// delivery, after `redelivery-delay`.
    pub(super) fn reinsert(&mut self, entry: Entry, failed: bool, actions: &mut Vec<Action>) {
        let delay = u64::try_from(self.settings.redelivery_delay.as_millis()).unwrap_or(u64::MAX);
        if !failed || delay == 0 {
            self.insert(entry, actions);
            return;
        }
        let due = self.now.saturating_add(delay);
        if entry.group != NO_GROUP {
            // Back at its group's head; the whole group waits.
            if let Some(g) = self.groups.get_mut(entry.group) {
                g.delayed_until = Some(g.delayed_until.map_or(due, |d| d.max(due)));
                let generation = g.generation;
                self.schedule.groups.insert((due, entry.group, generation));
            }
            self.insert(entry, actions);
        } else if self.exclusive_mode() {
            // Back at its position; nothing ungrouped goes before it.
            self.schedule.hold_until = Some(self.schedule.hold_until.map_or(due, |d| d.max(due)));
            self.insert(entry, actions);
        } else {
            self.hold(due, entry);
        }
    }

    /// Whether ungrouped messages wait for a delayed head (exclusive queue).
    pub(super) fn ungrouped_held(&self) -> bool {
        self.schedule.hold_until.is_some_and(|t| t > self.now)
    }

    /// Whether a group waits out its head's redelivery delay.
    pub(super) fn group_delayed(&self, slot: Slot) -> bool {
        self.groups
            .get(slot)
            .and_then(|g| g.delayed_until)
            .is_some_and(|t| t > self.now)
    }

    /// Lets in what is due: scheduled messages, delayed groups, an
    /// exclusive queue's hold.
    pub(super) fn release_due(&mut self, actions: &mut Vec<Action>) {
        let now = self.now;
        while let Some(entry) = self
            .schedule
            .waiting
            .first_entry()
            .filter(|e| e.key().0 <= now)
            .map(|e| e.remove())
        {
            self.ready_bytes -= entry.size as usize;
            self.insert(entry, actions);
        }
        while let Some(&(at, slot, generation)) = self.schedule.groups.first() {
            if at > now {
                break;
            }
            self.schedule.groups.pop_first();
            let Some(g) = self
                .groups
                .get_mut(slot)
                .filter(|g| g.generation == generation)
            else {
                continue;
            };
            if g.delayed_until.is_some_and(|t| t <= now) {
                g.delayed_until = None;
                self.relist(slot);
            }
        }
        if self.schedule.hold_until.is_some_and(|t| t <= now) {
            self.schedule.hold_until = None;
        }
    }

    /// The next time the queue has something to let in (ms since the
    /// epoch), for its owner's timer.
    pub fn next_due(&self) -> Option<u64> {
        [
            self.schedule.waiting.keys().next().map(|k| k.0),
            self.schedule.groups.first().map(|k| k.0),
            self.schedule.hold_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Messages waiting for their delivery time or redelivery delay aside.
    pub fn scheduled(&self) -> usize {
        self.schedule.waiting.len()
    }

    /// Takes every scheduled message out (purge, delete).
    pub(super) fn take_scheduled(&mut self) -> Vec<Entry> {
        let waiting = std::mem::take(&mut self.schedule.waiting);
        let entries: Vec<Entry> = waiting.into_values().collect();
        for e in &entries {
            self.ready_bytes -= e.size as usize;
        }
        entries
    }
}
