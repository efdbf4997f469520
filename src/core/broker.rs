//! The registry of nodes: finds or creates queues and topics by name,
//! routes messages between them (anonymous relay, dead-letter, expiry),
//! and keeps subscriptions and dynamic nodes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::lock_order::{self, Rank};
use parking_lot::RwLock;

use super::access::{AccessRules, Permission, Principal};
use super::error::CoreError;
use super::memory::MemoryGauge;
pub use super::memory::MemoryLevel;
use super::message::Message;
pub use super::node::{Node, NodeKind};
use super::persist::{self, Persistence, QueueMeta};
use super::queue_handle::Queue;
use super::settings::QueueSettings;
use super::topic::Topic;
use super::ConsumerId;
use crate::store::{Record, StoreError, Ticket};

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
    /// The store, if durable queues and messages are persisted.
    pub persistence: Option<Arc<Persistence>>,
    /// How selectors are evaluated against messages (the protocol layer's),
    /// to restore durable subscriptions' selectors at recovery.
    pub evaluator: Option<crate::core::selector::Evaluator>,
    /// Longest name, in bytes, a client may give a node (a queue, topic or
    /// subscription, or a queue's dead-letter or expiry address).
    pub max_name_length: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            auto_create: true,
            predeclared: vec!["DLQ".to_string()],
            defaults: Arc::new(PlainDefaults),
            persistence: None,
            evaluator: None,
            max_name_length: 255,
        }
    }
}

/// The registries, behind one lock held only to look up or insert.
#[derive(Debug, Default)]
pub(super) struct Nodes {
    /// Queues by name (subscription and dynamic queues included).
    pub(super) queues: HashMap<String, Arc<Queue>>,
    /// Topics by name.
    pub(super) topics: HashMap<String, Arc<Topic>>,
    /// Durable subscriptions by subscription name: (topic or pattern, queue).
    pub(super) durable: HashMap<String, (String, Arc<Queue>)>,
    /// Shared non-durable subscriptions by name: (topic or pattern, queue,
    /// consumers attached); deleted with their last consumer.
    pub(super) shared: HashMap<String, (String, Arc<Queue>, usize)>,
    /// Subscriptions to wildcard patterns (`prices.*`, `orders.#`): added
    /// to every topic the pattern matches, now and when it is created.
    pub(super) patterns: Vec<(String, Arc<Queue>)>,
    /// Dynamic nodes by name, with the connection that created each: it may
    /// always send to and receive from them.
    pub(super) dynamic: HashMap<String, u64>,
}

/// All nodes of one broker. Shared by every connection.
#[derive(Debug)]
pub struct Broker {
    /// Queues, topics and subscriptions.
    pub(super) nodes: lock_order::RwLock<Nodes>,
    /// Behaviour switches.
    pub(super) options: BrokerOptions,
    /// Source of consumer ids, unique across the broker.
    next_consumer: AtomicU64,
    /// Source of unique names for dynamic nodes and subscriptions.
    pub(super) next_name: AtomicU64,
    /// Source of connection ids (no-local subscriptions compare them).
    next_connection: AtomicU64,
    /// Queues that asked to be woken at a time (a scheduled message, a
    /// redelivery delay): (when, ms since the epoch; queue name).
    wakeups: lock_order::Mutex<std::collections::BTreeSet<(u64, String)>>,
    /// Told when an earlier wake-up is asked for.
    wakeup_changed: tokio::sync::Notify,
    /// Who may do what where; replaced when the configuration is reloaded.
    access: RwLock<Arc<AccessRules>>,
    /// Memory held for clients against the high-water mark.
    memory: Arc<MemoryGauge>,
    /// This broker, for the queues it creates (they route dead letters).
    me: Weak<Broker>,
}

/// What recovery found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Durable queues (subscriptions included) rebuilt.
    pub queues: usize,
    /// Messages put back.
    pub messages: u64,
    /// Of those, messages whose body stayed on disk (memory limit reached).
    pub paged: u64,
    /// Stored values that could not be read (logged; left in the store).
    pub corrupt: u64,
    /// How long it took.
    pub duration: std::time::Duration,
}

/// Whether a new queue is persisted (if the broker has a store and the
/// queue's settings say `durable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep<'a> {
    /// A queue or a dead-letter/expiry queue.
    Queue,
    /// A durable subscription on this topic (or wildcard pattern), with
    /// its selector.
    Subscription(&'a str, Option<&'a str>),
    /// Dynamic nodes and non-durable subscriptions live with their link.
    Never,
}

impl Broker {
    /// A broker with the predeclared queues and nothing recovered (see
    /// [`Broker::open`] for a broker with a store).
    pub fn new(options: BrokerOptions) -> Arc<Self> {
        let broker = Self::empty(options);
        broker.predeclare();
        broker
    }

    /// A broker rebuilt from its store: durable queues with their settings,
    /// durable subscriptions and their messages, in order; then the
    /// predeclared queues that were not stored.
    pub fn open(options: BrokerOptions) -> Result<(Arc<Self>, RecoveryReport), StoreError> {
        let broker = Self::empty(options);
        let report = broker.recover()?;
        broker.predeclare();
        Ok((broker, report))
    }

    /// A broker with no nodes.
    fn empty(options: BrokerOptions) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Broker>| Self {
            nodes: lock_order::RwLock::new(Rank::Registry, Nodes::default()),
            options,
            next_consumer: AtomicU64::new(1),
            next_name: AtomicU64::new(1),
            next_connection: AtomicU64::new(1),
            wakeups: lock_order::Mutex::new(Rank::Timer, Default::default()),
            wakeup_changed: tokio::sync::Notify::new(),
            access: RwLock::new(Arc::new(AccessRules::default())),
            memory: Arc::new(MemoryGauge::default()),
            me: me.clone(),
        })
    }

    /// Creates the predeclared queues that do not exist yet.
    fn predeclare(&self) {
        let mut nodes = self.nodes.write();
        for name in &self.options.predeclared {
            if !nodes.queues.contains_key(name) {
                let settings = self.options.defaults.queue_settings(name);
                let queue = self.new_queue(name, settings, Keep::Queue);
                nodes.queues.insert(name.clone(), queue);
            }
        }
    }

    /// The store link, if the broker has a store.
    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.options.persistence.as_ref()
    }

    /// A new queue; persisted (its record submitted to the journal) when the
    /// broker has a store, the queue is durable and `keep` allows.
    pub(super) fn new_queue(
        &self,
        name: &str,
        settings: QueueSettings,
        keep: Keep<'_>,
    ) -> Arc<Queue> {
        let persistence = self.options.persistence.clone();
        let store_id = match (&persistence, keep) {
            (Some(p), Keep::Queue | Keep::Subscription(..)) if settings.durable => {
                let id = p.new_queue_id();
                let (topic, selector) = match keep {
                    Keep::Subscription(t, s) => (Some(t.to_string()), s.map(str::to_string)),
                    _ => (None, None),
                };
                let meta = QueueMeta {
                    name: name.to_string(),
                    topic,
                    selector,
                    settings: settings.clone(),
                };
                p.journal().submit([Record::PutQueue {
                    id,
                    meta: meta.encode(),
                }]);
                Some(id)
            }
            _ => None,
        };
        Arc::new(Queue::with_store(
            name.to_string(),
            settings,
            self.me.clone(),
            persistence,
            store_id,
        ))
    }

    /// Rebuilds stored queues and subscriptions, then their messages (with
    /// the registry unlocked: a message that expired meanwhile is routed).
    fn recover(&self) -> Result<RecoveryReport, StoreError> {
        let Some(p) = self.options.persistence.clone() else {
            return Ok(RecoveryReport::default());
        };
        let started = std::time::Instant::now();
        let store = Arc::clone(p.journal().store());
        let mut report = RecoveryReport::default();
        let mut rebuilt = Vec::new();
        {
            let mut nodes = self.nodes.write();
            for (id, meta) in store.queues()? {
                p.saw_queue_id(id);
                let meta = match QueueMeta::decode(&meta) {
                    Ok(meta) => meta,
                    Err(e) => {
                        tracing::error!(id, error = %e, "stored queue unreadable: skipped");
                        report.corrupt += 1;
                        continue;
                    }
                };
                let queue = Arc::new(Queue::with_store(
                    meta.name.clone(),
                    meta.settings,
                    self.me.clone(),
                    Some(Arc::clone(&p)),
                    Some(id),
                ));
                if let Some(topic_name) = &meta.topic {
                    let filter = meta.selector.as_deref().and_then(|text| {
                        let evaluate = self.options.evaluator?;
                        match crate::core::selector::Selector::parse(text) {
                            Ok(selector) => Some(Arc::new(crate::core::selector::Filter {
                                selector,
                                evaluate,
                            })),
                            Err(e) => {
                                tracing::error!(subscription = %meta.name, error = %e, "stored selector unreadable: the subscription gets every message");
                                None
                            }
                        }
                    });
                    queue.set_subscription_filter(filter, None);
                    queue.set_origin(topic_name);
                    Self::attach_subscription(&mut nodes, topic_name, &queue);
                    nodes
                        .durable
                        .insert(meta.name.clone(), (topic_name.clone(), Arc::clone(&queue)));
                }
                nodes.queues.insert(meta.name, Arc::clone(&queue));
                rebuilt.push((id, queue));
            }
        }
        report.queues = rebuilt.len();
        for (id, queue) in rebuilt {
            store.messages(id, &mut |m| {
                match persist::decode_entry(m.value, !p.over_limit()) {
                    Ok(mut entry) => {
                        if let Some(count) = m.count {
                            entry.delivery_count = count;
                        }
                        if entry.message.bare.is_empty() && entry.size > 0 {
                            report.paged += 1;
                        }
                        queue.restore(m.seq, entry);
                        report.messages += 1;
                    }
                    Err(e) => {
                        tracing::error!(queue = queue.name(), seq = m.seq, error = %e, "stored message unreadable: skipped");
                        report.corrupt += 1;
                    }
                }
            })?;
            let ids = store.duplicates(id)?;
            if !ids.is_empty() {
                queue.restore_duplicates(ids);
            }
        }
        report.duration = started.elapsed();
        Ok(report)
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
        self.check_name(name)?;
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
        // `$` names are the broker's own nodes (`$management`, and those
        // other brokers define, such as `$cbs`): a client asking for one it
        // does not know must not get a queue others could read.
        if !self.options.auto_create || name.starts_with('$') {
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
                if !settings.is_empty() {
                    // Addresses messages will be moved to are names too.
                    let addresses = std::iter::once(&queue_settings.dead_letter_address)
                        .chain(queue_settings.expiry_address.as_ref());
                    for address in addresses {
                        self.check_name(address)?;
                        if address.starts_with('$') {
                            return Err(CoreError::InvalidSetting {
                                message: format!("'{address}' cannot take dead or expired messages: names beginning with '$' are reserved"),
                            });
                        }
                    }
                }
                tracing::info!(queue = name, "queue created");
                let q = self.new_queue(name, queue_settings, Keep::Queue);
                nodes.queues.insert(name.to_string(), Arc::clone(&q));
                Ok(Node::Queue(q))
            }
            NodeKind::Topic => {
                if !settings.is_empty() {
                    return Err(CoreError::InvalidSetting {
                        message: "queue.* options do not apply to a topic".into(),
                    });
                }
                if let Some(t) = nodes.topics.get(name) {
                    return Ok(Node::Topic(Arc::clone(t)));
                }
                if super::subscriptions::is_pattern(name) {
                    // A wildcard names topics to subscribe to, not one to
                    // publish to.
                    return Err(CoreError::NotFound {
                        address: name.to_string(),
                    });
                }
                tracing::info!(topic = name, "topic created");
                let t = Arc::new(Topic::new(name.to_string()));
                // Wildcard subscriptions that match the new topic join it.
                for (pattern, queue) in &nodes.patterns {
                    if crate::core::settings::pattern_matches(pattern, name) {
                        t.add_subscription(Arc::clone(queue));
                    }
                }
                nodes.topics.insert(name.to_string(), Arc::clone(&t));
                Ok(Node::Topic(t))
            }
        }
    }

    /// Refuses a name longer than the limit.
    pub fn check_name(&self, name: &str) -> Result<(), CoreError> {
        let limit = self.options.max_name_length;
        if name.len() > limit {
            return Err(CoreError::NameTooLong {
                length: name.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Whether an address names topics: the client said so, or (for a
    /// plain name) no queue has that name and the configuration says topic.
    pub fn is_topic_address(&self, name: &str, kind: Option<NodeKind>) -> bool {
        match kind {
            Some(k) => k == NodeKind::Topic,
            None => {
                let nodes = self.nodes.read();
                self.infer_kind(&nodes, name) == NodeKind::Topic
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
    pub fn route(&self, address: &str, message: Arc<Message>) -> Result<Option<Ticket>, CoreError> {
        self.resolve(address, None, &[])?.publish(message)
    }

    /// Moves a message to a dead-letter or expiry address: the queue is
    /// created if missing, whatever auto-create says, and its limits do not
    /// refuse the message, so nothing is lost. Returns the journal ticket of
    /// its record there, if stored.
    pub fn forward(&self, address: &str, message: Message) -> Option<Ticket> {
        let topic = self.nodes.read().topics.get(address).cloned();
        if let Some(topic) = topic {
            // A topic: a copy for each subscription that takes it.
            let message = Arc::new(message);
            let mut ticket = None;
            for queue in topic.subscriptions() {
                if queue.takes_copy(&message, None) {
                    ticket = ticket.max(queue.publish_forced(Arc::clone(&message)));
                }
            }
            return ticket;
        }
        let existing = self.nodes.read().queues.get(address).cloned();
        let queue = existing.unwrap_or_else(|| {
            let mut nodes = self.nodes.write();
            if let Some(q) = nodes.queues.get(address) {
                return Arc::clone(q);
            }
            let settings = self.options.defaults.queue_settings(address);
            let q = self.new_queue(address, settings, Keep::Queue);
            nodes.queues.insert(address.to_string(), Arc::clone(&q));
            q
        });
        queue.publish_forced(Arc::new(message))
    }

    /// A new, uniquely named queue for a dynamic node created by
    /// `connection` (see [`Self::authorize_from`]).
    pub fn create_dynamic_queue(&self, connection: u64) -> Arc<Queue> {
        let name = format!("dynamic-{}", uuid::Uuid::new_v4());
        let settings = self.options.defaults.queue_settings(&name);
        let queue = self.new_queue(&name, settings, Keep::Never);
        let mut nodes = self.nodes.write();
        nodes.dynamic.insert(name.clone(), connection);
        nodes.queues.insert(name, Arc::clone(&queue));
        queue
    }

    /// Deletes a queue (a dynamic node or a non-durable subscription whose
    /// link went away) with its messages.
    pub fn delete_queue(&self, queue: &Arc<Queue>) {
        let mut nodes = self.nodes.write();
        self.drop_queue(&mut nodes, queue);
    }

    /// Removes a queue from every registry and topic.
    pub(super) fn drop_queue(&self, nodes: &mut Nodes, queue: &Arc<Queue>) {
        if nodes
            .queues
            .get(queue.name())
            .is_some_and(|q| Arc::ptr_eq(q, queue))
        {
            nodes.queues.remove(queue.name());
            nodes.dynamic.remove(queue.name());
        }
        for topic in nodes.topics.values() {
            topic.remove_subscription(queue);
        }
        nodes.patterns.retain(|(_, q)| !Arc::ptr_eq(q, queue));
        nodes.shared.retain(|_, (_, q, _)| !Arc::ptr_eq(q, queue));
        queue.delete();
        if let (Some(p), Some(id)) = (&self.options.persistence, queue.store_id()) {
            p.journal().submit([Record::DeleteQueue { id }]);
        }
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

    /// Time-driven work in every queue: expiry, idle groups, hand-over
    /// deadlines (called every second).
    pub fn tick(&self) {
        let queues: Vec<Arc<Queue>> = self.nodes.read().queues.values().cloned().collect();
        for queue in queues {
            queue.tick();
        }
    }

    /// Every queue (subscription and dynamic queues included), by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let nodes = self.nodes.read();
        let mut queues: Vec<Arc<Queue>> = nodes.queues.values().cloned().collect();
        queues.sort_by(|a, b| a.name().cmp(b.name()));
        queues
    }

    /// Every topic's name.
    pub fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.nodes.read().topics.keys().cloned().collect();
        names.sort();
        names
    }

    /// Bytes of queued messages in memory (0 without a store).
    pub fn resident_bytes(&self) -> usize {
        self.options
            .persistence
            .as_ref()
            .map_or(0, |p| p.resident())
    }

    /// Sets the memory high-water mark in bytes (0: none).
    pub fn set_memory_high_watermark(&self, bytes: u64) {
        self.memory.set_high_watermark(bytes);
    }

    /// Sets the cap on bytes of messages in assembly (0: the high-water mark).
    pub fn set_max_assembly_bytes(&self, bytes: u64) {
        self.memory.set_max_assembly(bytes);
    }

    /// The memory gauge: a connection takes an
    /// [`AssemblyCharge`](super::memory::AssemblyCharge) from it
    /// for each message arriving in several frames.
    pub fn memory(&self) -> &Arc<MemoryGauge> {
        &self.memory
    }

    /// The credit to grant a producer now, at most `max` (see
    /// `core::memory`: sized so that the mark holds producers back).
    pub fn producer_credit(&self, max: u32) -> u32 {
        self.memory
            .producer_credit(self.resident_bytes() as u64, max)
    }

    /// How close what the broker holds for clients (queued messages in
    /// memory and messages in assembly) is to the high-water mark:
    /// producers are held back at `Blocked`, and their messages are
    /// refused at `Full` (1.25 times the mark).
    pub fn memory_level(&self) -> MemoryLevel {
        self.memory.level(self.resident_bytes() as u64)
    }

    /// Replaces the access rules (at start and when the config is reloaded).
    pub fn set_access(&self, rules: AccessRules) {
        *self.access.write() = Arc::new(rules);
    }

    /// [`Self::authorize`] for a client on `connection`, which may always
    /// send to and receive from the dynamic nodes it created (its reply
    /// queues), whatever the access rules say.
    pub fn authorize_from(
        &self,
        connection: u64,
        principal: &Principal,
        permission: Permission,
        name: &str,
        kind: Option<NodeKind>,
    ) -> Result<(), CoreError> {
        let own = matches!(permission, Permission::Send | Permission::Receive)
            && self.nodes.read().dynamic.get(name) == Some(&connection);
        if own {
            return Ok(());
        }
        self.authorize(principal, permission, name, kind)
    }

    /// Checks that `principal` may do `permission` on the node `name` (of
    /// `kind`, if the client said), and may create it if it does not exist
    /// yet (auto-creation).
    pub fn authorize(
        &self,
        principal: &Principal,
        permission: Permission,
        name: &str,
        kind: Option<NodeKind>,
    ) -> Result<(), CoreError> {
        let rules = Arc::clone(&self.access.read());
        if !rules.enabled() {
            return Ok(());
        }
        let denied = |permission: Permission| {
            tracing::warn!(
                user = principal.display(),
                permission = permission.name(),
                address = name,
                "access denied"
            );
            CoreError::Unauthorized {
                principal: principal.display().to_string(),
                permission: permission.name(),
                address: name.to_string(),
            }
        };
        if !rules.allows(principal, permission, name) {
            return Err(denied(permission));
        }
        // A wildcard subscription creates no node.
        let creates = !super::subscriptions::is_pattern(name) && !self.exists(name, kind);
        if creates && !rules.allows(principal, Permission::Create, name) {
            return Err(denied(Permission::Create));
        }
        Ok(())
    }

    /// Whether `principal` may do `permission` on `name` (no log: for
    /// filtering lists).
    pub fn allows(&self, principal: &Principal, permission: Permission, name: &str) -> bool {
        let rules = Arc::clone(&self.access.read());
        !rules.enabled() || rules.allows(principal, permission, name)
    }

    /// Whether a node of that name exists (as the kind asked, or either).
    pub fn exists(&self, name: &str, kind: Option<NodeKind>) -> bool {
        let nodes = self.nodes.read();
        match kind {
            Some(NodeKind::Queue) => nodes.queues.contains_key(name),
            Some(NodeKind::Topic) => nodes.topics.contains_key(name),
            None => nodes.queues.contains_key(name) || nodes.topics.contains_key(name),
        }
    }

    /// A queue asks to be ticked at `at` (ms since the epoch).
    pub(crate) fn wake_at(&self, at: u64, queue: &str) {
        let mut wakeups = self.wakeups.lock();
        let earliest = wakeups.first().is_none_or(|(t, _)| at < *t);
        wakeups.insert((at, queue.to_string()));
        drop(wakeups);
        if earliest {
            self.wakeup_changed.notify_one();
        }
    }

    /// The earliest wake-up a queue asked for.
    pub fn next_wakeup(&self) -> Option<u64> {
        self.wakeups.lock().first().map(|(t, _)| *t)
    }

    /// Resolves when a wake-up earlier than the others is asked for.
    pub async fn wakeup_changed(&self) {
        self.wakeup_changed.notified().await;
    }

    /// Ticks the queues whose wake-up time has come.
    pub fn wake_due(&self, now: u64) {
        let mut due = Vec::new();
        {
            let mut wakeups = self.wakeups.lock();
            while wakeups.first().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, name)) = wakeups.pop_first() {
                    if !due.contains(&name) {
                        due.push(name);
                    }
                }
            }
        }
        for name in due {
            if let Some(queue) = self.existing_queue(&name) {
                queue.tick();
            }
        }
    }

    /// A fresh connection id (no-local subscriptions compare them).
    pub fn new_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
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
        if wanted != queue.settings() {
            return Err(CoreError::PreconditionFailed {
                message: format!("queue '{}' exists with a different {key}", queue.name()),
            });
        }
    }
    Ok(())
}
