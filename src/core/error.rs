//! Errors of the broker core. The protocol layer maps each to a condition
//! at its edge (`amqp::error`).

use super::ConsumerId;

/// What went wrong in the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The address names no node and auto-create is off (or it was deleted).
    #[error("no node named '{address}'")]
    NotFound {
        /// The address asked for.
        address: String,
    },
    /// The access rules do not let the principal do that.
    #[error("{principal} may not {permission} '{address}'")]
    Unauthorized {
        /// Who asked (a user name, or `anonymous`).
        principal: String,
        /// What was asked (`send`, `receive`, `create`, `manage`).
        permission: &'static str,
        /// The address.
        address: String,
    },
    /// The address asks for something the broker does not do (yet).
    #[error("{what} is not supported")]
    NotImplemented {
        /// What was asked for.
        what: String,
    },
    /// A queue limit with `overflow = reject` was reached.
    #[error("queue '{queue}' is full")]
    QueueFull {
        /// The queue.
        queue: String,
    },
    /// A node name longer than the broker allows.
    #[error(
        "a name of {length} bytes is longer than the limit of {limit} (limits.max-address-length)"
    )]
    NameTooLong {
        /// Its length in bytes.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A `queue.*` option has a bad key or value.
    #[error("{message}")]
    InvalidSetting {
        /// What was wrong.
        message: String,
    },
    /// A `queue.*` option differs from the existing queue's setting.
    #[error("{message}")]
    PreconditionFailed {
        /// What differs.
        message: String,
    },
    /// A settlement named a delivery this consumer does not hold.
    #[error("unknown delivery {delivery_id}")]
    UnknownDelivery {
        /// The delivery id.
        delivery_id: u64,
    },
    /// A durable message cannot be stored: the store failed (poisoned until
    /// restart) or its disk is full.
    #[error("cannot store the message: {reason}")]
    Store {
        /// The disk is full (a resource limit), not broken.
        full: bool,
        /// What the store said.
        reason: String,
    },
    /// A consumer asked for a group another consumer's group filter holds.
    #[error("group '{group}' is held by another consumer")]
    GroupLocked {
        /// The group.
        group: String,
    },
    /// A consumer asked for any available group and none is unowned with
    /// messages.
    #[error("no unowned group with messages in queue '{queue}'")]
    NoGroupAvailable {
        /// The queue.
        queue: String,
    },
    /// A transaction could not commit and was rolled back instead.
    #[error("the transaction was rolled back: {reason}")]
    RolledBack {
        /// Why it could not commit.
        reason: String,
    },
    /// Something the broker checked could not happen did: a bug, reported
    /// rather than dropped (`amqp:internal-error`).
    #[error("internal error: {message}")]
    Internal {
        /// What happened.
        message: String,
    },
    /// A call named a consumer the queue does not know.
    #[error("unknown consumer {consumer:?}")]
    UnknownConsumer {
        /// The consumer id.
        consumer: ConsumerId,
    },
}
