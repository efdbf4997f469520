//! A message as the broker holds it: the producer's encoded bytes plus the few
//! fields the broker routes on, parsed once on arrival.

use bytes::Bytes;

/// Header fields the broker reads and owns. The protocol layer parses them
/// from the producer's header and encodes them again on delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    /// The producer asked for the message to survive a broker restart.
    pub durable: bool,
    /// 0–9, default 4; higher is delivered first.
    pub priority: u8,
    /// Time to live in milliseconds, if the producer set one.
    pub ttl: Option<u32>,
    /// Delivery attempts before this broker saw the message (the producer's
    /// `delivery-count`); the broker adds its own failed attempts to it.
    pub delivery_count: u32,
    /// Whether the producer sent a header section at all: a message that came
    /// without one and was never redelivered is delivered without one, so its
    /// bytes pass through unchanged.
    pub present: bool,
}

impl Default for HeaderFields {
    fn default() -> Self {
        Self {
            durable: false,
            priority: 4,
            ttl: None,
            delivery_count: 0,
            present: false,
        }
    }
}

/// Fields of the message's properties the broker routes on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingFields {
    /// `properties.to`: where an anonymous-relay producer sends the message.
    pub to: Option<String>,
    /// `properties.absolute-expiry-time`, milliseconds since the epoch.
    pub absolute_expiry: Option<u64>,
    /// The message's group: `properties.group-id`, else the application
    /// property `JMSXGroupID` or `_AMQ_GROUP_ID` (SPEC §5). UTF-8 (checked
    /// when parsed); a slice of the message's own bytes, so it costs no copy.
    pub group_id: Option<Bytes>,
    /// `properties.group-sequence`, kept for the record (it passes through
    /// in the bare message either way).
    pub group_sequence: Option<u32>,
    /// The message closes its group: `group-sequence` 4294967295 (how Qpid
    /// JMS sends JMSXGroupSeq = -1) or a negative `JMSXGroupSeq`.
    pub closes_group: bool,
    /// Message annotation `x-opt-delivery-time`: not delivered before this
    /// time (ms since the epoch).
    pub delivery_time: Option<u64>,
    /// Message annotation `x-opt-delivery-delay`: not delivered before this
    /// many ms after it arrived.
    pub delivery_delay: Option<u64>,
}

/// How a message reached the broker, besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arrival {
    /// The connection that published it (no-local subscriptions skip it).
    pub connection: Option<u64>,
    /// Its duplicate-detection id, read when a queue it goes to detects
    /// duplicates.
    pub duplicate_id: Option<Bytes>,
}

/// A value of an annotation the broker adds to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationValue {
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A value the protocol layer encoded (a consumer's error info map on
    /// a rejected message), kept as its bytes.
    Encoded(Bytes),
}

/// The annotation on the first message a new owner of a group receives.
pub const GROUP_FIRST_FOR_CONSUMER: &str = "x-opt-group-first-for-consumer";

/// An immutable message. Cloning is cheap: the byte fields are reference
/// counted, and queues hold messages behind `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Routing fields from the header.
    pub header: HeaderFields,
    /// Routing fields from the properties; boxed, and absent for most
    /// messages, to keep queued messages small.
    pub routing: Option<Box<RoutingFields>>,
    /// The producer's encoded message-annotations section, or empty. Passed
    /// through as is, merged with `broker_annotations` on delivery.
    pub annotations: Bytes,
    /// Annotations the broker added (dead-letter reason, original address);
    /// boxed and usually absent.
    // One pointer instead of a Vec's three words in every queued message.
    #[allow(clippy::box_collection)]
    pub broker_annotations: Option<Box<Vec<(String, AnnotationValue)>>>,
    /// The bare message (properties through body) and footer, exactly as the
    /// producer encoded them; never decoded or altered.
    pub bare: Bytes,
}

impl Message {
    /// A message of these bytes with default routing fields (tests, tools).
    pub fn from_bare(bare: Bytes) -> Self {
        Self {
            header: HeaderFields::default(),
            routing: None,
            annotations: Bytes::new(),
            broker_annotations: None,
            bare,
        }
    }

    /// Bytes the message occupies, for limits and accounting.
    pub fn size(&self) -> usize {
        self.annotations.len() + self.bare.len()
    }

    /// A copy with an annotation set (replacing one of the same key).
    pub fn with_annotation(&self, key: &str, value: AnnotationValue) -> Self {
        let mut m = self.clone();
        let list = m.broker_annotations.get_or_insert_with(Default::default);
        list.retain(|(k, _)| k != key);
        list.push((key.to_string(), value));
        m
    }

    /// `properties.absolute-expiry-time`, if set.
    pub fn absolute_expiry(&self) -> Option<u64> {
        self.routing.as_ref().and_then(|r| r.absolute_expiry)
    }

    /// `properties.to`, if set.
    pub fn to(&self) -> Option<&str> {
        self.routing.as_ref().and_then(|r| r.to.as_deref())
    }

    /// The message's group id, if it belongs to a group.
    pub fn group_id(&self) -> Option<&str> {
        self.routing
            .as_ref()
            .and_then(|r| r.group_id.as_deref())
            .and_then(|g| std::str::from_utf8(g).ok())
    }

    /// Whether the message closes its group.
    pub fn closes_group(&self) -> bool {
        self.routing.as_ref().is_some_and(|r| r.closes_group)
    }

    /// When the message may first be delivered, if the producer scheduled
    /// it (`x-opt-delivery-time`, else `x-opt-delivery-delay` after `arrival`).
    pub fn scheduled_for(&self, arrival: u64) -> Option<u64> {
        let r = self.routing.as_ref()?;
        r.delivery_time
            .or_else(|| r.delivery_delay.map(|d| arrival.saturating_add(d)))
    }

    /// The broker's annotations.
    pub fn broker_annotations(&self) -> &[(String, AnnotationValue)] {
        self.broker_annotations
            .as_deref()
            .map_or(&[], |v| v.as_slice())
    }
}
