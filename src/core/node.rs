//! A node an address names: a queue or a topic, once resolved by the
//! broker's registry, and what a producer does with it.

use std::sync::Arc;

use super::error::CoreError;
use super::message::{Arrival, Message};
use super::queue_handle::Queue;
use super::topic::Topic;
use crate::store::Ticket;

/// Which kind of node an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Competing consumers.
    Queue,
    /// Each subscription gets a copy.
    Topic,
}

/// A resolved node.
#[derive(Debug, Clone)]
pub enum Node {
    /// A queue.
    Queue(Arc<Queue>),
    /// A topic.
    Topic(Arc<Topic>),
}

impl Node {
    /// Accepts a message into the node. Returns the journal ticket to wait
    /// for before the message counts as safe, when it was stored.
    pub fn publish(&self, message: Arc<Message>) -> Result<Option<Ticket>, CoreError> {
        self.publish_with(message, &Arrival::default())
    }

    /// [`Self::publish`] with how the message arrived: its connection
    /// (no-local subscriptions skip their own connection's messages) and
    /// its duplicate-detection id.
    pub fn publish_with(
        &self,
        message: Arc<Message>,
        arrival: &Arrival,
    ) -> Result<Option<Ticket>, CoreError> {
        match self {
            Node::Queue(q) => q.publish_with(message, arrival.duplicate_id.as_ref()),
            Node::Topic(t) => t.publish(message, arrival),
        }
    }

    /// Whether a queue the node feeds detects duplicates (so the protocol
    /// layer reads messages' duplicate-detection ids).
    pub fn detects_duplicates(&self) -> bool {
        match self {
            Node::Queue(q) => q.detects_duplicates(),
            Node::Topic(t) => t.detects_duplicates(),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        match self {
            Node::Queue(q) => q.name(),
            Node::Topic(t) => t.name(),
        }
    }
}
