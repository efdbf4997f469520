//! What the management API shows of a queue: its consumers and groups.

use super::{GroupFilter, QueueState};

/// One consumer of a queue, as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerView {
    /// Its id (broker-wide).
    pub id: u64,
    /// Its priority.
    pub priority: i32,
    /// Link credit it has left.
    pub credit: u32,
    /// Its deliveries awaiting an outcome.
    pub unsettled: u32,
    /// Groups it owns.
    pub groups: u32,
    /// It asked to be exclusive (or the queue is).
    pub exclusive: bool,
    /// It is the active exclusive consumer.
    pub active: bool,
    /// It browses.
    pub browse: bool,
    /// Pre-settled (at-most-once).
    pub presettled: bool,
    /// The group filter it was given, if any.
    pub group_filter: Option<String>,
    /// Its selector, if any.
    pub selector: Option<String>,
    /// The connection it belongs to.
    pub connection: Option<u64>,
    /// Its link's name.
    pub link: Option<String>,
}

/// One message group of a queue, as the management API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupView {
    /// The group id.
    pub id: String,
    /// The consumer it is pinned to.
    pub owner: Option<u64>,
    /// Its queued messages.
    pub queued: usize,
    /// Its deliveries awaiting an outcome or a commit.
    pub unsettled: u32,
    /// Stopped at a poison message until an operator releases it.
    pub held: bool,
    /// Pinned by a consumer's group filter.
    pub pinned: bool,
    /// Moving to another consumer once its unsettled deliveries settle.
    pub handing_over: bool,
    /// Its head waits out a redelivery delay until then (ms since the epoch).
    pub delayed_until: Option<u64>,
    /// Since when (ms since the epoch) it has had its owner, had none, or
    /// been held; None if it never had an owner.
    pub since: Option<u64>,
    /// When a message of it was last delivered (ms since the epoch).
    pub last_delivery: Option<u64>,
}

impl QueueState {
    /// The consumers, in attach order.
    pub fn consumers_view(&self) -> Vec<ConsumerView> {
        let active = self.active_consumer();
        self.consumers
            .iter()
            .map(|c| ConsumerView {
                id: c.id.0,
                priority: c.options.priority,
                credit: c.credit,
                unsettled: c.unsettled,
                groups: c.owned,
                exclusive: c.options.exclusive || self.settings.exclusive,
                active: active == Some(c.id),
                browse: c.options.browse,
                presettled: c.options.presettled,
                group_filter: c.options.group_filter.as_ref().map(|f| match f {
                    GroupFilter::Group(g) => g.clone(),
                    GroupFilter::Any => "*".to_string(),
                }),
                selector: c
                    .options
                    .filter
                    .as_ref()
                    .map(|f| f.selector.text().to_string()),
                connection: c.options.origin.as_ref().map(|o| o.0),
                link: c.options.origin.as_ref().map(|o| o.1.to_string()),
            })
            .collect()
    }

    /// Up to `limit` groups, held ones first, then by id.
    pub fn groups_view(&self, limit: usize) -> Vec<GroupView> {
        let mut groups: Vec<GroupView> = self
            .groups
            .slots
            .iter()
            .flatten()
            .map(|g| GroupView {
                id: g.key.to_string(),
                owner: g.owner.map(|o| o.0),
                queued: g.queue.len(),
                unsettled: g.inflight,
                held: g.held,
                pinned: g.pinned,
                handing_over: g.handover.is_some(),
                delayed_until: g.delayed_until,
                since: (g.since > 0).then_some(g.since),
                last_delivery: g.last_delivery,
            })
            .collect();
        groups.sort_by(|a, b| b.held.cmp(&a.held).then_with(|| a.id.cmp(&b.id)));
        groups.truncate(limit);
        groups
    }
}
