//! A message as the broker holds it: the producer's encoded bytes plus the few
//! fields the broker routes on, parsed once on arrival.

use bytes::Bytes;

/// Header fields the broker reads and owns. The protocol layer parses them
/// from the producer's header and encodes them again on delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    /// The producer asked for the message to survive a broker restart.
    pub durable: bool,
    /// 0–9, default 4; higher is delivered first (later issue).
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

/// An immutable message. Cloning is cheap: the byte fields are reference
/// counted, and queues hold messages behind `Arc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Routing fields from the header.
    pub header: HeaderFields,
    /// The producer's encoded message-annotations section, or empty. Passed
    /// through as is; the broker's own annotations are added on delivery.
    pub annotations: Bytes,
    /// The bare message (properties through body) and footer, exactly as the
    /// producer encoded them; never decoded or altered.
    pub bare: Bytes,
}

impl Message {
    /// Bytes the message occupies, for limits and accounting.
    pub fn size(&self) -> usize {
        self.annotations.len() + self.bare.len()
    }
}
