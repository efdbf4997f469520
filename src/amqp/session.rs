//! A session: transfer windows, delivery ids, and the links attached in it.
//!
//! Transfer ids and delivery ids are RFC 1982 serial numbers: every
//! comparison and difference wraps.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::types::definitions::{Error as AmqpError, Role};
use fe2o3_amqp::types::messaging::{Accepted, DeliveryState, Rejected};
use fe2o3_amqp::types::performatives::{Begin, Disposition, End, Flow};

use super::connection::{EngineConfig, Output};
use super::coordinator::Transactions;
use super::error::cond;
use super::link::{Link, LinkKind};
use super::management::ReplyQueues;
use super::outgoing::{send_settle, StoredSettle};
use super::outgoing::{OutDelivery, Pending};
use crate::core::access::{Permission, Principal};
use crate::core::serial::remaining;
use crate::core::{Broker, ConsumerId, Outbox, OutboxItem};
use crate::store::{Journal, Ticket, TicketStatus};

/// What a session needs from its connection while handling a frame.
pub struct Ctx<'a> {
    /// Settings.
    pub config: &'a EngineConfig,
    /// The nodes.
    pub broker: &'a Arc<Broker>,
    /// The connection's outbox, given to queues for this connection's consumers.
    pub outbox: &'a Arc<Outbox>,
    /// Frames to send.
    pub out: &'a mut Output,
    /// The connection's consumer map: consumer → (channel, handle).
    pub consumers: &'a mut HashMap<ConsumerId, (u16, u32)>,
    /// The peer's container-id (names durable subscriptions).
    pub container: &'a str,
    /// The connection's open transactions.
    pub txns: &'a mut Transactions,
    /// The connection's id in the broker.
    pub connection: u64,
    /// Who the peer is, for access rules.
    pub principal: &'a Principal,
    /// The reply queues of the connection's receivers on `$management`.
    pub replies: &'a mut ReplyQueues,
    /// Messages the peer sent that the broker took (published or posted).
    pub received: &'a mut u64,
}

impl Ctx<'_> {
    /// Whether the peer may do `permission` on node `name`, as an AMQP
    /// error if not (access rules, and the dynamic nodes this connection
    /// created, which it may always use).
    pub fn authorize(
        &self,
        permission: Permission,
        name: &str,
        kind: Option<crate::core::NodeKind>,
    ) -> Result<(), AmqpError> {
        self.broker
            .authorize_from(self.connection, self.principal, permission, name, kind)
            .map_err(|e| super::error::from_core(&e))
    }
}

/// `a` is before `b` in serial-number order.
pub fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < (1 << 31)
}

/// One session's state.
#[derive(Debug)]
pub struct Session {
    /// Our channel.
    pub(super) channel: u16,
    /// Transfer id we expect next from the peer.
    pub(super) next_incoming_id: u32,
    /// Transfers the peer may still send before we widen the window.
    pub(super) incoming_window: u32,
    /// Transfer id of our next transfer frame.
    pub(super) next_outgoing_id: u32,
    /// Transfers the peer still accepts from us.
    pub(super) remote_incoming_window: u32,
    /// Delivery id of our next delivery.
    pub(super) next_delivery_id: u32,
    /// Links by our handle.
    pub(super) links: Vec<Option<Link>>,
    /// Our handle for each of the peer's handles.
    pub(super) handles: HashMap<u32, u32>,
    /// Our deliveries awaiting the peer's outcome, by delivery id.
    pub(super) unsettled: HashMap<u32, OutDelivery>,
    /// Transfers (and flows that must follow them) waiting for window.
    pub(super) pending: VecDeque<Pending>,
    /// Incoming delivery ids to settle as accepted at the next flush.
    pub(super) accepted: Vec<u32>,
    /// Incoming delivery ids to settle as accepted once their journal
    /// ticket is durable (durable messages), in ticket order.
    pub(super) stored_accepts: VecDeque<(Ticket, u32)>,
    /// Our settlements of consumers' outcomes that wait for their journal
    /// ticket (rcv-settle-mode second on stored messages), in ticket order.
    pub(super) stored_settles: VecDeque<StoredSettle>,
    /// We sent End and wait for the peer's.
    pub(super) ending: bool,
}

impl Session {
    /// Answers the peer's Begin.
    pub fn begin(
        channel: u16,
        remote_channel: u16,
        begin: &Begin,
        config: &EngineConfig,
        out: &mut Output,
    ) -> Self {
        let session = Self {
            channel,
            next_incoming_id: begin.next_outgoing_id,
            incoming_window: config.session_window,
            next_outgoing_id: 0,
            remote_incoming_window: begin.incoming_window,
            next_delivery_id: 0,
            links: Vec::new(),
            handles: HashMap::new(),
            unsettled: HashMap::new(),
            pending: VecDeque::new(),
            accepted: Vec::new(),
            stored_accepts: VecDeque::new(),
            stored_settles: VecDeque::new(),
            ending: false,
        };
        tracing::debug!(channel, remote_channel, "session begun");
        out.frame(
            channel,
            &Begin {
                remote_channel: Some(remote_channel),
                next_outgoing_id: session.next_outgoing_id,
                incoming_window: session.incoming_window,
                outgoing_window: u32::MAX,
                handle_max: config.handle_max.into(),
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            },
        );
        session
    }

    /// Handles a session-level frame. Returns true when the session is over.
    pub fn handle(&mut self, body: FrameBody, ctx: &mut Ctx<'_>) -> bool {
        if self.ending {
            // After our End, only the peer's End matters.
            return matches!(body, FrameBody::End(_));
        }
        match body {
            FrameBody::End(end) => {
                if let Some(e) = &end.error {
                    tracing::info!(channel = self.channel, error = ?e, "peer ended session with an error");
                }
                self.release_all();
                ctx.consumers.retain(|_, (ch, _)| *ch != self.channel);
                ctx.txns.roll_back_session(self.channel, ctx.out);
                ctx.out.frame(self.channel, &End { error: None });
                return true;
            }
            FrameBody::Attach(attach) => self.on_attach(attach, ctx),
            FrameBody::Detach(detach) => self.on_detach(detach, ctx),
            FrameBody::Flow(flow) => self.on_flow(flow, ctx),
            FrameBody::Transfer {
                performative,
                payload,
            } => self.on_transfer(performative, payload, ctx),
            FrameBody::Disposition(d) => self.on_disposition(d, ctx),
            _ => {}
        }
        false
    }

    /// Ends the session with an error (its links go with it).
    pub fn end_with(&mut self, error: AmqpError, ctx: &mut Ctx<'_>) {
        tracing::info!(channel = self.channel, condition = ?error.condition, description = ?error.description, "ending session");
        self.release_all();
        ctx.consumers.retain(|_, (ch, _)| *ch != self.channel);
        ctx.txns.roll_back_session(self.channel, ctx.out);
        ctx.out.frame(self.channel, &End { error: Some(error) });
        self.ending = true;
    }

    /// Detaches every link locally (consumers give back what they hold).
    pub fn release_all(&mut self) {
        for link in self.links.iter_mut().flatten() {
            link.release(false);
        }
        self.links.clear();
        self.handles.clear();
        self.unsettled.clear();
        self.pending.clear();
    }

    /// A session flow frame reflecting our current windows.
    pub(super) fn session_flow(&self) -> Flow {
        Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: self.incoming_window,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: u32::MAX,
            handle: None,
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo: false,
            properties: None,
        }
    }

    /// The peer's flow: session windows, then the link's credit.
    fn on_flow(&mut self, flow: Flow, ctx: &mut Ctx<'_>) {
        tracing::trace!(?flow, next_outgoing_id = self.next_outgoing_id, "flow");
        // The peer's incoming window counts from its next-incoming-id; before
        // it saw our Begin that is our initial transfer id, 0.
        let next_incoming = flow.next_incoming_id.unwrap_or(0);
        self.remote_incoming_window =
            remaining(flow.incoming_window, next_incoming, self.next_outgoing_id);
        match flow.handle.clone() {
            Some(h) => {
                let Some(local) = self.handles.get(&h.0).copied() else {
                    self.end_with(
                        cond::unattached_handle(format!("flow on unattached handle {}", h.0)),
                        ctx,
                    );
                    return;
                };
                let base = self.session_flow();
                if let Some(Some(link)) = self.links.get_mut(local as usize) {
                    link.on_flow(&flow);
                    if flow.echo {
                        if let LinkKind::Producer(p) = &link.kind {
                            let mut f = base;
                            f.handle = Some(local.into());
                            f.delivery_count = Some(p.delivery_count);
                            f.link_credit = Some(p.credit);
                            ctx.out.frame(self.channel, &f);
                        }
                    }
                }
            }
            None => {
                if flow.echo {
                    ctx.out.frame(self.channel, &self.session_flow());
                }
            }
        }
        self.emit(ctx.out);
    }

    /// The peer's disposition.
    fn on_disposition(&mut self, d: Disposition, ctx: &mut Ctx<'_>) {
        match d.role {
            // The peer received our deliveries and decided their outcome.
            Role::Receiver => self.on_consumer_disposition(d, ctx),
            // The peer settles deliveries it sent us: we settled them already.
            Role::Sender => {}
        }
    }

    /// Sends what was batched while handling input: accepted outcomes for
    /// producers (as ranges), credit top-ups, a wider incoming window.
    /// `grant` is the credit a producer gets now; None means the broker is
    /// at its memory high-water mark: producers' credit is revoked (control
    /// links keep theirs) and no window is granted for a message in
    /// assembly, so senders wait rather than see their messages refused.
    /// Returns whether anything was held back (the connection looks again
    /// soon).
    pub fn flush(&mut self, config: &EngineConfig, out: &mut Output, grant: Option<u32>) -> bool {
        let credit = grant.is_some();
        if self.ending {
            return false;
        }
        self.flush_accepted(out);
        let mut grants = Vec::new();
        let mut withheld = false;
        let mut assembling = false;
        for (index, link) in self.links.iter_mut().enumerate() {
            let Some(Link {
                kind: LinkKind::Producer(p),
                ..
            }) = link
            else {
                continue;
            };
            assembling |= p.partial.is_some();
            if p.blocked {
                continue;
            }
            if !credit && !p.is_control() {
                withheld = true;
                if !p.revoked && p.credit > 0 {
                    // Transfers already on their way keep the old grant.
                    p.revoked = true;
                    grants.push((index, p.delivery_count, 0));
                }
            } else {
                let target = if p.is_control() {
                    config.producer_credit
                } else {
                    grant.unwrap_or(config.producer_credit)
                };
                if p.revoked || p.credit <= target / 2 {
                    // What arrives under an earlier, larger grant (sent
                    // before a revocation was seen) is still welcome.
                    p.revoked = false;
                    p.credit = p.credit.max(target);
                    grants.push((index, p.delivery_count, target));
                }
            }
        }
        let mut widen = self.incoming_window < config.session_window / 2;
        if widen && !credit && assembling {
            // A message in assembly waits for memory below the mark.
            widen = false;
            withheld = true;
        }
        if widen {
            self.incoming_window = config.session_window;
            if grants.is_empty() {
                out.frame(self.channel, &self.session_flow());
            }
        }
        for (index, delivery_count, credit) in grants {
            let mut f = self.session_flow();
            f.handle = Some((index as u32).into());
            f.delivery_count = Some(delivery_count);
            f.link_credit = Some(credit);
            out.frame(self.channel, &f);
        }
        withheld
    }

    /// Sends what waited for the store: `accepted` for producers' durable
    /// messages and our settlement of consumers' outcomes, up to the
    /// journal's durable mark; a failed store rejects the producers'
    /// messages. Returns the highest ticket still pending (0 if none).
    pub fn settle_stored(&mut self, journal: &Journal, out: &mut Output) -> Ticket {
        if self.ending {
            return 0;
        }
        while let Some(&(ticket, delivery_id)) = self.stored_accepts.front() {
            match journal.status(ticket) {
                TicketStatus::Pending => break,
                TicketStatus::Durable => self.accepted.push(delivery_id),
                TicketStatus::Failed { full, reason } => {
                    let e = if full {
                        cond::resource_limit(format!("the store's disk is full: {reason}"))
                    } else {
                        cond::internal(format!("the message could not be stored: {reason}"))
                    };
                    send_rejected(out, self.channel, delivery_id, e);
                }
            }
            self.stored_accepts.pop_front();
        }
        while let Some(front) = self.stored_settles.front() {
            match journal.status(front.ticket) {
                TicketStatus::Pending => break,
                TicketStatus::Durable => {
                    send_settle(
                        out,
                        self.channel,
                        front.first,
                        front.last,
                        front.state.clone(),
                    );
                }
                TicketStatus::Failed { reason, .. } => {
                    // Not settled: the outcome may not survive a restart, so
                    // the consumer must not take it as final.
                    tracing::error!(channel = self.channel, reason = %reason, "consumer outcome not stored; left unsettled");
                }
            }
            self.stored_settles.pop_front();
        }
        self.flush_accepted(out);
        let a = self.stored_accepts.back().map_or(0, |(t, _)| *t);
        let b = self.stored_settles.back().map_or(0, |s| s.ticket);
        a.max(b)
    }

    /// Sends the batched `accepted` outcomes for producers, as ranges.
    fn flush_accepted(&mut self, out: &mut Output) {
        if self.accepted.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.accepted);
        let mut start = ids[0];
        let mut end = ids[0];
        for &id in &ids[1..] {
            if id == end.wrapping_add(1) {
                end = id;
            } else {
                send_accepted(out, self.channel, start, end);
                start = id;
                end = id;
            }
        }
        send_accepted(out, self.channel, start, end);
        self.accepted = ids;
        self.accepted.clear();
    }

    /// Queues a delivery or flow update from the outbox for a link. A
    /// delivery still without its paged-out body is one the store could not
    /// give back: it is returned to its queue.
    pub fn enqueue_outgoing(&mut self, handle: u32, item: OutboxItem) {
        if self.ending {
            return;
        }
        match item {
            OutboxItem::Deliver(d) => {
                let Some(Some(link)) = self.links.get(handle as usize) else {
                    return;
                };
                let LinkKind::Consumer(c) = &link.kind else {
                    return;
                };
                if let Some((_, seq)) = d.paged {
                    if !d.settled {
                        tracing::error!(
                            queue = c.queue.name(),
                            seq,
                            "paged-out message missing from the store; returned to the queue"
                        );
                        let failed = crate::core::Outcome::Modified {
                            delivery_failed: true,
                            undeliverable_here: false,
                        };
                        let (returned, _) = c.queue.settle(c.consumer, &[d.delivery_id], failed);
                        if let Err(e) = returned {
                            tracing::error!(queue = c.queue.name(), seq, error = %e, "the delivery of a missing paged-out message could not be returned");
                        }
                    }
                    return;
                }
                let delivery_id = self.next_delivery_id;
                self.next_delivery_id = self.next_delivery_id.wrapping_add(1);
                if !d.settled {
                    self.unsettled.insert(
                        delivery_id,
                        OutDelivery {
                            handle,
                            consumer: c.consumer,
                            core_id: d.delivery_id,
                        },
                    );
                }
                self.pending
                    .push_back(Pending::transfer(handle, delivery_id, &d));
            }
            OutboxItem::Flow(state) => self.pending.push_back(Pending::Flow { handle, state }),
            // Taken by the connection's `Loads` before this.
            OutboxItem::Loaded(_) => {}
        }
    }
}

/// Appends a disposition settling incoming deliveries `first..=last` as accepted.
fn send_accepted(out: &mut Output, channel: u16, first: u32, last: u32) {
    out.frame(
        channel,
        &Disposition {
            role: Role::Receiver,
            first,
            last: (last != first).then_some(last),
            settled: true,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        },
    );
}

/// Appends a disposition settling one incoming delivery as rejected.
pub(super) fn send_rejected(out: &mut Output, channel: u16, id: u32, error: AmqpError) {
    let rejected = DeliveryState::Rejected(Rejected { error: Some(error) });
    send_settled(out, channel, id, rejected);
}

/// Appends a disposition settling one incoming delivery with `state`.
pub(super) fn send_settled(out: &mut Output, channel: u16, id: u32, state: DeliveryState) {
    out.frame(
        channel,
        &Disposition {
            role: Role::Receiver,
            first: id,
            last: None,
            settled: true,
            state: Some(state),
            batchable: false,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::serial_lt;

    #[test]
    fn serial_order_wraps() {
        assert!(serial_lt(1, 2));
        assert!(!serial_lt(2, 1));
        assert!(serial_lt(u32::MAX, 0));
        assert!(!serial_lt(0, u32::MAX));
        assert!(!serial_lt(5, 5));
    }
}
