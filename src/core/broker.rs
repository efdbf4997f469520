//! The registry of nodes: finds or creates queues and topics by name,
//! routes messages between them (anonymous relay, dead-letter, expiry),
//! and keeps subscriptions and dynamic nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use super::error::CoreError;
use super::message::Message;
use super::queue_handle::Queue;
use super::settings::QueueSettings;
use super::topic::Topic;
use super::ConsumerId;

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
    /// Accepts a message into the node.
    pub fn publish(&self, message: Arc<Message>) -> Result<(), CoreError> {
        match self {
            Node::Queue(q) => q.publish(message),
            Node::Topic(t) => t.publish(message),
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

/// Per-name defaults, from the configuration's `[[queues]]` and `[[topics]]`.
pub trait NodeDefaults: Send + Sync + std::fmt::Debug {
    /// Settings for a new queue of this name.
    fn queue_settings(&self, name: &str) -> QueueSettings;
    /// Whether a plain name is a topic.
    fn is_topic(&self, name: &str) -> bool;
}

/// Defaults for every name: queues with default settings.
#[derive(Debug, Default)]
pub struct PlainDefaults;

impl NodeDefaults for PlainDefaults {
    fn queue_settings(&self, _name: &str) -> QueueSettings {
        QueueSettings::default()
    }
    fn is_topic(&self, _name: &str) -> bool {
        false
    }
}

/// How the broker behaves, from the configuration.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Create a node on first attach; otherwise unknown names are refused.
    pub auto_create: bool,
    /// Queues that exist from the start, even with auto-create off (the
    /// dead-letter address among them).
    pub predeclared: Vec<String>,
    /// Settings by name.
    pub defaults: Arc<dyn NodeDefaults>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            auto_create: true,
            predeclared: vec!["DLQ".to_string()],
            defaults: Arc::new(PlainDefaults),
        }
    }
}

/// The registries, behind one lock held only to look up or insert.
#[derive(Debug, Default)]
struct Nodes {
    /// Queues by name (subscription and dynamic queues included).
    queues: HashMap<String, Arc<Queue>>,
    /// Topics by name.
    topics: HashMap<String, Arc<Topic>>,
    /// Durable subscriptions by subscription name: (topic, queue).
    durable: HashMap<String, (String, Arc<Queue>)>,
}

/// All nodes of one broker. Shared by every connection.
#[derive(Debug)]
pub struct Broker {
    /// Queues, topics and subscriptions.
    nodes: RwLock<Nodes>,
    /// Behaviour switches.
    options: BrokerOptions,
    /// Source of consumer ids, unique across the broker.
    next_consumer: AtomicU64,
    /// Source of unique names for dynamic nodes and subscriptions.
    next_name: AtomicU64,
    /// This broker, for the queues it creates (they route dead letters).
    me: Weak<Broker>,
}

impl Broker {
    /// A broker with the predeclared queues.
    pub fn new(options: BrokerOptions) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Broker>| {
            let queues = options
                .predeclared
                .iter()
                .map(|name| {
                    let settings = options.defaults.queue_settings(name);
                    (
                        name.clone(),
                        Arc::new(Queue::new(name.clone(), settings, me.clone())),
                    )
                })
                .collect();
            Self {
                nodes: RwLock::new(Nodes {
                    queues,
                    ..Nodes::default()
                }),
                options,
                next_consumer: AtomicU64::new(1),
                next_name: AtomicU64::new(1),
                me: me.clone(),
            }
        })
    }

    /// The queue of that name with default settings, created if
    /// auto-create allows.
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>, CoreError> {
        match self.resolve(name, Some(NodeKind::Queue), &[])? {
            Node::Queue(q) => Ok(q),
            Node::Topic(_) => Err(CoreError::NotFound {
                address: name.to_string(),
            }),
        }
    }

    /// Finds the node an address names, creating it if auto-create allows.
    /// `kind` is what the client asked for (None: decided by what exists and
    /// the configuration). `settings` are `queue.*` options: applied when
    /// this creates the queue, compared when it exists.
    pub fn resolve(
        &self,
        name: &str,
        kind: Option<NodeKind>,
        settings: &[(String, String)],
    ) -> Result<Node, CoreError> {
        {
            let nodes = self.nodes.read();
            let kind = kind.unwrap_or_else(|| self.infer_kind(&nodes, name));
            match kind {
                NodeKind::Queue => {
                    if let Some(q) = nodes.queues.get(name) {
                        check_settings(q, settings)?;
                        return Ok(Node::Queue(Arc::clone(q)));
                    }
                }
                NodeKind::Topic => {
                    if let Some(t) = nodes.topics.get(name) {
                        return Ok(Node::Topic(Arc::clone(t)));
                    }
                }
            }
        }
        if !self.options.auto_create {
            return Err(CoreError::NotFound {
                address: name.to_string(),
            });
        }
        let mut nodes = self.nodes.write();
        let kind = kind.unwrap_or_else(|| self.infer_kind(&nodes, name));
        match kind {
            NodeKind::Queue => {
                if let Some(q) = nodes.queues.get(name) {
                    check_settings(q, settings)?;
                    return Ok(Node::Queue(Arc::clone(q)));
                }
                let mut queue_settings = self.options.defaults.queue_settings(name);
                for (key, value) in settings {
                    queue_settings
                        .set(key, value)
                        .map_err(|e| CoreError::InvalidSetting {
                            message: e.to_string(),
                        })?;
                }
                tracing::info!(queue = name, "queue created");
                let q = Arc::new(Queue::new(
                    name.to_string(),
                    queue_settings,
                    self.me.clone(),
                ));
                nodes.queues.insert(name.to_string(), Arc::clone(&q));
                Ok(Node::Queue(q))
            }
            NodeKind::Topic => {
                if !settings.is_empty() {
                    return Err(CoreError::InvalidSetting {
                        message: "queue.* options do not apply to a topic".into(),
                    });
                }
                let t = nodes.topics.entry(name.to_string()).or_insert_with(|| {
                    tracing::info!(topic = name, "topic created");
                    Arc::new(Topic::new(name.to_string()))
                });
                Ok(Node::Topic(Arc::clone(t)))
            }
        }
    }

    /// A plain name is a topic if one exists (and no queue), or if the
    /// configuration says so.
    fn infer_kind(&self, nodes: &Nodes, name: &str) -> NodeKind {
        if nodes.queues.contains_key(name) {
            NodeKind::Queue
        } else if nodes.topics.contains_key(name) || self.options.defaults.is_topic(name) {
            NodeKind::Topic
        } else {
            NodeKind::Queue
        }
    }

    /// Routes a message to an address (anonymous relay).
    pub fn route(&self, address: &str, message: Arc<Message>) -> Result<(), CoreError> {
        self.resolve(address, None, &[])?.publish(message)
    }

    /// Moves a message to a dead-letter or expiry address: the queue is
    /// created if missing, whatever auto-create says, and its limits do not
    /// refuse the message, so nothing is lost.
    pub fn forward(&self, address: &str, message: Message) {
        let existing = self.nodes.read().queues.get(address).cloned();
        let queue = existing.unwrap_or_else(|| {
            let mut nodes = self.nodes.write();
            let settings = self.options.defaults.queue_settings(address);
            let me = self.me.clone();
            Arc::clone(
                nodes
                    .queues
                    .entry(address.to_string())
                    .or_insert_with(|| Arc::new(Queue::new(address.to_string(), settings, me))),
            )
        });
        queue.publish_forced(Arc::new(message));
    }

    /// A subscription queue on a topic. A durable one is found again by its
    /// name (and replaced if it was on another topic); a non-durable one is
    /// new each time.
    pub fn subscribe(&self, topic: &Arc<Topic>, durable_name: Option<&str>) -> Arc<Queue> {
        let mut nodes = self.nodes.write();
        if let Some(name) = durable_name {
            match nodes.durable.get(name) {
                Some((on, queue)) if on == topic.name() => return Arc::clone(queue),
                Some(_) => {
                    // Same subscription name on another topic: replaced, as
                    // JMS does when a durable subscriber changes topic.
                    if let Some((_, old)) = nodes.durable.remove(name) {
                        self.drop_queue(&mut nodes, &old);
                    }
                }
                None => {}
            }
        }
        let queue_name = match durable_name {
            Some(name) => name.to_string(),
            None => format!(
                "{}::sub-{}",
                topic.name(),
                self.next_name.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let settings = self.options.defaults.queue_settings(topic.name());
        let queue = Arc::new(Queue::new(queue_name.clone(), settings, self.me.clone()));
        queue.set_origin(topic.name());
        topic.add_subscription(Arc::clone(&queue));
        nodes.queues.insert(queue_name.clone(), Arc::clone(&queue));
        if let Some(name) = durable_name {
            nodes.durable.insert(
                name.to_string(),
                (topic.name().to_string(), Arc::clone(&queue)),
            );
        }
        tracing::info!(topic = topic.name(), queue = %queue_name, durable = durable_name.is_some(), "subscription created");
        queue
    }

    /// Whether a durable subscription of that name exists.
    pub fn has_durable_subscription(&self, name: &str) -> bool {
        self.nodes.read().durable.contains_key(name)
    }

    /// Removes a durable subscription and its messages.
    pub fn unsubscribe_durable(&self, name: &str) {
        let mut nodes = self.nodes.write();
        if let Some((_, queue)) = nodes.durable.remove(name) {
            self.drop_queue(&mut nodes, &queue);
            tracing::info!(subscription = name, "durable subscription removed");
        }
    }

    /// A new, uniquely named queue for a dynamic node.
    pub fn create_dynamic_queue(&self) -> Arc<Queue> {
        let name = format!("dynamic-{}", uuid::Uuid::new_v4());
        let settings = self.options.defaults.queue_settings(&name);
        let queue = Arc::new(Queue::new(name.clone(), settings, self.me.clone()));
        self.nodes.write().queues.insert(name, Arc::clone(&queue));
        queue
    }

    /// Deletes a queue (a dynamic node or a non-durable subscription whose
    /// link went away) with its messages.
    pub fn delete_queue(&self, queue: &Arc<Queue>) {
        let mut nodes = self.nodes.write();
        self.drop_queue(&mut nodes, queue);
    }

    /// Removes a queue from every registry and topic.
    fn drop_queue(&self, nodes: &mut Nodes, queue: &Arc<Queue>) {
        if nodes
            .queues
            .get(queue.name())
            .is_some_and(|q| Arc::ptr_eq(q, queue))
        {
            nodes.queues.remove(queue.name());
        }
        for topic in nodes.topics.values() {
            topic.remove_subscription(queue);
        }
        queue.delete();
    }

    /// An existing queue, never created.
    pub fn existing_queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.nodes.read().queues.get(name).cloned()
    }

    /// Names of all queues, sorted.
    pub fn queue_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.read().queues.keys().cloned().collect();
        names.sort();
        names
    }

    /// Expires due messages in every queue (called every second).
    pub fn expire_due(&self) {
        let queues: Vec<Arc<Queue>> = self.nodes.read().queues.values().cloned().collect();
        for queue in queues {
            queue.expire_due();
        }
    }

    /// A fresh consumer id.
    pub fn new_consumer_id(&self) -> ConsumerId {
        ConsumerId(self.next_consumer.fetch_add(1, Ordering::Relaxed))
    }
}

/// Refuses `queue.*` options that differ from an existing queue's settings.
fn check_settings(queue: &Queue, requested: &[(String, String)]) -> Result<(), CoreError> {
    for (key, value) in requested {
        let mut wanted = queue.settings().clone();
        wanted
            .set(key, value)
            .map_err(|e| CoreError::InvalidSetting {
                message: e.to_string(),
            })?;
        if &wanted != queue.settings() {
            return Err(CoreError::PreconditionFailed {
                message: format!("queue '{}' exists with a different {key}", queue.name()),
            });
        }
    }
    Ok(())
}
