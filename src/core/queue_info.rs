//! The management view of a queue: its counters and settings, as the admin
//! API lists them (JSON) and the AMQP management node `$management` answers
//! READ and QUERY with them. One struct for both, so the two never name an
//! attribute differently.

use serde::{Deserialize, Serialize};

use super::queue_handle::Queue;

/// One queue's counters and settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Messages waiting.
    pub messages: usize,
    /// Bytes of the messages waiting.
    pub bytes: usize,
    /// Deliveries awaiting an outcome.
    pub unsettled: usize,
    /// Attached consumers.
    pub consumers: usize,
    /// Live message groups.
    pub groups: usize,
    /// Groups held at a poison message.
    pub held_groups: usize,
    /// The active exclusive consumer.
    pub active_consumer: Option<u64>,
    /// Whether one consumer at a time is active.
    pub exclusive: bool,
    /// `none` or `strict`.
    pub group_ordering: String,
    /// Messages put on the queue so far.
    pub enqueued: u64,
    /// Deliveries so far (redeliveries included).
    pub delivered: u64,
    /// Redeliveries so far.
    pub redelivered: u64,
    /// Messages consumed for good so far.
    pub acked: u64,
    /// Messages dead-lettered so far.
    pub dead_lettered: u64,
    /// Messages expired so far.
    pub expired: u64,
    /// How long the oldest waiting message has waited (ms, to within a
    /// second); None when none waits.
    pub oldest_message_age_ms: Option<u64>,
}

/// The value of one attribute, protocol-neutral (the protocol layer picks
/// the wire type: AMQP `long`, `string`, `boolean`, `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// A name or a setting.
    String(String),
    /// A count or an id.
    Count(u64),
    /// A flag.
    Bool(bool),
    /// Not set (no active consumer), or not an attribute of this entity.
    Null,
}

impl QueueInfo {
    /// The attribute names, in the order of the struct's fields (which are
    /// the admin API's JSON keys; a unit test keeps the two equal).
    pub const ATTRIBUTES: &'static [&'static str] = &[
        "name",
        "messages",
        "bytes",
        "unsettled",
        "consumers",
        "groups",
        "held_groups",
        "active_consumer",
        "exclusive",
        "group_ordering",
        "enqueued",
        "delivered",
        "redelivered",
        "acked",
        "dead_lettered",
        "expired",
        "oldest_message_age_ms",
    ];

    /// The value of attribute `name`, or None if the queue has no such
    /// attribute.
    pub fn attribute(&self, name: &str) -> Option<AttributeValue> {
        use AttributeValue::{Bool, Count};
        let size = |n: usize| Count(n as u64);
        Some(match name {
            "name" => AttributeValue::String(self.name.clone()),
            "messages" => size(self.messages),
            "bytes" => size(self.bytes),
            "unsettled" => size(self.unsettled),
            "consumers" => size(self.consumers),
            "groups" => size(self.groups),
            "held_groups" => size(self.held_groups),
            "active_consumer" => self.active_consumer.map_or(AttributeValue::Null, Count),
            "exclusive" => Bool(self.exclusive),
            "group_ordering" => AttributeValue::String(self.group_ordering.clone()),
            "enqueued" => Count(self.enqueued),
            "delivered" => Count(self.delivered),
            "redelivered" => Count(self.redelivered),
            "acked" => Count(self.acked),
            "dead_lettered" => Count(self.dead_lettered),
            "expired" => Count(self.expired),
            "oldest_message_age_ms" => self
                .oldest_message_age_ms
                .map_or(AttributeValue::Null, Count),
            _ => return None,
        })
    }
}

impl Queue {
    /// The queue's counters and settings now, for management.
    pub fn info(&self) -> QueueInfo {
        let stats = self.stats();
        let settings = self.settings();
        QueueInfo {
            name: self.name().to_owned(),
            messages: stats.depth,
            bytes: stats.bytes,
            unsettled: stats.unacked,
            consumers: stats.consumers,
            groups: stats.groups,
            held_groups: stats.held_groups,
            active_consumer: stats.active.map(|c| c.0),
            exclusive: settings.exclusive,
            group_ordering: format!("{:?}", settings.group_ordering).to_lowercase(),
            enqueued: stats.counters.enqueued,
            delivered: stats.counters.delivered,
            redelivered: stats.counters.redelivered,
            acked: stats.counters.acked,
            dead_lettered: stats.counters.dead_lettered,
            expired: stats.counters.expired,
            oldest_message_age_ms: self.oldest_age(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> QueueInfo {
        QueueInfo {
            name: "orders".into(),
            messages: 3,
            bytes: 30,
            unsettled: 1,
            consumers: 2,
            groups: 4,
            held_groups: 1,
            active_consumer: Some(7),
            exclusive: true,
            group_ordering: "strict".into(),
            enqueued: 10,
            delivered: 9,
            redelivered: 2,
            acked: 6,
            dead_lettered: 1,
            expired: 0,
            oldest_message_age_ms: Some(1500),
        }
    }

    /// Every attribute is a JSON key of the admin API with the same value,
    /// and nothing else is.
    #[test]
    fn attributes_are_the_admin_api_fields() {
        for info in [
            sample(),
            QueueInfo {
                active_consumer: None,
                ..sample()
            },
        ] {
            let json = serde_json::to_value(&info).unwrap();
            let object = json.as_object().unwrap();
            assert_eq!(object.len(), QueueInfo::ATTRIBUTES.len());
            for name in QueueInfo::ATTRIBUTES {
                let expected = match &object[*name] {
                    serde_json::Value::String(s) => AttributeValue::String(s.clone()),
                    serde_json::Value::Number(n) => AttributeValue::Count(n.as_u64().unwrap()),
                    serde_json::Value::Bool(b) => AttributeValue::Bool(*b),
                    serde_json::Value::Null => AttributeValue::Null,
                    other => panic!("{name}: unexpected {other}"),
                };
                assert_eq!(info.attribute(name), Some(expected), "{name}");
            }
            assert_eq!(info.attribute("colour"), None);
        }
    }
}
