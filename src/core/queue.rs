//! One queue's state machine: messages in arrival order, consumers with
//! credit, deliveries awaiting an outcome.
//!
//! `QueueState` is a plain struct whose methods decide and return
//! [`Action`]s; it never touches an outbox, a lock or a runtime, so every
//! dispatch decision is unit-testable. [`super::Queue`] owns one behind a
//! lock and carries the actions out.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::error::CoreError;
use super::message::Message;
use super::outbox::{Delivery, FlowState};
use super::ConsumerId;

/// What a queue decided; the owner performs it after the decision.
#[derive(Debug)]
pub enum Action {
    /// Hand a message to a consumer.
    Deliver(Delivery),
    /// Tell a consumer its link's flow state (drain finished, or echo asked).
    Flow(FlowState),
}

/// The consumer's verdict on a delivery, in protocol-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: the message is removed.
    Accepted,
    /// Not processed and not attempted: back to its original position,
    /// delivery count unchanged.
    Released,
    /// Not processed: back to its original position; `delivery_failed`
    /// counts the attempt.
    Modified {
        /// The attempt counts as a failed delivery (delivery count + 1).
        delivery_failed: bool,
        /// The consumer does not want it again (honoured in a later issue).
        undeliverable_here: bool,
    },
    /// Invalid: removed (dead-lettering comes with the next issue).
    Rejected,
}

/// How a consumer wants its deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// Pre-settled link: at-most-once, the queue forgets a message once it
    /// is handed over.
    pub presettled: bool,
}

/// A message waiting in the queue.
#[derive(Debug, Clone)]
struct Entry {
    /// Arrival order; a returned message goes back to this position.
    seq: u64,
    /// The message itself, shared with deliveries in flight.
    message: Arc<Message>,
    /// Producer's delivery count plus failed attempts here.
    delivery_count: u32,
    /// Some consumer acquired it before (so `first-acquirer` is false).
    acquired: bool,
}

/// A delivery handed to a consumer and not yet settled.
#[derive(Debug)]
struct Unacked {
    /// The message, ready to go back at its position.
    entry: Entry,
    /// Who holds it.
    consumer: ConsumerId,
}

/// A consumer attached to the queue.
#[derive(Debug)]
struct Consumer {
    /// Its identity, used in actions and by the protocol layer.
    id: ConsumerId,
    /// Deliveries it may still receive.
    credit: u32,
    /// Deliveries sent plus credit consumed by drains (AMQP link
    /// delivery-count), so credit can be recomputed from the consumer's view.
    delivery_count: u32,
    /// The consumer asked to use up its credit now.
    drain: bool,
    /// Delivery mode.
    options: ConsumerOptions,
}

/// The state of one queue.
#[derive(Debug)]
pub struct QueueState {
    /// The queue's name, for logs and errors.
    name: String,
    /// Messages ready for delivery, ordered by `seq`.
    ready: VecDeque<Entry>,
    /// Sequence number of the next message to arrive.
    next_seq: u64,
    /// Attached consumers, in attach order.
    consumers: Vec<Consumer>,
    /// Round-robin position in `consumers`.
    cursor: usize,
    /// Deliveries awaiting an outcome, by delivery id.
    unacked: HashMap<u64, Unacked>,
    /// Next delivery id.
    next_delivery_id: u64,
}

impl QueueState {
    /// An empty queue.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ready: VecDeque::new(),
            next_seq: 0,
            consumers: Vec::new(),
            cursor: 0,
            unacked: HashMap::new(),
            next_delivery_id: 0,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Messages waiting for a consumer.
    pub fn depth(&self) -> usize {
        self.ready.len()
    }

    /// Deliveries handed out and not yet settled.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Number of attached consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Accepts a message from a producer and dispatches what can be.
    pub fn enqueue(&mut self, message: Arc<Message>, actions: &mut Vec<Action>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let delivery_count = message.header.delivery_count;
        self.ready.push_back(Entry {
            seq,
            message,
            delivery_count,
            acquired: false,
        });
        self.dispatch(actions);
    }

    /// Attaches a consumer with no credit yet.
    pub fn add_consumer(&mut self, id: ConsumerId, options: ConsumerOptions) {
        self.consumers.push(Consumer {
            id,
            credit: 0,
            delivery_count: 0,
            drain: false,
            options,
        });
    }

    /// Detaches a consumer: its unsettled deliveries go back to their
    /// original positions with delivery count + 1, then the queue dispatches
    /// to whoever is left.
    pub fn remove_consumer(&mut self, id: ConsumerId, actions: &mut Vec<Action>) {
        let Some(index) = self.consumers.iter().position(|c| c.id == id) else {
            return;
        };
        self.consumers.remove(index);
        if self.cursor > index {
            self.cursor -= 1;
        }
        let mut returned: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer == id)
            .map(|(d, _)| *d)
            .collect();
        returned.sort_unstable();
        for delivery_id in returned {
            if let Some(unacked) = self.unacked.remove(&delivery_id) {
                let mut entry = unacked.entry;
                entry.delivery_count = entry.delivery_count.saturating_add(1);
                self.requeue(entry);
            }
        }
        self.dispatch(actions);
    }

    /// Applies a consumer's flow: `delivery_count` and `credit` as the
    /// consumer sees them (AMQP: the link's credit limit is their sum).
    /// `drain` asks to use up the credit now; `echo` asks for our state.
    pub fn flow(
        &mut self,
        id: ConsumerId,
        delivery_count: u32,
        credit: u32,
        drain: bool,
        echo: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let consumer = self
            .consumers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(CoreError::UnknownConsumer { consumer: id })?;
        let limit = delivery_count.wrapping_add(credit);
        let left = limit.wrapping_sub(consumer.delivery_count);
        // Serial-number arithmetic (RFC 1982): a limit behind what we already
        // sent means no credit, not four billion.
        consumer.credit = if left <= i32::MAX as u32 { left } else { 0 };
        consumer.drain = drain;
        self.dispatch(actions);
        if echo {
            if let Some(state) = self.flow_state(id) {
                actions.push(Action::Flow(state));
            }
        }
        Ok(())
    }

    /// Settles a delivery with the consumer's outcome.
    pub fn settle(
        &mut self,
        consumer: ConsumerId,
        delivery_id: u64,
        outcome: Outcome,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        match self.unacked.get(&delivery_id) {
            Some(u) if u.consumer == consumer => {}
            _ => return Err(CoreError::UnknownDelivery { delivery_id }),
        }
        let Some(unacked) = self.unacked.remove(&delivery_id) else {
            return Err(CoreError::UnknownDelivery { delivery_id });
        };
        let mut entry = unacked.entry;
        match outcome {
            Outcome::Accepted => {}
            Outcome::Rejected => {
                tracing::warn!(queue = %self.name, delivery_id, "message rejected by consumer; discarded");
            }
            Outcome::Released => {
                self.requeue(entry);
                self.dispatch(actions);
            }
            Outcome::Modified {
                delivery_failed, ..
            } => {
                if delivery_failed {
                    entry.delivery_count = entry.delivery_count.saturating_add(1);
                }
                self.requeue(entry);
                self.dispatch(actions);
            }
        }
        Ok(())
    }

    /// Puts a returned message back at its original position.
    fn requeue(&mut self, entry: Entry) {
        let position = self
            .ready
            .binary_search_by_key(&entry.seq, |e| e.seq)
            .unwrap_or_else(|insert_at| insert_at);
        self.ready.insert(position, entry);
    }

    /// The flow state of one consumer, as the protocol layer reports it.
    fn flow_state(&self, id: ConsumerId) -> Option<FlowState> {
        let available = u32::try_from(self.ready.len()).unwrap_or(u32::MAX);
        self.consumers
            .iter()
            .find(|c| c.id == id)
            .map(|c| FlowState {
                consumer: c.id,
                delivery_count: c.delivery_count,
                credit: c.credit,
                available,
                drain: c.drain,
            })
    }

    /// Hands ready messages to consumers with credit, round-robin, then
    /// completes drains that ran out of messages.
    fn dispatch(&mut self, actions: &mut Vec<Action>) {
        while !self.ready.is_empty() {
            let Some(index) = self.next_consumer_with_credit() else {
                break;
            };
            let Some(mut entry) = self.ready.pop_front() else {
                break;
            };
            let consumer = &mut self.consumers[index];
            consumer.credit -= 1;
            consumer.delivery_count = consumer.delivery_count.wrapping_add(1);
            let delivery_id = self.next_delivery_id;
            self.next_delivery_id += 1;
            let first_acquirer = !entry.acquired;
            entry.acquired = true;
            let settled = consumer.options.presettled;
            actions.push(Action::Deliver(Delivery {
                consumer: consumer.id,
                delivery_id,
                message: Arc::clone(&entry.message),
                delivery_count: entry.delivery_count,
                first_acquirer,
                settled,
            }));
            if !settled {
                let consumer = consumer.id;
                self.unacked
                    .insert(delivery_id, Unacked { entry, consumer });
            }
        }
        for consumer in self.consumers.iter_mut().filter(|c| c.drain) {
            // Nothing left for it: the drain uses up the rest of its credit.
            consumer.delivery_count = consumer.delivery_count.wrapping_add(consumer.credit);
            consumer.credit = 0;
            consumer.drain = false;
            actions.push(Action::Flow(FlowState {
                consumer: consumer.id,
                delivery_count: consumer.delivery_count,
                credit: 0,
                available: u32::try_from(self.ready.len()).unwrap_or(u32::MAX),
                drain: true,
            }));
        }
    }

    /// The next consumer after the cursor that has credit; moves the cursor
    /// past it.
    fn next_consumer_with_credit(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        for step in 0..n {
            let index = (self.cursor + step) % n;
            if self.consumers[index].credit > 0 {
                self.cursor = (index + 1) % n;
                return Some(index);
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
