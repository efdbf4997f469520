//! The broker core: protocol-neutral queues, consumers, dispatch and
//! delivery tracking. Nothing here knows AMQP or sockets.
//!
//! - `access`: authorisation rules (who may send, receive, create, manage where).
//! - `broker`: the registry of queues and topics, auto-create, routing.
//! - `node`: a resolved node (queue or topic) and publishing to it.
//! - `topic`: topics and their subscription lists.
//! - `subscriptions`: durable, shared and wildcard subscriptions, with selectors and no-local.
//! - `queue`: one queue's state machine (decides, returns actions).
//! - `queue_handle`: the owner of a queue's state (lock + outboxes).
//! - `queue_info`: the management view of a queue (admin API and `$management`).
//! - `management`: the operations of the AMQP management node `$management`.
//! - `outbox`: the mailbox through which queues hand deliveries to a connection.
//! - `txn`: transactions: posted messages and retired deliveries, committed together.
//! - `message`: a message as bytes plus routing fields.
//! - `error`: core errors.
//! - `settings`: per-queue settings (from the config or `queue.*` options).
//! - `selector`: JMS message selectors: parsing and three-valued evaluation.
//! - `serial`: serial-number arithmetic of delivery counts against credit.
//! - `loader`: reads of paged-out bodies on threads of their own.
//! - `memory`: what clients make the broker hold (queued messages, messages
//!   in assembly) against the high-water mark and the assembly cap.
//! - `persist`: what is stored (message and queue encodings), the memory
//!   gauge that pages durable bodies out, and recovery.

pub mod access;
pub mod broker;
pub mod error;
pub mod loader;
pub mod management;
pub mod memory;
pub mod message;
pub mod node;
mod operator;
pub mod outbox;
pub mod persist;
pub mod queue;
pub mod queue_handle;
pub mod queue_info;
pub mod selector;
pub mod serial;
pub mod settings;
pub mod subscriptions;
pub mod topic;
pub mod txn;

pub use broker::{Broker, BrokerOptions, Node, NodeDefaults, NodeKind, PlainDefaults};
pub use error::CoreError;
pub use message::{AnnotationValue, Arrival, HeaderFields, Message, RoutingFields};
pub use outbox::{Delivery, FlowState, Outbox, OutboxItem};
pub use persist::Persistence;
pub use queue::{ConsumerOptions, GroupFilter, MoveReport, MoveTo, Outcome, Rejection};
pub use queue_handle::{now_ms, Attached, Queue, QueueStats, RUNTIME_SETTINGS};
pub use queue_info::{AttributeValue, QueueInfo};
pub use topic::Topic;
pub use txn::Transaction;

/// Identifies one consumer (one outgoing link) across the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);
