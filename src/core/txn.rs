//! Transactions (SPEC §7), protocol-neutral: the messages posted in a
//! transaction and the deliveries it retires, applied together at commit or
//! dropped (posts) and returned (retirements) at rollback.
//!
//! A commit locks every queue it touches, in the order of their addresses
//! (the lock order of docs/ARCHITECTURE.md, so two commits never deadlock),
//! checks that every post fits, then enqueues the posts and applies the
//! retirements' outcomes, and submits all their store records in one
//! journal submission: one write batch, one fsync. After a crash the
//! transaction's durable effects are there entirely or not at all.

use std::sync::Arc;

use super::broker::Node;
use super::error::CoreError;
use super::message::{Arrival, Message};
use super::queue::Outcome;
use super::queue_handle::{Forwarded, Queue};
use super::ConsumerId;
use crate::store::Ticket;

/// A delivery whose outcome waits for the transaction.
#[derive(Debug, Clone)]
pub struct Retirement {
    /// The queue it came from.
    pub queue: Arc<Queue>,
    /// The queue's id for the delivery.
    pub delivery_id: u64,
    /// The consumer's outcome, applied at commit.
    pub outcome: Outcome,
}

/// One open transaction.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Messages posted, in order, with where they go and the connection
    /// that posted them (for no-local subscriptions).
    posts: Vec<(Node, Arc<Message>, Arrival)>,
    /// Deliveries retired, in the order their outcomes came.
    retirements: Vec<Retirement>,
    /// Why the transaction can only roll back (a post was refused).
    doomed: Option<String>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Posts a message to `node` (from connection `origin`): it becomes
    /// visible at commit.
    pub fn post(&mut self, node: Node, message: Arc<Message>, arrival: Arrival) {
        self.posts.push((node, message, arrival));
    }

    /// A post the broker refused: the commit will fail (the producer was
    /// told; a transaction must not commit without it).
    pub fn doom(&mut self, reason: impl Into<String>) {
        self.doomed.get_or_insert_with(|| reason.into());
    }

    /// Retires deliveries of `consumer` from `queue` with `outcome` at
    /// commit; they are locked to the transaction now. A later outcome for
    /// the same delivery replaces the earlier one.
    pub fn retire(
        &mut self,
        queue: &Arc<Queue>,
        consumer: ConsumerId,
        delivery_ids: &[u64],
        outcome: Outcome,
    ) -> Result<(), CoreError> {
        queue.lock_to_transaction(consumer, delivery_ids)?;
        for &delivery_id in delivery_ids {
            match self
                .retirements
                .iter_mut()
                .find(|r| r.delivery_id == delivery_id && Arc::ptr_eq(&r.queue, queue))
            {
                Some(r) => r.outcome = outcome.clone(),
                None => self.retirements.push(Retirement {
                    queue: Arc::clone(queue),
                    delivery_id,
                    outcome: outcome.clone(),
                }),
            }
        }
        Ok(())
    }

    /// Messages posted so far.
    pub fn posted(&self) -> usize {
        self.posts.len()
    }

    /// Deliveries retired so far.
    pub fn retired(&self) -> usize {
        self.retirements.len()
    }

    /// Rolls back: posts are dropped, retired deliveries go back to their
    /// positions with delivery count + 1.
    pub fn roll_back(self) {
        let mut by_queue: Vec<(Arc<Queue>, Vec<u64>)> = Vec::new();
        for r in self.retirements {
            match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &r.queue)) {
                Some((_, ids)) => ids.push(r.delivery_id),
                None => by_queue.push((r.queue, vec![r.delivery_id])),
            }
        }
        for (queue, mut ids) in by_queue {
            // Back in their original order.
            ids.sort_unstable();
            queue.roll_back(&ids);
        }
    }

    /// Commits: every post is enqueued and every retirement applied, or, if
    /// a post does not fit (or the store refuses durable work), nothing is
    /// and the transaction is rolled back. Returns the journal ticket to
    /// wait for before the commit counts as done, when something was stored.
    pub fn commit(self) -> Result<Option<Ticket>, CoreError> {
        if let Some(reason) = self.doomed.clone() {
            self.roll_back();
            return Err(CoreError::RolledBack { reason });
        }
        // Where each post goes: a queue, or every subscription of a topic.
        let targets: Vec<Vec<Arc<Queue>>> = self
            .posts
            .iter()
            .map(|(node, message, arrival)| match node {
                Node::Queue(q) => vec![Arc::clone(q)],
                Node::Topic(t) => t
                    .subscriptions()
                    .into_iter()
                    .filter(|q| q.takes_copy(message, arrival.connection))
                    .collect(),
            })
            .collect();
        let mut queues: Vec<Arc<Queue>> = targets
            .iter()
            .flatten()
            .cloned()
            .chain(self.retirements.iter().map(|r| Arc::clone(&r.queue)))
            .collect();
        queues.sort_by_key(|q| Arc::as_ptr(q) as usize);
        queues.dedup_by(|a, b| Arc::ptr_eq(a, b));
        // Each post's queues by their index in `queues` (all are there: it
        // was built from them).
        let position = |q: &Arc<Queue>| {
            queues
                .binary_search_by_key(&(Arc::as_ptr(q) as usize), |x| Arc::as_ptr(x) as usize)
                .ok()
        };
        let indexes: Option<Vec<Vec<usize>>> = targets
            .iter()
            .map(|to| to.iter().map(position).collect())
            .collect();
        let Some(indexes) = indexes else {
            self.roll_back();
            return Err(CoreError::Internal {
                message: "a queue of the commit is missing from its set".into(),
            });
        };
        let mut locked: Vec<_> = queues.iter().map(|q| q.lock()).collect();
        // Check first: nothing changes unless everything fits.
        let mut room: Vec<(usize, usize)> = vec![(0, 0); queues.len()];
        let mut durable = false;
        let mut durable_bytes = 0u64;
        for ((_, message, _), to) in self.posts.iter().zip(&indexes) {
            for &i in to {
                room[i].0 += 1;
                room[i].1 += message.size();
                if message.header.durable && locked[i].stores_durable() {
                    durable = true;
                    durable_bytes += message.size() as u64;
                }
            }
        }
        let mut refusal = None;
        for (i, (count, bytes)) in room.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            if locked[i].deleted() {
                refusal = Some(CoreError::NotFound {
                    address: queues[i].name().to_string(),
                });
                break;
            }
            if let Err(e) = locked[i].state().0.check_room(*count, *bytes) {
                refusal = Some(e);
                break;
            }
        }
        if refusal.is_none() && durable {
            if let Some(p) = queues.iter().find_map(|q| q.persistence()) {
                if let Err(e) = p.journal().check_accepting(durable_bytes) {
                    refusal = Some(CoreError::Store {
                        full: e.is_full(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        if let Some(e) = refusal {
            drop(locked);
            self.roll_back();
            return Err(CoreError::RolledBack {
                reason: e.to_string(),
            });
        }
        // Apply: posts in order, then the retirements' outcomes. Room was
        // checked above under the same locks (and drop-oldest makes room), so
        // an enqueue cannot fail; if one did, the commit is reported failed
        // rather than a message silently missing from it.
        let mut failed = None;
        for ((_, message, arrival), to) in self.posts.iter().zip(&indexes) {
            for &i in to {
                let (state, actions) = locked[i].state();
                let done =
                    state.enqueue_with(Arc::clone(message), arrival.duplicate_id.as_ref(), actions);
                if let Err(e) = done {
                    tracing::error!(queue = %queues[i].name(), error = %e, "a committed message could not be enqueued");
                    failed.get_or_insert(CoreError::Internal {
                        message: format!(
                            "the commit could not enqueue on '{}': {e}",
                            queues[i].name()
                        ),
                    });
                }
            }
        }
        for (i, l) in locked.iter_mut().enumerate() {
            let retired: Vec<(u64, Outcome)> = self
                .retirements
                .iter()
                .filter(|r| Arc::ptr_eq(&r.queue, &queues[i]))
                .map(|r| (r.delivery_id, r.outcome.clone()))
                .collect();
            if !retired.is_empty() {
                let (state, actions) = l.state();
                state.commit_retirements(&retired, actions);
            }
        }
        let mut records = Vec::new();
        let mut forwarded: Vec<Forwarded> = Vec::new();
        for (i, l) in locked.iter_mut().enumerate() {
            let (r, f) = l.take_actions();
            records.extend(r);
            if !f.is_empty() {
                forwarded.push((Arc::clone(&queues[i]), f));
            }
        }
        // One submission, while every queue is still locked, so each
        // queue's records keep their order in the journal.
        let mut ticket = match queues.iter().find_map(|q| q.persistence()) {
            Some(p) if !records.is_empty() => Some(p.journal().submit(records)),
            _ => None,
        };
        drop(locked);
        for (queue, forwards) in forwarded {
            ticket = ticket.max(queue.route_forwards(forwards));
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(ticket),
        }
    }
}
