//! The object-safe face of a service, as the server sees it.
//!
//! `#[rpc_service]` implements [`Service`] for every generated `<Trait>Server`,
//! and [`ServerBuilder::add_service`](crate::ServerBuilder::add_service) takes
//! any `Service`. The server hands each call to [`Service::call`] with the
//! method name and the still-encoded arguments; the future that comes back
//! resolves to the encoded [`Reply`]. The server runs that future on its own
//! task, catches a panic in it, and writes the reply to the connection.
//!
//! Writing a `Service` by hand is possible (route on `method`, decode with
//! [`Request::decode`], answer with [`Request::reply`]) but rarely needed.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::arena;
use crate::envelope::{self, Status};
use crate::schema::{Agreement, Body, Failure};
use crate::server::Rejection;
use crate::status::Code;
use crate::stream::CallStreams;

/// A named set of methods the server can route calls to.
pub trait Service: Send + Sync + 'static {
    /// The name calls address this service by; unique within one server.
    fn name(&self) -> &'static str;

    /// Starts the call of `method`, or returns `None` if this service has
    /// no method of that name.
    fn call(&self, method: &str, request: Request) -> Option<ResponseFuture>;

    /// The names of the methods [`Service::call`] starts. Metrics label
    /// calls by method only for these (any other name a client sends is
    /// labelled `unknown`, so that strangers cannot grow the labels without
    /// bound). Generated servers list theirs; the default lists none.
    fn methods(&self) -> &'static [&'static str] {
        &[]
    }

    /// What the service says of itself to the server's introspection
    /// (docs/PROTOCOL.md, "Introspection"). Generated servers describe
    /// theirs; the default describes nothing.
    fn description(&self) -> Option<crate::describe::Description> {
        None
    }
}

/// The future of one call's reply.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// Where a reply frame's status byte sits: after the length prefix (4),
/// kind and flags (2) and the request id (8). An extension block (a
/// schema claim, docs/PROTOCOL.md §12) follows it when the flags say so.
const STATUS_OFFSET: usize = 4 + 2 + 8;

/// Where a reply frame's flags sit.
const FLAGS_OFFSET: usize = 4 + 1;

/// One incoming call: its id and its encoded arguments.
#[derive(Debug)]
pub struct Request {
    id: u64,
    pub(crate) body: Bytes,
    max_frame_length: usize,
    /// The call's streams, if the client opened it as a stream call.
    pub(crate) streams: Option<CallStreams>,
    /// What the client's schema claim came to, if it made one.
    pub(crate) agreement: Option<Box<Agreement>>,
}

impl Request {
    /// A call with id `id` whose encoded arguments are `body`; its reply
    /// may be at most `max_frame_length` bytes. The server makes these; make
    /// one by hand to drive a [`Service`] without a network, as in a test or
    /// a benchmark. `body` is the bincode encoding of the argument tuple
    /// (docs/PROTOCOL.md, "Values").
    pub fn new(id: u64, body: Bytes, max_frame_length: usize) -> Self {
        Self {
            id,
            body,
            max_frame_length,
            streams: None,
            agreement: None,
        }
    }

    /// The largest reply frame the server sends.
    pub(crate) fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// The request id the client chose; the reply carries it back.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The encoded arguments.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Decodes the arguments as `A` (a tuple of the method's arguments).
    ///
    /// On failure the error is the reply to send: a "bad request" that tells
    /// the client its arguments did not decode.
    pub fn decode<'a, A: Deserialize<'a>>(&'a self) -> Result<A, Reply> {
        let writer = self.agreement.as_ref().and_then(|a| a.writer());
        Body::args(&self.body, writer)
            .decode()
            .map_err(|failure| match failure {
                Failure::Codec(e) => Reply::error(
                    self.id,
                    Status::BAD_REQUEST,
                    &format!("could not decode the arguments: {e}"),
                ),
                Failure::Mismatch(mismatch) => Reply::error(
                    self.id,
                    Status::SCHEMA_MISMATCH,
                    &format!("the arguments do not fit the server's types: {mismatch}"),
                ),
            })
    }

    /// Encodes `value` as this call's successful reply.
    ///
    /// A value that cannot be encoded, or is larger than the server's frame
    /// limit, becomes an "internal error" reply that says so.
    pub fn reply<R: Serialize + ?Sized>(&self, value: &R) -> Reply {
        let (frame, encoded) = arena::encode(|frame| {
            let claim = self.agreement.as_ref().map_or(&[][..], |a| a.reply_claim());
            envelope::encode_response(frame, self.id, value, claim, self.max_frame_length)
        });
        match encoded {
            Ok(()) => Reply { frame },
            Err(e) => {
                tracing::warn!(request_id = self.id, "reply not sent: {e}");
                Reply::error(self.id, Status::INTERNAL, &e.to_string())
            }
        }
    }
}

/// One call's encoded reply, ready for the wire.
#[derive(Debug)]
pub struct Reply {
    frame: BytesMut,
}

impl Reply {
    pub(crate) fn error(id: u64, status: Status, message: &str) -> Self {
        let (frame, ()) = arena::encode(|frame| envelope::encode_error(frame, id, status, message));
        Self { frame }
    }

    /// The whole frame as it goes on the wire, length prefix included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.frame
    }

    /// The reply's status; `None` for a status this version does not know.
    pub fn code(&self) -> Option<Code> {
        self.frame
            .get(STATUS_OFFSET)
            .copied()
            .and_then(Code::from_wire)
    }

    /// The encoded value (status OK) or the UTF-8 error message.
    pub fn body(&self) -> &[u8] {
        let mut start = STATUS_OFFSET + 1;
        if self
            .frame
            .get(FLAGS_OFFSET)
            .is_some_and(|flags| flags & 1 != 0)
        {
            let block = self
                .frame
                .get(start..start + 4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            start += 4 + block;
        }
        self.frame.get(start..).unwrap_or_default()
    }

    /// The answer to a call that a layer, an interceptor or its handler
    /// refused.
    pub(crate) fn refused(id: u64, rejection: &Rejection) -> Self {
        Self::error(id, rejection.status, &rejection.message)
    }

    pub(crate) fn bad_request(id: u64, message: &str) -> Self {
        Self::error(id, Status::BAD_REQUEST, message)
    }

    pub(crate) fn panicked(id: u64, message: &str) -> Self {
        Self::error(id, Status::HANDLER_PANICKED, message)
    }

    pub(crate) fn internal(id: u64, message: &str) -> Self {
        Self::error(id, Status::INTERNAL, message)
    }

    pub(crate) fn into_frame(self) -> BytesMut {
        self.frame
    }
}
