//! What the core persists and how: the encoding of a queued message and of
//! a queue's metadata, the broker-wide memory gauge that decides when a
//! durable message's body is paged out, and reading bodies back.
//!
//! A message is persisted when its `header.durable` is set and its queue is
//! durable (`durable = true`, the default). Its stored value is the queue
//! entry's fields followed by the message's bytes exactly as held in memory,
//! so a recovered message is delivered as it would have been.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::loader::{Done, Loader};
use super::message::{AnnotationValue, HeaderFields, Message, RoutingFields};
use super::settings::QueueSettings;
use crate::store::{Journal, StoreError};

/// Version of the stored message encoding.
const VERSION: u8 = 1;

/// Flag bits of the stored encoding.
mod flag {
    pub const DURABLE: u8 = 1;
    pub const HEADER_PRESENT: u8 = 2;
    pub const TTL: u8 = 4;
    pub const EXPIRES: u8 = 8;
    pub const TO: u8 = 16;
    pub const ABSOLUTE_EXPIRY: u8 = 32;
    /// A group id, group sequence and the closes-group mark follow.
    pub const GROUP: u8 = 64;
    /// The time it may first be delivered follows (scheduled delivery).
    pub const DELIVER_AT: u8 = 128;
}

/// A queue entry read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// The message (bodyless when decoded with `with_body = false`).
    pub message: Message,
    /// The entry's delivery count when it was stored.
    pub delivery_count: u32,
    /// When it expires, ms since the epoch.
    pub expires_at: Option<u64>,
    /// When it may first be delivered (scheduled), ms since the epoch.
    pub deliver_at: Option<u64>,
    /// Bytes of its annotations and bare message (for accounting).
    pub size: usize,
}

/// Encodes a queue entry for the store.
pub fn encode_entry(
    message: &Message,
    delivery_count: u32,
    expires_at: Option<u64>,
    deliver_at: Option<u64>,
) -> Bytes {
    let h = &message.header;
    let routing = message.routing.as_deref();
    let mut flags = 0;
    let mut set = |cond: bool, bit: u8| {
        if cond {
            flags |= bit;
        }
    };
    set(h.durable, flag::DURABLE);
    set(h.present, flag::HEADER_PRESENT);
    set(h.ttl.is_some(), flag::TTL);
    set(expires_at.is_some(), flag::EXPIRES);
    set(deliver_at.is_some(), flag::DELIVER_AT);
    set(routing.is_some_and(|r| r.to.is_some()), flag::TO);
    set(
        routing.is_some_and(|r| r.absolute_expiry.is_some()),
        flag::ABSOLUTE_EXPIRY,
    );
    set(
        routing.is_some_and(|r| r.group_id.is_some() || r.closes_group),
        flag::GROUP,
    );
    let mut b = BytesMut::with_capacity(64 + message.size());
    b.put_u8(VERSION);
    b.put_u8(flags);
    b.put_u8(h.priority);
    b.put_u32(delivery_count);
    b.put_u32(h.delivery_count);
    if let Some(ttl) = h.ttl {
        b.put_u32(ttl);
    }
    if let Some(at) = expires_at {
        b.put_u64(at);
    }
    if let Some(at) = deliver_at {
        b.put_u64(at);
    }
    if let Some(r) = routing {
        if let Some(at) = r.absolute_expiry {
            b.put_u64(at);
        }
        if let Some(to) = &r.to {
            put_str(&mut b, to);
        }
        if r.group_id.is_some() || r.closes_group {
            let group = r.group_id.as_deref().unwrap_or(b"");
            b.put_u32(group.len() as u32);
            b.put_slice(group);
            b.put_u8(u8::from(r.group_sequence.is_some()) | (u8::from(r.closes_group) << 1));
            b.put_u32(r.group_sequence.unwrap_or(0));
        }
    }
    let annotations = message.broker_annotations();
    b.put_u32(annotations.len() as u32);
    for (key, value) in annotations {
        put_str(&mut b, key);
        match value {
            AnnotationValue::String(s) => {
                b.put_u8(0);
                put_str(&mut b, s);
            }
            AnnotationValue::Bool(v) => {
                b.put_u8(1);
                b.put_u8(u8::from(*v));
            }
            AnnotationValue::Encoded(bytes) => {
                b.put_u8(2);
                b.put_u32(bytes.len() as u32);
                b.put_slice(bytes);
            }
        }
    }
    b.put_u32(message.annotations.len() as u32);
    b.put_slice(&message.annotations);
    b.put_slice(&message.bare);
    b.freeze()
}

/// Writes a length-prefixed string.
fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32(s.len() as u32);
    b.put_slice(s.as_bytes());
}

/// The reason a stored value could not be read.
fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("stored message: {what}"))
}

/// Reads a length-prefixed string.
fn get_str(b: &mut Bytes) -> Result<String, StoreError> {
    let len = get_u32(b)? as usize;
    if b.remaining() < len {
        return Err(corrupt("string"));
    }
    String::from_utf8(b.split_to(len).to_vec()).map_err(|_| corrupt("string utf-8"))
}

/// Reads a u32, checking there is one.
fn get_u32(b: &mut Bytes) -> Result<u32, StoreError> {
    if b.remaining() < 4 {
        return Err(corrupt("truncated"));
    }
    Ok(b.get_u32())
}

/// Reads a u64, checking there is one.
fn get_u64(b: &mut Bytes) -> Result<u64, StoreError> {
    if b.remaining() < 8 {
        return Err(corrupt("truncated"));
    }
    Ok(b.get_u64())
}

/// Decodes a stored entry. Without `with_body`, the message keeps only the
/// fields the queue orders and expires by (for a body that stays paged out).
pub fn decode_entry(mut b: Bytes, with_body: bool) -> Result<StoredEntry, StoreError> {
    if b.remaining() < 11 {
        return Err(corrupt("truncated"));
    }
    if b.get_u8() != VERSION {
        return Err(corrupt("unknown version"));
    }
    let flags = b.get_u8();
    let priority = b.get_u8();
    let delivery_count = b.get_u32();
    let producer_count = b.get_u32();
    let ttl = if flags & flag::TTL != 0 {
        Some(get_u32(&mut b)?)
    } else {
        None
    };
    let expires_at = if flags & flag::EXPIRES != 0 {
        Some(get_u64(&mut b)?)
    } else {
        None
    };
    let deliver_at = if flags & flag::DELIVER_AT != 0 {
        Some(get_u64(&mut b)?)
    } else {
        None
    };
    let absolute_expiry = if flags & flag::ABSOLUTE_EXPIRY != 0 {
        Some(get_u64(&mut b)?)
    } else {
        None
    };
    let to = if flags & flag::TO != 0 {
        Some(get_str(&mut b)?)
    } else {
        None
    };
    let (group_id, group_sequence, closes_group) = if flags & flag::GROUP != 0 {
        let id = get_str(&mut b)?;
        if b.remaining() < 5 {
            return Err(corrupt("group"));
        }
        let bits = b.get_u8();
        let seq = b.get_u32();
        (
            (!id.is_empty()).then(|| Bytes::from(id)),
            (bits & 1 != 0).then_some(seq),
            bits & 2 != 0,
        )
    } else {
        (None, None, false)
    };
    let n = get_u32(&mut b)?;
    let mut broker_annotations = Vec::new();
    for _ in 0..n {
        let key = get_str(&mut b)?;
        if b.remaining() < 1 {
            return Err(corrupt("annotation"));
        }
        let value = match b.get_u8() {
            0 => AnnotationValue::String(get_str(&mut b)?),
            1 if b.remaining() >= 1 => AnnotationValue::Bool(b.get_u8() != 0),
            2 => {
                let len = get_u32(&mut b)? as usize;
                if b.remaining() < len {
                    return Err(corrupt("annotation value"));
                }
                AnnotationValue::Encoded(b.split_to(len))
            }
            _ => return Err(corrupt("annotation type")),
        };
        broker_annotations.push((key, value));
    }
    let alen = get_u32(&mut b)? as usize;
    if b.remaining() < alen {
        return Err(corrupt("annotations"));
    }
    let annotations = b.split_to(alen);
    let size = annotations.len() + b.len();
    let routing = (to.is_some()
        || absolute_expiry.is_some()
        || group_id.is_some()
        || group_sequence.is_some()
        || closes_group)
        .then(|| {
            Box::new(RoutingFields {
                to,
                absolute_expiry,
                group_id,
                group_sequence,
                closes_group,
                ..Default::default()
            })
        });
    let message = Message {
        header: HeaderFields {
            durable: flags & flag::DURABLE != 0,
            priority,
            ttl,
            delivery_count: producer_count,
            present: flags & flag::HEADER_PRESENT != 0,
        },
        routing,
        annotations: if with_body { annotations } else { Bytes::new() },
        broker_annotations: (!broker_annotations.is_empty()).then(|| Box::new(broker_annotations)),
        bare: if with_body { b } else { Bytes::new() },
    };
    Ok(StoredEntry {
        message,
        delivery_count,
        expires_at,
        deliver_at,
        size,
    })
}

/// What the store keeps about a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// The queue's name.
    pub name: String,
    /// For a durable subscription: its topic (or wildcard pattern).
    pub topic: Option<String>,
    /// For a durable subscription: its selector, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The queue's settings when it was created.
    pub settings: QueueSettings,
}

impl QueueMeta {
    /// The stored form (JSON: readable when debugging a store).
    pub fn encode(&self) -> Bytes {
        // Serialising plain strings and settings to JSON cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("queue metadata: {e}")))
    }
}

/// The broker's link to its store: the journal, queue ids, and the memory
/// gauge that decides which durable bodies stay in memory.
#[derive(Debug)]
pub struct Persistence {
    /// The group-commit writer.
    journal: Arc<Journal>,
    /// Past this many bytes of queued messages in memory, durable bodies
    /// are paged out.
    memory_limit: usize,
    /// Bytes of queued messages whose bodies are in memory.
    resident: AtomicUsize,
    /// Next queue id.
    next_queue_id: AtomicU64,
    /// Reads paged-out bodies off the callers' threads.
    loader: Loader,
}

impl Persistence {
    /// A persistence layer over `journal`, paging past `memory_limit` bytes.
    pub fn new(journal: Arc<Journal>, memory_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            loader: Loader::new(Arc::clone(&journal)),
            journal,
            memory_limit,
            resident: AtomicUsize::new(0),
            next_queue_id: AtomicU64::new(1),
        })
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// A fresh queue id.
    pub fn new_queue_id(&self) -> u64 {
        self.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes later ids larger than a recovered one.
    pub fn saw_queue_id(&self, id: u64) {
        self.next_queue_id.fetch_max(id + 1, Ordering::Relaxed);
    }

    /// Whether a message of `size` bytes may stay in memory: counts it if so.
    pub fn admit(&self, size: usize, pageable: bool) -> bool {
        let now = self.resident.fetch_add(size, Ordering::Relaxed) + size;
        if pageable && now > self.memory_limit {
            self.resident.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A message counted by [`Self::admit`] left memory.
    pub fn release(&self, size: usize) {
        self.resident.fetch_sub(size, Ordering::Relaxed);
    }

    /// Whether queued messages in memory are over the limit.
    pub fn over_limit(&self) -> bool {
        self.resident() >= self.memory_limit
    }

    /// Bytes of queued messages in memory.
    pub fn resident(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }

    /// Reads a paged-out message back on a loader thread and calls `done`
    /// with it there (see `core::loader`): no queue lock is held and the
    /// caller does not wait.
    pub fn load_later(&self, queue: u64, seq: u64, done: Done) {
        self.loader.load(queue, seq, done);
    }

    /// Reads a paged-out message back, here and now (tests).
    #[cfg(test)]
    pub(crate) fn load(&self, queue: u64, seq: u64) -> Result<Option<Message>, StoreError> {
        match self.journal.read(queue, seq)? {
            Some(value) => Ok(Some(decode_entry(value, true)?.message)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_and_without_body() {
        let mut m = Message::from_bare(Bytes::from_static(b"\x00\x53\x77\xa1\x05hello"));
        m.header = HeaderFields {
            durable: true,
            priority: 7,
            ttl: Some(5000),
            delivery_count: 2,
            present: true,
        };
        m.routing = Some(Box::new(RoutingFields {
            to: Some("orders".into()),
            absolute_expiry: Some(1_700_000_000_000),
            group_id: Some(Bytes::from_static(b"g-1")),
            group_sequence: Some(u32::MAX),
            closes_group: true,
            ..Default::default()
        }));
        m.annotations = Bytes::from_static(b"\x00\x53\x72\xc1\x01\x00");
        let m = m
            .with_annotation(
                "x-opt-dead-letter-reason",
                AnnotationValue::String("r".into()),
            )
            .with_annotation("flag", AnnotationValue::Bool(true))
            .with_annotation(
                "info",
                AnnotationValue::Encoded(Bytes::from_static(b"\xc1\x01\x00")),
            );
        let value = encode_entry(&m, 4, Some(42), Some(77));
        let full = decode_entry(value.clone(), true).unwrap();
        assert_eq!(full.message, m);
        assert_eq!(full.delivery_count, 4);
        assert_eq!(full.expires_at, Some(42));
        assert_eq!(full.deliver_at, Some(77));
        assert_eq!(full.size, m.size());
        let slim = decode_entry(value, false).unwrap();
        assert_eq!(slim.message.header, m.header);
        assert_eq!(slim.message.routing, m.routing);
        assert!(slim.message.bare.is_empty());
        assert_eq!(slim.size, m.size());
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let m = Message::from_bare(Bytes::from_static(b"body"));
        let value = encode_entry(&m, 0, None, None);
        for cut in 0..value.len() {
            let _ = decode_entry(value.slice(..cut), true);
        }
        assert!(decode_entry(Bytes::from_static(&[9, 0, 0]), true).is_err());
    }

    #[test]
    fn queue_meta_round_trips() {
        let meta = QueueMeta {
            name: "sub".into(),
            topic: Some("prices".into()),
            selector: Some("color = 'red'".into()),
            settings: QueueSettings::default(),
        };
        assert_eq!(QueueMeta::decode(&meta.encode()).unwrap(), meta);
    }
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod broker_tests;
