//! Messages leaving a queue other than by a consumer's acceptance: expiry,
//! dead-lettering, `max-length` / `max-bytes` limits, purge; and the store
//! records and memory accounting of every departure.

use std::cmp::Reverse;
use std::sync::Arc;

use super::groups::{Slot, NO_GROUP};
use super::{Action, Entry, Key, QueueState, Rejection};
use crate::core::error::CoreError;
use crate::core::message::{AnnotationValue, Message};
use crate::core::settings::OverflowPolicy;
use crate::store::Record;

/// The annotation saying why a message was dead-lettered.
const DEAD_LETTER_REASON: &str = "x-opt-dead-letter-reason";

impl QueueState {
    /// Applies `max-length` / `max-bytes` before a message of `size` bytes
    /// goes in: refuses it, or drops the oldest queued messages.
    pub(super) fn make_room(
        &mut self,
        size: usize,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let over = |q: &Self| {
            q.settings
                .max_length
                .is_some_and(|max| q.depth() as u64 >= max)
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
                    let Some(entry) = self.take_oldest() else {
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

    /// Removes the oldest queued message by arrival, whatever its priority
    /// or group.
    fn take_oldest(&mut self) -> Option<Entry> {
        let (key, slot) = self.oldest()?;
        self.remove_at(key, slot)
    }

    /// Where the oldest queued message by arrival is, whatever its priority
    /// or group. Walks every group when there are groups (drop-oldest and
    /// moves on a grouped queue are rare; ungrouped queues pay ten lookups).
    pub(super) fn oldest(&self) -> Option<(Key, Slot)> {
        let first_of = |map: &std::collections::BTreeMap<Key, Entry>| {
            (0..=9u8)
                .filter_map(|p| {
                    map.range((Reverse(p), 0)..=(Reverse(p), u64::MAX))
                        .next()
                        .map(|(k, e)| (*k, e.seq))
                })
                .min_by_key(|(_, seq)| *seq)
        };
        let mut best: Option<(u64, Key, Slot)> =
            first_of(&self.ready).map(|(k, s)| (s, k, NO_GROUP));
        for slot in self.groups.live_slots() {
            if let Some(e) = self.groups.get(slot).and_then(|g| g.queue.oldest()) {
                if best.is_none_or(|b| e.seq < b.0) {
                    best = Some((e.seq, e.key(), slot));
                }
            }
        }
        best.map(|(_, key, slot)| (key, slot))
    }

    /// The queued entry at `key` (in group `slot`).
    fn entry_at(&self, key: Key, slot: Slot) -> Option<&Entry> {
        if slot == NO_GROUP {
            self.ready.get(&key)
        } else {
            self.groups.get(slot).and_then(|g| g.queue.get(key))
        }
    }

    /// Takes the queued entry at `key` (in group `slot`) out.
    fn remove_at(&mut self, key: Key, slot: Slot) -> Option<Entry> {
        if slot == NO_GROUP {
            self.remove_ready(&key)
        } else {
            let entry = self.remove_grouped(slot, Some(key));
            self.settle_idle(slot);
            entry
        }
    }

    /// Moves up to `limit` queued messages, oldest first, to `to` (an
    /// operator's move, e.g. from a dead-letter queue back to where its
    /// messages came from). Messages being delivered stay. Each starts
    /// afresh there (delivery count 0). With [`MoveTo::Original`] a message
    /// goes to `x-opt-original-queue` if `exists` says that queue is still
    /// there, else to `x-opt-original-address`; the move stops, keeping
    /// order, at the first message that has neither.
    pub fn move_out(
        &mut self,
        to: &MoveTo,
        limit: usize,
        exists: &dyn Fn(&str) -> bool,
        actions: &mut Vec<Action>,
    ) -> MoveReport {
        let mut report = MoveReport::default();
        while report.moved < limit {
            let Some((key, slot)) = self.oldest() else {
                break;
            };
            let Some(entry) = self.entry_at(key, slot) else {
                break;
            };
            let address = match to {
                MoveTo::Address(address) => address.clone(),
                MoveTo::Original => match original_address(&entry.message, exists) {
                    Some(address) => address,
                    None => {
                        report.stopped =
                            Some(format!("message {} has no original address", entry.seq));
                        break;
                    }
                },
            };
            let Some(entry) = self.remove_at(key, slot) else {
                break;
            };
            let mut message = (*entry.message).clone();
            message.header.delivery_count = 0;
            let body = self.body_of(&entry);
            let release = self.retire(&entry);
            actions.push(Action::Forward {
                address,
                message,
                body,
                release,
            });
            report.moved += 1;
        }
        report.left = self.depth();
        report
    }

    /// Expires what is due.
    pub(super) fn expire_due(&mut self, actions: &mut Vec<Action>) {
        while let Some(Reverse((at, key, slot))) = self.expiries.peek().copied() {
            if at > self.now {
                break;
            }
            self.expiries.pop();
            let entry = if slot == NO_GROUP {
                if self
                    .ready
                    .get(&key)
                    .is_some_and(|e| e.expires_at == Some(at))
                {
                    self.remove_ready(&key)
                } else {
                    None
                }
            } else {
                let due = self
                    .groups
                    .get(slot)
                    .and_then(|g| g.queue.get(key))
                    .is_some_and(|e| e.expires_at == Some(at));
                if due {
                    let entry = self.remove_grouped(slot, Some(key));
                    self.settle_idle(slot);
                    entry
                } else {
                    None
                }
            };
            if let Some(entry) = entry {
                self.expire(entry, actions);
            }
        }
    }

    /// Removes every queued message; returns how many.
    pub fn purge(&mut self, actions: &mut Vec<Action>) -> usize {
        let n = self.depth();
        let ready = std::mem::take(&mut self.ready);
        let scheduled = self.take_scheduled();
        for entry in ready.into_values().chain(scheduled) {
            if let Some(r) = self.retire(&entry) {
                actions.push(Action::Store(r));
            }
        }
        let slots: Vec<Slot> = self.groups.live_slots().collect();
        for slot in slots {
            let queue = self
                .groups
                .get_mut(slot)
                .map(|g| g.queue.take())
                .unwrap_or_default();
            self.groups.queued -= queue.len();
            for entry in queue {
                if let Some(r) = self.retire(&entry) {
                    actions.push(Action::Store(r));
                }
            }
            self.relist(slot);
            self.settle_idle(slot);
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
        let grouped: Vec<Entry> = self
            .groups
            .slots
            .iter_mut()
            .flatten()
            .flat_map(|g| g.queue.take())
            .collect();
        self.groups = Default::default();
        let scheduled = self.take_scheduled();
        for entry in ready
            .into_values()
            .chain(unacked.into_values().map(|u| u.entry))
            .chain(grouped)
            .chain(scheduled)
        {
            self.retire(&entry);
        }
        self.ready_bytes = 0;
        self.expiries.clear();
    }

    /// A message leaves the queue for good: it no longer counts in memory,
    /// and the record that removes it from the store, if it is stored.
    pub(super) fn retire(&self, entry: &Entry) -> Option<Record> {
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

    /// Where an entry's body is stored, if it is paged out (its message
    /// here is its routing fields only): whoever moves or delivers it has
    /// the loader read it first; no decision reads the disk.
    pub(super) fn body_of(&self, entry: &Entry) -> Option<(u64, u64)> {
        entry.paged.then_some(())?;
        self.store_id.map(|queue| (queue, entry.seq))
    }

    /// Moves a message to the dead-letter address with the reason.
    pub(super) fn dead_letter(&mut self, entry: Entry, reason: &str, actions: &mut Vec<Action>) {
        let reason = (
            DEAD_LETTER_REASON,
            AnnotationValue::String(reason.to_string()),
        );
        self.dead_letter_with(entry, vec![reason], actions);
    }

    /// Moves a message a consumer rejected to the dead-letter address,
    /// with the consumer's error as the reason if it gave one.
    pub(super) fn dead_letter_rejected(
        &mut self,
        entry: Entry,
        rejection: Option<&Rejection>,
        actions: &mut Vec<Action>,
    ) {
        use AnnotationValue::String as S;
        let Some(r) = rejection else {
            return self.dead_letter(entry, "rejected", actions);
        };
        let mut annotations = vec![(DEAD_LETTER_REASON, S(r.condition.clone()))];
        if let Some(d) = &r.description {
            annotations.push(("x-opt-dead-letter-description", S(d.clone())));
        }
        if let Some(info) = &r.info {
            annotations.push((
                "x-opt-dead-letter-info",
                AnnotationValue::Encoded(info.clone()),
            ));
        }
        self.dead_letter_with(entry, annotations, actions);
    }

    /// Moves a message to the dead-letter address with `annotations` (the
    /// reason first).
    fn dead_letter_with(
        &mut self,
        entry: Entry,
        annotations: Vec<(&str, AnnotationValue)>,
        actions: &mut Vec<Action>,
    ) {
        let address = self.settings.dead_letter_address.clone();
        self.counters.dead_lettered += 1;
        let reason = match annotations.first() {
            Some((_, AnnotationValue::String(s))) => s.clone(),
            _ => String::new(),
        };
        let mut full = (*entry.message).clone();
        for (key, value) in annotations {
            full = full.with_annotation(key, value);
        }
        let body = self.body_of(&entry);
        let release = self.retire(&entry);
        if address == self.name && body.is_some() {
            // Its body is paged out: it goes to the back of this queue as a
            // move to itself, once the loader has read it.
            full.header.delivery_count = entry.delivery_count;
            actions.push(Action::Forward {
                address,
                message: full,
                body,
                release,
            });
            return;
        }
        if address == self.name {
            // The dead-letter queue itself (or a queue that is its own
            // dead-letter address): never lose the message. It goes to the
            // back of this queue, so it does not block the ones behind it.
            tracing::info!(queue = %self.name, reason = %reason, "dead-lettered within its own queue: moved to the back");
            let seq = self.next_seq;
            self.next_seq += 1;
            let moved = self.new_entry(
                seq,
                Arc::new(full),
                (entry.delivery_count, entry.expires_at, None),
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
        let mut message = self.with_origin(full);
        message.header.delivery_count = entry.delivery_count;
        actions.push(Action::Forward {
            address,
            message,
            body,
            release,
        });
    }

    /// `message` annotated with where it came from: the address it was
    /// sent to and this queue (a topic's subscription queue differs from
    /// its address), so an operator can move it back.
    fn with_origin(&self, message: Message) -> Message {
        use AnnotationValue::String as S;
        message
            .with_annotation(ORIGINAL_ADDRESS, S(self.origin.clone()))
            .with_annotation(ORIGINAL_QUEUE, S(self.name.clone()))
    }

    /// Drops an expired message, or moves it to the expiry address.
    pub(super) fn expire(&mut self, entry: Entry, actions: &mut Vec<Action>) {
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
        let body = self.body_of(&entry);
        let release = self.retire(&entry);
        let mut message = self.with_origin((*entry.message).clone());
        // It expired here; it does not expire again where it goes.
        message.header.ttl = None;
        if let Some(r) = message.routing.as_mut() {
            r.absolute_expiry = None;
        }
        message.header.delivery_count = entry.delivery_count;
        actions.push(Action::Forward {
            address,
            message,
            body,
            release,
        });
    }
}

/// Where an operator moves messages to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveTo {
    /// One address (a queue, created if missing, or a topic).
    Address(String),
    /// Each message back where it was dead-lettered or expired from.
    Original,
}

/// What a move did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MoveReport {
    /// Messages moved.
    pub moved: usize,
    /// Messages left in the queue (being delivered ones included).
    pub left: usize,
    /// Why the move stopped before its limit with messages left, if it did.
    pub stopped: Option<String>,
}

/// The queue or address a dead-lettered or expired message came from.
fn original_address(message: &Message, exists: &dyn Fn(&str) -> bool) -> Option<String> {
    let annotation = |key: &str| {
        message
            .broker_annotations()
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| match v {
                AnnotationValue::String(s) => Some(s.clone()),
                _ => None,
            })
    };
    annotation(ORIGINAL_QUEUE)
        .filter(|q| exists(q))
        .or_else(|| annotation(ORIGINAL_ADDRESS))
}

/// The annotation naming the address a moved-away message was sent to.
const ORIGINAL_ADDRESS: &str = "x-opt-original-address";
/// The annotation naming the queue it was in, when that is not the address
/// (a topic subscription).
const ORIGINAL_QUEUE: &str = "x-opt-original-queue";
