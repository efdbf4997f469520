//! Topic subscriptions: each is a queue that gets a copy of what its topic
//! receives (SPEC §2), filtered by its selector and no-local setting as the
//! copy is routed.
//!
//! - **Non-durable** subscriptions live with their link.
//! - **Durable** ones are named, persisted (with their selector) and kept
//!   while the subscriber is away.
//! - **Shared** ones (JMS 2.0 shared subscriptions) have several consumers
//!   competing on one queue, found by name; a non-durable shared one goes
//!   with its last consumer.
//! - A subscription to a **wildcard pattern** (`prices.*`: one word,
//!   `orders.#`: any words, `.` between words, as Artemis does) joins every
//!   topic the pattern matches, now and when one is created.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::broker::{Broker, Keep, Nodes};
use super::error::CoreError;
use super::queue_handle::Queue;
use super::selector::Filter;
use super::settings::pattern_matches;
use super::topic::Topic;

/// What a subscriber asks for.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionSpec {
    /// The subscription's name (durable and shared ones are found by it).
    pub name: Option<String>,
    /// It survives its subscriber's absence (and a broker restart).
    pub durable: bool,
    /// Several consumers may share it.
    pub shared: bool,
    /// Only messages the selector matches are copied to it.
    pub filter: Option<Arc<Filter>>,
    /// Messages published by this connection are not copied to it.
    pub no_local: Option<u64>,
}

/// What a subscription is on.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// One topic.
    Topic(&'a Arc<Topic>),
    /// Every topic a wildcard pattern matches.
    Pattern(&'a str),
}

impl Source<'_> {
    /// The topic name or pattern.
    fn name(&self) -> &str {
        match self {
            Source::Topic(t) => t.name(),
            Source::Pattern(p) => p,
        }
    }
}

/// Whether an address is a wildcard pattern.
pub fn is_pattern(address: &str) -> bool {
    address.split('.').any(|w| w == "*" || w == "#")
}

impl Broker {
    /// A subscription queue. A durable or shared one is found again by its
    /// name: if it exists on another topic or with another selector it is
    /// replaced (as JMS does when a durable subscriber changes them) — for
    /// a shared one that still has consumers, that is refused. A
    /// non-durable, non-shared one is new each time.
    pub fn subscribe(
        &self,
        on: Source<'_>,
        spec: &SubscriptionSpec,
    ) -> Result<Arc<Queue>, CoreError> {
        self.check_name(on.name())?;
        if let Some(name) = &spec.name {
            self.check_name(name)?;
        }
        let mut nodes = self.nodes.write();
        let selector = spec.filter.as_ref().map(|f| f.selector.text().to_string());
        if let Some(name) = &spec.name {
            let found = if spec.durable {
                nodes
                    .durable
                    .get(name)
                    .map(|(t, q)| (t.clone(), Arc::clone(q)))
            } else if spec.shared {
                nodes
                    .shared
                    .get(name)
                    .map(|(t, q, _)| (t.clone(), Arc::clone(q)))
            } else {
                None
            };
            if let Some((topic, queue)) = found {
                let same = topic == on.name() && queue.subscription_selector() == selector;
                if same {
                    queue.set_subscription_filter(spec.filter.clone(), spec.no_local);
                    if spec.shared && !spec.durable {
                        if let Some(entry) = nodes.shared.get_mut(name) {
                            entry.2 += 1;
                        }
                    }
                    return Ok(queue);
                }
                if spec.shared && queue.stats().consumers > 0 {
                    return Err(CoreError::PreconditionFailed {
                        message: format!(
                            "shared subscription '{name}' exists on '{topic}' with another selector or topic and has consumers"
                        ),
                    });
                }
                nodes.durable.remove(name);
                nodes.shared.remove(name);
                self.drop_queue(&mut nodes, &queue);
            }
        }
        let queue_name = match &spec.name {
            Some(name) => name.clone(),
            None => format!(
                "{}::sub-{}",
                on.name(),
                self.next_name.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let settings = self.options.defaults.queue_settings(on.name());
        let keep = if spec.durable {
            Keep::Subscription(on.name(), selector.as_deref())
        } else {
            Keep::Never
        };
        let queue = self.new_queue(&queue_name, settings, keep);
        queue.set_origin(on.name());
        queue.set_subscription_filter(spec.filter.clone(), spec.no_local);
        Self::attach_subscription(&mut nodes, on.name(), &queue);
        nodes.queues.insert(queue_name.clone(), Arc::clone(&queue));
        if spec.durable {
            if let Some(name) = &spec.name {
                nodes
                    .durable
                    .insert(name.clone(), (on.name().to_string(), Arc::clone(&queue)));
            }
        } else if spec.shared {
            if let Some(name) = &spec.name {
                nodes
                    .shared
                    .insert(name.clone(), (on.name().to_string(), Arc::clone(&queue), 1));
            }
        }
        tracing::info!(
            on = on.name(),
            queue = %queue_name,
            durable = spec.durable,
            shared = spec.shared,
            selector = ?selector,
            no_local = spec.no_local.is_some(),
            "subscription created"
        );
        Ok(queue)
    }

    /// Adds a subscription queue to its topic, or to every topic its
    /// pattern matches (and remembers the pattern for topics to come).
    pub(super) fn attach_subscription(nodes: &mut Nodes, on: &str, queue: &Arc<Queue>) {
        if is_pattern(on) {
            for (name, topic) in &nodes.topics {
                if pattern_matches(on, name) {
                    topic.add_subscription(Arc::clone(queue));
                }
            }
            nodes.patterns.push((on.to_string(), Arc::clone(queue)));
        } else {
            let topic = nodes
                .topics
                .entry(on.to_string())
                .or_insert_with(|| Arc::new(Topic::new(on.to_string())));
            topic.add_subscription(Arc::clone(queue));
        }
    }

    /// A consumer of a shared non-durable subscription left: the
    /// subscription goes with its last consumer.
    pub fn leave_shared(&self, name: &str) {
        let mut nodes = self.nodes.write();
        let last = match nodes.shared.get_mut(name) {
            Some(entry) => {
                entry.2 = entry.2.saturating_sub(1);
                entry.2 == 0
            }
            None => false,
        };
        if last {
            if let Some((_, queue, _)) = nodes.shared.remove(name) {
                self.drop_queue(&mut nodes, &queue);
                tracing::info!(subscription = name, "shared subscription removed");
            }
        }
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
}
