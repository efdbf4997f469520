//! Dispatch: which ready message goes to which consumer.
//!
//! Messages go in priority order, then arrival order. Each goes to a
//! consumer with credit, the highest consumer priority first and
//! round-robin among equals, skipping consumers that said
//! `undeliverable-here` for it. Browsers see copies without acquiring.

use std::ops::Bound;
use std::sync::Arc;

use super::{Action, Consumer, Key, QueueState};
use crate::core::outbox::{Delivery, FlowState};
use crate::core::ConsumerId;

/// How many ready messages one dispatch step looks past when the head is
/// excluded for every consumer with credit (only `undeliverable-here`
/// does that); bounds the work per step.
const SCAN_LIMIT: usize = 1024;

/// The consumer that should get a message excluded for `excluded`: highest
/// priority with credit, round-robin from `cursor` among equals.
fn pick(consumers: &[Consumer], cursor: usize, excluded: &[ConsumerId]) -> Option<usize> {
    let eligible = |c: &Consumer| !c.options.browse && c.credit > 0 && !excluded.contains(&c.id);
    let best = consumers
        .iter()
        .filter(|c| eligible(c))
        .map(|c| c.options.priority)
        .max()?;
    let n = consumers.len();
    (0..n)
        .map(|step| (cursor + step) % n)
        .find(|&i| eligible(&consumers[i]) && consumers[i].options.priority == best)
}

impl QueueState {
    /// Hands ready messages to consumers with credit, feeds browsers, then
    /// completes drains that ran out of messages.
    pub(super) fn dispatch(&mut self, actions: &mut Vec<Action>) {
        while self
            .consumers
            .iter()
            .any(|c| !c.options.browse && c.credit > 0)
        {
            let mut due = Vec::new();
            let mut choice = None;
            for (key, entry) in self.ready.iter().take(SCAN_LIMIT) {
                if entry.expires_at.is_some_and(|at| at <= self.now) {
                    due.push(*key);
                    continue;
                }
                if let Some(index) = pick(
                    &self.consumers,
                    self.cursor,
                    entry.excluded.as_deref().map_or(&[], |v| v.as_slice()),
                ) {
                    choice = Some((*key, index));
                    break;
                }
            }
            let expired_any = !due.is_empty();
            for key in due {
                if let Some(entry) = self.remove_ready(&key) {
                    self.expire(entry, actions);
                }
            }
            match choice {
                Some((key, index)) => self.deliver(key, index, actions),
                None if expired_any => continue,
                None => break,
            }
        }
        self.feed_browsers(actions);
        let available = u32::try_from(self.ready.len()).unwrap_or(u32::MAX);
        for consumer in self.consumers.iter_mut().filter(|c| c.drain) {
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
            }));
        }
    }

    /// Gives the message at `key` to consumer `index`.
    fn deliver(&mut self, key: Key, index: usize, actions: &mut Vec<Action>) {
        let Some(mut entry) = self.remove_ready(&key) else {
            return;
        };
        self.cursor = (index + 1) % self.consumers.len();
        let consumer = &mut self.consumers[index];
        consumer.credit -= 1;
        consumer.delivery_count = consumer.delivery_count.wrapping_add(1);
        let delivery_id = self.next_delivery_id;
        self.next_delivery_id += 1;
        let first_acquirer = !entry.acquired;
        entry.acquired = true;
        let settled = consumer.options.presettled;
        let id = consumer.id;
        // A pre-settled delivery leaves the queue (and the store) now, so a
        // paged-out body is read before that; otherwise the connection
        // reads it when it sends the transfer.
        let (message, paged) = if settled {
            (self.full_message(&entry), None)
        } else {
            (Arc::clone(&entry.message), self.paged_ref(&entry))
        };
        actions.push(Action::Deliver(Delivery {
            consumer: id,
            delivery_id,
            message,
            delivery_count: entry.delivery_count,
            first_acquirer,
            settled,
            paged,
        }));
        if settled {
            if let Some(r) = self.retire(&entry) {
                actions.push(Action::Store(r));
            }
        } else {
            self.unacked.insert(
                delivery_id,
                super::Unacked {
                    entry,
                    consumer: id,
                },
            );
        }
    }

    /// Where a paged-out entry's body is stored.
    fn paged_ref(&self, entry: &super::Entry) -> Option<(u64, u64)> {
        entry.paged.then_some(())?;
        self.store_id.map(|q| (q, entry.seq))
    }

    /// Browsers with credit see the next messages after where they were,
    /// without acquiring them (pre-settled copies).
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
            let mut credit = consumer.credit;
            let mut last = consumer.browsed_to;
            let now = self.now;
            let store_id = self.store_id;
            for (key, entry) in self.ready.range((start, Bound::Unbounded)) {
                if credit == 0 {
                    break;
                }
                last = Some(*key);
                if entry.expires_at.is_some_and(|at| at <= now) {
                    continue;
                }
                credit -= 1;
                let delivery_id = self.next_delivery_id;
                self.next_delivery_id += 1;
                actions.push(Action::Deliver(Delivery {
                    consumer: consumer.id,
                    delivery_id,
                    message: Arc::clone(&entry.message),
                    delivery_count: entry.delivery_count,
                    first_acquirer: false,
                    settled: true,
                    paged: store_id.filter(|_| entry.paged).map(|q| (q, entry.seq)),
                }));
            }
            let consumer = &mut self.consumers[index];
            let sent = consumer.credit - credit;
            consumer.credit = credit;
            consumer.delivery_count = consumer.delivery_count.wrapping_add(sent);
            consumer.browsed_to = last;
        }
    }
}
