//! The one place that maps the core's errors to AMQP error conditions, and
//! small constructors for the errors the engine sends itself.

use fe2o3_amqp::types::definitions::{
    AmqpError, ConnectionError, Error as AmqpErrorFrame, ErrorCondition, LinkError, SessionError,
};
use fe2o3_amqp::types::transaction::TransactionError;

use fe2o3_amqp::types::primitives::Symbol;

use super::frame::FrameError;
use crate::core::CoreError;

/// An AMQP error with a description.
pub fn error(
    condition: impl Into<ErrorCondition>,
    description: impl Into<String>,
) -> AmqpErrorFrame {
    AmqpErrorFrame::new(condition, Some(description.into()), None)
}

/// Maps a core error to the condition a client understands.
pub fn from_core(e: &CoreError) -> AmqpErrorFrame {
    let condition: ErrorCondition = match e {
        CoreError::NotFound { .. } => AmqpError::NotFound.into(),
        CoreError::Unauthorized { .. } => AmqpError::UnauthorizedAccess.into(),
        CoreError::NotImplemented { .. } => AmqpError::NotImplemented.into(),
        CoreError::QueueFull { .. } => AmqpError::ResourceLimitExceeded.into(),
        CoreError::InvalidSetting { .. } | CoreError::NameTooLong { .. } => {
            AmqpError::InvalidField.into()
        }
        CoreError::PreconditionFailed { .. } => AmqpError::PreconditionFailed.into(),
        CoreError::UnknownDelivery { .. } => AmqpError::IllegalState.into(),
        CoreError::UnknownConsumer { .. } => AmqpError::IllegalState.into(),
        CoreError::Store { full: true, .. } => AmqpError::ResourceLimitExceeded.into(),
        CoreError::Store { full: false, .. } | CoreError::Internal { .. } => {
            AmqpError::InternalError.into()
        }
        // Azure Service Bus' conditions, which its session receivers expect.
        CoreError::GroupLocked { .. } => {
            ErrorCondition::Custom(Symbol::from("com.microsoft:session-cannot-be-locked"))
        }
        CoreError::NoGroupAvailable { .. } => {
            ErrorCondition::Custom(Symbol::from("com.microsoft:timeout"))
        }
        CoreError::RolledBack { .. } => TransactionError::Rollback.into(),
    };
    error(condition, e.to_string())
}

/// Maps a frame-level error to the connection error that closes the connection.
pub fn from_frame(e: &FrameError) -> AmqpErrorFrame {
    let condition: ErrorCondition = match e {
        FrameError::Decode(_) => AmqpError::DecodeError.into(),
        FrameError::TooLarge { .. }
        | FrameError::TooShort { .. }
        | FrameError::BadDataOffset { .. }
        | FrameError::WrongType { .. } => ConnectionError::FramingError.into(),
    };
    error(condition, e.to_string())
}

/// Shorthands for the conditions the engine raises itself.
pub mod cond {
    use super::*;

    /// `amqp:connection:framing-error`.
    pub fn framing(d: impl Into<String>) -> AmqpErrorFrame {
        error(ConnectionError::FramingError, d)
    }
    /// `amqp:connection:forced`.
    pub fn forced(d: impl Into<String>) -> AmqpErrorFrame {
        error(ConnectionError::ConnectionForced, d)
    }
    /// `amqp:resource-limit-exceeded`.
    pub fn resource_limit(d: impl Into<String>) -> AmqpErrorFrame {
        error(AmqpError::ResourceLimitExceeded, d)
    }
    /// `amqp:internal-error`.
    pub fn internal(d: impl Into<String>) -> AmqpErrorFrame {
        error(AmqpError::InternalError, d)
    }
    /// `amqp:not-implemented`.
    pub fn not_implemented(d: impl Into<String>) -> AmqpErrorFrame {
        error(AmqpError::NotImplemented, d)
    }
    /// `amqp:invalid-field`.
    pub fn invalid_field(d: impl Into<String>) -> AmqpErrorFrame {
        error(AmqpError::InvalidField, d)
    }
    /// `amqp:illegal-state`.
    pub fn illegal_state(d: impl Into<String>) -> AmqpErrorFrame {
        error(AmqpError::IllegalState, d)
    }
    /// `amqp:not-found`.
    pub fn not_found(d: impl Into<String>) -> AmqpErrorFrame {
        error(AmqpError::NotFound, d)
    }
    /// `amqp:decode-error`.
    pub fn decode(d: impl Into<String>) -> AmqpErrorFrame {
        error(AmqpError::DecodeError, d)
    }
    /// `amqp:session:unattached-handle`.
    pub fn unattached_handle(d: impl Into<String>) -> AmqpErrorFrame {
        error(SessionError::UnattachedHandle, d)
    }
    /// `amqp:session:handle-in-use`.
    pub fn handle_in_use(d: impl Into<String>) -> AmqpErrorFrame {
        error(SessionError::HandleInUse, d)
    }
    /// `amqp:session:window-violation`.
    pub fn window_violation(d: impl Into<String>) -> AmqpErrorFrame {
        error(SessionError::WindowViolation, d)
    }
    /// `amqp:link:message-size-exceeded`.
    pub fn message_size(d: impl Into<String>) -> AmqpErrorFrame {
        error(LinkError::MessageSizeExceeded, d)
    }
    /// `amqp:transaction:unknown-id`.
    pub fn unknown_transaction(d: impl Into<String>) -> AmqpErrorFrame {
        error(TransactionError::UnknownId, d)
    }
    /// `amqp:link:transfer-limit-exceeded`.
    pub fn transfer_limit(d: impl Into<String>) -> AmqpErrorFrame {
        error(LinkError::TransferLimitExceeded, d)
    }
}
