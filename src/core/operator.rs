//! What operators do to a running broker through the admin API and the
//! `$management` node: move messages, change run-time queue settings, list
//! topics.

use std::sync::Arc;

use super::broker::Broker;
use super::error::CoreError;
use super::persist::QueueMeta;
use super::queue::{MoveReport, MoveTo};
use super::queue_handle::Queue;
use super::settings::QueueSettings;
use super::topic::Topic;
use crate::store::{Record, Ticket};

impl Broker {
    /// An operator's move of up to `limit` waiting messages of `queue`,
    /// oldest first (see [`MoveTo`]).
    /// Returns what moved and the journal ticket that makes it durable.
    pub fn move_messages(
        &self,
        queue: &Queue,
        to: &MoveTo,
        limit: usize,
    ) -> (MoveReport, Option<Ticket>) {
        let existing: std::collections::HashSet<String> =
            self.nodes.read().queues.keys().cloned().collect();
        queue.move_messages(to, limit, &existing)
    }

    /// Changes a queue's run-time settings (see [`Queue::change_settings`])
    /// and stores them with a durable queue, so they survive a restart;
    /// returns them and the journal ticket of that record.
    pub fn change_queue_settings(
        &self,
        queue: &Queue,
        changes: &[(String, String)],
    ) -> Result<(QueueSettings, Option<Ticket>), CoreError> {
        let settings = queue.change_settings(changes)?;
        let mut ticket = None;
        if let (Some(p), Some(id)) = (&self.options.persistence, queue.store_id()) {
            let topic = self
                .nodes
                .read()
                .durable
                .get(queue.name())
                .map(|(topic, _)| topic.clone());
            let meta = QueueMeta {
                name: queue.name().to_string(),
                topic,
                selector: queue.subscription_selector(),
                settings: settings.clone(),
            };
            ticket = Some(p.journal().submit([Record::PutQueue {
                id,
                meta: meta.encode(),
            }]));
        }
        Ok((settings, ticket))
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let nodes = self.nodes.read();
        let mut topics: Vec<Arc<Topic>> = nodes.topics.values().cloned().collect();
        topics.sort_by(|a, b| a.name().cmp(b.name()));
        topics
    }
}
