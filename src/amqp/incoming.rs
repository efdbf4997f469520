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
use super::link::{LinkKind, Partial, ProducerTarget};
use super::management;
use super::message;
use super::session::{send_rejected, send_settled, Ctx, Session};
use crate::core::access::{Permission, Principal};
use crate::core::broker::MemoryLevel;
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
        let too_big = || cond::message_size(format!("message exceeds max-message-size {max_size}"));
        let (delivery_id, settled, bytes, oversized, txn) = match p.partial.take() {
            Some(mut partial) => {
                partial.settled |= settled;
                if txn.is_some() {
                    partial.txn = txn;
                }
                if !partial.oversized {
                    partial.bytes.extend_from_slice(&payload);
                    if partial.bytes.len() as u64 > max_size {
                        // Read the rest and drop it; reject at the end.
                        partial.oversized = true;
                        partial.bytes = BytesMut::new();
                    }
                }
                if transfer.more {
                    p.partial = Some(partial);
                    return;
                }
                (
                    partial.delivery_id,
                    partial.settled,
                    partial.bytes.freeze(),
                    partial.oversized,
                    partial.txn,
                )
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
                let oversized = payload.len() as u64 > max_size;
                if transfer.more {
                    let bytes = if oversized {
                        BytesMut::new()
                    } else {
                        let mut bytes = BytesMut::with_capacity(payload.len() * 4);
                        bytes.extend_from_slice(&payload);
                        bytes
                    };
                    p.partial = Some(Partial {
                        delivery_id,
                        settled,
                        bytes,
                        oversized,
                        txn,
                    });
                    return;
                }
                (delivery_id, settled, payload, oversized, txn)
            }
        };
        if matches!(p.target, ProducerTarget::Coordinator) {
            self.on_control(delivery_id, settled, bytes, ctx);
            return;
        }
        if matches!(p.target, ProducerTarget::Management) {
            // Answered even when memory is short, so an operator can look.
            let parsed = if oversized {
                Err(too_big())
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
            let result = if oversized {
                Err(too_big())
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
        let result = if oversized {
            Err(too_big())
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
                _ => resolve_to(ctx.broker, ctx.principal, &m)?,
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

/// The node a relayed message's `properties.to` names.
fn resolve_to(
    broker: &Arc<Broker>,
    principal: &Principal,
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
        .authorize(principal, Permission::Send, &node.name, node.kind)
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
        ProducerTarget::Relay => &resolve_to(ctx.broker, ctx.principal, &message)?,
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
