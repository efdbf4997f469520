//! How messages become queue entries: on arrival (stored if durable, body
//! paged out when memory is full) and at recovery from the store.

use std::sync::Arc;

use super::groups::NO_GROUP;
use super::{Action, Entry, QueueState};
use crate::core::message::Message;
use crate::core::persist;
use crate::store::Record;

impl QueueState {
    /// A new entry: persisted if durable here, paged out if memory is over
    /// its limit (durable ones only), counted in the memory gauge otherwise.
    /// `timing` is its delivery count, expiry and scheduled delivery time.
    pub(super) fn new_entry(
        &mut self,
        seq: u64,
        message: Arc<Message>,
        timing: (u32, Option<u64>, Option<u64>),
        acquired: bool,
        actions: &mut Vec<Action>,
    ) -> Entry {
        let (delivery_count, expires_at, deliver_at) = timing;
        self.note_arrival(seq);
        let size = message.size();
        let persisted = message.header.durable && self.store_id.is_some();
        if let (true, Some(queue)) = (persisted, self.store_id) {
            actions.push(Action::Store(Record::Put {
                queue,
                seq,
                value: persist::encode_entry(&message, delivery_count, expires_at, deliver_at),
            }));
        }
        let in_memory = self
            .persistence
            .as_ref()
            .is_none_or(|p| p.admit(size, persisted));
        let group = self.group_of(&message);
        let closes = group != NO_GROUP && message.closes_group();
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
            group,
            closes,
            persisted,
            paged: !in_memory,
        }
    }

    /// Puts back a message read from the store at recovery (no dispatch:
    /// nothing is attached yet). It counts as acquired before: a consumer
    /// may have had it when the broker stopped. Its body is dropped again
    /// if memory is over the limit.
    pub fn restore(&mut self, seq: u64, stored: persist::StoredEntry, actions: &mut Vec<Action>) {
        self.note_arrival(seq);
        let size = stored.size;
        let paged = stored.message.bare.is_empty() && size > 0;
        let in_memory = !paged
            && self
                .persistence
                .as_ref()
                .is_none_or(|p| p.admit(size, true));
        let group = self.group_of(&stored.message);
        let closes = group != NO_GROUP && stored.message.closes_group();
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
            group,
            closes,
            persisted: true,
            paged: !in_memory,
        };
        self.next_seq = self.next_seq.max(seq + 1);
        // A message that expired while the broker was down expires now.
        self.insert_at(entry, stored.deliver_at, actions);
    }
}

/// A message without its body: what a paged-out entry keeps in memory. Its
/// group id is copied out of the message's bytes, so they can be freed.
fn slim(message: &Message) -> Message {
    let routing = message.routing.as_ref().map(|r| {
        let mut r = r.clone();
        r.group_id = r.group_id.map(|g| bytes::Bytes::copy_from_slice(&g));
        r
    });
    Message {
        header: message.header,
        routing,
        annotations: bytes::Bytes::new(),
        broker_annotations: message.broker_annotations.clone(),
        bare: bytes::Bytes::new(),
    }
}
