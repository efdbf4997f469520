//! A topic: every subscription (a queue) gets a copy of each message.

use std::sync::Arc;

use crate::lock_order::{Rank, RwLock};

use super::error::CoreError;
use super::message::{Arrival, Message};
use super::queue_handle::Queue;
use crate::store::Ticket;

/// A topic and its subscriptions.
#[derive(Debug)]
pub struct Topic {
    /// Its name.
    name: String,
    /// Subscription queues; the lock is held to copy the list or change it.
    subscriptions: RwLock<Vec<Arc<Queue>>>,
}

impl Topic {
    /// A topic with no subscriptions.
    pub fn new(name: String) -> Self {
        Self {
            name,
            subscriptions: RwLock::new(Rank::Topic, Vec::new()),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Copies the message to every subscription. A message with no
    /// subscriber is dropped, as a topic does. If a subscription refuses it
    /// (full, `overflow = reject`), the publish is refused, as RabbitMQ does;
    /// the other subscriptions keep their copy.
    /// Returns the highest journal ticket of the copies that were stored.
    /// A subscription whose selector does not match, or a no-local one of
    /// the publishing connection `origin`, takes no copy.
    pub fn publish(
        &self,
        message: Arc<Message>,
        arrival: &Arrival,
    ) -> Result<Option<Ticket>, CoreError> {
        let subscriptions = self.subscriptions.read().clone();
        let mut result = Ok(None);
        for queue in subscriptions {
            if !queue.takes_copy(&message, arrival.connection) {
                continue;
            }
            match queue.publish_with(Arc::clone(&message), arrival.duplicate_id.as_ref()) {
                Ok(t) => {
                    if let Ok(best) = &mut result {
                        *best = (*best).max(t);
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        result
    }

    /// Adds a subscription (once).
    pub(crate) fn add_subscription(&self, queue: Arc<Queue>) {
        let mut subs = self.subscriptions.write();
        if !subs.iter().any(|q| Arc::ptr_eq(q, &queue)) {
            subs.push(queue);
        }
    }

    /// Removes a subscription.
    pub(crate) fn remove_subscription(&self, queue: &Arc<Queue>) {
        self.subscriptions
            .write()
            .retain(|q| !Arc::ptr_eq(q, queue));
    }

    /// The subscription queues now.
    pub fn subscriptions(&self) -> Vec<Arc<Queue>> {
        self.subscriptions.read().clone()
    }

    /// Whether some subscription detects duplicates.
    pub fn detects_duplicates(&self) -> bool {
        self.subscriptions
            .read()
            .iter()
            .any(|q| q.detects_duplicates())
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }
}
