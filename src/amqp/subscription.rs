//! A consumer's attach to a topic: which subscription it gets, in the forms
//! Qpid JMS and other clients send (SPEC §2 and the JMS features):
//! - source `durable` (configuration or unsettled-state): a durable
//!   subscription named after the link;
//! - source capability `shared` (JMS 2.0 shared subscriptions, offered by
//!   Ordo as `SHARED-SUBS` in its Open): consumers with the same
//!   subscription name share one queue; the name is the link name up to a
//!   `|` (Qpid JMS names further consumers `sub|2`, `sub|volatile1`), and
//!   capability `global` means it is not scoped to the container-id;
//! - a wildcard address (`prices.*`, `orders.#`) on a topic: a pattern
//!   subscription;
//! - source filters: a JMS selector and `no-local`.

use std::sync::Arc;

use fe2o3_amqp::types::definitions::Error as AmqpError;
use fe2o3_amqp::types::messaging::{Source, TerminusDurability};
use fe2o3_amqp::types::performatives::Attach;

use super::error;
use super::link::Cleanup;
use super::session::Ctx;
use crate::core::selector::Filter;
use crate::core::subscriptions::{self, SubscriptionSpec};
use crate::core::{Queue, Topic};

/// Whether the source has capability `cap`.
fn has_capability(source: &Source, cap: &str) -> bool {
    source
        .capabilities
        .as_ref()
        .is_some_and(|caps| caps.0.iter().any(|c| c.as_str() == cap))
}

/// The subscription queue for a consumer of `topic` (or of the pattern
/// `name`), and what to do with it when the link goes.
pub(super) fn subscribe(
    attach: &Attach,
    source: &Source,
    topic: Option<&Arc<Topic>>,
    name: &str,
    filter: Option<Arc<Filter>>,
    no_local: bool,
    ctx: &Ctx<'_>,
) -> Result<(Arc<Queue>, Cleanup), AmqpError> {
    let durable = source.durable != TerminusDurability::None;
    let shared = has_capability(source, "shared");
    let global = has_capability(source, "global");
    let base = attach.name.split('|').next().unwrap_or(&attach.name);
    let subscription_name = if durable || shared {
        Some(if global {
            base.to_string()
        } else {
            format!("{}.{}", ctx.container, base)
        })
    } else {
        None
    };
    let spec = SubscriptionSpec {
        name: subscription_name.clone(),
        durable,
        shared,
        filter,
        no_local: no_local.then_some(ctx.connection),
    };
    let on = match topic {
        Some(t) => subscriptions::Source::Topic(t),
        None => subscriptions::Source::Pattern(name),
    };
    let queue = ctx
        .broker
        .subscribe(on, &spec)
        .map_err(|e| error::from_core(&e))?;
    let cleanup = match (durable, shared, subscription_name) {
        (true, _, Some(n)) => Cleanup::Durable(n),
        (false, true, Some(n)) => Cleanup::Shared(n),
        _ => Cleanup::Delete,
    };
    Ok((queue, cleanup))
}
