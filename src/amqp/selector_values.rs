//! A message's values for JMS selectors: JMS header names mapped to AMQP
//! fields as Qpid JMS and Artemis map them, and the application properties.
//! The core calls [`evaluate`] (through `core::selector::Filter`); the
//! message's properties and application properties are decoded once per
//! evaluation, only when a selector needs them.

use fe2o3_amqp::types::messaging::{ApplicationProperties, MessageId, Properties};
use fe2o3_amqp::types::primitives::SimpleValue;

use super::message;
use crate::core::selector::{Selector, Value, Values};
use crate::core::Message;

/// Section descriptor codes.
const PROPERTIES: u64 = 0x73;
const APPLICATION_PROPERTIES: u64 = 0x74;

/// Whether `selector` selects `message` (the core's `Evaluator`).
pub fn evaluate(selector: &Selector, message: &Message) -> bool {
    let view = View::new(message);
    selector.matches(&view)
}

/// A message's decoded properties and application properties.
struct View<'a> {
    /// The message (header fields).
    message: &'a Message,
    /// Its properties, if it has them and they decode.
    properties: Option<Properties>,
    /// Its application properties, if any.
    application: Option<ApplicationProperties>,
}

impl<'a> View<'a> {
    /// Decodes what a selector may read.
    fn new(message: &'a Message) -> Self {
        let mut properties = None;
        let mut application = None;
        for (code, section) in message::sections(&message.bare) {
            match code {
                PROPERTIES => properties = serde_amqp::from_slice(section).ok(),
                APPLICATION_PROPERTIES => application = serde_amqp::from_slice(section).ok(),
                _ => break,
            }
        }
        Self {
            message,
            properties,
            application,
        }
    }
}

/// A message id as the string JMS shows (Qpid JMS's prefixes for the
/// non-string kinds).
fn id_string(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => format!("ID:AMQP_ULONG:{n}"),
        MessageId::Uuid(u) => format!("ID:AMQP_UUID:{}", uuid::Uuid::from_bytes(*u.as_inner())),
        MessageId::Binary(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("ID:AMQP_BINARY:{hex}")
        }
    }
}

/// A simple AMQP value as a selector value (None: not comparable).
fn simple(v: &SimpleValue) -> Option<Value> {
    Some(match v {
        SimpleValue::Bool(b) => Value::Bool(*b),
        SimpleValue::Ubyte(n) => Value::Int(i64::from(*n)),
        SimpleValue::Ushort(n) => Value::Int(i64::from(*n)),
        SimpleValue::Uint(n) => Value::Int(i64::from(*n)),
        SimpleValue::Ulong(n) => Value::Int(i64::try_from(*n).ok()?),
        SimpleValue::Byte(n) => Value::Int(i64::from(*n)),
        SimpleValue::Short(n) => Value::Int(i64::from(*n)),
        SimpleValue::Int(n) => Value::Int(i64::from(*n)),
        SimpleValue::Long(n) => Value::Int(*n),
        SimpleValue::Float(f) => Value::Float(f64::from(f.0)),
        SimpleValue::Double(f) => Value::Float(f.0),
        SimpleValue::Char(c) => Value::Str(c.to_string()),
        SimpleValue::Timestamp(t) => Value::Int(t.milliseconds()),
        SimpleValue::String(s) => Value::Str(s.clone()),
        SimpleValue::Symbol(s) => Value::Str(s.as_str().to_string()),
        _ => return None,
    })
}

impl Values for View<'_> {
    fn get(&self, identifier: &str) -> Option<Value> {
        let h = &self.message.header;
        let p = self.properties.as_ref();
        match identifier {
            "JMSDeliveryMode" => {
                return Some(Value::Str(
                    if h.durable {
                        "PERSISTENT"
                    } else {
                        "NON_PERSISTENT"
                    }
                    .into(),
                ))
            }
            "JMSPriority" => return Some(Value::Int(i64::from(h.priority))),
            "JMSMessageID" => return p?.message_id.as_ref().map(|i| Value::Str(id_string(i))),
            "JMSCorrelationID" => {
                return p?.correlation_id.as_ref().map(|i| Value::Str(id_string(i)))
            }
            "JMSType" => return p?.subject.clone().map(Value::Str),
            "JMSTimestamp" => {
                return p?
                    .creation_time
                    .as_ref()
                    .map(|t| Value::Int(t.milliseconds()))
            }
            "JMSExpiration" => {
                return Some(Value::Int(
                    p.and_then(|p| p.absolute_expiry_time.as_ref())
                        .map_or(0, |t| t.milliseconds()),
                ))
            }
            "JMSXDeliveryCount" => return Some(Value::Int(i64::from(h.delivery_count) + 1)),
            "JMSXGroupID" if p.is_some_and(|p| p.group_id.is_some()) => {
                return p?.group_id.clone().map(Value::Str)
            }
            "JMSXGroupSeq" if p.is_some_and(|p| p.group_sequence.is_some()) => {
                return p?.group_sequence.map(|n| Value::Int(i64::from(n as i32)))
            }
            "JMSXUserID" => {
                return p?
                    .user_id
                    .as_ref()
                    .map(|u| Value::Str(String::from_utf8_lossy(u).into_owned()))
            }
            _ => {}
        }
        let application = self.application.as_ref()?;
        application
            .0
            .iter()
            .find(|(k, _)| k.as_str() == identifier)
            .and_then(|(_, v)| simple(v))
    }
}
