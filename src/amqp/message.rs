//! Message sections: finds where each section of a producer's message starts
//! and ends, parses only the header, and builds the bytes a consumer gets.
//!
//! The bare message (properties, application properties, body) and the
//! footer are kept as one `Bytes` slice of the producer's transfer payload
//! and never decoded. Delivery annotations are hop-by-hop and dropped.

use bytes::{BufMut, Bytes, BytesMut};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Header, MessageAnnotations, Priority};
use fe2o3_amqp::types::primitives::{Symbol, Value};

use super::frame::Payload;
use crate::core::message::GROUP_FIRST_FOR_CONSUMER;
use crate::core::{AnnotationValue, Delivery, HeaderFields, Message, RoutingFields};

/// Section descriptor codes (AMQP 3.2).
const HEADER: u64 = 0x70;
const DELIVERY_ANNOTATIONS: u64 = 0x71;
const MESSAGE_ANNOTATIONS: u64 = 0x72;
const PROPERTIES: u64 = 0x73;
const APPLICATION_PROPERTIES: u64 = 0x74;
const FOOTER: u64 = 0x78;

/// Why a message cannot be read. Maps to `amqp:decode-error`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// The bytes end inside a section.
    #[error("message truncated at byte {0}")]
    Truncated(usize),
    /// A section is not a described type with a known section descriptor.
    #[error("byte {0}: not a message section")]
    NotASection(usize),
    /// A section appears out of the order AMQP requires.
    #[error("byte {0}: section out of order")]
    OutOfOrder(usize),
    /// An encoding code that AMQP does not define.
    #[error("byte {offset}: unknown encoding {code:#04x}")]
    UnknownEncoding {
        /// Where.
        offset: usize,
        /// The code.
        code: u8,
    },
    /// The properties section does not decode.
    #[error("invalid properties: {0}")]
    BadProperties(String),
    /// The header section does not decode.
    #[error("invalid header: {0}")]
    BadHeader(String),
    /// The message-annotations section is malformed.
    #[error("invalid message annotations: {0}")]
    BadAnnotations(String),
}

/// How deeply described types may nest (a descriptor that is itself
/// described); real messages use one level.
const MAX_DESCRIBED_DEPTH: usize = 8;

/// Length of the value starting at `pos` (format code included).
fn value_len(buf: &[u8], pos: usize) -> Result<usize, MessageError> {
    value_len_at_depth(buf, pos, 0)
}

/// [`value_len`], refusing descriptors nested past [`MAX_DESCRIBED_DEPTH`]
/// so hostile bytes cannot exhaust the stack.
fn value_len_at_depth(buf: &[u8], pos: usize, depth: usize) -> Result<usize, MessageError> {
    if depth > MAX_DESCRIBED_DEPTH {
        return Err(MessageError::NotASection(pos));
    }
    let code = *buf.get(pos).ok_or(MessageError::Truncated(pos))?;
    let fixed = |n: usize| Ok(1 + n);
    let sized8 = || -> Result<usize, MessageError> {
        let n = *buf.get(pos + 1).ok_or(MessageError::Truncated(pos + 1))?;
        Ok(2 + usize::from(n))
    };
    let sized32 = || -> Result<usize, MessageError> {
        let b = buf
            .get(pos + 1..pos + 5)
            .ok_or(MessageError::Truncated(pos + 1))?;
        Ok(5 + u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let len = match code {
        0x00 => {
            // Described type: descriptor, then the value.
            let d = value_len_at_depth(buf, pos + 1, depth + 1)?;
            let v = value_len_at_depth(buf, pos + 1 + d, depth + 1)?;
            Ok(1 + d + v)
        }
        0x40..=0x45 => fixed(0),
        0x50..=0x56 => fixed(1),
        0x60..=0x61 => fixed(2),
        0x70..=0x74 => fixed(4),
        0x80..=0x84 => fixed(8),
        0x94 | 0x98 => fixed(16),
        0xa0 | 0xa1 | 0xa3 | 0xc0 | 0xc1 | 0xe0 => sized8(),
        0xb0 | 0xb1 | 0xb3 | 0xd0 | 0xd1 | 0xf0 => sized32(),
        _ => Err(MessageError::UnknownEncoding { offset: pos, code }),
    }?;
    if pos + len > buf.len() {
        return Err(MessageError::Truncated(buf.len()));
    }
    Ok(len)
}

/// The section code of the described value at `pos`, and its total length.
fn section_at(buf: &[u8], pos: usize) -> Result<(u64, usize), MessageError> {
    if buf[pos] != 0x00 {
        return Err(MessageError::NotASection(pos));
    }
    let code = match buf.get(pos + 1) {
        Some(0x53) => u64::from(*buf.get(pos + 2).ok_or(MessageError::Truncated(pos))?),
        Some(0x80) => {
            let b = buf
                .get(pos + 2..pos + 10)
                .ok_or(MessageError::Truncated(pos))?;
            u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        }
        Some(0xa3) | Some(0xb3) => {
            let d = value_len(buf, pos + 1)?;
            let name = &buf[pos + 1..pos + 1 + d];
            symbolic_code(name).ok_or(MessageError::NotASection(pos))?
        }
        _ => return Err(MessageError::NotASection(pos)),
    };
    if !(HEADER..=FOOTER).contains(&code) {
        return Err(MessageError::NotASection(pos));
    }
    Ok((code, value_len(buf, pos)?))
}

/// Section code for a symbolic descriptor (`amqp:header:list`, ...).
fn symbolic_code(encoded: &[u8]) -> Option<u64> {
    let skip = if encoded.first() == Some(&0xa3) { 2 } else { 5 };
    let name = encoded.get(skip..)?;
    const NAMES: [&[u8]; 9] = [
        b"amqp:header:list",
        b"amqp:delivery-annotations:map",
        b"amqp:message-annotations:map",
        b"amqp:properties:list",
        b"amqp:application-properties:map",
        b"amqp:data:binary",
        b"amqp:amqp-sequence:list",
        b"amqp:value:*",
        b"amqp:footer:map",
    ];
    NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| HEADER + i as u64)
}

/// The sections of well-formed message bytes: (descriptor code, bytes),
/// stopping at the first that does not read.
pub fn sections(payload: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= payload.len() {
            return None;
        }
        let (code, len) = section_at(payload, pos).ok()?;
        let section = payload.get(pos..pos + len)?;
        pos += len;
        Some((code, section))
    })
}

/// The encoded value inside the message's amqp-value section, if it has one
/// (a transaction controller's declare or discharge).
pub fn amqp_value(payload: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while pos < payload.len() {
        let (code, len) = section_at(payload, pos).ok()?;
        if code == 0x77 {
            // The section's descriptor, then its value.
            let descriptor = value_len(payload, pos + 1).ok()?;
            return payload.get(pos + 1 + descriptor..pos + len);
        }
        pos += len;
    }
    None
}

/// The bytes of the first `data` section of an encoded message, if any
/// (tools read their own payloads with it, whatever sections a broker added).
pub fn data_body(payload: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while pos < payload.len() {
        let (code, len) = section_at(payload, pos).ok()?;
        if code == 0x75 {
            let value = pos + len
                - match payload.get(pos + 3)? {
                    0xa0 => usize::from(*payload.get(pos + 4)?),
                    0xb0 => {
                        let b = payload.get(pos + 4..pos + 8)?;
                        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
                    }
                    _ => return None,
                };
            return payload.get(value..pos + len);
        }
        pos += len;
    }
    None
}

/// Reads a producer's message: where its sections are, and its header.
pub fn parse(payload: Bytes) -> Result<Message, MessageError> {
    let buf = &payload[..];
    let mut pos = 0;
    let mut last_code = 0u64;
    let mut header = HeaderFields::default();
    let mut annotations = Bytes::new();
    let mut routing: Option<Box<RoutingFields>> = None;
    let mut application = None;
    let mut bare_start = buf.len();
    let mut schedule = (None, None);
    while pos < buf.len() {
        let (code, len) = section_at(buf, pos)?;
        // Header, delivery annotations, message annotations, properties and
        // application properties each at most once and in that order; body
        // sections (data, amqp-sequence) may repeat; footer last.
        let repeatable = matches!(code, 0x75 | 0x76);
        if code < last_code || (code == last_code && !repeatable) {
            return Err(MessageError::OutOfOrder(pos));
        }
        last_code = code;
        let section = &buf[pos..pos + len];
        match code {
            HEADER => header = parse_header(section)?,
            DELIVERY_ANNOTATIONS => {}
            MESSAGE_ANNOTATIONS => {
                // Decoded again (serde_amqp) when the broker adds its own.
                super::wellformed::check_exact(section).map_err(MessageError::BadAnnotations)?;
                annotations = payload.slice(pos..pos + len);
                schedule = scan_message_annotations(section)?;
            }
            PROPERTIES => {
                let fields = parse_properties(&payload.slice(pos..pos + len))?;
                if fields != RoutingFields::default() {
                    routing = Some(Box::new(fields));
                }
                bare_start = pos;
            }
            APPLICATION_PROPERTIES => {
                application = Some(payload.slice(pos..pos + len));
                if bare_start == buf.len() {
                    bare_start = pos;
                }
            }
            _ => {
                if bare_start == buf.len() {
                    bare_start = pos;
                }
            }
        }
        pos += len;
    }
    if let Some(section) = application {
        let jms = scan_application_properties(&section)?;
        if jms.group_id.is_some() || jms.closes {
            let r = routing.get_or_insert_with(Default::default);
            if r.group_id.is_none() {
                r.group_id = jms.group_id;
            }
            r.closes_group |= jms.closes;
        }
    }
    if schedule != (None, None) {
        let r = routing.get_or_insert_with(Default::default);
        (r.delivery_time, r.delivery_delay) = schedule;
    }
    Ok(Message {
        header,
        routing,
        annotations,
        broker_annotations: None,
        bare: payload.slice(bare_start..),
    })
}

/// The id duplicate detection goes by: the application property
/// `_AMQ_DUPL_ID` (Artemis' convention), else `properties.message-id`.
/// Encoded values, so ids of different types never compare equal.
pub fn duplicate_id(message: &Message) -> Option<Bytes> {
    let bare = &message.bare;
    let mut message_id = None;
    let mut pos = 0;
    while pos < bare.len() {
        let (code, len) = section_at(bare, pos).ok()?;
        let section = bare.slice(pos..pos + len);
        match code {
            PROPERTIES => message_id = first_item(&section),
            APPLICATION_PROPERTIES => {
                if let Some(id) = scan_application_properties(&section)
                    .ok()
                    .and_then(|j| j.duplicate_id)
                {
                    return Some(id);
                }
            }
            _ => break,
        }
        pos += len;
    }
    message_id
}

/// The first item of a described list section, unless absent or null.
fn first_item(section: &Bytes) -> Option<Bytes> {
    let pos = 1 + value_len(section, 1).ok()?;
    let (count, item) = match section.get(pos)? {
        0xc0 => (usize::from(*section.get(pos + 2)?), pos + 3),
        0xd0 => {
            let b = section.get(pos + 5..pos + 9)?;
            (
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
                pos + 9,
            )
        }
        _ => return None,
    };
    if count == 0 || section.get(item) == Some(&0x40) {
        return None;
    }
    let len = value_len(section, item).ok()?;
    Some(section.slice(item..item + len))
}

/// Reads the properties the broker routes on (`to`, `absolute-expiry-time`)
/// by walking the properties list, without decoding the other fields.
fn parse_properties(section_bytes: &Bytes) -> Result<RoutingFields, MessageError> {
    let section = &section_bytes[..];
    let bad = |what: &str| MessageError::BadProperties(what.to_string());
    // Skip the descriptor: 0x00 then the descriptor value.
    let mut pos = 1 + value_len(section, 1)?;
    let (count, mut item) = match section.get(pos) {
        Some(0x45) => (0, pos + 1),
        Some(0xc0) => (
            usize::from(*section.get(pos + 2).ok_or_else(|| bad("list"))?),
            pos + 3,
        ),
        Some(0xd0) => {
            let b = section.get(pos + 5..pos + 9).ok_or_else(|| bad("list"))?;
            (
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
                pos + 9,
            )
        }
        _ => return Err(bad("not a list")),
    };
    let mut routing = RoutingFields::default();
    for index in 0..count.min(13) {
        let len = value_len(section, item)?;
        let value = &section[item..item + len];
        match index {
            2 => routing.to = string_value(value).map_err(|_| bad("to is not a string"))?,
            8 => {
                routing.absolute_expiry = match value {
                    [0x40] => None,
                    [0x83, rest @ ..] if rest.len() == 8 => {
                        let ms = i64::from_be_bytes(rest.try_into().map_err(|_| bad("timestamp"))?);
                        Some(u64::try_from(ms).unwrap_or(0))
                    }
                    _ => return Err(bad("absolute-expiry-time is not a timestamp")),
                }
            }
            10 => {
                routing.group_id = string_slice(section_bytes, item, len)
                    .map_err(|_| bad("group-id is not a string"))?
            }
            11 => {
                routing.group_sequence = match value {
                    [0x40] => None,
                    [0x43] => Some(0),
                    [0x52, n] => Some(u32::from(*n)),
                    [0x70, rest @ ..] if rest.len() == 4 => Some(u32::from_be_bytes(
                        rest.try_into().map_err(|_| bad("uint"))?,
                    )),
                    _ => return Err(bad("group-sequence is not a uint")),
                };
                routing.closes_group = routing.group_sequence == Some(u32::MAX);
            }
            _ => {}
        }
        item += len;
        pos = item;
    }
    let _ = pos;
    Ok(routing)
}

/// The string or null value at `item` (`len` bytes) of `section`, as a
/// slice of it: no copy. The string is checked to be UTF-8.
fn string_slice(section: &Bytes, item: usize, len: usize) -> Result<Option<Bytes>, ()> {
    let (start, end) = match section.get(item) {
        Some(0x40) => return Ok(None),
        Some(0xa1) => (item + 2, item + len),
        Some(0xb1) => (item + 5, item + len),
        _ => return Err(()),
    };
    let text = section.get(start..end).ok_or(())?;
    std::str::from_utf8(text).map_err(|_| ())?;
    Ok(Some(section.slice(start..end)))
}

/// What the JMS group properties in the application properties say.
#[derive(Debug, Default)]
struct JmsGroup {
    /// `JMSXGroupID` or `_AMQ_GROUP_ID`, when a string.
    group_id: Option<Bytes>,
    /// `JMSXGroupSeq` is negative: the group ends with this message.
    closes: bool,
    /// `_AMQ_DUPL_ID`'s encoded value, for duplicate detection.
    duplicate_id: Option<Bytes>,
}

/// Walks a map section (message annotations, application properties)
/// without decoding its values: calls `visit` with each key's name (a
/// string or symbol key; other keys are skipped), the value's offset in
/// the section and its length.
fn walk_map(
    section: &[u8],
    what: &str,
    mut visit: impl FnMut(&[u8], usize, usize),
) -> Result<(), MessageError> {
    let bad = || MessageError::BadProperties(format!("{what} is not a map"));
    let pos = 1 + value_len(section, 1)?;
    let (count, mut item) = match section.get(pos) {
        Some(0xc1) => (usize::from(*section.get(pos + 2).ok_or_else(bad)?), pos + 3),
        Some(0xd1) => {
            let b = section.get(pos + 5..pos + 9).ok_or_else(bad)?;
            (
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
                pos + 9,
            )
        }
        _ => return Err(bad()),
    };
    for _ in 0..count / 2 {
        let key_len = value_len(section, item)?;
        let key = &section[item..item + key_len];
        item += key_len;
        let value_len = value_len(section, item)?;
        let name: Option<&[u8]> = match key {
            [0xa1 | 0xa3, _, rest @ ..] => Some(rest),
            [0xb1 | 0xb3, _, _, _, _, rest @ ..] => Some(rest),
            _ => None,
        };
        if let Some(name) = name {
            visit(name, item, value_len);
        }
        item += value_len;
    }
    Ok(())
}

/// The encoded value of application property `name` in a bare message
/// (its first sections), without decoding anything else.
pub fn application_property<'a>(bare: &'a [u8], name: &str) -> Option<&'a [u8]> {
    application_properties(bare, &[name])[0]
}

/// The encoded values of the application properties `names` (sorted,
/// distinct) in a bare message, in one walk over its map whatever the
/// number of names; decodes nothing else. A name given twice in the map
/// has its first value.
pub fn application_properties<'a, S: AsRef<str>>(
    bare: &'a [u8],
    names: &[S],
) -> Vec<Option<&'a [u8]>> {
    let mut found = vec![None; names.len()];
    let mut pos = 0;
    while pos < bare.len() {
        let Ok((code, len)) = section_at(bare, pos) else {
            break;
        };
        match code {
            PROPERTIES => {}
            APPLICATION_PROPERTIES => {
                let Some(section) = bare.get(pos..pos + len) else {
                    break;
                };
                let mut at = Vec::with_capacity(names.len());
                at.resize(names.len(), None);
                let walked = walk_map(section, "application-properties", |key, offset, len| {
                    if let Ok(i) = names.binary_search_by(|n| n.as_ref().as_bytes().cmp(key)) {
                        at[i].get_or_insert((offset, len));
                    }
                });
                if walked.is_ok() {
                    for (slot, place) in found.iter_mut().zip(at) {
                        *slot = place.and_then(|(offset, len)| section.get(offset..offset + len));
                    }
                }
                break;
            }
            _ => break,
        }
        pos += len;
    }
    found
}

/// Looks for `JMSXGroupID`, `_AMQ_GROUP_ID` and `JMSXGroupSeq` among the
/// application properties, walking the map without decoding other values.
fn scan_application_properties(section_bytes: &Bytes) -> Result<JmsGroup, MessageError> {
    let section = &section_bytes[..];
    let mut found = JmsGroup::default();
    walk_map(section, "application-properties", |name, at, len| {
        let value = &section[at..at + len];
        match name {
            b"JMSXGroupID" | b"_AMQ_GROUP_ID" if found.group_id.is_none() => {
                found.group_id = string_slice(section_bytes, at, len).ok().flatten();
            }
            b"JMSXGroupSeq" => {
                found.closes = match value {
                    [0x54, n] => (*n as i8) < 0,
                    [0x71, rest @ ..] if rest.len() == 4 => {
                        i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) < 0
                    }
                    [0x55, n] => (*n as i8) < 0,
                    [0x81, rest @ ..] if rest.len() == 8 => rest[0] & 0x80 != 0,
                    _ => false,
                }
            }
            b"_AMQ_DUPL_ID" => found.duplicate_id = Some(section_bytes.slice(at..at + len)),
            _ => {}
        }
    })?;
    Ok(found)
}

/// The scheduling annotations of a message-annotations section:
/// (`x-opt-delivery-time`, `x-opt-delivery-delay`), as Artemis reads them
/// (any integer or a timestamp; negative values ignored).
fn scan_message_annotations(section: &[u8]) -> Result<(Option<u64>, Option<u64>), MessageError> {
    let mut found = (None, None);
    walk_map(section, "message-annotations", |name, at, len| {
        let value = &section[at..at + len];
        match name {
            b"x-opt-delivery-time" => found.0 = integer(value),
            b"x-opt-delivery-delay" => found.1 = integer(value),
            _ => {}
        }
    })?;
    Ok(found)
}

/// A non-negative integer or timestamp value.
fn integer(value: &[u8]) -> Option<u64> {
    let signed = |b: &[u8]| -> Option<i64> {
        Some(match b.len() {
            1 => i64::from(b[0] as i8),
            4 => i64::from(i32::from_be_bytes(b.try_into().ok()?)),
            8 => i64::from_be_bytes(b.try_into().ok()?),
            _ => return None,
        })
    };
    match value {
        [0x43 | 0x44] => Some(0),
        [0x52 | 0x53, n] => Some(u64::from(*n)),
        [0x70, rest @ ..] if rest.len() == 4 => {
            Some(u64::from(u32::from_be_bytes(rest.try_into().ok()?)))
        }
        [0x80, rest @ ..] if rest.len() == 8 => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        [0x54 | 0x55, rest @ ..] | [0x71 | 0x81 | 0x83, rest @ ..] => {
            u64::try_from(signed(rest)?).ok()
        }
        _ => None,
    }
}

/// A string or null value.
fn string_value(value: &[u8]) -> Result<Option<String>, ()> {
    let bytes = match value {
        [0x40] => return Ok(None),
        [0xa1, _, rest @ ..] => rest,
        [0xb1, _, _, _, _, rest @ ..] => rest,
        _ => return Err(()),
    };
    String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| ())
}

/// Parses the header section into the fields the broker owns.
fn parse_header(section: &[u8]) -> Result<HeaderFields, MessageError> {
    super::wellformed::check_exact(section).map_err(MessageError::BadHeader)?;
    let h: Header =
        serde_amqp::from_slice(section).map_err(|e| MessageError::BadHeader(e.to_string()))?;
    Ok(HeaderFields {
        durable: h.durable,
        priority: h.priority.0,
        ttl: h.ttl,
        delivery_count: h.delivery_count,
        present: true,
    })
}

/// The bytes a consumer receives for this delivery: a header (when the
/// producer sent one or the broker has something to say in it), the
/// message annotations, then the untouched bare message and footer.
pub fn delivery_payload(delivery: &Delivery) -> Payload {
    let m = &delivery.message;
    let needs_header = m.header.present || delivery.delivery_count > 0 || !delivery.first_acquirer;
    let mut header_bytes = Bytes::new();
    if needs_header {
        let header = Header {
            durable: m.header.durable,
            priority: Priority(m.header.priority),
            ttl: m.header.ttl,
            first_acquirer: delivery.first_acquirer,
            delivery_count: delivery.delivery_count,
        };
        let mut out = BytesMut::with_capacity(24);
        let mut serializer = serde_amqp::ser::Serializer::from((&mut out).writer());
        if serde::Serialize::serialize(&header, &mut serializer).is_ok() {
            header_bytes = out.freeze();
        }
    }
    let group_first = [(
        GROUP_FIRST_FOR_CONSUMER.to_string(),
        AnnotationValue::Bool(true),
    )];
    let extra: &[(String, AnnotationValue)] = if delivery.group_first {
        &group_first
    } else {
        &[]
    };
    let annotations = if !m.broker_annotations().is_empty() || !extra.is_empty() {
        merged_annotations(m, extra)
    } else {
        m.annotations.clone()
    };
    Payload::new([header_bytes, annotations, m.bare.clone()])
}

/// The producer's message annotations with the broker's added (the broker's
/// win on a clash), and `extra` ones for this delivery only. Only messages
/// the broker annotated (dead-lettered, expired, first of a group for its
/// consumer) take this path.
fn merged_annotations(m: &Message, extra: &[(String, AnnotationValue)]) -> Bytes {
    let mut map = if m.annotations.is_empty() {
        MessageAnnotations::default()
    } else {
        match super::wellformed::check_exact(&m.annotations) {
            Ok(()) => {
                serde_amqp::from_slice::<MessageAnnotations>(&m.annotations).unwrap_or_default()
            }
            Err(_) => MessageAnnotations::default(),
        }
    };
    for (key, value) in m.broker_annotations().iter().chain(extra) {
        let value = match value {
            AnnotationValue::String(s) => Value::String(s.clone()),
            AnnotationValue::Bool(b) => Value::Bool(*b),
            AnnotationValue::Encoded(bytes) => match serde_amqp::from_slice(bytes) {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        map.0
            .insert(OwnedKey::Symbol(Symbol::from(key.as_str())), value);
    }
    let mut out = BytesMut::new();
    let mut serializer = serde_amqp::ser::Serializer::from((&mut out).writer());
    match serde::Serialize::serialize(&map, &mut serializer) {
        Ok(()) => out.freeze(),
        Err(_) => m.annotations.clone(),
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
