//! Duplicate detection: a queue with a `duplicate-window` (count) or
//! `duplicate-window-time` remembers the ids of the messages it took
//! (`_AMQ_DUPL_ID`, else `properties.message-id`, read by the protocol
//! layer), and accepts and drops a message whose id it remembers. A
//! producer that resends after a lost acknowledgement, or after a broker
//! restart, so does not queue the message twice. Ids of durable messages
//! on a durable queue are stored, so the window survives a restart.

use std::collections::VecDeque;

use bytes::Bytes;
use foldhash::HashMap as FoldMap;

use super::{Action, QueueState};
use crate::store::Record;

/// The ids a queue remembers.
#[derive(Debug, Default)]
pub(super) struct Duplicates {
    /// Remembered ids, with the number of their entry in `order`.
    ids: FoldMap<Bytes, u64>,
    /// Ids oldest first: (number, arrival ms, id, stored).
    order: VecDeque<(u64, u64, Bytes, bool)>,
    /// Number of the next id remembered.
    next: u64,
}

impl QueueState {
    /// Whether the queue detects duplicates.
    pub fn detects_duplicates(&self) -> bool {
        self.settings.duplicate_window > 0 || !self.settings.duplicate_window_time.is_zero()
    }

    /// Whether a message with `id` was taken within the window.
    pub(super) fn is_duplicate(&mut self, id: &Bytes, actions: &mut Vec<Action>) -> bool {
        self.forget_old_ids(actions);
        self.duplicates.ids.contains_key(id)
    }

    /// Remembers the id of a message taken (`stored`: persisted with it).
    pub(super) fn remember_id(&mut self, id: Bytes, stored: bool, actions: &mut Vec<Action>) {
        let stored = stored && self.store_id.is_some();
        if let (true, Some(queue)) = (stored, self.store_id) {
            actions.push(Action::Store(Record::PutDuplicate {
                queue,
                id: id.clone(),
                at: self.now,
            }));
        }
        let d = &mut self.duplicates;
        let n = d.next;
        d.next += 1;
        d.ids.insert(id.clone(), n);
        d.order.push_back((n, self.now, id, stored));
        self.forget_old_ids(actions);
    }

    /// Forgets ids past the window: beyond `duplicate-window` ids, or older
    /// than `duplicate-window-time`.
    fn forget_old_ids(&mut self, actions: &mut Vec<Action>) {
        let max = usize::try_from(self.settings.duplicate_window).unwrap_or(usize::MAX);
        let time =
            u64::try_from(self.settings.duplicate_window_time.as_millis()).unwrap_or(u64::MAX);
        let now = self.now;
        let d = &mut self.duplicates;
        while let Some(&(n, at, _, _)) = d.order.front() {
            let over_count = max > 0 && d.ids.len() > max;
            let too_old = time > 0 && at.saturating_add(time) <= now;
            if !over_count && !too_old {
                break;
            }
            let Some((_, _, id, stored)) = d.order.pop_front() else {
                break;
            };
            // The same id may have come back after it was forgotten: only
            // the entry it has now counts.
            if d.ids.get(&id) == Some(&n) {
                d.ids.remove(&id);
                if let (true, Some(queue)) = (stored, self.store_id) {
                    actions.push(Action::Store(Record::DeleteDuplicate { queue, id }));
                }
            }
        }
    }

    /// Puts back the ids read from the store at recovery, oldest first.
    pub fn restore_duplicates(&mut self, mut ids: Vec<(Bytes, u64)>, actions: &mut Vec<Action>) {
        ids.sort_by_key(|(_, at)| *at);
        for (id, at) in ids {
            let d = &mut self.duplicates;
            let n = d.next;
            d.next += 1;
            d.ids.insert(id.clone(), n);
            d.order.push_back((n, at, id, true));
        }
        self.forget_old_ids(actions);
    }

    /// Ids remembered now.
    pub fn remembered_ids(&self) -> usize {
        self.duplicates.ids.len()
    }
}
