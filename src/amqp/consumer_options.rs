//! What an attach asks of its consumer or its node, in the forms clients
//! send (SPEC §2, §4, §5): ActiveMQ-style address options, link properties
//! (Artemis, Qpid Broker-J, RabbitMQ), and Azure Service Bus' session filter.

use fe2o3_amqp::types::definitions::{Error as AmqpError, Fields};
use fe2o3_amqp::types::messaging::Source;
use fe2o3_amqp::types::primitives::{Symbol, Value};

use super::address::NodeAddress;
use super::error::cond;
use crate::core::selector::Selector;
use crate::core::GroupFilter;

/// Azure Service Bus' source filter naming a session (a group).
pub const SESSION_FILTER: &str = "com.microsoft:session-filter";

/// The link property an exclusive consumer asks with, echoed when granted.
pub const EXCLUSIVE_PROPERTY: &str = "exclusive-consumer";

/// The JMS selector filter (Apache's registered filter type).
const SELECTOR_NAME: &str = "apache.org:selector-filter:string";
/// Its numeric descriptor.
const SELECTOR_CODE: u64 = 0x0000_468C_0000_0004;
/// The no-local filter (topic subscriptions: not what this connection sent).
const NO_LOCAL_NAME: &str = "apache.org:no-local-filter:list";
/// Its numeric descriptor.
const NO_LOCAL_CODE: u64 = 0x0000_468C_0000_0003;

/// The source filters of a consumer's attach that the broker applies.
#[derive(Debug, Default)]
pub struct SourceFilters {
    /// A JMS selector.
    pub selector: Option<Selector>,
    /// Messages published on this connection are not delivered (topics).
    pub no_local: bool,
    /// A session (group) filter.
    pub session: Option<GroupFilter>,
    /// Keys of the filters applied, to echo in the broker's attach.
    pub applied: Vec<Symbol>,
}

/// Which known filter a filter-set entry is, by its descriptor (or, for a
/// plain value, its key, as some clients send).
fn filter_kind(key: &Symbol, value: &Value) -> Option<&'static str> {
    let by_descriptor = match value {
        Value::Described(d) => match &d.descriptor {
            serde_amqp::descriptor::Descriptor::Name(n) => match n.as_str() {
                SELECTOR_NAME => Some("selector"),
                NO_LOCAL_NAME => Some("no-local"),
                SESSION_FILTER => Some("session"),
                _ => None,
            },
            serde_amqp::descriptor::Descriptor::Code(SELECTOR_CODE) => Some("selector"),
            serde_amqp::descriptor::Descriptor::Code(NO_LOCAL_CODE) => Some("no-local"),
            serde_amqp::descriptor::Descriptor::Code(_) => None,
        },
        _ => None,
    };
    by_descriptor.or(match key.as_str() {
        SESSION_FILTER => Some("session"),
        "jms-selector" | "selector" | SELECTOR_NAME => Some("selector"),
        "no-local" | NO_LOCAL_NAME => Some("no-local"),
        _ => None,
    })
}

/// Reads the source filters the broker knows: a JMS selector (refused with
/// `amqp:invalid-field` and the parse error if it does not parse), no-local,
/// and a session filter. Others are ignored (and not echoed).
pub fn source_filters(source: &Source) -> Result<SourceFilters, AmqpError> {
    let mut out = SourceFilters::default();
    let Some(filters) = &source.filter else {
        return Ok(out);
    };
    for (key, value) in filters.iter() {
        let inner = match value {
            Value::Described(d) => &d.value,
            other => other,
        };
        match filter_kind(key, value) {
            Some("selector") => {
                let Value::String(text) = inner else {
                    return Err(cond::invalid_field("a selector filter must be a string"));
                };
                if text.trim().is_empty() {
                    // JMS: an empty selector is no selector.
                    continue;
                }
                let selector = Selector::parse(text).map_err(|e| {
                    cond::invalid_field(format!("selector '{}': {e}", shortened(text)))
                })?;
                out.selector = Some(selector);
                out.applied.push(key.clone());
            }
            Some("no-local") => {
                out.no_local = true;
                out.applied.push(key.clone());
            }
            Some("session") => {
                out.session = match inner {
                    Value::Null => Some(GroupFilter::Any),
                    Value::String(s) if !s.is_empty() => Some(GroupFilter::Group(s.clone())),
                    _ => {
                        return Err(cond::invalid_field(format!(
                            "source filter '{SESSION_FILTER}' must be a session id or null"
                        )))
                    }
                };
                out.applied.push(key.clone());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// At most the first 80 characters of `text`, for an error description
/// (a refused selector may be kilobytes long).
fn shortened(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Keeps in the broker's attach only the filters it applies.
pub fn echo_filters(source: &mut Source, applied: &[Symbol]) {
    if let Some(filters) = source.filter.as_mut() {
        filters.as_inner_mut().retain(|k, _| applied.contains(k));
        if filters.is_empty() {
            source.filter = None;
        }
    }
}

/// Options of an address, split by who they are for.
#[derive(Debug, Default)]
pub struct AddressOptions {
    /// `consumer.priority` / `consumer-priority`.
    pub priority: Option<i32>,
    /// `consumer.exclusive` / `exclusive`.
    pub exclusive: Option<bool>,
    /// `consumer.group-filter`.
    pub group_filter: Option<String>,
    /// `queue.<setting>` options, without the prefix.
    pub queue: Vec<(String, String)>,
}

/// What the link properties ask for.
#[derive(Debug, Default)]
pub struct PropertyOptions {
    /// `priority` or `rabbitmq:priority`.
    pub priority: Option<i32>,
    /// `exclusive-consumer`.
    pub exclusive: bool,
    /// `group-filter`.
    pub group_filter: Option<String>,
}

/// Checks an address's options: exactly the accepted ones (SPEC §2).
pub fn address_options(node: &NodeAddress) -> Result<AddressOptions, AmqpError> {
    let mut options = AddressOptions::default();
    for (key, value) in &node.options {
        match key.as_str() {
            "consumer.priority" | "consumer-priority" => {
                let p = value.parse().map_err(|_| {
                    cond::invalid_field(format!("option '{key}' must be an integer, not '{value}'"))
                })?;
                options.priority = Some(p);
            }
            "consumer.exclusive" | "exclusive" => {
                let b = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(cond::invalid_field(format!(
                            "option '{key}' must be true or false, not '{value}'"
                        )))
                    }
                };
                options.exclusive = Some(b);
            }
            "consumer.group-filter" => {
                if value.is_empty() {
                    return Err(cond::invalid_field(format!(
                        "option '{key}' needs a group id"
                    )));
                }
                options.group_filter = Some(value.clone());
            }
            "consumer.prefetchSize" => {}
            _ => match key.strip_prefix("queue.") {
                Some(setting) => options.queue.push((setting.to_string(), value.clone())),
                None => {
                    return Err(cond::invalid_field(format!(
                        "unknown address option '{key}'"
                    )))
                }
            },
        }
    }
    Ok(options)
}

/// Reads the consumer properties of an attach.
pub fn link_properties(properties: Option<&Fields>) -> Result<PropertyOptions, AmqpError> {
    let mut options = PropertyOptions::default();
    let Some(props) = properties else {
        return Ok(options);
    };
    for (key, value) in props.iter() {
        match key.as_str() {
            "priority" | "rabbitmq:priority" => {
                options.priority = Some(integer(key, value)?);
            }
            EXCLUSIVE_PROPERTY => {
                options.exclusive = match value {
                    Value::Bool(b) => *b,
                    _ => {
                        return Err(cond::invalid_field(format!(
                            "link property '{}' must be a boolean",
                            key.as_str()
                        )))
                    }
                }
            }
            "group-filter" => match value {
                Value::String(s) if !s.is_empty() => options.group_filter = Some(s.clone()),
                Value::Symbol(s) if !s.as_str().is_empty() => {
                    options.group_filter = Some(s.as_str().to_string())
                }
                _ => {
                    return Err(cond::invalid_field(
                        "link property 'group-filter' must be a non-empty string",
                    ))
                }
            },
            _ => {}
        }
    }
    Ok(options)
}

/// An integer link property, clamped to `i32`.
fn integer(key: &Symbol, value: &Value) -> Result<i32, AmqpError> {
    let p = match value {
        Value::Int(v) => i64::from(*v),
        Value::Long(v) => *v,
        Value::Short(v) => i64::from(*v),
        Value::Byte(v) => i64::from(*v),
        Value::Uint(v) => i64::from(*v),
        Value::Ubyte(v) => i64::from(*v),
        Value::Ushort(v) => i64::from(*v),
        Value::Ulong(v) => i64::try_from(*v).unwrap_or(i64::MAX),
        _ => {
            return Err(cond::invalid_field(format!(
                "link property '{}' must be an integer",
                key.as_str()
            )))
        }
    };
    Ok(p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

/// The source filter echoed when the broker picked the group for a null
/// session filter: the same entry, now naming the group.
pub fn echo_session(source: &mut Source, group: &str) {
    let Some(filters) = source.filter.as_mut() else {
        return;
    };
    if let Some((_, value)) = filters
        .iter_mut()
        .find(|(k, _)| k.as_str() == SESSION_FILTER)
    {
        match value {
            Value::Described(d) => d.value = Value::String(group.to_string()),
            other => *other = Value::String(group.to_string()),
        }
    }
}

/// The attach properties saying the consumer is exclusive.
pub fn exclusive_properties() -> Fields {
    let mut fields = Fields::new();
    fields.insert(Symbol::from(EXCLUSIVE_PROPERTY), Value::Bool(true));
    fields
}
