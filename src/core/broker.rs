//! The registry of nodes: finds or creates queues by name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::error::CoreError;
use super::queue_handle::Queue;
use super::ConsumerId;

/// How the broker behaves, from the configuration.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Create a queue on first attach; otherwise unknown names are refused.
    pub auto_create: bool,
    /// Queues that exist from the start, even with auto-create off (the
    /// dead-letter address among them).
    pub predeclared: Vec<String>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            auto_create: true,
            predeclared: vec!["DLQ".to_string()],
        }
    }
}

/// All nodes of one broker. Shared by every connection.
#[derive(Debug)]
pub struct Broker {
    /// Queues by name. The lock is held only to look up or insert.
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    /// Behaviour switches.
    options: BrokerOptions,
    /// Source of consumer ids, unique across the broker.
    next_consumer: AtomicU64,
}

impl Broker {
    /// A broker with the predeclared queues.
    pub fn new(options: BrokerOptions) -> Arc<Self> {
        let queues = options
            .predeclared
            .iter()
            .map(|name| (name.clone(), Arc::new(Queue::new(name.clone()))))
            .collect();
        Arc::new(Self {
            queues: RwLock::new(queues),
            options,
            next_consumer: AtomicU64::new(1),
        })
    }

    /// The queue of that name, created if auto-create allows.
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>, CoreError> {
        if let Some(queue) = self.queues.read().get(name) {
            return Ok(Arc::clone(queue));
        }
        if !self.options.auto_create {
            return Err(CoreError::NotFound {
                address: name.to_string(),
            });
        }
        let mut queues = self.queues.write();
        let queue = queues.entry(name.to_string()).or_insert_with(|| {
            tracing::info!(queue = name, "queue created");
            Arc::new(Queue::new(name.to_string()))
        });
        Ok(Arc::clone(queue))
    }

    /// An existing queue, never created.
    pub fn existing_queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.read().get(name).cloned()
    }

    /// Names of all queues, sorted.
    pub fn queue_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.queues.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// A fresh consumer id.
    pub fn new_consumer_id(&self) -> ConsumerId {
        ConsumerId(self.next_consumer.fetch_add(1, Ordering::Relaxed))
    }
}
