//! The transaction coordinator (SPEC §7; AMQP 1.0 part 4): a producer link
//! whose target is `coordinator` sends `declare` and `discharge` control
//! messages; transfers and dispositions carrying a `transactional-state`
//! join the transaction they name. Transactions belong to the connection
//! that declared them (any of its sessions may work in them) and are rolled
//! back when the declaring session or the connection ends.

use std::collections::HashMap;

use bytes::Bytes;
use fe2o3_amqp::types::messaging::{Accepted, DeliveryState, Modified};
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::types::transaction::{Declare, Declared, Discharge};

use super::connection::Output;
use super::error::{self, cond};
use super::message;
use super::session::{send_rejected, send_settled, Ctx, Session};
use crate::core::Transaction;

/// A transaction the peer declared and has not discharged.
#[derive(Debug)]
pub struct OpenTransaction {
    /// The work.
    pub txn: Transaction,
    /// The session that declared it (its end rolls the transaction back).
    pub channel: u16,
    /// Dispositions the peer left unsettled inside the transaction, which
    /// the broker settles at the discharge: (channel, first, last, state).
    pub settles: Vec<(u16, u32, u32, DeliveryState)>,
}

/// The connection's open transactions, by transaction id.
#[derive(Debug, Default)]
pub struct Transactions {
    /// Number of the next transaction id.
    next: u64,
    /// Open transactions.
    open: HashMap<Vec<u8>, OpenTransaction>,
}

impl Transactions {
    /// A new transaction declared on `channel`; returns its id.
    pub fn declare(&mut self, channel: u16) -> Binary {
        self.next += 1;
        let id = self.next.to_be_bytes().to_vec();
        self.open.insert(
            id.clone(),
            OpenTransaction {
                txn: Transaction::new(),
                channel,
                settles: Vec::new(),
            },
        );
        Binary::from(id)
    }

    /// An open transaction.
    pub fn get_mut(&mut self, id: &[u8]) -> Option<&mut OpenTransaction> {
        self.open.get_mut(id)
    }

    /// Ends a transaction (for its discharge).
    pub fn take(&mut self, id: &[u8]) -> Option<OpenTransaction> {
        self.open.remove(id)
    }

    /// The session `channel` ended: its transactions roll back.
    pub fn roll_back_session(&mut self, channel: u16, out: &mut Output) {
        let ids: Vec<Vec<u8>> = self
            .open
            .iter()
            .filter(|(_, t)| t.channel == channel)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(t) = self.open.remove(&id) {
                tracing::info!(txn = ?id, "session ended: transaction rolled back");
                roll_back(t, out);
            }
        }
    }

    /// The connection ended: every open transaction rolls back.
    pub fn roll_back_all(&mut self) {
        for (id, t) in self.open.drain() {
            tracing::info!(txn = ?id, "connection ended: transaction rolled back");
            t.txn.roll_back();
        }
    }

    /// Open transactions (for logs and tests).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Rolls a transaction back and settles the deliveries it held: they went
/// back to their queues as a failed attempt, so the settlement says
/// `modified{delivery-failed}`, not the outcome the transaction dropped.
fn roll_back(t: OpenTransaction, out: &mut Output) {
    t.txn.roll_back();
    settle_rolled_back(&t.settles, out);
}

/// Settles deliveries whose transaction rolled back.
fn settle_rolled_back(settles: &[(u16, u32, u32, DeliveryState)], out: &mut Output) {
    let failed = DeliveryState::Modified(Modified {
        delivery_failed: Some(true),
        undeliverable_here: None,
        message_annotations: None,
    });
    for (channel, first, last, _) in settles {
        super::outgoing::send_settle(out, *channel, *first, *last, Some(failed.clone()));
    }
}

impl Session {
    /// A control message on the coordinator link: declare or discharge.
    pub(super) fn on_control(
        &mut self,
        delivery_id: u32,
        settled: bool,
        bytes: Bytes,
        ctx: &mut Ctx<'_>,
    ) {
        let channel = self.channel;
        let reply_error = |ctx: &mut Ctx<'_>, e| {
            if !settled {
                send_rejected(ctx.out, channel, delivery_id, e);
            }
        };
        let Some(value) = message::amqp_value(&bytes) else {
            reply_error(
                ctx,
                cond::decode("a control message needs an amqp-value body"),
            );
            return;
        };
        if let Err(e) = super::wellformed::check_exact(value) {
            reply_error(
                ctx,
                cond::decode(format!("a malformed control message: {e}")),
            );
            return;
        }
        if let Ok(declare) = serde_amqp::from_slice::<Declare>(value) {
            if declare.global_id.is_some() {
                reply_error(
                    ctx,
                    cond::not_implemented("distributed transactions are not supported"),
                );
                return;
            }
            let txn_id = ctx.txns.declare(channel);
            tracing::debug!(txn = ?txn_id, "transaction declared");
            let declared = DeliveryState::Declared(Declared { txn_id });
            send_settled(ctx.out, channel, delivery_id, declared);
            return;
        }
        let Ok(discharge) = serde_amqp::from_slice::<Discharge>(value) else {
            reply_error(
                ctx,
                cond::decode("a control message must be a declare or a discharge"),
            );
            return;
        };
        let Some(open) = ctx.txns.take(&discharge.txn_id) else {
            reply_error(
                ctx,
                cond::unknown_transaction(format!(
                    "no open transaction {:?} on this connection",
                    discharge.txn_id
                )),
            );
            return;
        };
        if discharge.fail == Some(true) {
            tracing::debug!(txn = ?discharge.txn_id, "transaction rolled back");
            roll_back(open, ctx.out);
            self.accepted.push(delivery_id);
            return;
        }
        let (posted, retired) = (open.txn.posted(), open.txn.retired());
        let result = open.txn.commit();
        // Committed (the outcomes given) or rolled back, the deliveries it
        // held are decided.
        match &result {
            Ok(_) => {
                for (ch, first, last, state) in open.settles {
                    super::outgoing::send_settle(ctx.out, ch, first, last, Some(state));
                }
            }
            Err(_) => settle_rolled_back(&open.settles, ctx.out),
        }
        match result {
            Ok(ticket) => {
                tracing::debug!(txn = ?discharge.txn_id, posted, retired, "transaction committed");
                match ticket {
                    // The discharge is accepted once the commit is on disk.
                    Some(t) => self.stored_accepts.push_back((t, delivery_id)),
                    None => self.accepted.push(delivery_id),
                }
            }
            Err(e) => {
                tracing::info!(txn = ?discharge.txn_id, error = %e, "commit refused: rolled back");
                reply_error(ctx, error::from_core(&e));
            }
        }
    }
}

/// The state the broker answers a transactional transfer with.
pub fn transactional_state(
    txn_id: Binary,
    outcome: Result<(), fe2o3_amqp::types::definitions::Error>,
) -> DeliveryState {
    use fe2o3_amqp::types::messaging::{Outcome, Rejected};
    use fe2o3_amqp::types::transaction::TransactionalState;
    let outcome = match outcome {
        Ok(()) => Outcome::Accepted(Accepted {}),
        Err(error) => Outcome::Rejected(Rejected { error: Some(error) }),
    };
    DeliveryState::TransactionalState(TransactionalState {
        txn_id,
        outcome: Some(outcome),
    })
}
