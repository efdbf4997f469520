//! Frame reading and writing.
//!
//! Reading cuts whole frames out of the connection's input buffer, checks
//! the 8-byte frame header ourselves (size ≥ 8, size ≤ our max-frame-size,
//! doff ≥ 2, frame type) and hands the rest to fe2o3-amqp's decoders, whose
//! own header reads would panic on a short frame and which reject an
//! extended header. Transfer payloads come out as `Bytes` slices of the
//! input buffer: no copy.
//!
//! Writing encodes a performative with serde_amqp straight into the output
//! buffer, followed by a payload slice, so many frames go out in one write.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fe2o3_amqp::frames::{amqp, sasl};
use serde::Serialize;
use tokio_util::codec::Decoder;

/// AMQP frame type code.
const FRAME_TYPE_AMQP: u8 = 0x00;
/// SASL frame type code.
const FRAME_TYPE_SASL: u8 = 0x01;
/// Size of the fixed frame header.
pub const FRAME_HEADER_SIZE: usize = 8;
/// The smallest max-frame-size a peer may announce (AMQP 2.7.1).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

/// A frame that cannot be read. Each maps to a connection error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The size field is below the 8-byte header.
    #[error("frame size {size} is smaller than the 8-byte frame header")]
    TooShort {
        /// The size field.
        size: u32,
    },
    /// The frame is larger than the max-frame-size we announced.
    #[error("frame size {size} exceeds max-frame-size {max}")]
    TooLarge {
        /// The size field.
        size: u32,
        /// Our limit.
        max: u32,
    },
    /// The data offset is below 2 or past the frame's end.
    #[error("invalid data offset {doff} in a frame of {size} bytes")]
    BadDataOffset {
        /// The doff field.
        doff: u8,
        /// The size field.
        size: u32,
    },
    /// A frame of the wrong type for this phase (SASL frame after SASL, ...).
    #[error("unexpected frame type {ftype:#04x}")]
    WrongType {
        /// The type field.
        ftype: u8,
    },
    /// The body does not decode as a performative.
    #[error("cannot decode frame body: {0}")]
    Decode(String),
}

/// Cuts the next whole frame of type `ftype` out of `buf`, normalised to a
/// 4-byte header with doff = 2 followed by the body (what fe2o3's decoders
/// expect). `Ok(None)` means more bytes are needed.
fn next_raw(buf: &mut BytesMut, max: u32, ftype: u8) -> Result<Option<BytesMut>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < FRAME_HEADER_SIZE as u32 {
        return Err(FrameError::TooShort { size });
    }
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    let size_usize = size as usize;
    if buf.len() < size_usize {
        buf.reserve(size_usize - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(size_usize);
    frame.advance(4);
    let doff = frame[0];
    let got_type = frame[1];
    let header_len = usize::from(doff) * 4;
    if doff < 2 || header_len > size_usize {
        return Err(FrameError::BadDataOffset { doff, size });
    }
    if got_type != ftype {
        return Err(FrameError::WrongType { ftype: got_type });
    }
    if doff > 2 {
        // Drop the extended header, which AMQP says to ignore.
        let mut normalised = BytesMut::with_capacity(size_usize - header_len + 4);
        normalised.put_slice(&[2, got_type, frame[2], frame[3]]);
        normalised.put_slice(&frame[header_len - 4..]);
        return Ok(Some(normalised));
    }
    Ok(Some(frame))
}

/// Reads the next AMQP frame from `buf`, if whole.
pub fn next_amqp(buf: &mut BytesMut, max: u32) -> Result<Option<amqp::Frame>, FrameError> {
    let Some(mut raw) = next_raw(buf, max, FRAME_TYPE_AMQP)? else {
        return Ok(None);
    };
    // The performative (a transfer's payload after it is the message's).
    if raw.len() > 4 {
        super::wellformed::value_len(&raw[4..]).map_err(FrameError::Decode)?;
    }
    amqp::FrameDecoder {}
        .decode(&mut raw)
        .map_err(|e| FrameError::Decode(e.to_string()))
}

/// Reads the next SASL frame from `buf`, if whole.
pub fn next_sasl(buf: &mut BytesMut, max: u32) -> Result<Option<sasl::Frame>, FrameError> {
    let Some(mut raw) = next_raw(buf, max, FRAME_TYPE_SASL)? else {
        return Ok(None);
    };
    if raw.len() == 4 {
        return Err(FrameError::Decode("empty SASL frame".into()));
    }
    super::wellformed::check_exact(&raw[4..]).map_err(FrameError::Decode)?;
    sasl::FrameCodec {}
        .decode(&mut raw)
        .map_err(|e| FrameError::Decode(e.to_string()))
}

/// Appends one frame: header, encoded performative, then `payload`.
/// Returns the frame's size.
pub fn write_frame<P: Serialize>(
    out: &mut BytesMut,
    ftype_sasl: bool,
    channel: u16,
    performative: &P,
    payload: &[u8],
) -> usize {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(2);
    out.put_u8(if ftype_sasl {
        FRAME_TYPE_SASL
    } else {
        FRAME_TYPE_AMQP
    });
    out.put_u16(channel);
    let mut serializer = serde_amqp::ser::Serializer::from((&mut *out).writer());
    if let Err(e) = performative.serialize(&mut serializer) {
        // Our own performatives always encode; if one ever does not, send
        // nothing rather than a half frame.
        tracing::error!(error = %e, "cannot encode a frame");
        out.truncate(start);
        return 0;
    }
    out.put_slice(payload);
    let size = out.len() - start;
    out[start..start + 4].copy_from_slice(&(size as u32).to_be_bytes());
    size
}

/// Size of a performative once encoded (used to fit a transfer's payload
/// into max-frame-size).
pub fn encoded_size<P: Serialize>(performative: &P) -> usize {
    serde_amqp::to_vec(performative)
        .map(|v| v.len())
        .unwrap_or(0)
}

/// Appends an empty AMQP frame (a heartbeat).
pub fn write_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[0, 0, 0, 8, 2, FRAME_TYPE_AMQP, 0, 0]);
}

/// A payload assembled from up to three pieces without copying them
/// together (header, message annotations, bare message).
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// The pieces, in order (at most three: no allocation for the list).
    parts: [Bytes; 3],
    /// Total length.
    len: usize,
}

impl Payload {
    /// A payload of these pieces (header, annotations, bare message; any
    /// may be empty).
    pub fn new(parts: [Bytes; 3]) -> Self {
        let len = parts.iter().map(Bytes::len).sum();
        Self { parts, len }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes `[offset, offset + n)` of the payload to `out`.
    pub fn copy_range(&self, out: &mut BytesMut, mut offset: usize, mut n: usize) {
        for part in &self.parts {
            if n == 0 {
                break;
            }
            if offset >= part.len() {
                offset -= part.len();
                continue;
            }
            let take = (part.len() - offset).min(n);
            out.put_slice(&part[offset..offset + take]);
            n -= take;
            offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::performatives::Close;

    #[test]
    fn short_size_field_is_an_error_not_a_panic() {
        for size in 0u32..8 {
            let mut buf = BytesMut::new();
            buf.put_u32(size);
            buf.put_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
            assert_eq!(
                next_amqp(&mut buf, 1024).unwrap_err(),
                FrameError::TooShort { size }
            );
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_it_is_buffered() {
        let mut buf = BytesMut::new();
        buf.put_u32(1 << 30);
        assert!(matches!(
            next_amqp(&mut buf, 65536),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn extended_header_is_skipped() {
        let mut plain = BytesMut::new();
        write_frame(&mut plain, false, 3, &Close { error: None }, &[]);
        let body = plain.split_off(8);
        let mut ext = BytesMut::new();
        ext.put_u32((12 + body.len()) as u32);
        ext.put_slice(&[3, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef]);
        ext.put_slice(&body);
        let frame = next_amqp(&mut ext, 1024).unwrap().unwrap();
        assert_eq!(frame.channel, 3);
        assert!(matches!(frame.body, amqp::FrameBody::Close(_)));
    }

    #[test]
    fn data_offset_past_the_end_is_an_error() {
        let mut buf = BytesMut::new();
        buf.put_u32(8);
        buf.put_slice(&[5, 0, 0, 0]);
        assert!(matches!(
            next_amqp(&mut buf, 1024),
            Err(FrameError::BadDataOffset { .. })
        ));
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let mut whole = BytesMut::new();
        write_frame(&mut whole, false, 0, &Close { error: None }, &[]);
        let mut part = BytesMut::from(&whole[..whole.len() - 1]);
        assert!(next_amqp(&mut part, 1024).unwrap().is_none());
        part.put_u8(whole[whole.len() - 1]);
        assert!(next_amqp(&mut part, 1024).unwrap().is_some());
        assert!(part.is_empty());
    }

    #[test]
    fn heartbeat_decodes_as_empty() {
        let mut buf = BytesMut::new();
        write_heartbeat(&mut buf);
        let frame = next_amqp(&mut buf, 1024).unwrap().unwrap();
        assert!(matches!(frame.body, amqp::FrameBody::Empty));
    }

    #[test]
    fn payload_ranges_cross_parts() {
        let p = Payload::new([
            Bytes::from_static(b"ab"),
            Bytes::from_static(b""),
            Bytes::from_static(b"cdef"),
        ]);
        let mut out = BytesMut::new();
        p.copy_range(&mut out, 1, 3);
        assert_eq!(&out[..], b"bcd");
    }
}
