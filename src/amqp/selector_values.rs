//! A message's values for JMS selectors: JMS header names mapped to AMQP
//! fields as Qpid JMS and Artemis map them, and the application properties.
//! The core calls [`evaluate`] (through `core::selector::Filter`) once per
//! message and consumer; it decodes only the values the selector reads,
//! finding them all in one walk over the application properties.

use std::cell::OnceCell;
use std::sync::Arc;

use fe2o3_amqp::types::messaging::{MessageId, Properties};

use super::message;
use crate::core::selector::{Selector, Value, Values};
use crate::core::Message;

/// Section descriptor code of the properties.
const PROPERTIES: u64 = 0x73;

/// Whether `selector` selects `message` (the core's `Evaluator`).
pub fn evaluate(selector: &Selector, message: &Message) -> bool {
    let view = View {
        message,
        names: selector.identifiers(),
        properties: OnceCell::new(),
        application: OnceCell::new(),
    };
    selector.matches(&view)
}

/// A message as a selector reads it: the application properties the
/// selector names are found in the encoded bytes in one walk, on first use
/// (only the values asked for are decoded); the properties section is
/// decoded once, only if a JMS header field that lives there is asked for.
struct View<'a> {
    /// The message.
    message: &'a Message,
    /// The identifiers the selector reads, sorted.
    names: &'a [String],
    /// Its properties, decoded on first use.
    properties: OnceCell<Option<Properties>>,
    /// The encoded value of each of `names` among the application
    /// properties, found on first use.
    application: OnceCell<Vec<Option<&'a [u8]>>>,
}

impl<'a> View<'a> {
    /// The application property `name`, decoded.
    fn application(&self, name: &str) -> Option<Value> {
        let found = self
            .application
            .get_or_init(|| message::application_properties(&self.message.bare, self.names));
        let index = self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()?;
        found.get(index).copied().flatten().and_then(decode)
    }

    /// The decoded properties section, if the message has one.
    fn properties(&self) -> Option<&Properties> {
        self.properties
            .get_or_init(|| {
                message::sections(&self.message.bare)
                    .take_while(|(code, _)| *code == PROPERTIES)
                    .find_map(|(_, section)| serde_amqp::from_slice(section).ok())
            })
            .as_ref()
    }
}

/// An encoded AMQP value as a selector value (None: absent, null or of a
/// type selectors do not compare).
fn decode(v: &[u8]) -> Option<Value> {
    fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.get(..N)?.try_into().ok()
    }
    fn text(b: &[u8]) -> Option<Value> {
        std::str::from_utf8(b)
            .ok()
            .map(|s| Value::Str(Arc::from(s)))
    }
    let (&code, rest) = v.split_first()?;
    Some(match code {
        0x41 => Value::Bool(true),
        0x42 => Value::Bool(false),
        0x56 => Value::Bool(*rest.first()? != 0),
        0x43 | 0x44 => Value::Int(0),
        0x50 | 0x52 | 0x53 => Value::Int(i64::from(*rest.first()?)),
        0x51 | 0x54 | 0x55 => Value::Int(i64::from(*rest.first()? as i8)),
        0x60 => Value::Int(i64::from(u16::from_be_bytes(be(rest)?))),
        0x61 => Value::Int(i64::from(i16::from_be_bytes(be(rest)?))),
        0x70 => Value::Int(i64::from(u32::from_be_bytes(be(rest)?))),
        0x71 => Value::Int(i64::from(i32::from_be_bytes(be(rest)?))),
        0x80 => Value::Int(i64::try_from(u64::from_be_bytes(be(rest)?)).ok()?),
        0x81 | 0x83 => Value::Int(i64::from_be_bytes(be(rest)?)),
        0x72 => Value::Float(f64::from(f32::from_be_bytes(be(rest)?))),
        0x82 => Value::Float(f64::from_be_bytes(be(rest)?)),
        0x73 => Value::Str(
            char::from_u32(u32::from_be_bytes(be(rest)?))?
                .to_string()
                .into(),
        ),
        0xa1 | 0xa3 => text(rest.get(1..)?)?,
        0xb1 | 0xb3 => text(rest.get(4..)?)?,
        _ => return None,
    })
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

impl Values for View<'_> {
    fn get(&self, identifier: &str) -> Option<Value> {
        let h = &self.message.header;
        if !identifier.starts_with("JMS") {
            return self.application(identifier);
        }
        let p = self.properties();
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
            "JMSMessageID" => {
                return p?
                    .message_id
                    .as_ref()
                    .map(|i| Value::Str(id_string(i).into()))
            }
            "JMSCorrelationID" => {
                return p?
                    .correlation_id
                    .as_ref()
                    .map(|i| Value::Str(id_string(i).into()))
            }
            "JMSType" => return p?.subject.as_deref().map(|s| Value::Str(s.into())),
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
                return p?.group_id.as_deref().map(|s| Value::Str(s.into()))
            }
            "JMSXGroupSeq" if p.is_some_and(|p| p.group_sequence.is_some()) => {
                return p?.group_sequence.map(|n| Value::Int(i64::from(n as i32)))
            }
            "JMSXUserID" => {
                return p?
                    .user_id
                    .as_ref()
                    .map(|u| Value::Str(String::from_utf8_lossy(u).into()))
            }
            _ => {}
        }
        self.application(identifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fe2o3_amqp::types::messaging::{ApplicationProperties, Data, Header};
    use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Timestamp};

    fn message() -> Message {
        let header = serde_amqp::to_vec(&Header {
            durable: true,
            priority: 7.into(),
            ..Default::default()
        })
        .unwrap();
        let props = serde_amqp::to_vec(
            &Properties::builder()
                .message_id(String::from("m-1"))
                .correlation_id(42u64)
                .subject(String::from("order"))
                .creation_time(Timestamp::from_milliseconds(1_000))
                .build(),
        )
        .unwrap();
        let app = serde_amqp::to_vec(
            &ApplicationProperties::builder()
                .insert("color", SimpleValue::String("red".into()))
                .insert("weight", SimpleValue::Double(2.5.into()))
                .insert("count", SimpleValue::Int(-3))
                .insert("big", SimpleValue::Ulong(7))
                .insert("small", SimpleValue::Ubyte(200))
                .insert("flag", SimpleValue::Bool(true))
                .insert("sym", SimpleValue::Symbol("s".into()))
                .insert("nothing", SimpleValue::Null)
                .build(),
        )
        .unwrap();
        let body = serde_amqp::to_vec(&Data(Binary::from(vec![1u8]))).unwrap();
        message::parse(Bytes::from([header, props, app, body].concat())).unwrap()
    }

    fn selects(text: &str) -> bool {
        evaluate(&Selector::parse(text).unwrap(), &message())
    }

    #[test]
    fn application_properties_of_every_simple_type() {
        assert!(selects("color = 'red' AND weight > 2 AND count = -3"));
        assert!(selects("big = 7 AND small = 200 AND flag AND sym = 's'"));
        assert!(selects("nothing IS NULL AND missing IS NULL"));
        assert!(!selects("color = 'blue'"));
        assert!(!selects("missing = 1"));
        assert!(!selects("NOT (missing = 1)"), "unknown stays unknown");
    }

    #[test]
    fn jms_header_fields_map_to_amqp_fields() {
        assert!(selects(
            "JMSDeliveryMode = 'PERSISTENT' AND JMSPriority = 7"
        ));
        assert!(selects("JMSMessageID = 'm-1' AND JMSType = 'order'"));
        assert!(selects("JMSCorrelationID = 'ID:AMQP_ULONG:42'"));
        assert!(selects("JMSTimestamp = 1000 AND JMSExpiration = 0"));
        assert!(selects("JMSXDeliveryCount = 1"));
    }
}
