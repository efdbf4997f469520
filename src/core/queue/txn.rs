//! Deliveries locked to a transaction (SPEC §7): a consumer's outcome
//! given inside a transaction takes effect only at commit; until then the
//! message stays unsettled here (its strict group waits, its consumer may
//! even go), and a rollback puts it back at its original position with
//! delivery-count + 1.

use super::{Action, CoreError, OverflowPolicy, QueueState};
use crate::core::queue::Outcome;
use crate::core::ConsumerId;

impl QueueState {
    /// Locks a delivery of `consumer` to a transaction. Refused if the
    /// consumer does not hold it. Locking again (a changed outcome) is fine.
    pub fn lock_to_transaction(
        &mut self,
        consumer: ConsumerId,
        delivery_id: u64,
    ) -> Result<(), CoreError> {
        match self.unacked.get_mut(&delivery_id) {
            Some(u) if u.consumer == consumer => {
                u.locked = true;
                Ok(())
            }
            _ => Err(CoreError::UnknownDelivery { delivery_id }),
        }
    }

    /// The transaction committed: the locked deliveries' outcomes apply,
    /// all before anything is dispatched.
    pub fn commit_retirements(&mut self, retired: &[(u64, Outcome)], actions: &mut Vec<Action>) {
        let mut changed = false;
        for (delivery_id, outcome) in retired {
            let delivery_id = *delivery_id;
            if let Some(u) = self.unacked.get_mut(&delivery_id) {
                u.locked = false;
            }
            changed |= self.finish(delivery_id, outcome, actions);
        }
        if changed {
            self.dispatch(actions);
        }
    }

    /// One retirement of [`Self::commit_retirements`].
    pub fn commit_retirement(
        &mut self,
        delivery_id: u64,
        outcome: Outcome,
        actions: &mut Vec<Action>,
    ) {
        self.commit_retirements(&[(delivery_id, outcome)], actions);
    }

    /// The transaction rolled back: the messages go back to their original
    /// positions (the heads of their groups) with delivery-count + 1, all
    /// before anything is dispatched, so they come back in their order.
    pub fn roll_back_retirements(&mut self, delivery_ids: &[u64], actions: &mut Vec<Action>) {
        let failed = Outcome::Modified {
            delivery_failed: true,
            undeliverable_here: false,
        };
        let retired: Vec<(u64, Outcome)> =
            delivery_ids.iter().map(|&d| (d, failed.clone())).collect();
        self.commit_retirements(&retired, actions);
    }

    /// One delivery of [`Self::roll_back_retirements`].
    pub fn roll_back_retirement(&mut self, delivery_id: u64, actions: &mut Vec<Action>) {
        self.roll_back_retirements(&[delivery_id], actions);
    }

    /// Whether `count` more messages of `bytes` in all fit under the
    /// queue's limits with `overflow = reject` (a commit checks before it
    /// changes anything, so it is all or nothing).
    pub fn check_room(&self, count: usize, bytes: usize) -> Result<(), CoreError> {
        if self.settings.overflow == OverflowPolicy::DropOldest {
            return Ok(());
        }
        let full = self
            .settings
            .max_length
            .is_some_and(|max| (self.depth() + count) as u64 > max)
            || self
                .settings
                .max_bytes
                .is_some_and(|max| (self.ready_bytes + bytes) as u64 > max);
        if full {
            return Err(CoreError::QueueFull {
                queue: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Whether `consumer` (attached or gone) still holds deliveries.
    pub(super) fn holds_deliveries(&self, consumer: ConsumerId) -> bool {
        self.unacked.values().any(|u| u.consumer == consumer)
    }
}
