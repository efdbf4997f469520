//! Transfers from producers: assembling multi-frame deliveries, limits,
//! parsing, publishing, and the outcome the producer gets.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::types::definitions::Error as AmqpError;
use fe2o3_amqp::types::messaging::DeliveryState;
use fe2o3_amqp::types::performatives::Transfer;

use super::address;
use super::coordinator;
use super::error::{self, cond};
use super::link::{LinkKind, ProducerTarget};
use super::management;
use super::message;
use super::session::{send_rejected, send_settled, Ctx, Session};
use crate::core::access::{Permission, Principal};
use crate::core::broker::MemoryLevel;
use crate::core::memory::AssemblyCharge;
use crate::core::{Arrival, Broker, CoreError, Message, Node};
use crate::store::Ticket;

impl Session {
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
        let txn = match &transfer.state {
            Some(DeliveryState::TransactionalState(t)) => Some(t.txn_id.clone()),
            _ => None,
        };
        let mut partial = match p.partial.take() {
            Some(mut partial) => {
                partial.settled |= settled;
                if txn.is_some() {
                    partial.txn = txn;
                }
                partial
            }
            None => {
                let Some(delivery_id) = transfer.delivery_id else {
                    let e =
                        cond::invalid_field("the first transfer of a delivery needs a delivery-id");
                    self.detach_with(local, e, ctx);
                    return;
                };
                if p.credit == 0 {
                    self.detach_with(
                        local,
                        cond::transfer_limit("transfer without link credit"),
                        ctx,
                    );
                    return;
                }
                p.credit -= 1;
                p.delivery_count = p.delivery_count.wrapping_add(1);
                if let Some(format) = unknown_format(&transfer) {
                    if !settled {
                        send_rejected(ctx.out, channel, delivery_id, format);
                    }
                    if transfer.more {
                        // The rest of it is read and dropped.
                        let mut partial =
                            Partial::new(delivery_id, true, None, ctx.broker.memory().charge());
                        partial.refused = Some(Refusal::Format);
                        p.partial = Some(partial);
                    }
                    return;
                }
                if !transfer.more {
                    // The whole message in one frame: no copy.
                    let whole = Whole {
                        delivery_id,
                        settled,
                        refusal: (payload.len() as u64 > max_size).then_some(Refusal::TooBig),
                        bytes: payload,
                        txn,
                    };
                    self.take_delivery(local, whole, ctx);
                    return;
                }
                Partial::new(delivery_id, settled, txn, ctx.broker.memory().charge())
            }
        };
        partial.append(&payload, max_size);
        if transfer.more {
            p.partial = Some(partial);
            return;
        }
        if partial.refused == Some(Refusal::Format) {
            return;
        }
        let whole = Whole {
            delivery_id: partial.delivery_id,
            settled: partial.settled,
            bytes: std::mem::take(&mut partial.bytes).freeze(),
            refusal: partial.refused,
            txn: partial.txn.take(),
        };
        // Its bytes are the message's now: the assembly charge goes.
        drop(partial);
        self.take_delivery(local, whole, ctx);
    }

    /// A whole delivery from producer link `local`: a control message, a
    /// management request, a transactional post or a message to publish;
    /// or one refused while it arrived.
    fn take_delivery(&mut self, local: u32, whole: Whole, ctx: &mut Ctx<'_>) {
        let Whole {
            delivery_id,
            settled,
            bytes,
            refusal,
            txn,
        } = whole;
        let channel = self.channel;
        let max_size = ctx.config.max_message_size;
        let Some(Some(link)) = self.links.get_mut(local as usize) else {
            return;
        };
        let LinkKind::Producer(p) = &mut link.kind else {
            return;
        };
        let refused = refusal.map(|r| r.error(max_size));
        if !p.is_control() && refused.is_none() {
            ctx.broker.memory().observe_message(bytes.len() as u64);
        }
        if matches!(p.target, ProducerTarget::Coordinator) {
            self.on_control(delivery_id, settled, bytes, ctx);
            return;
        }
        if matches!(p.target, ProducerTarget::Management) {
            // Answered even when memory is short, so an operator can look.
            let parsed = if let Some(e) = refused {
                Err(e)
            } else if txn.is_some() {
                Err(cond::not_implemented(
                    "management requests cannot be transactional",
                ))
            } else {
                message::parse(bytes).map_err(|e| cond::decode(e.to_string()))
            };
            match parsed {
                Ok(m) => self.on_management(delivery_id, settled, &m, ctx),
                Err(e) if !settled => match txn {
                    Some(txn_id) => send_settled(
                        ctx.out,
                        channel,
                        delivery_id,
                        coordinator::transactional_state(txn_id, Err(e)),
                    ),
                    None => send_rejected(ctx.out, channel, delivery_id, e),
                },
                Err(_) => {}
            }
            return;
        }
        let full = || {
            cond::resource_limit(
                "the broker is past its memory high-water mark: message refused".to_string(),
            )
        };
        let memory_full = ctx.broker.memory_level() == MemoryLevel::Full;
        if let Some(txn_id) = txn {
            let result = if let Some(e) = refused {
                Err(e)
            } else if memory_full {
                if let Some(open) = ctx.txns.get_mut(&txn_id[..]) {
                    open.txn
                        .doom("a message was refused: the broker is short of memory");
                }
                Err(full())
            } else {
                post(&p.target, ctx, &txn_id, bytes)
            };
            match &result {
                Ok(_) => *ctx.received += 1,
                Err(e) => {
                    tracing::debug!(condition = ?e.condition, description = ?e.description, "transactional message refused")
                }
            }
            if !settled {
                let state = coordinator::transactional_state(txn_id, result);
                send_settled(ctx.out, channel, delivery_id, state);
            }
            return;
        }
        let result = if let Some(e) = refused {
            Err(e)
        } else if memory_full {
            Err(full())
        } else {
            match message::parse(bytes) {
                // A relayed request to `$management`.
                Ok(m)
                    if matches!(p.target, ProducerTarget::Relay)
                        && m.to().is_some_and(management::is_address) =>
                {
                    self.on_management(delivery_id, settled, &m, ctx);
                    return;
                }
                Ok(m) => publish(&p.target, ctx, m),
                Err(e) => Err(cond::decode(e.to_string())),
            }
        };
        if result.is_ok() {
            *ctx.received += 1;
        }
        match result {
            Ok(None) if !settled => self.accepted.push(delivery_id),
            // Stored: `accepted` once the journal has it on disk.
            Ok(Some(ticket)) if !settled => self.stored_accepts.push_back((ticket, delivery_id)),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(condition = ?e.condition, description = ?e.description, "message rejected");
                if !settled {
                    send_rejected(ctx.out, channel, delivery_id, e);
                }
            }
        }
    }
}

/// Posts a message in a transaction: it is published at commit. A refused
/// post dooms the transaction (its commit fails), so a commit is never
/// missing a message its producer sent in it.
fn post(
    target: &ProducerTarget,
    ctx: &mut Ctx<'_>,
    txn_id: &[u8],
    bytes: Bytes,
) -> Result<(), AmqpError> {
    let Some(open) = ctx.txns.get_mut(txn_id) else {
        return Err(cond::unknown_transaction(format!(
            "no open transaction {txn_id:?} on this connection"
        )));
    };
    let parsed = message::parse(bytes)
        .map_err(|e| cond::decode(e.to_string()))
        .and_then(|m| {
            let node = match target {
                ProducerTarget::Node(node) => node.clone(),
                _ => resolve_to(ctx.broker, ctx.principal, ctx.connection, &m)?,
            };
            Ok((node, m))
        });
    match parsed {
        Ok((node, m)) => {
            let arrival = arrival(&node, &m, ctx.connection);
            open.txn.post(node, Arc::new(m), arrival);
            Ok(())
        }
        Err(e) => {
            open.txn.doom(
                e.description
                    .clone()
                    .unwrap_or_else(|| "a message was refused".into()),
            );
            Err(e)
        }
    }
}

/// The node a relayed message's `properties.to` names, if `principal` on
/// `connection` may send there.
fn resolve_to(
    broker: &Arc<Broker>,
    principal: &Principal,
    connection: u64,
    message: &Message,
) -> Result<Node, AmqpError> {
    let Some(to) = message.to() else {
        return Err(cond::invalid_field(
            "a message on an anonymous-relay link needs properties.to",
        ));
    };
    let node = address::parse(to, None).map_err(|e| cond::invalid_field(e.to_string()))?;
    if node.name == management::ADDRESS {
        // Relayed requests are answered before this; these are in a
        // transaction or carry options.
        return Err(cond::not_implemented(format!(
            "{} takes only plain requests outside transactions",
            management::ADDRESS
        )));
    }
    if !node.options.is_empty() {
        return Err(cond::invalid_field(
            "address options are not allowed in properties.to",
        ));
    }
    broker
        .authorize_from(
            connection,
            principal,
            Permission::Send,
            &node.name,
            node.kind,
        )
        .and_then(|()| broker.resolve(&node.name, node.kind, &[]))
        .map_err(|e| error::from_core(&e))
}

/// Publishes a message to the link's node, or where its `to` says for an
/// anonymous-relay link.
fn publish(
    target: &ProducerTarget,
    ctx: &Ctx<'_>,
    message: Message,
) -> Result<Option<Ticket>, AmqpError> {
    let from_core = |e: CoreError| error::from_core(&e);
    let node = match target {
        ProducerTarget::Node(node) => node,
        ProducerTarget::Relay => &resolve_to(ctx.broker, ctx.principal, ctx.connection, &message)?,
        ProducerTarget::Coordinator | ProducerTarget::Management => {
            return Err(cond::illegal_state("not a producer"))
        }
    };
    let arrival = arrival(node, &message, ctx.connection);
    node.publish_with(Arc::new(message), &arrival)
        .map_err(from_core)
}

/// How a message arrived: its connection, and its duplicate-detection id
/// when a queue it goes to detects duplicates (read only then).
fn arrival(node: &Node, message: &Message, connection: u64) -> Arrival {
    Arrival {
        connection: Some(connection),
        duplicate_id: node
            .detects_duplicates()
            .then(|| message::duplicate_id(message))
            .flatten(),
    }
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
    /// Why it is refused: the rest is read and dropped, and the delivery
    /// is rejected at its end.
    pub refused: Option<Refusal>,
    /// The transaction it is posted in (a transactional-state on any frame).
    pub txn: Option<fe2o3_amqp::types::primitives::Binary>,
    /// What `bytes` holds, counted in the broker's memory gauge until the
    /// delivery ends one way or another.
    pub charge: AssemblyCharge,
}

/// A delivery once all its frames came.
struct Whole {
    /// Its delivery id.
    delivery_id: u32,
    /// The sender settled it.
    settled: bool,
    /// Its bytes (none if it was refused while it arrived).
    bytes: Bytes,
    /// Why it was refused while it arrived, if it was.
    refusal: Option<Refusal>,
    /// The transaction it is posted in.
    txn: Option<fe2o3_amqp::types::primitives::Binary>,
}

/// Why a delivery is refused while it is still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It grew past max-message-size (`amqp:link:message-size-exceeded`).
    TooBig,
    /// The bytes in assembly on all connections reached their cap
    /// (`amqp:resource-limit-exceeded`).
    AssemblyFull,
    /// Its message-format is not one Ordo knows: it was rejected on its
    /// first frame, and the rest is dropped without a word.
    Format,
}

impl Refusal {
    /// The error the delivery is rejected with.
    fn error(self, max_size: u64) -> AmqpError {
        match self {
            Refusal::TooBig => {
                cond::message_size(format!("message exceeds max-message-size {max_size}"))
            }
            Refusal::AssemblyFull => cond::resource_limit(
                "the broker holds as many bytes of messages in assembly as it may: message refused",
            ),
            Refusal::Format => cond::not_implemented("unsupported message format"),
        }
    }
}

/// The message formats Ordo takes: 0, the AMQP 1.0 message of sections
/// (absent on a first frame is taken as 0). Others, such as Azure Service
/// Bus' batch of encoded messages (`0x80013700`), are refused rather than
/// stored as one opaque message.
fn unknown_format(transfer: &Transfer) -> Option<AmqpError> {
    match transfer.message_format {
        None | Some(0) => None,
        Some(format) => Some(cond::not_implemented(format!(
            "message-format {format:#010x} is not supported (only 0, the AMQP message)"
        ))),
    }
}

impl Partial {
    /// A delivery whose first frame just came (its payload not added yet).
    pub fn new(
        delivery_id: u32,
        settled: bool,
        txn: Option<fe2o3_amqp::types::primitives::Binary>,
        charge: AssemblyCharge,
    ) -> Self {
        Self {
            delivery_id,
            settled,
            bytes: BytesMut::new(),
            refused: None,
            txn,
            charge,
        }
    }

    /// Adds a frame's payload, unless the delivery is refused or this
    /// refuses it: past `max_size`, or past the cap on bytes in assembly.
    /// The buffer grows by doubling, and what it holds is counted before
    /// it is allocated.
    pub fn append(&mut self, payload: &[u8], max_size: u64) {
        if self.refused.is_some() {
            return;
        }
        let needed = self.bytes.len() + payload.len();
        if needed as u64 > max_size {
            self.refuse(Refusal::TooBig);
            return;
        }
        if needed > self.bytes.capacity() {
            let doubled = (self.bytes.capacity() * 2).clamp(needed, max_size as usize);
            if !self.charge.resize(doubled as u64) && !self.charge.resize(needed as u64) {
                self.refuse(Refusal::AssemblyFull);
                return;
            }
            let want = self.charge.bytes() as usize;
            self.bytes.reserve(want - self.bytes.len());
        }
        self.bytes.extend_from_slice(payload);
    }

    /// Drops what was received; the rest will be read and dropped too.
    fn refuse(&mut self, why: Refusal) {
        self.refused = Some(why);
        self.bytes = BytesMut::new();
        self.charge.resize(0);
    }
}
