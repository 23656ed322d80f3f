//! The envelope: what a frame's payload says besides the value it carries.
//!
//! Every message starts `kind: u8, flags: u8, id: u64 (LE)`. A request then
//! names its service and method (each a `u8` length and UTF-8 bytes); a
//! response carries a status byte. An optional extension block (flag bit 0)
//! follows, then the body: the bincode-encoded arguments or return value, or
//! a UTF-8 message for an error status. docs/PROTOCOL.md is the full account.

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::codec::{self, EncodeFailure};
use crate::error::RpcError;
use crate::frame;
use crate::metadata::{self, Metadata};
use crate::schema::{self, Claim};

/// Message kind of a call.
const KIND_REQUEST: u8 = 0x01;
/// Message kind of the answer to a call.
const KIND_RESPONSE: u8 = 0x02;
/// Message kind of a client's notice that it no longer wants an answer.
const KIND_CANCEL: u8 = 0x03;
/// Message kind of a liveness probe.
const KIND_PING: u8 = 0x05;
/// Message kind of the answer to a probe.
const KIND_PONG: u8 = 0x06;
/// Message kind of a server's notice that it is shutting down.
const KIND_DRAIN: u8 = 0x07;
/// Message kind of a batch of stream items, either way.
pub(crate) const KIND_ITEMS: u8 = 0x08;
/// Message kind of the end of a client's stream.
pub(crate) const KIND_END: u8 = 0x09;
/// Message kind of a grant of stream credit, either way.
pub(crate) const KIND_CREDIT: u8 = 0x0A;
/// Message kind of a server's notice that it reads no more of a client's stream.
pub(crate) const KIND_STOP: u8 = 0x0B;

/// Flag bit: an extension block follows the fixed header.
const FLAG_EXTENSIONS: u8 = 0x01;
/// Request flag bit: the client streams items to the call.
pub(crate) const FLAG_STREAM_IN: u8 = 0x02;
/// Request flag bit: the client reads a stream of items from the call.
pub(crate) const FLAG_STREAM_OUT: u8 = 0x04;
/// Extension tags with this bit set must be understood by the receiver.
const TAG_CRITICAL: u16 = 0x8000;
/// Request extension: the time left for the call, in microseconds (u64).
const TAG_DEADLINE: u16 = 0x0001;
/// Bytes of a deadline entry: tag, length, microseconds.
const DEADLINE_ENTRY_LEN: usize = 2 + 4 + 8;

/// Longest deadline taken from the wire: a longer one (up to `u64::MAX`
/// microseconds) is read as this, so that no arithmetic on it overflows.
pub(crate) const MAX_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Error messages are cut to this many bytes, so that an enormous panic
/// message cannot push a reply over the frame limit.
const MAX_ERROR_MESSAGE: usize = 4096;

/// Bytes of `kind, flags, id`.
pub(crate) const COMMON_HEADER_LEN: usize = 10;

/// How a call ended, as carried in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status(pub(crate) u8);

impl Status {
    pub(crate) const OK: Status = Status(0);
    pub(crate) const UNKNOWN_SERVICE: Status = Status(1);
    pub(crate) const UNKNOWN_METHOD: Status = Status(2);
    pub(crate) const BAD_REQUEST: Status = Status(3);
    pub(crate) const HANDLER_PANICKED: Status = Status(4);
    pub(crate) const INTERNAL: Status = Status(5);
    pub(crate) const RESOURCE_EXHAUSTED: Status = Status(6);
    pub(crate) const DEADLINE_EXCEEDED: Status = Status(7);
    pub(crate) const UNAUTHENTICATED: Status = Status(8);
    pub(crate) const PERMISSION_DENIED: Status = Status(9);
    pub(crate) const CANCELLED: Status = Status(10);
    pub(crate) const SCHEMA_MISMATCH: Status = Status(11);
}

/// A decoded message, borrowing names from its frame.
#[derive(Debug)]
pub(crate) enum Message<'a> {
    /// A call.
    Request {
        id: u64,
        service: &'a str,
        method: &'a str,
        /// Time the client gives the call, capped at [`MAX_DEADLINE`].
        deadline: Option<Duration>,
        metadata: Metadata<'a>,
        /// The client's claim of its schema of the method, if it made one.
        schema: Option<Claim<'a>>,
        /// [`FLAG_STREAM_IN`] and [`FLAG_STREAM_OUT`], as the client set them.
        streams: u8,
        body: Bytes,
    },
    /// The answer to the call with the same id.
    Response {
        id: u64,
        status: Status,
        /// The server's claim of its schema of the method called.
        schema: Option<Claim<'a>>,
        body: Bytes,
    },
    /// The server is shutting down: it read every request with a lower id
    /// and will answer those it can; it read none with this id or higher.
    Drain { first_unread: u64 },
    /// The client no longer wants the answer to the call with this id.
    Cancel { id: u64 },
    /// A liveness probe; answer with a pong carrying the same token.
    Ping { token: u64 },
    /// The answer to a ping.
    Pong { token: u64 },
    /// Items of the stream of call `id`: `count` of them, one after the
    /// other in `items`. `cost` is what they take of the stream's credit.
    Items {
        id: u64,
        count: u32,
        items: Bytes,
        cost: usize,
    },
    /// The client's stream to call `id` has ended.
    End { id: u64 },
    /// The receiver of call `id`'s stream allows `bytes` more.
    Credit { id: u64, bytes: u32 },
    /// The server reads no more of the client's stream to call `id`.
    Stop { id: u64 },
}

/// A frame that does not follow the protocol.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProtocolError(String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ProtocolError> for RpcError {
    fn from(e: ProtocolError) -> Self {
        RpcError::Protocol(e.0)
    }
}

/// Where a request frame (prefix included) holds its id.
const REQUEST_ID_OFFSET: usize = frame::PREFIX_LEN + 2;

/// Appends a whole request frame (prefix included) to `buf`, with id 0:
/// the connection's writer stamps the real id with [`set_request_id`] as
/// it sends, so that ids rise in the order requests go on the wire.
///
/// `metadata` holds whole extension entries made by
/// [`metadata::put_entry`].
///
/// `streams` holds the request's stream flags ([`FLAG_STREAM_IN`],
/// [`FLAG_STREAM_OUT`]); 0 for a unary call. `schema` is a whole schema
/// extension entry, or empty.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_request<A: Serialize + ?Sized>(
    buf: &mut BytesMut,
    service: &str,
    method: &str,
    deadline: Option<Duration>,
    metadata: &[u8],
    schema: &[u8],
    streams: u8,
    args: &A,
    max_frame_length: usize,
) -> Result<(), RpcError> {
    let start = frame::begin(buf);
    buf.put_u8(KIND_REQUEST);
    let extensions_len = deadline.map_or(0, |_| DEADLINE_ENTRY_LEN) + metadata.len() + schema.len();
    let extensions = if extensions_len > 0 {
        FLAG_EXTENSIONS
    } else {
        0
    };
    buf.put_u8(extensions | streams);
    buf.put_u64_le(0);
    put_name(buf, service, "service")?;
    put_name(buf, method, "method")?;
    if extensions_len > 0 {
        let Ok(extensions_len) = u32::try_from(extensions_len) else {
            buf.truncate(start);
            return Err(RpcError::FrameTooLarge {
                limit: max_frame_length,
            });
        };
        buf.put_u32_le(extensions_len);
    }
    if let Some(deadline) = deadline {
        buf.put_u16_le(TAG_DEADLINE);
        buf.put_u32_le(8);
        buf.put_u64_le(u64::try_from(deadline.as_micros()).unwrap_or(u64::MAX));
    }
    buf.put_slice(metadata);
    buf.put_slice(schema);
    put_body(buf, start, args, max_frame_length)
        .map_err(|failure| describe(failure, max_frame_length, || arguments_of(service, method)))
}

/// Appends a whole cancel frame to `buf`.
pub(crate) fn encode_cancel(buf: &mut BytesMut, id: u64) {
    encode_header_only(buf, KIND_CANCEL, id);
}

/// Appends a whole drain frame to `buf`.
pub(crate) fn encode_drain(buf: &mut BytesMut, first_unread: u64) {
    encode_header_only(buf, KIND_DRAIN, first_unread);
}

/// Appends a whole ping or pong frame to `buf`.
pub(crate) fn encode_ping(buf: &mut BytesMut, token: u64, pong: bool) {
    encode_header_only(buf, if pong { KIND_PONG } else { KIND_PING }, token);
}

/// Appends a whole end-of-stream frame to `buf`.
pub(crate) fn encode_end(buf: &mut BytesMut, id: u64) {
    encode_header_only(buf, KIND_END, id);
}

/// Appends a whole stop frame to `buf`.
pub(crate) fn encode_stop(buf: &mut BytesMut, id: u64) {
    encode_header_only(buf, KIND_STOP, id);
}

/// Appends a whole credit frame to `buf`.
pub(crate) fn encode_credit(buf: &mut BytesMut, id: u64, bytes: u32) {
    let start = frame::begin(buf);
    buf.put_u8(KIND_CREDIT);
    buf.put_u8(0);
    buf.put_u64_le(id);
    buf.put_u32_le(bytes);
    frame::finish(buf, start);
}

/// Starts an items frame in `buf` with a count of 0; returns where it
/// starts, for [`finish_items`].
pub(crate) fn begin_items(buf: &mut BytesMut, id: u64) -> usize {
    let start = frame::begin(buf);
    buf.put_u8(KIND_ITEMS);
    buf.put_u8(0);
    buf.put_u64_le(id);
    buf.put_u32_le(0);
    start
}

/// Where an items frame begun at `start` holds its item count.
const ITEMS_COUNT_OFFSET: usize = frame::PREFIX_LEN + COMMON_HEADER_LEN;

/// Closes an items frame begun at `start`, holding `count` items.
pub(crate) fn finish_items(buf: &mut BytesMut, start: usize, count: u32) {
    let at = start + ITEMS_COUNT_OFFSET;
    buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
    frame::finish(buf, start);
}

/// A message that is its common header alone, `id` carrying its meaning.
fn encode_header_only(buf: &mut BytesMut, kind: u8, id: u64) {
    let start = frame::begin(buf);
    buf.put_u8(kind);
    buf.put_u8(0);
    buf.put_u64_le(id);
    frame::finish(buf, start);
}

/// Stamps `id` into a frame made by [`encode_request`].
pub(crate) fn set_request_id(frame: &mut [u8], id: u64) {
    frame[REQUEST_ID_OFFSET..REQUEST_ID_OFFSET + 8].copy_from_slice(&id.to_le_bytes());
}

/// Appends a whole success response frame to `buf`; `schema` is a whole
/// schema extension entry, or empty.
pub(crate) fn encode_response<R: Serialize + ?Sized>(
    buf: &mut BytesMut,
    id: u64,
    value: &R,
    schema: &[u8],
    max_frame_length: usize,
) -> Result<(), RpcError> {
    let start = frame::begin(buf);
    buf.put_u8(KIND_RESPONSE);
    if schema.is_empty() {
        buf.put_u8(0);
        buf.put_u64_le(id);
        buf.put_u8(Status::OK.0);
    } else {
        buf.put_u8(FLAG_EXTENSIONS);
        buf.put_u64_le(id);
        buf.put_u8(Status::OK.0);
        // A schema entry is a few kilobytes at most, never near 4 GiB.
        buf.put_u32_le(u32::try_from(schema.len()).unwrap_or(u32::MAX));
        buf.put_slice(schema);
    }
    put_body(buf, start, value, max_frame_length)
        .map_err(|failure| describe(failure, max_frame_length, || "the reply".to_owned()))
}

/// Appends a whole error response frame to `buf`.
pub(crate) fn encode_error(buf: &mut BytesMut, id: u64, status: Status, message: &str) {
    let start = response_header(buf, id, status);
    buf.put_slice(truncate(message, MAX_ERROR_MESSAGE).as_bytes());
    frame::finish(buf, start);
}

/// What the generated client calls the arguments of a method, in errors.
pub(crate) fn arguments_of(service: &str, method: &str) -> String {
    format!("the arguments of {service}.{method}")
}

fn response_header(buf: &mut BytesMut, id: u64, status: Status) -> usize {
    let start = frame::begin(buf);
    buf.put_u8(KIND_RESPONSE);
    buf.put_u8(0);
    buf.put_u64_le(id);
    buf.put_u8(status.0);
    start
}

fn put_name(buf: &mut BytesMut, name: &str, what: &str) -> Result<(), RpcError> {
    // A local mistake, not the peer's: before, it was reported as a
    // protocol violation.
    let len = u8::try_from(name.len()).map_err(|_| RpcError::InvalidCall {
        message: format!("the {what} name is {} bytes; at most 255 fit", name.len()),
    })?;
    buf.put_u8(len);
    buf.put_slice(name.as_bytes());
    Ok(())
}

/// Encodes the body after a header that began at `start`, then closes the
/// frame; on failure the buffer is restored to `start`.
fn put_body<T: Serialize + ?Sized>(
    buf: &mut BytesMut,
    start: usize,
    value: &T,
    max_frame_length: usize,
) -> Result<(), EncodeFailure> {
    let used = buf.len() - start - frame::PREFIX_LEN;
    let room = frame::payload_limit(max_frame_length).saturating_sub(used);
    match codec::encode(value, buf, room) {
        Ok(()) => {
            frame::finish(buf, start);
            Ok(())
        }
        Err(failure) => {
            buf.truncate(start);
            Err(failure)
        }
    }
}

fn describe(failure: EncodeFailure, limit: usize, what: impl FnOnce() -> String) -> RpcError {
    match failure {
        EncodeFailure::TooLarge => RpcError::FrameTooLarge { limit },
        EncodeFailure::Codec(source) => RpcError::Encode {
            what: what(),
            source,
        },
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads the envelope of one frame payload (the prefix already stripped).
pub(crate) fn decode(payload: &Bytes) -> Result<Message<'_>, ProtocolError> {
    let mut cursor = Cursor {
        buf: payload,
        pos: 0,
    };
    if payload.len() < COMMON_HEADER_LEN {
        return Err(ProtocolError(format!(
            "a {}-byte frame is too short for a message header",
            payload.len()
        )));
    }
    let kind = cursor.u8()?;
    let flags = cursor.u8()?;
    let id = cursor.u64()?;
    let allowed = if kind == KIND_REQUEST {
        FLAG_EXTENSIONS | FLAG_STREAM_IN | FLAG_STREAM_OUT
    } else {
        FLAG_EXTENSIONS
    };
    if flags & !allowed != 0 {
        return Err(ProtocolError(format!(
            "reserved flag bits set: {flags:#04x}"
        )));
    }
    let message = match kind {
        KIND_REQUEST => {
            let service = cursor.name("service")?;
            let method = cursor.name("method")?;
            let extensions = cursor.extensions(flags)?;
            Message::Request {
                id,
                service,
                method,
                deadline: extensions.deadline,
                metadata: extensions.metadata,
                schema: extensions.schema,
                streams: flags & (FLAG_STREAM_IN | FLAG_STREAM_OUT),
                body: payload.slice(cursor.pos..),
            }
        }
        KIND_ITEMS => {
            cursor.extensions(flags)?;
            let count = cursor.u32()?;
            Message::Items {
                id,
                count,
                items: payload.slice(cursor.pos..),
                cost: payload.len(),
            }
        }
        KIND_CREDIT => {
            cursor.extensions(flags)?;
            let bytes = cursor.u32()?;
            if cursor.pos != payload.len() {
                return Err(ProtocolError(
                    "a credit message carries nothing after its grant".to_owned(),
                ));
            }
            Message::Credit { id, bytes }
        }
        KIND_RESPONSE => {
            let status = Status(cursor.u8()?);
            let extensions = cursor.extensions(flags)?;
            Message::Response {
                id,
                status,
                schema: extensions.schema,
                body: payload.slice(cursor.pos..),
            }
        }
        KIND_CANCEL | KIND_DRAIN | KIND_PING | KIND_PONG | KIND_END | KIND_STOP => {
            cursor.extensions(flags)?;
            if cursor.pos != payload.len() {
                return Err(ProtocolError(format!(
                    "a message of kind {kind:#04x} carries no body"
                )));
            }
            match kind {
                KIND_CANCEL => Message::Cancel { id },
                KIND_DRAIN => Message::Drain { first_unread: id },
                KIND_PING => Message::Ping { token: id },
                KIND_END => Message::End { id },
                KIND_STOP => Message::Stop { id },
                _ => Message::Pong { token: id },
            }
        }
        other => return Err(ProtocolError(format!("unknown message kind {other:#04x}"))),
    };
    Ok(message)
}

/// Reads fixed-width fields, turning every short read into an error.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| ProtocolError("message header ends early".to_owned()))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn name(&mut self, what: &str) -> Result<&'a str, ProtocolError> {
        let len = self.u8()?;
        std::str::from_utf8(self.take(len.into())?)
            .map_err(|_| ProtocolError(format!("{what} name is not UTF-8")))
    }

    /// Reads the extension block: the deadline and metadata, the ones this
    /// version defines; others are skipped unless marked critical.
    fn extensions(&mut self, flags: u8) -> Result<Extensions<'a>, ProtocolError> {
        let mut found = Extensions::default();
        if flags & FLAG_EXTENSIONS == 0 {
            return Ok(found);
        }
        let len = self.u32()?;
        let mut block = Cursor {
            buf: self.take(len as usize)?,
            pos: 0,
        };
        found.metadata = Metadata::new(block.buf);
        while block.pos < block.buf.len() {
            let tag = block.u16()?;
            let value_len = block.u32()?;
            let mut value = Cursor {
                buf: block.take(value_len as usize)?,
                pos: 0,
            };
            match tag {
                TAG_DEADLINE if value_len == 8 => {
                    let micros = value.u64()?;
                    found.deadline = Some(Duration::from_micros(micros).min(MAX_DEADLINE));
                }
                TAG_DEADLINE => {
                    return Err(ProtocolError(format!(
                        "a deadline extension of {value_len} bytes; it has 8"
                    )));
                }
                metadata::TAG_METADATA => {
                    metadata::check_entry(value.buf).map_err(|e| ProtocolError(e.to_owned()))?;
                }
                schema::TAG_SCHEMA => {
                    let claim = Claim::read(value.buf).ok_or_else(|| {
                        ProtocolError(format!(
                            "a schema extension of {value_len} bytes; it has at least 8"
                        ))
                    })?;
                    // The first counts.
                    found.schema.get_or_insert(claim);
                }
                tag if tag & TAG_CRITICAL != 0 => {
                    return Err(ProtocolError(format!(
                        "critical extension {tag:#06x} is not supported"
                    )));
                }
                _ => {}
            }
        }
        Ok(found)
    }
}

/// What a message's extension block said.
#[derive(Debug, Default)]
struct Extensions<'a> {
    deadline: Option<Duration>,
    metadata: Metadata<'a>,
    schema: Option<Claim<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(buf: BytesMut) -> Bytes {
        buf.freeze().slice(frame::PREFIX_LEN..)
    }

    #[test]
    fn request_round_trips() {
        let mut buf = BytesMut::new();
        let mut pairs = Vec::new();
        metadata::put_entry(&mut pairs, "authorization", b"Bearer t");
        let sent = Some(Duration::from_millis(5));
        encode_request(
            &mut buf,
            "Calc",
            "add",
            sent,
            &pairs,
            &[],
            0,
            &(2i64, 3i64),
            1024,
        )
        .unwrap();
        set_request_id(&mut buf, 7);
        let payload = payload(buf);
        match decode(&payload).unwrap() {
            Message::Request {
                id,
                service,
                method,
                deadline,
                metadata,
                streams,
                body,
                ..
            } => {
                assert_eq!((id, service, method, deadline), (7, "Calc", "add", sent));
                assert_eq!(streams, 0);
                assert_eq!(metadata.get_str("authorization"), Some("Bearer t"));
                assert_eq!(codec::decode::<(i64, i64)>(&body).unwrap(), (2, 3));
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn error_response_round_trips() {
        let mut buf = BytesMut::new();
        encode_error(&mut buf, 9, Status::HANDLER_PANICKED, "boom");
        let payload = payload(buf);
        match decode(&payload).unwrap() {
            Message::Response {
                id, status, body, ..
            } => {
                assert_eq!(
                    (id, status, &body[..]),
                    (9, Status::HANDLER_PANICKED, &b"boom"[..])
                );
            }
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut buf = BytesMut::new();
        encode_request(&mut buf, "Svc", "method", None, &[], &[], 0, &(), 1024).unwrap();
        let full = payload(buf);
        for cut in 0..full.len() {
            assert!(decode(&full.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn drain_round_trips() {
        let mut buf = BytesMut::new();
        encode_drain(&mut buf, 42);
        let payload = payload(buf);
        assert!(matches!(
            decode(&payload).unwrap(),
            Message::Drain { first_unread: 42 }
        ));
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(decode(&Bytes::from(longer)).is_err());
    }

    #[test]
    fn deadlines_round_trip_and_are_capped() {
        for (sent, read) in [
            (Duration::from_millis(1500), Duration::from_millis(1500)),
            (Duration::ZERO, Duration::ZERO),
            (Duration::MAX, MAX_DEADLINE),
        ] {
            let mut buf = BytesMut::new();
            encode_request(&mut buf, "S", "m", Some(sent), &[], &[], 0, &(1u8,), 1024).unwrap();
            match decode(&payload(buf)).unwrap() {
                Message::Request { deadline, body, .. } => {
                    assert_eq!(deadline, Some(read));
                    assert_eq!(&body[..], &[1]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ping_and_pong_round_trip() {
        for pong in [false, true] {
            let mut buf = BytesMut::new();
            encode_ping(&mut buf, 9, pong);
            match (pong, decode(&payload(buf)).unwrap()) {
                (false, Message::Ping { token: 9 }) | (true, Message::Pong { token: 9 }) => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn unknown_kind_and_flags_are_errors() {
        let mut frame = vec![0x0C, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode(&Bytes::from(frame.clone())).is_err());
        frame[0] = KIND_RESPONSE;
        frame[1] = 0x80;
        frame.push(0);
        assert!(decode(&Bytes::from(frame)).is_err());
    }

    #[test]
    fn extensions_are_skipped_unless_critical() {
        let build = |tag: u16| {
            let mut p = vec![KIND_RESPONSE, FLAG_EXTENSIONS];
            p.extend_from_slice(&5u64.to_le_bytes());
            p.push(0);
            p.extend_from_slice(&7u32.to_le_bytes());
            p.extend_from_slice(&tag.to_le_bytes());
            p.extend_from_slice(&1u32.to_le_bytes());
            p.push(0xAA);
            p.push(42);
            Bytes::from(p)
        };
        let plain = build(0x0100);
        match decode(&plain).unwrap() {
            Message::Response { body, .. } => assert_eq!(&body[..], &[42]),
            other => panic!("not a response: {other:?}"),
        }
        assert!(decode(&build(0x8100)).is_err());
    }

    #[test]
    fn oversize_request_fails_locally_and_leaves_buffer_clean() {
        let mut buf = BytesMut::new();
        let err =
            encode_request(&mut buf, "S", "m", None, &[], &[], 0, &vec![0u8; 100], 50).unwrap_err();
        assert!(matches!(err, RpcError::FrameTooLarge { limit: 50 }));
        assert!(buf.is_empty());
    }

    /// The worked example of docs/PROTOCOL.md §7, byte for byte.
    #[test]
    fn protocol_doc_example() {
        let mut request = BytesMut::new();
        encode_request(
            &mut request,
            "Calculator",
            "add",
            None,
            &[],
            &[],
            0,
            &(2i64, 3i64),
            1024,
        )
        .unwrap();
        set_request_id(&mut request, 7);
        let mut expected = vec![0x1B, 0, 0, 0, 0x01, 0, 7, 0, 0, 0, 0, 0, 0, 0, 10];
        expected.extend_from_slice(b"Calculator");
        expected.push(3);
        expected.extend_from_slice(b"add");
        expected.extend_from_slice(&[0x04, 0x06]);
        assert_eq!(&request[..], &expected[..]);

        let mut response = BytesMut::new();
        encode_response(&mut response, 7, &5i64, &[], 1024).unwrap();
        let expected = [0x0C, 0, 0, 0, 0x02, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x0A];
        assert_eq!(&response[..], &expected[..]);

        let mut hello = Vec::new();
        hello.extend_from_slice(&frame::MAGIC);
        hello.extend_from_slice(&frame::VERSION.to_le_bytes());
        assert_eq!(hello, [0x52, 0x4B, 0x49, 0x54, 0x01, 0x00]);
    }

    /// docs/PROTOCOL.md §8, "Example", byte for byte.
    #[test]
    fn protocol_doc_stream_example() {
        let mut request = BytesMut::new();
        encode_request(
            &mut request,
            "Counter",
            "count",
            None,
            &[],
            &[],
            FLAG_STREAM_OUT,
            &(2u32,),
            1024,
        )
        .unwrap();
        set_request_id(&mut request, 1);
        let mut expected = vec![0x19, 0, 0, 0, 0x01, 0x04, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        expected.extend_from_slice(b"Counter");
        expected.push(5);
        expected.extend_from_slice(b"count");
        expected.push(2);
        assert_eq!(&request[..], &expected[..]);

        let mut credit = BytesMut::new();
        encode_credit(&mut credit, 1, 196_608);
        let expected = [14, 0, 0, 0, 0x0A, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0];
        assert_eq!(&credit[..], &expected[..]);

        let mut items = BytesMut::new();
        let start = begin_items(&mut items, 1);
        for n in 0u32..2 {
            codec::encode(&n, &mut items, usize::MAX).unwrap();
        }
        finish_items(&mut items, start, 2);
        let expected = [
            16, 0, 0, 0, 0x08, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1,
        ];
        assert_eq!(&items[..], &expected[..]);
        match decode(&payload(items)).unwrap() {
            Message::Items {
                id: 1,
                count: 2,
                items,
                cost: 16,
            } => assert_eq!(&items[..], &[0, 1]),
            other => panic!("{other:?}"),
        }

        let mut end = BytesMut::new();
        encode_response(&mut end, 1, &(), &[], 1024).unwrap();
        assert_eq!(&end[..], &[11, 0, 0, 0, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn stream_messages_round_trip_and_bad_ones_are_errors() {
        for (kind, encode) in [
            (KIND_END, encode_end as fn(&mut BytesMut, u64)),
            (KIND_STOP, encode_stop),
        ] {
            let mut buf = BytesMut::new();
            encode(&mut buf, 9);
            match (kind, decode(&payload(buf)).unwrap()) {
                (KIND_END, Message::End { id: 9 }) | (KIND_STOP, Message::Stop { id: 9 }) => {}
                other => panic!("{other:?}"),
            }
        }
        // A credit without its grant, or with bytes after it.
        let short = [KIND_CREDIT, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0];
        assert!(decode(&Bytes::copy_from_slice(&short)).is_err());
        let long = [KIND_CREDIT, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 9];
        assert!(decode(&Bytes::copy_from_slice(&long)).is_err());
        // Stream flags belong to requests only.
        let flagged = [KIND_END, FLAG_STREAM_IN, 1, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode(&Bytes::copy_from_slice(&flagged)).is_err());
    }

    #[test]
    fn long_error_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let cut = truncate(&long, MAX_ERROR_MESSAGE + 1);
        assert_eq!(cut.len(), MAX_ERROR_MESSAGE);
    }
}
