//! Deliveries we send to consumers: splitting into frames that fit the
//! peer's max-frame-size, counting each frame in the session's outgoing
//! window, and applying the consumer's dispositions.

use std::sync::Arc;

use bytes::Bytes;
use fe2o3_amqp::types::definitions::{ErrorCondition, Role};
use fe2o3_amqp::types::messaging::{DeliveryState, Modified, Outcome as AmqpOutcome, Rejected};
use fe2o3_amqp::types::performatives::{Disposition, Transfer};
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
use fe2o3_amqp::types::transaction::TransactionalState;

use super::connection::Output;
use super::error::cond;
use super::frame::{self, Payload, FRAME_HEADER_SIZE};
use super::message;
use super::session::{serial_lt, Ctx, Session};
use crate::core::{ConsumerId, Delivery, FlowState, Outcome, Rejection};
use crate::store::Ticket;

/// A delivery we sent and the consumer has not settled.
#[derive(Debug, Clone, Copy)]
pub struct OutDelivery {
    /// Our handle of the link it went on.
    pub handle: u32,
    /// The consumer, for the queue.
    pub consumer: ConsumerId,
    /// The queue's delivery id.
    pub core_id: u64,
}

/// Our settlement of consumer deliveries `first..=last`, sent once the
/// journal ticket of the outcome's records is durable.
#[derive(Debug)]
pub struct StoredSettle {
    /// The ticket to wait for.
    pub ticket: Ticket,
    /// First delivery id.
    pub first: u32,
    /// Last delivery id.
    pub last: u32,
    /// The consumer's outcome, echoed.
    pub state: Option<DeliveryState>,
}

/// Work waiting for the peer's session window, in order.
#[derive(Debug)]
pub enum Pending {
    /// A delivery, possibly part sent.
    Transfer(OutTransfer),
    /// A link flow that must follow the transfers before it.
    Flow {
        /// Our handle.
        handle: u32,
        /// The link's state.
        state: FlowState,
    },
}

/// A delivery being sent.
#[derive(Debug)]
pub struct OutTransfer {
    /// Our handle.
    handle: u32,
    /// Session delivery id.
    delivery_id: u32,
    /// Delivery tag (the queue's delivery id, sent as 8 bytes).
    tag: u64,
    /// Pre-settled.
    settled: bool,
    /// The message bytes.
    payload: Payload,
    /// Bytes already sent.
    offset: usize,
}

/// The largest encoded transfer performative we write on the single-frame
/// path (handle, delivery-id, an 8-byte tag, format, settled and list overhead).
const TRANSFER_OVERHEAD: usize = 64;

impl Pending {
    /// A delivery to send.
    pub fn transfer(handle: u32, delivery_id: u32, d: &Delivery) -> Self {
        Pending::Transfer(OutTransfer {
            handle,
            delivery_id,
            tag: d.delivery_id,
            settled: d.settled,
            payload: message::delivery_payload(d),
            offset: 0,
        })
    }

    /// The link it belongs to.
    pub fn handle(&self) -> u32 {
        match self {
            Pending::Transfer(t) => t.handle,
            Pending::Flow { handle, .. } => *handle,
        }
    }
}

impl Session {
    /// Writes pending transfers while the peer's incoming window allows,
    /// one frame at a time.
    pub fn emit(&mut self, out: &mut Output) {
        let base = self.session_flow();
        while let Some(front) = self.pending.front_mut() {
            match front {
                Pending::Flow { handle, state } => {
                    let mut f = base.clone();
                    f.next_outgoing_id = self.next_outgoing_id;
                    f.handle = Some((*handle).into());
                    f.delivery_count = Some(state.delivery_count);
                    f.link_credit = Some(state.credit);
                    f.available = Some(state.available);
                    f.drain = state.drain;
                    if let Some(active) = state.active {
                        f.properties = Some(active_properties(active));
                    }
                    out.frame(self.channel, &f);
                    self.pending.pop_front();
                }
                Pending::Transfer(t) => {
                    if self.remote_incoming_window == 0 {
                        return;
                    }
                    let done = write_transfer_frame(out, self.channel, t);
                    self.next_outgoing_id = self.next_outgoing_id.wrapping_add(1);
                    self.remote_incoming_window -= 1;
                    if done {
                        self.pending.pop_front();
                    }
                }
            }
        }
    }

    /// The consumer's disposition of deliveries we sent.
    pub(super) fn on_consumer_disposition(&mut self, d: Disposition, ctx: &mut Ctx<'_>) {
        if let Some(DeliveryState::TransactionalState(ts)) = &d.state {
            self.on_transactional_disposition(&d, ts, ctx);
            return;
        }
        let outcome = match &d.state {
            Some(DeliveryState::Accepted(_)) => Some(Outcome::Accepted),
            Some(DeliveryState::Released(_)) => Some(Outcome::Released),
            Some(DeliveryState::Rejected(r)) => Some(rejected(r)),
            Some(DeliveryState::Modified(m)) => Some(modified(m)),
            // Settled with no outcome: taken as accepted, as Artemis does.
            None if d.settled => Some(Outcome::Accepted),
            _ => None,
        };
        let Some(outcome) = outcome else {
            // A non-terminal state (received) or one we do not support yet.
            return;
        };
        let first = d.first;
        let last = d.last.unwrap_or(first);
        let ids = self.ids_in_range(first, last);
        // Usually one consumer per disposition: a short list beats a map.
        let mut by_consumer: Vec<(ConsumerId, u32, Vec<u64>)> = Vec::new();
        let mut settled_ids = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(od) = self.unsettled.remove(&id) {
                match by_consumer.iter_mut().find(|(c, _, _)| *c == od.consumer) {
                    Some(entry) => entry.2.push(od.core_id),
                    None => by_consumer.push((od.consumer, od.handle, vec![od.core_id])),
                }
                settled_ids.push(id);
            }
        }
        let mut ticket: Option<Ticket> = None;
        for (consumer, handle, core_ids) in by_consumer {
            if let Some(Some(link)) = self.links.get(handle as usize) {
                if let super::link::LinkKind::Consumer(c) = &link.kind {
                    let (result, t) = c.queue.settle(consumer, &core_ids, outcome.clone());
                    ticket = ticket.max(t);
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "disposition for an unknown delivery");
                    }
                }
            }
        }
        if !d.settled && !settled_ids.is_empty() {
            // The consumer waits for us to settle (rcv-settle-mode second, or
            // it simply left settlement to us): the outcome is applied.
            settled_ids.sort_by(|a, b| {
                if serial_lt(*a, *b) {
                    std::cmp::Ordering::Less
                } else if a == b {
                    std::cmp::Ordering::Equal
                } else {
                    std::cmp::Ordering::Greater
                }
            });
            let mut ranges = Vec::new();
            let mut start = settled_ids[0];
            let mut end = start;
            for &id in &settled_ids[1..] {
                if id == end.wrapping_add(1) {
                    end = id;
                } else {
                    ranges.push((start, end));
                    start = id;
                    end = id;
                }
            }
            ranges.push((start, end));
            for (first, last) in ranges {
                match ticket {
                    // The outcome changed stored messages: settle once that
                    // is on disk, so an accepted message never comes back.
                    Some(ticket) => self.stored_settles.push_back(StoredSettle {
                        ticket,
                        first,
                        last,
                        state: d.state.clone().map(settlement),
                    }),
                    None => {
                        let state = d.state.clone().map(settlement);
                        send_settle(ctx.out, self.channel, first, last, state)
                    }
                }
            }
        }
    }

    /// A disposition inside a transaction: the deliveries are locked to it
    /// and their outcome applies at commit. The broker settles those the
    /// consumer left unsettled at the discharge.
    fn on_transactional_disposition(
        &mut self,
        d: &Disposition,
        ts: &TransactionalState,
        ctx: &mut Ctx<'_>,
    ) {
        let outcome = match &ts.outcome {
            Some(AmqpOutcome::Accepted(_)) => Outcome::Accepted,
            Some(AmqpOutcome::Released(_)) => Outcome::Released,
            Some(AmqpOutcome::Rejected(r)) => rejected(r),
            Some(AmqpOutcome::Modified(m)) => modified(m),
            // No outcome yet (transactional acquisition): nothing to do.
            _ => return,
        };
        let Some(open) = ctx.txns.get_mut(&ts.txn_id) else {
            self.end_with(
                cond::unknown_transaction(format!(
                    "disposition in unknown transaction {:?}",
                    ts.txn_id
                )),
                ctx,
            );
            return;
        };
        let first = d.first;
        let last = d.last.unwrap_or(first);
        let mut by_consumer: Vec<(ConsumerId, u32, Vec<u64>)> = Vec::new();
        for id in self.ids_in_range(first, last) {
            // From now on the transaction owns the delivery: later
            // dispositions for it are ignored.
            if let Some(od) = self.unsettled.remove(&id) {
                match by_consumer.iter_mut().find(|(c, _, _)| *c == od.consumer) {
                    Some(entry) => entry.2.push(od.core_id),
                    None => by_consumer.push((od.consumer, od.handle, vec![od.core_id])),
                }
            }
        }
        for (consumer, handle, core_ids) in by_consumer {
            if let Some(Some(link)) = self.links.get(handle as usize) {
                if let super::link::LinkKind::Consumer(c) = &link.kind {
                    if let Err(e) = open
                        .txn
                        .retire(&c.queue, consumer, &core_ids, outcome.clone())
                    {
                        tracing::debug!(error = %e, "transactional disposition for an unknown delivery");
                    }
                }
            }
        }
        if !d.settled {
            open.settles.push((
                self.channel,
                first,
                last,
                settlement(DeliveryState::TransactionalState(ts.clone())),
            ));
        }
    }

    /// Unsettled delivery ids within `first..=last` (serial order), without
    /// walking a huge range a peer might send.
    fn ids_in_range(&self, first: u32, last: u32) -> Vec<u32> {
        let span = last.wrapping_sub(first) as u64 + 1;
        if span > self.unsettled.len() as u64 {
            self.unsettled
                .keys()
                .copied()
                .filter(|id| id.wrapping_sub(first) <= last.wrapping_sub(first))
                .collect()
        } else {
            (0..span as u32).map(|i| first.wrapping_add(i)).collect()
        }
    }
}

/// The core's outcome for a `rejected` state: the consumer's error, if it
/// gave one, goes with the message to the dead-letter address.
fn rejected(r: &Rejected) -> Outcome {
    Outcome::Rejected(r.error.as_ref().map(|e| {
        Arc::new(Rejection {
            condition: match &e.condition {
                ErrorCondition::Custom(symbol) => symbol.as_str().to_string(),
                known => serde_amqp::to_value(known)
                    .ok()
                    .and_then(|v| match v {
                        Value::Symbol(s) => Some(s.as_str().to_string()),
                        _ => None,
                    })
                    .unwrap_or_else(|| format!("{known:?}")),
            },
            description: e.description.clone(),
            info: e
                .info
                .as_ref()
                .and_then(|info| serde_amqp::to_vec(info).ok())
                .map(Bytes::from),
        })
    }))
}

/// What we settle a consumer's disposition with: its own state, except
/// that a rejection goes back without the consumer's error (clients read
/// an error in the broker's settlement as the broker failing to settle).
fn settlement(state: DeliveryState) -> DeliveryState {
    match state {
        DeliveryState::Rejected(_) => DeliveryState::Rejected(Rejected { error: None }),
        DeliveryState::TransactionalState(mut ts) => {
            if let Some(AmqpOutcome::Rejected(r)) = &mut ts.outcome {
                r.error = None;
            }
            DeliveryState::TransactionalState(ts)
        }
        other => other,
    }
}

/// The core's outcome for a `modified` state.
fn modified(m: &Modified) -> Outcome {
    Outcome::Modified {
        delivery_failed: m.delivery_failed.unwrap_or(false),
        undeliverable_here: m.undeliverable_here.unwrap_or(false),
    }
}

/// Flow properties telling an exclusive consumer whether it is the active
/// one: `active` (Ordo, Artemis style) and `rabbitmq:active` (RabbitMQ's
/// single-active-consumer clients).
fn active_properties(active: bool) -> fe2o3_amqp::types::definitions::Fields {
    let mut fields = fe2o3_amqp::types::definitions::Fields::new();
    fields.insert(Symbol::from("active"), Value::Bool(active));
    fields.insert(Symbol::from("rabbitmq:active"), Value::Bool(active));
    fields
}

/// Appends our disposition settling `first..=last` with `state`.
pub(super) fn send_settle(
    out: &mut Output,
    channel: u16,
    first: u32,
    last: u32,
    state: Option<DeliveryState>,
) {
    out.frame(
        channel,
        &Disposition {
            role: Role::Sender,
            first,
            last: (last != first).then_some(last),
            settled: true,
            state,
            batchable: false,
        },
    );
}

/// Writes the next frame of a delivery. Returns true when it was the last.
fn write_transfer_frame(out: &mut Output, channel: u16, t: &mut OutTransfer) -> bool {
    let max_frame = out.max_frame as usize;
    let remaining = t.payload.len() - t.offset;
    let first = t.offset == 0;
    let mut transfer = Transfer {
        handle: t.handle.into(),
        delivery_id: Some(t.delivery_id),
        delivery_tag: first.then(|| Binary::from(t.tag.to_be_bytes().to_vec())),
        message_format: first.then_some(0),
        settled: first.then_some(t.settled),
        more: false,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    };
    let room = if FRAME_HEADER_SIZE + TRANSFER_OVERHEAD + remaining <= max_frame {
        remaining
    } else {
        transfer.more = true;
        max_frame - FRAME_HEADER_SIZE - frame::encoded_size(&transfer)
    };
    let n = room.min(remaining);
    transfer.more = n < remaining;
    let start = out.buf.len();
    frame::write_frame(&mut out.buf, false, channel, &transfer, &[]);
    t.payload.copy_range(&mut out.buf, t.offset, n);
    let size = (out.buf.len() - start) as u32;
    out.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    t.offset += n;
    t.offset == t.payload.len()
}
