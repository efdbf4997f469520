//! Links: attach and detach. Producer links (we receive) publish to a node,
//! relay on `properties.to`, or talk to the transaction coordinator or the
//! management node `$management`; consumer links (we send) consume from a
//! queue, a topic subscription, a dynamic node, `$management`'s responses,
//! or browse.

use std::sync::Arc;

use fe2o3_amqp::types::definitions::{
    Error as AmqpError, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::{DistributionMode, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Detach, Flow};
use fe2o3_amqp::types::primitives::Array;
use fe2o3_amqp::types::transaction::{Coordinator, TxnCapability};

use super::address;
use super::consumer_options;
use super::error::{self, cond};
use super::incoming::Partial;
use super::management;
use super::selector_values;
use super::session::{Ctx, Session};
use super::subscription;
use crate::core::access::Permission;
use crate::core::broker::MemoryLevel;
use crate::core::memory::ProducerShare;
use crate::core::selector::Filter;
use crate::core::{Broker, ConsumerId, ConsumerOptions, GroupFilter, Node, Queue};

/// One attached link.
#[derive(Debug)]
pub struct Link {
    /// The link's name (with the role, its identity).
    pub name: String,
    /// The peer's handle.
    pub remote_handle: u32,
    /// What the link does.
    pub kind: LinkKind,
}

/// The two directions, and a refused link awaiting the peer's detach.
#[derive(Debug)]
pub enum LinkKind {
    /// The peer sends, we receive into a node.
    Producer(ProducerLink),
    /// We send from a queue, the peer receives.
    Consumer(ConsumerLink),
    /// We refused the attach or detached; waiting for the peer's detach.
    Refused,
}

/// Where a producer's messages go.
#[derive(Debug)]
pub enum ProducerTarget {
    /// One node.
    Node(Node),
    /// Anonymous relay: each message to its `properties.to`.
    Relay,
    /// The transaction coordinator: declares and discharges.
    Coordinator,
    /// The management node `$management`: requests answered to their
    /// reply-to.
    Management,
}

/// A link on which the peer publishes.
#[derive(Debug)]
pub struct ProducerLink {
    /// Where messages go.
    pub target: ProducerTarget,
    /// The sender's delivery count as we have seen it.
    pub delivery_count: u32,
    /// Deliveries the sender may still start, by our last grant. After a
    /// revocation it still bounds what may arrive: transfers the sender
    /// started before it saw the revocation are welcome.
    pub credit: u32,
    /// A multi-frame delivery being assembled.
    pub partial: Option<Partial>,
    /// No more credit is granted (the link is being detached).
    pub blocked: bool,
    /// We told the sender it has no credit (the broker reached its memory
    /// high-water mark); it gets a new grant once memory is below it.
    pub revoked: bool,
    /// Its share of the memory below the mark, which sizes producers'
    /// credit (none for control links).
    pub share: Option<ProducerShare>,
}

impl ProducerLink {
    /// A producer link with `credit` granted.
    pub fn new(target: ProducerTarget, delivery_count: u32, credit: u32) -> Self {
        Self {
            target,
            delivery_count,
            credit,
            partial: None,
            blocked: false,
            revoked: false,
            share: None,
        }
    }

    /// Whether it carries control messages (transactions, management)
    /// rather than messages to queue: those keep their credit when memory
    /// is short, so that transactions can end and an operator can look.
    pub fn is_control(&self) -> bool {
        matches!(
            self.target,
            ProducerTarget::Coordinator | ProducerTarget::Management
        )
    }
}

/// What happens to a consumer's queue when the link goes.
#[derive(Debug)]
pub enum Cleanup {
    /// Nothing: an ordinary queue.
    Keep,
    /// Deleted with the link: a dynamic node or a non-durable subscription.
    Delete,
    /// A durable subscription: removed only by a detach with `closed = true`
    /// (and, if shared, once no other consumer is on it).
    Durable(String),
    /// A shared non-durable subscription: goes with its last consumer.
    Shared(String),
}

/// A link on which the peer consumes.
#[derive(Debug)]
pub struct ConsumerLink {
    /// The queue it consumes from.
    pub queue: Arc<Queue>,
    /// Its identity in the queue.
    pub consumer: ConsumerId,
    /// What to do with the queue when the link goes.
    pub cleanup: Cleanup,
    /// The broker, for the cleanup.
    pub broker: Arc<Broker>,
}

impl Link {
    /// Local end of the link: a consumer's unsettled deliveries go back to
    /// the queue; a dynamic or non-durable subscription queue is deleted; a
    /// durable subscription is removed only if `closed`.
    pub fn release(&mut self, closed: bool) {
        if let LinkKind::Consumer(c) = &self.kind {
            c.queue.detach_consumer(c.consumer);
            match &c.cleanup {
                Cleanup::Keep => {}
                Cleanup::Delete => c.broker.delete_queue(&c.queue),
                Cleanup::Durable(name) if closed && c.queue.stats().consumers == 0 => {
                    c.broker.unsubscribe_durable(name)
                }
                Cleanup::Durable(_) => {}
                Cleanup::Shared(name) => c.broker.leave_shared(name),
            }
        }
        self.kind = LinkKind::Refused;
    }

    /// The peer's flow for this link.
    pub fn on_flow(&mut self, flow: &Flow) {
        match &mut self.kind {
            LinkKind::Consumer(c) => {
                let result = c.queue.flow(
                    c.consumer,
                    flow.delivery_count.unwrap_or(0),
                    flow.link_credit.unwrap_or(0),
                    flow.drain,
                    flow.echo,
                );
                if let Err(e) = result {
                    tracing::warn!(error = %e, link = %self.name, "flow refused by queue");
                }
            }
            LinkKind::Producer(p) => {
                // The sender tells us its delivery count; credit is what is
                // left of the limit we granted (a count behind ours is
                // stale: nothing changes).
                if let Some(dc) = flow.delivery_count {
                    if !super::session::serial_lt(dc, p.delivery_count) {
                        p.credit = crate::core::serial::remaining(p.credit, p.delivery_count, dc);
                        p.delivery_count = dc;
                    }
                }
            }
            LinkKind::Refused => {}
        }
    }
}

impl Session {
    /// The peer attaches a link.
    pub(super) fn on_attach(&mut self, attach: Attach, ctx: &mut Ctx<'_>) {
        let remote = attach.handle.0;
        if remote > ctx.config.handle_max {
            let e = cond::resource_limit(format!(
                "handle {remote} exceeds handle-max {}",
                ctx.config.handle_max
            ));
            self.end_with(e, ctx);
            return;
        }
        if self.handles.contains_key(&remote) {
            self.end_with(
                cond::handle_in_use(format!("handle {remote} is already attached")),
                ctx,
            );
            return;
        }
        let is_sender = attach.role == Role::Sender;
        let duplicate = self.links.iter().flatten().any(|l| {
            l.name == attach.name
                && matches!(
                    (&l.kind, is_sender),
                    (LinkKind::Producer(_), true) | (LinkKind::Consumer(_), false)
                )
        });
        let local = match self.links.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.links.push(None);
                self.links.len() - 1
            }
        };
        let local_handle = local as u32;
        self.handles.insert(remote, local_handle);
        let result = if duplicate {
            Err(cond::invalid_field(format!(
                "a link named '{}' is already attached in this direction",
                attach.name
            )))
        } else if is_sender {
            self.attach_producer(&attach, local_handle, ctx)
                .map(LinkKind::Producer)
        } else {
            self.attach_consumer(&attach, local_handle, ctx)
                .map(LinkKind::Consumer)
        };
        let kind = match result {
            Ok(kind) => kind,
            Err(error) => {
                tracing::info!(link = %attach.name, condition = ?error.condition, description = ?error.description, "attach refused");
                let mut reply = reply_attach(&attach, local_handle);
                // A refused link: our terminus is null, then we detach.
                if is_sender {
                    reply.target = None;
                } else {
                    reply.source = None;
                }
                ctx.out.frame(self.channel, &reply);
                let detach = Detach {
                    handle: local_handle.into(),
                    closed: true,
                    error: Some(error),
                };
                ctx.out.frame(self.channel, &detach);
                LinkKind::Refused
            }
        };
        let mut kind = kind;
        let mut credit = ctx.config.producer_credit;
        if let LinkKind::Producer(p) = &mut kind {
            // Sized by the memory left: none at the high-water mark, until
            // there is room (the coordinator keeps its credit, so
            // transactions can end, and so does `$management`, so an
            // operator can look).
            if !p.is_control() {
                p.share = Some(ctx.broker.memory().producer());
                credit = if ctx.broker.memory_level() == MemoryLevel::Normal {
                    ctx.broker.producer_credit(ctx.config.producer_credit)
                } else {
                    0
                };
                p.credit = credit;
            }
        }
        let is_producer = matches!(kind, LinkKind::Producer(_));
        self.links[local] = Some(Link {
            name: attach.name.clone(),
            remote_handle: remote,
            kind,
        });
        if is_producer {
            // Grant the producer its credit right away.
            let mut f = self.session_flow();
            f.handle = Some(local_handle.into());
            f.delivery_count = attach.initial_delivery_count.or(Some(0));
            f.link_credit = Some(credit);
            ctx.out.frame(self.channel, &f);
        }
    }

    /// Resolves a producer's target and answers its attach.
    fn attach_producer(
        &mut self,
        attach: &Attach,
        local_handle: u32,
        ctx: &mut Ctx<'_>,
    ) -> Result<ProducerLink, AmqpError> {
        let target = match attach.target.as_deref() {
            Some(TargetArchetype::Target(t)) => t,
            Some(TargetArchetype::Coordinator(_)) => {
                // The controller's attach, echoed: local transactions.
                let mut reply = reply_attach(attach, local_handle);
                reply.rcv_settle_mode = ReceiverSettleMode::First;
                reply.target = Some(Box::new(TargetArchetype::Coordinator(Coordinator {
                    capabilities: Some(Array(vec![TxnCapability::LocalTransactions])),
                })));
                ctx.out.frame(self.channel, &reply);
                tracing::info!(link = %attach.name, "transaction coordinator attached");
                return Ok(ProducerLink::new(
                    ProducerTarget::Coordinator,
                    attach.initial_delivery_count.unwrap_or(0),
                    ctx.config.producer_credit,
                ));
            }
            None => return Err(cond::invalid_field("a producer link needs a target")),
        };
        if target.dynamic {
            return Err(cond::not_implemented("dynamic targets are not supported"));
        }
        let destination = match target.address.as_deref() {
            // Anonymous relay: every message says where it goes.
            None => ProducerTarget::Relay,
            // Open to every principal: what a request may see is decided
            // by the `manage` permission.
            Some(addr) if management::is_address(addr) => {
                management::no_options(addr)?;
                ProducerTarget::Management
            }
            Some(addr) => {
                let node = address::parse(addr, target.capabilities.as_ref())
                    .map_err(|e| cond::invalid_field(e.to_string()))?;
                let options = consumer_options::address_options(&node)?;
                ctx.authorize(Permission::Send, &node.name, node.kind)?;
                let resolved = ctx
                    .broker
                    .resolve(&node.name, node.kind, &options.queue)
                    .map_err(|e| error::from_core(&e))?;
                ProducerTarget::Node(resolved)
            }
        };
        let mut reply = reply_attach(attach, local_handle);
        reply.rcv_settle_mode = ReceiverSettleMode::First;
        reply.max_message_size = Some(ctx.config.max_message_size);
        ctx.out.frame(self.channel, &reply);
        match &destination {
            ProducerTarget::Node(n) => {
                tracing::info!(link = %attach.name, node = n.name(), "producer attached")
            }
            ProducerTarget::Relay => {
                tracing::info!(link = %attach.name, "anonymous-relay producer attached")
            }
            ProducerTarget::Management => {
                tracing::info!(link = %attach.name, "management requester attached")
            }
            ProducerTarget::Coordinator => {}
        }
        Ok(ProducerLink::new(
            destination,
            attach.initial_delivery_count.unwrap_or(0),
            ctx.config.producer_credit,
        ))
    }

    /// Resolves a consumer's source (queue, topic subscription, dynamic
    /// node), registers it with the queue and answers its attach.
    fn attach_consumer(
        &mut self,
        attach: &Attach,
        local_handle: u32,
        ctx: &mut Ctx<'_>,
    ) -> Result<ConsumerLink, AmqpError> {
        let Some(source) = attach.source.as_deref() else {
            return Err(cond::invalid_field("a consumer link needs a source"));
        };
        let properties = consumer_options::link_properties(attach.properties.as_ref())?;
        let filters = consumer_options::source_filters(source)?;
        let session = filters.session.clone();
        let filter = filters.selector.clone().map(|selector| {
            Arc::new(Filter {
                selector,
                evaluate: selector_values::evaluate,
            })
        });
        let mut priority = properties.priority;
        let mut exclusive = properties.exclusive;
        let mut group_filter = properties.group_filter.map(GroupFilter::Group);
        let browse = matches!(source.distribution_mode, Some(DistributionMode::Copy));
        let mut reply = reply_attach(attach, local_handle);
        // A topic subscription filters as copies are routed; a queue
        // consumer as messages are dispatched.
        let mut consumer_filter = None;
        let (queue, cleanup) = if source.dynamic {
            let queue = ctx.broker.create_dynamic_queue(ctx.connection);
            if let Some(s) = reply.source.as_deref_mut() {
                s.address = Some(queue.name().to_string());
            }
            consumer_filter = filter;
            (queue, Cleanup::Delete)
        } else if let Some(addr) = source
            .address
            .as_deref()
            .filter(|a| management::is_address(a))
        {
            // A receiver of `$management` replies: a queue of its own,
            // deleted with the link.
            management::no_options(addr)?;
            consumer_filter = filter;
            (management::attach_replies(attach, ctx)?, Cleanup::Delete)
        } else {
            let Some(addr) = source.address.as_deref() else {
                return Err(cond::invalid_field(
                    "a consumer link needs a source address",
                ));
            };
            let node = address::parse(addr, source.capabilities.as_ref())
                .map_err(|e| cond::invalid_field(e.to_string()))?;
            let options = consumer_options::address_options(&node)?;
            ctx.authorize(Permission::Receive, &node.name, node.kind)?;
            priority = options.priority.or(priority);
            exclusive = options.exclusive.unwrap_or(exclusive);
            if let Some(g) = options.group_filter {
                group_filter = Some(GroupFilter::Group(g));
            }
            let pattern = crate::core::subscriptions::is_pattern(&node.name)
                && ctx.broker.is_topic_address(&node.name, node.kind);
            if pattern {
                subscription::subscribe(
                    attach,
                    source,
                    None,
                    &node.name,
                    filter,
                    filters.no_local,
                    ctx,
                )?
            } else {
                match ctx
                    .broker
                    .resolve(&node.name, node.kind, &options.queue)
                    .map_err(|e| error::from_core(&e))?
                {
                    Node::Queue(q) => {
                        consumer_filter = filter;
                        (q, Cleanup::Keep)
                    }
                    Node::Topic(topic) => subscription::subscribe(
                        attach,
                        source,
                        Some(&topic),
                        &node.name,
                        filter,
                        filters.no_local,
                        ctx,
                    )?,
                }
            }
        };
        // The session filter (Azure Service Bus) wins over the other forms.
        let from_session = session.is_some();
        if let Some(filter) = session {
            group_filter = Some(filter);
        }
        let presettled = browse || attach.snd_settle_mode == SenderSettleMode::Settled;
        let consumer = ctx.broker.new_consumer_id();
        let options = ConsumerOptions {
            presettled,
            priority: priority.unwrap_or(0),
            browse,
            exclusive,
            group_filter,
            filter: consumer_filter,
            max_unsettled: ctx.config.max_unsettled_per_link,
            origin: Some((ctx.connection, Arc::from(attach.name.as_str()))),
        };
        let attached =
            match queue.attach_consumer(consumer, Arc::clone(ctx.outbox), options.clone()) {
                Ok(attached) => attached,
                Err(e) => {
                    if matches!(cleanup, Cleanup::Delete) {
                        ctx.broker.delete_queue(&queue);
                    }
                    return Err(error::from_core(&e));
                }
            };
        reply.snd_settle_mode = if presettled {
            SenderSettleMode::Settled
        } else {
            SenderSettleMode::Unsettled
        };
        if attached.exclusive {
            reply.properties = Some(consumer_options::exclusive_properties());
        }
        if let Some(s) = reply.source.as_deref_mut() {
            // Only the filters the broker applies are echoed.
            consumer_options::echo_filters(s, &filters.applied);
            if let (Some(group), true) = (&attached.group, from_session) {
                consumer_options::echo_session(s, group);
            }
        }
        ctx.out.frame(self.channel, &reply);
        ctx.consumers.insert(consumer, (self.channel, local_handle));
        tracing::info!(link = %attach.name, queue = queue.name(), consumer = consumer.0, presettled, browse, priority = options.priority, exclusive = attached.exclusive, group_filter = ?options.group_filter, "consumer attached");
        Ok(ConsumerLink {
            queue,
            consumer,
            cleanup,
            broker: Arc::clone(ctx.broker),
        })
    }

    /// The peer detaches a link.
    pub(super) fn on_detach(&mut self, detach: Detach, ctx: &mut Ctx<'_>) {
        let remote = detach.handle.0;
        let Some(local) = self.handles.remove(&remote) else {
            self.end_with(
                cond::unattached_handle(format!("detach of unattached handle {remote}")),
                ctx,
            );
            return;
        };
        let Some(mut link) = self.links.get_mut(local as usize).and_then(Option::take) else {
            return;
        };
        if let Some(e) = &detach.error {
            tracing::info!(link = %link.name, error = ?e, "peer detached with an error");
        }
        let refused = matches!(link.kind, LinkKind::Refused);
        if let LinkKind::Consumer(c) = &link.kind {
            ctx.consumers.remove(&c.consumer);
        }
        self.forget_deliveries(local);
        link.release(detach.closed);
        if !refused {
            let reply = Detach {
                handle: local.into(),
                closed: detach.closed,
                error: None,
            };
            ctx.out.frame(self.channel, &reply);
        }
        tracing::debug!(link = %link.name, closed = detach.closed, "link detached");
    }

    /// Detaches a link from our side with an error.
    pub(super) fn detach_with(&mut self, local: u32, error: AmqpError, ctx: &mut Ctx<'_>) {
        let Some(Some(link)) = self.links.get_mut(local as usize) else {
            return;
        };
        tracing::info!(link = %link.name, condition = ?error.condition, description = ?error.description, "detaching link");
        if let LinkKind::Consumer(c) = &link.kind {
            ctx.consumers.remove(&c.consumer);
        }
        link.release(true);
        self.forget_deliveries(local);
        let detach = Detach {
            handle: local.into(),
            closed: true,
            error: Some(error),
        };
        ctx.out.frame(self.channel, &detach);
    }

    /// Drops what the session tracks for a link's deliveries (its queue took
    /// the messages back when the link was released).
    fn forget_deliveries(&mut self, local: u32) {
        self.unsettled.retain(|_, d| d.handle != local);
        self.pending.retain(|p| p.handle() != local);
    }
}

/// Our attach answering the peer's: the opposite role, the peer's termini
/// echoed.
pub(super) fn reply_attach(attach: &Attach, local_handle: u32) -> Attach {
    // AMQP requires initial-delivery-count on a sender's attach, a refused
    // one included.
    let ours_sends = attach.role == Role::Receiver;
    Attach {
        name: attach.name.clone(),
        handle: local_handle.into(),
        role: match attach.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        },
        snd_settle_mode: attach.snd_settle_mode.clone(),
        rcv_settle_mode: attach.rcv_settle_mode.clone(),
        source: attach.source.clone(),
        target: attach.target.clone(),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: ours_sends.then_some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}
