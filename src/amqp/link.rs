//! Links: attach and detach, producer links (we receive) and consumer links
//! (we send).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::types::definitions::{
    Error as AmqpError, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::{DistributionMode, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Detach, Flow, Transfer};

use super::address::{self, NodeKind};
use super::error::{self, cond};
use super::message;
use super::session::{send_rejected, Ctx, Session};
use crate::core::{ConsumerId, ConsumerOptions, Queue};

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
    /// The peer sends, we receive into a queue.
    Producer(ProducerLink),
    /// We send from a queue, the peer receives.
    Consumer(ConsumerLink),
    /// We refused the attach and detached; waiting for the peer's detach.
    Refused,
}

/// A link on which the peer publishes.
#[derive(Debug)]
pub struct ProducerLink {
    /// Where messages go.
    pub queue: Arc<Queue>,
    /// The sender's delivery count as we have seen it.
    pub delivery_count: u32,
    /// Deliveries the sender may still start.
    pub credit: u32,
    /// A multi-frame delivery being assembled.
    pub partial: Option<Partial>,
    /// No more credit is granted (the link is being detached).
    pub blocked: bool,
}

/// An incoming delivery split over several transfer frames.
#[derive(Debug)]
pub struct Partial {
    /// Its delivery id.
    pub delivery_id: u32,
    /// The sender settled it (on any frame).
    pub settled: bool,
    /// The bytes so far.
    pub bytes: BytesMut,
}

/// A link on which the peer consumes.
#[derive(Debug)]
pub struct ConsumerLink {
    /// The queue it consumes from.
    pub queue: Arc<Queue>,
    /// Its identity in the queue.
    pub consumer: ConsumerId,
}

impl Link {
    /// Local detach: a consumer's unsettled deliveries go back to the queue.
    pub fn release(&mut self) {
        if let LinkKind::Consumer(c) = &self.kind {
            c.queue.detach_consumer(c.consumer);
        }
        self.kind = LinkKind::Refused;
    }

    /// The peer's flow for this link.
    pub fn on_flow(&mut self, flow: &Flow, ctx: &mut Ctx<'_>) {
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
                // left of the limit we granted.
                if let Some(dc) = flow.delivery_count {
                    let limit = p.delivery_count.wrapping_add(p.credit);
                    p.delivery_count = dc;
                    let left = limit.wrapping_sub(dc);
                    p.credit = if left <= i32::MAX as u32 { left } else { 0 };
                }
                let _ = ctx;
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
            self.end_with(
                cond::resource_limit(format!(
                    "handle {remote} exceeds handle-max {}",
                    ctx.config.handle_max
                )),
                ctx,
            );
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
        } else {
            match attach.role {
                Role::Sender => self
                    .attach_producer(&attach, local_handle, ctx)
                    .map(LinkKind::Producer),
                Role::Receiver => self
                    .attach_consumer(&attach, local_handle, ctx)
                    .map(LinkKind::Consumer),
            }
        };
        let kind = match result {
            Ok(kind) => kind,
            Err(error) => {
                tracing::info!(link = %attach.name, condition = ?error.condition, description = ?error.description, "attach refused");
                let mut reply = reply_attach(&attach, local_handle);
                // A refused link: our terminus is null, then we detach.
                match attach.role {
                    Role::Sender => reply.target = None,
                    Role::Receiver => reply.source = None,
                }
                ctx.out.frame(self.channel, &reply);
                ctx.out.frame(
                    self.channel,
                    &Detach {
                        handle: local_handle.into(),
                        closed: true,
                        error: Some(error),
                    },
                );
                LinkKind::Refused
            }
        };
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
            f.link_credit = Some(ctx.config.producer_credit);
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
                return Err(cond::not_implemented("transactions are not supported yet"))
            }
            None => return Err(cond::invalid_field("a producer link needs a target")),
        };
        let Some(addr) = target.address.as_deref() else {
            return Err(cond::not_implemented(
                "anonymous relay (null target address) is not supported yet",
            ));
        };
        let queue = resolve(addr, target.capabilities.as_ref(), ctx)?;
        let mut reply = reply_attach(attach, local_handle);
        reply.rcv_settle_mode = ReceiverSettleMode::First;
        reply.max_message_size = Some(ctx.config.max_message_size);
        ctx.out.frame(self.channel, &reply);
        tracing::info!(link = %attach.name, queue = queue.name(), "producer attached");
        let credit = ctx.config.producer_credit;
        Ok(ProducerLink {
            queue,
            delivery_count: attach.initial_delivery_count.unwrap_or(0),
            credit,
            partial: None,
            blocked: false,
        })
    }

    /// Resolves a consumer's source, registers it with the queue and
    /// answers its attach.
    fn attach_consumer(
        &mut self,
        attach: &Attach,
        local_handle: u32,
        ctx: &mut Ctx<'_>,
    ) -> Result<ConsumerLink, AmqpError> {
        let Some(source) = attach.source.as_deref() else {
            return Err(cond::invalid_field("a consumer link needs a source"));
        };
        if source.dynamic {
            return Err(cond::not_implemented("dynamic nodes are not supported yet"));
        }
        if matches!(source.distribution_mode, Some(DistributionMode::Copy)) {
            return Err(cond::not_implemented(
                "browsing (distribution-mode copy) is not supported yet",
            ));
        }
        let Some(addr) = source.address.as_deref() else {
            return Err(cond::invalid_field(
                "a consumer link needs a source address",
            ));
        };
        let queue = resolve(addr, source.capabilities.as_ref(), ctx)?;
        let presettled = attach.snd_settle_mode == SenderSettleMode::Settled;
        let mut reply = reply_attach(attach, local_handle);
        reply.snd_settle_mode = if presettled {
            SenderSettleMode::Settled
        } else {
            SenderSettleMode::Unsettled
        };
        reply.initial_delivery_count = Some(0);
        ctx.out.frame(self.channel, &reply);
        let consumer = ctx.broker.new_consumer_id();
        ctx.consumers.insert(consumer, (self.channel, local_handle));
        queue.attach_consumer(
            consumer,
            Arc::clone(ctx.outbox),
            ConsumerOptions { presettled },
        );
        tracing::info!(link = %attach.name, queue = queue.name(), consumer = consumer.0, presettled, "consumer attached");
        Ok(ConsumerLink { queue, consumer })
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
        link.release();
        if !refused {
            ctx.out.frame(
                self.channel,
                &Detach {
                    handle: local.into(),
                    closed: detach.closed,
                    error: None,
                },
            );
        }
        tracing::debug!(link = %link.name, "link detached");
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
        link.release();
        self.forget_deliveries(local);
        ctx.out.frame(
            self.channel,
            &Detach {
                handle: local.into(),
                closed: true,
                error: Some(error),
            },
        );
    }

    /// Drops what the session tracks for a link's deliveries (its queue took
    /// the messages back when the link was released).
    fn forget_deliveries(&mut self, local: u32) {
        self.unsettled.retain(|_, d| d.handle != local);
        self.pending.retain(|p| p.handle() != local);
    }

    /// A transfer frame from a producer.
    pub(super) fn on_transfer(&mut self, transfer: Transfer, payload: Bytes, ctx: &mut Ctx<'_>) {
        if self.incoming_window == 0 {
            self.end_with(
                cond::window_violation("transfer beyond the session's incoming window"),
                ctx,
            );
            return;
        }
        self.incoming_window -= 1;
        self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
        let remote = transfer.handle.0;
        let Some(&local) = self.handles.get(&remote) else {
            self.end_with(
                cond::unattached_handle(format!("transfer on unattached handle {remote}")),
                ctx,
            );
            return;
        };
        let channel = self.channel;
        let max_size = ctx.config.max_message_size;
        let Some(Some(link)) = self.links.get_mut(local as usize) else {
            return;
        };
        let p = match &mut link.kind {
            LinkKind::Producer(p) => p,
            LinkKind::Refused => return,
            LinkKind::Consumer(_) => {
                let e = cond::illegal_state("transfer on a link where the broker is the sender");
                self.detach_with(local, e, ctx);
                return;
            }
        };
        if transfer.aborted {
            p.partial = None;
            return;
        }
        let settled = transfer.settled.unwrap_or(false);
        let complete = match p.partial.take() {
            Some(mut partial) => {
                partial.settled |= settled;
                partial.bytes.extend_from_slice(&payload);
                if partial.bytes.len() as u64 > max_size {
                    let e =
                        cond::message_size(format!("message exceeds max-message-size {max_size}"));
                    self.detach_with(local, e, ctx);
                    return;
                }
                if transfer.more {
                    p.partial = Some(partial);
                    return;
                }
                (partial.delivery_id, partial.settled, partial.bytes.freeze())
            }
            None => {
                let Some(delivery_id) = transfer.delivery_id else {
                    let e =
                        cond::invalid_field("the first transfer of a delivery needs a delivery-id");
                    self.detach_with(local, e, ctx);
                    return;
                };
                if p.credit == 0 {
                    let e = cond::transfer_limit("transfer without link credit");
                    self.detach_with(local, e, ctx);
                    return;
                }
                p.credit -= 1;
                p.delivery_count = p.delivery_count.wrapping_add(1);
                if payload.len() as u64 > max_size {
                    let e =
                        cond::message_size(format!("message exceeds max-message-size {max_size}"));
                    self.detach_with(local, e, ctx);
                    return;
                }
                if transfer.more {
                    let mut bytes = BytesMut::with_capacity(payload.len() * 4);
                    bytes.extend_from_slice(&payload);
                    p.partial = Some(Partial {
                        delivery_id,
                        settled,
                        bytes,
                    });
                    return;
                }
                (delivery_id, settled, payload)
            }
        };
        let (delivery_id, settled, bytes) = complete;
        match message::parse(bytes) {
            Ok(m) => {
                p.queue.publish(Arc::new(m));
                if !settled {
                    self.accepted.push(delivery_id);
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "malformed message rejected");
                if !settled {
                    send_rejected(ctx.out, channel, delivery_id, cond::decode(e.to_string()));
                }
            }
        }
    }
}

/// Finds (or creates) the node an address names.
fn resolve(
    addr: &str,
    capabilities: Option<
        &fe2o3_amqp::types::primitives::Array<fe2o3_amqp::types::primitives::Symbol>,
    >,
    ctx: &mut Ctx<'_>,
) -> Result<Arc<Queue>, AmqpError> {
    let node =
        address::parse(addr, capabilities).map_err(|e| cond::invalid_field(e.to_string()))?;
    if node.kind == NodeKind::Topic {
        return Err(cond::not_implemented("topics are not supported yet"));
    }
    if let Some((key, _)) = node
        .options
        .iter()
        .find(|(k, _)| k != "consumer.prefetchSize")
    {
        return Err(cond::invalid_field(format!(
            "unknown address option '{key}'"
        )));
    }
    ctx.broker
        .queue(&node.name)
        .map_err(|e| error::from_core(&e))
}

/// Our attach answering the peer's: the opposite role, the peer's termini
/// echoed.
fn reply_attach(attach: &Attach, local_handle: u32) -> Attach {
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
        initial_delivery_count: None,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}
