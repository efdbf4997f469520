//! Transfers from producers: assembling multi-frame deliveries, limits,
//! parsing, publishing, and the outcome the producer gets.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::types::definitions::Error as AmqpError;
use fe2o3_amqp::types::performatives::Transfer;

use super::address;
use super::error::{self, cond};
use super::link::{LinkKind, Partial, ProducerTarget};
use super::message;
use super::session::{send_rejected, Ctx, Session};
use crate::core::{Broker, CoreError, Message};
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
        let too_big = || cond::message_size(format!("message exceeds max-message-size {max_size}"));
        let (delivery_id, settled, bytes, oversized) = match p.partial.take() {
            Some(mut partial) => {
                partial.settled |= settled;
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
                    });
                    return;
                }
                (delivery_id, settled, payload, oversized)
            }
        };
        let result = if oversized {
            Err(too_big())
        } else {
            match message::parse(bytes) {
                Ok(m) => publish(&p.target, ctx.broker, m),
                Err(e) => Err(cond::decode(e.to_string())),
            }
        };
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

/// Publishes a message to the link's node, or where its `to` says for an
/// anonymous-relay link.
fn publish(
    target: &ProducerTarget,
    broker: &Arc<Broker>,
    message: Message,
) -> Result<Option<Ticket>, AmqpError> {
    let from_core = |e: CoreError| error::from_core(&e);
    match target {
        ProducerTarget::Node(node) => node.publish(Arc::new(message)).map_err(from_core),
        ProducerTarget::Relay => {
            let Some(to) = message.to().map(str::to_string) else {
                return Err(cond::invalid_field(
                    "a message on an anonymous-relay link needs properties.to",
                ));
            };
            let node = address::parse(&to, None).map_err(|e| cond::invalid_field(e.to_string()))?;
            if !node.options.is_empty() {
                return Err(cond::invalid_field(
                    "address options are not allowed in properties.to",
                ));
            }
            broker
                .resolve(&node.name, node.kind, &[])
                .and_then(|n| n.publish(Arc::new(message)))
                .map_err(from_core)
        }
    }
}
