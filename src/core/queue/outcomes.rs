//! Consumers' outcomes (SPEC §3): accepted removes a message, released and
//! modified put it back at its original position, rejected dead-letters
//! it; past `max-delivery-attempts` a message is poison (dead-lettered, or
//! its group held). Outcomes that arrive together apply before the queue
//! dispatches, so messages returned together come back in their order.

use super::groups::{Slot, NO_GROUP};
use super::{Action, CoreError, Entry, Outcome, PoisonPolicy, QueueState};
use crate::core::ConsumerId;
use crate::store::Record;

impl QueueState {
    /// Settles a delivery with the consumer's outcome.
    pub fn settle(
        &mut self,
        consumer: ConsumerId,
        delivery_id: u64,
        outcome: Outcome,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.settle_many(consumer, &[delivery_id], outcome, actions)
    }

    /// Settles several deliveries of one consumer with one outcome (a
    /// disposition's range). Every outcome applies before anything is
    /// dispatched, so messages returned together go back in their order
    /// whatever the order of their delivery ids. Unknown ids are skipped
    /// and the first is reported.
    pub fn settle_many(
        &mut self,
        consumer: ConsumerId,
        delivery_ids: &[u64],
        outcome: Outcome,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let mut result = Ok(());
        let mut changed = false;
        for &delivery_id in delivery_ids {
            match self.unacked.get(&delivery_id) {
                // Locked to a transaction: only its commit or rollback settles it.
                Some(u) if u.consumer == consumer && !u.locked => {
                    changed |= self.finish(delivery_id, &outcome, actions);
                }
                _ => {
                    if result.is_ok() {
                        result = Err(CoreError::UnknownDelivery { delivery_id });
                    }
                }
            }
        }
        if changed {
            self.dispatch(actions);
        }
        result
    }

    /// Applies the outcome of an unsettled delivery (a consumer's
    /// settlement or a transaction's commit). Returns whether the queue
    /// should dispatch (the caller does, once for a batch).
    pub(super) fn finish(
        &mut self,
        delivery_id: u64,
        outcome: &Outcome,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(unacked) = self.unacked.remove(&delivery_id) else {
            return false;
        };
        let consumer = unacked.consumer;
        let mut changed = false;
        if let Some(i) = self.consumer_index(consumer) {
            let c = &mut self.consumers[i];
            let was_full = c.options.max_unsettled != 0 && c.unsettled >= c.options.max_unsettled;
            c.unsettled -= 1;
            if was_full {
                // Below its unsettled limit again: it may take more.
                self.refresh_consumer(i);
                changed = true;
            }
        }
        let entry = unacked.entry;
        let slot = entry.group;
        match outcome {
            Outcome::Accepted => {
                self.counters.acked += 1;
                let closes = entry.closes;
                if let Some(r) = self.retire(&entry) {
                    actions.push(Action::Store(r));
                }
                if slot != NO_GROUP {
                    changed |= self.group_settled(slot);
                    if closes {
                        self.close_group(slot, consumer);
                        changed = true;
                    }
                }
            }
            Outcome::Rejected(rejection) => {
                self.dead_letter_rejected(entry, rejection.as_deref(), actions);
                if slot != NO_GROUP {
                    changed |= self.group_settled(slot);
                }
            }
            Outcome::Released => {
                self.give_back(entry, false, None, actions);
                if slot != NO_GROUP {
                    self.group_settled(slot);
                }
                changed = true;
            }
            Outcome::Modified {
                delivery_failed,
                undeliverable_here,
            } => {
                let exclude = undeliverable_here.then_some(consumer);
                self.give_back(entry, *delivery_failed, exclude, actions);
                if slot != NO_GROUP {
                    self.group_settled(slot);
                }
                changed = true;
            }
        }
        let departed = self.consumer_index(consumer).is_none();
        if self.exclusive.active == Some(consumer)
            && (self.exclusive.takeover.is_some() || departed)
        {
            self.update_active(actions);
            changed = true;
        }
        changed
    }

    /// A message closing its group was accepted: the group is released
    /// (its next message starts a new assignment), unless a filter holds it.
    pub(super) fn close_group(&mut self, slot: Slot, consumer: ConsumerId) {
        let Some(g) = self.groups.get(slot) else {
            return;
        };
        if g.pinned || g.owner != Some(consumer) || g.inflight > 0 {
            return;
        }
        self.unassign(slot);
    }

    /// A message returns from a consumer: counted as a failed attempt if
    /// `failed`, dead-lettered past `max-delivery-attempts`, kept away from
    /// `exclude`, and put back at its original position (after
    /// `redelivery-delay`, if it failed).
    pub(super) fn give_back(
        &mut self,
        mut entry: Entry,
        failed: bool,
        exclude: Option<ConsumerId>,
        actions: &mut Vec<Action>,
    ) {
        if failed {
            entry.delivery_count = entry.delivery_count.saturating_add(1);
            let max = self.settings.max_delivery_attempts;
            let poison = max > 0 && entry.delivery_count >= max;
            let hold =
                poison && self.settings.poison == PoisonPolicy::Hold && entry.group != NO_GROUP;
            if poison && !hold {
                self.dead_letter(entry, "max-delivery-attempts exceeded", actions);
                return;
            }
            if hold {
                // Kept at its group's head; the group stops until an
                // operator decides (release_held), so order is kept.
                if let Some(g) = self.groups.get_mut(entry.group) {
                    if !g.held {
                        g.held = true;
                        g.since = self.now;
                        self.counters.held += 1;
                        let group = g.key.to_string();
                        tracing::warn!(queue = %self.name, group = %group, delivery_count = entry.delivery_count, "poison message: group held at this message until an operator releases it");
                    }
                }
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
        self.reinsert(entry, failed, actions);
    }
}
