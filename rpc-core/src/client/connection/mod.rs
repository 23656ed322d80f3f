//! One established connection of a [`Channel`](super::Channel): its two
//! tasks, and the call that runs over it.
//!
//! Callers share one lock, briefly: [`Pending::start`] gives a call its id,
//! enters it, and queues its request in one step, so ids rise in wire
//! order and a reply always finds its call. The writer takes everything
//! queued and writes it in as few system calls as it can; the reader routes
//! each reply to its caller. A caller that gives up (drops its future, or
//! runs out of time) queues a cancel behind its own request.

mod reader;
mod streams;
mod writer;

use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, oneshot};

use super::CallOptions;
use super::deadline::Deadline;
use super::limit::CallLimit;
use super::pending::{Answer, Pending, Response};
use crate::arena;
use crate::envelope::{self, Status};
use crate::error::RpcError;
use crate::schema::{self, Body, Failure, MethodSchema};
use crate::status::{Code, Status as CallStatus};
use crate::stream::Streams;
use crate::transport::Connected;
use crate::transport::Outbox;

/// How often to probe a quiet connection, and how long to wait for any
/// sign of life after a probe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// Why the connection ended or stopped taking calls; the first reason
/// recorded wins.
#[derive(Debug, Default)]
pub(crate) struct Closed(OnceLock<String>);

/// Why a connection that [`Connection::close`] closed takes no calls.
const CLOSED_BY_CALLER: &str = "the channel was closed (Channel::close)";

impl Closed {
    fn set(&self, reason: impl Into<String>) {
        let _ = self.0.set(reason.into());
    }

    pub(crate) fn reason(&self) -> String {
        self.0
            .get()
            .cloned()
            .unwrap_or_else(|| "the connection is closed".to_owned())
    }

    /// Whether the connection takes no more calls.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.get().is_some()
    }
}

/// A connection and the tasks that run it.
pub(crate) struct Connection {
    /// Requests and cancels (and the reader's pings and pongs), in the
    /// order they go out.
    outbox: Arc<Outbox>,
    pending: Arc<Pending>,
    closed: Arc<Closed>,
    /// One permit per call the server will take in flight, when it limits
    /// them; calls beyond wait here rather than be refused.
    permits: Option<Arc<CallLimit>>,
    /// Pokes the reader to time the expiry of a call given up.
    gave_up: Arc<Notify>,
    /// The streams of calls in flight, for the reader to route to.
    streams: Arc<Streams>,
    max_frame_length: usize,
    /// What each server stream lets be in flight.
    stream_window: usize,
    /// Cancelled when the reader ends: the connection is gone.
    ended: tokio_util::sync::CancellationToken,
    /// What the server said of its schema of each method called.
    agreements: schema::Agreements,
}

impl Connection {
    /// Starts the tasks of a connection that has done its handshake.
    pub(crate) fn start(
        connected: Connected,
        max_frame_length: usize,
        keepalive: Option<Keepalive>,
        stream_window: usize,
    ) -> Self {
        let permits = match connected.call_limit {
            0 => None,
            limit => Some(Arc::new(CallLimit::new(limit.into()))),
        };
        let outbox = Arc::new(Outbox::default());
        // Each task holds the sender of a oneshot the other waits on, so that
        // either one ending (and dropping it) ends the other.
        let (writer_alive, writer_done) = oneshot::channel::<()>();
        let (reader_alive, reader_done) = oneshot::channel::<()>();
        let closed = Arc::new(Closed::default());
        let pending = Arc::new(Pending::default());
        let gave_up = Arc::new(Notify::new());
        let streams = Arc::new(Streams::default());
        tokio::spawn(writer::write_loop(
            connected.writer,
            outbox.clone(),
            reader_done,
            writer_alive,
            closed.clone(),
            pending.clone(),
        ));
        let reader = reader::Reader {
            pending: pending.clone(),
            permits: permits.clone(),
            outbox: outbox.clone(),
            keepalive,
            gave_up: gave_up.clone(),
            streams: streams.clone(),
        };
        // Open, for the metrics and for `close`, while its reader runs.
        let open = crate::meter::Connection::open(crate::meter::Side::Client);
        let ended = tokio_util::sync::CancellationToken::new();
        let reading_ends = ended.clone().drop_guard();
        let reading = reader.run(connected.reader, writer_done, reader_alive, closed.clone());
        tokio::spawn(async move {
            let _open = open;
            let _ends = reading_ends;
            reading.await
        });
        Connection {
            outbox,
            pending,
            closed,
            permits,
            gave_up,
            streams,
            max_frame_length,
            stream_window,
            ended,
            agreements: schema::Agreements::default(),
        }
    }

    /// Takes no more calls, ends this side once what is queued is written,
    /// and waits until the reader has read the server's end.
    pub(crate) async fn close(&self) {
        self.closed.set(CLOSED_BY_CALLER);
        self.outbox.close();
        self.ended.cancelled().await;
    }

    /// Whether the connection takes no more calls.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_closed() || self.outbox.is_writer_gone()
    }

    /// The calls this connection carries now, for a balancer to compare.
    pub(crate) fn load(&self) -> usize {
        self.pending.load()
    }

    /// Returns once the connection is gone (its reader has ended).
    pub(crate) async fn ended(&self) {
        self.ended.cancelled().await;
    }

    /// Why it takes no more calls.
    pub(crate) fn close_reason(&self) -> String {
        self.closed.reason()
    }

    /// Sends one call and waits for its answer, by `deadline` if the call
    /// has one (the wait for a permit included). Giving up before the
    /// answer (the future dropped, or the deadline) sends the server a
    /// cancel for the call.
    // Each is a different part of the call, from a different place; a
    // struct of them would be built at one call site and unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn call<A, R>(
        &self,
        service: &str,
        method: &str,
        args: A,
        options: &CallOptions,
        deadline: Option<Deadline>,
        span: Option<&tracing::Span>,
        local: Option<&MethodSchema>,
        decode: impl FnOnce(Body<'_>) -> Result<R, Failure>,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
    {
        if self.closed.is_closed() {
            return Err(self.not_processed());
        }
        // Without a deadline each wait is awaited as it is: wrapping it
        // costs a layer of future per wait on every call.
        let permit = match &self.permits {
            Some(permits) => Some(
                match deadline {
                    None => permits.acquire().await,
                    Some(_) => Deadline::within(deadline, permits.acquire()).await?,
                }
                .map_err(|_| self.not_processed())?,
            ),
            None => None,
        };
        // Entered with the call, so that its answer can wake it without a
        // first poll to register (a lock and a lookup per call).
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        // Claimed until the server says its schema is the same.
        let claim = match local {
            Some(own) if !self.agreements.same(own) => own.claim(),
            Some(_) => &[][..],
            None => &[][..],
        };
        let mut frame = self.request(service, method, deadline, options, 0, &args, claim)?;
        let id = self
            .pending
            .start(permit, waker, |id| {
                envelope::set_request_id(&mut frame, id);
                self.outbox.push(&mut frame, 0).is_ok()
            })
            .map_err(|_| self.not_processed())?;
        drop(args);
        if let Some(span) = span {
            span.record("rpc.request_id", id);
        }
        let mut give_up = GiveUp {
            connection: self,
            id: Some(id),
        };
        // Polled first in the same poll of this future as the waker above
        // was taken: the answer cannot have been taken yet, and its arrival
        // wakes that waker, so the first poll need not look.
        let mut first = true;
        let answer = std::future::poll_fn(|cx| {
            if std::mem::take(&mut first) {
                return Poll::Pending;
            }
            self.pending.poll_answer(id, cx)
        });
        let answer = match deadline {
            None => answer.await,
            Some(_) => Deadline::within(deadline, answer).await?,
        };
        give_up.id = None;
        match answer {
            Ok(Answer::Response(mut response)) => {
                let theirs = match local {
                    Some(own) if response.status == Status::OK => {
                        match self.agreements.learn(own, response.schema.take()) {
                            Ok(theirs) => theirs,
                            Err(message) => {
                                return Err(RpcError::Status(CallStatus::new(
                                    Code::SchemaMismatch,
                                    message,
                                )));
                            }
                        }
                    }
                    _ => None,
                };
                let writer = theirs.as_deref().map(|theirs| &theirs.schema);
                response_decoded(response, service, method, options.timeout, |body| {
                    decode(Body::reply(body, writer))
                })
            }
            Ok(Answer::NotProcessed) => Err(self.not_processed()),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// A call's request frame, with id 0 until it is sent; the server is
    /// given what is left of the call's time.
    #[allow(clippy::too_many_arguments)]
    fn request<A: Serialize>(
        &self,
        service: &str,
        method: &str,
        deadline: Option<Deadline>,
        options: &CallOptions,
        streams: u8,
        args: &A,
        schema: &[u8],
    ) -> Result<BytesMut, RpcError> {
        let left = deadline.as_ref().map(Deadline::left);
        let (frame, encoded) = arena::encode(|frame| {
            envelope::encode_request(
                frame,
                service,
                method,
                left,
                options.metadata(),
                schema,
                streams,
                args,
                self.max_frame_length,
            )
        });
        encoded.map(|()| frame)
    }

    /// The error of a call that was never sent or never read.
    pub(crate) fn not_processed(&self) -> RpcError {
        RpcError::NotProcessed {
            reason: self.closed.reason(),
        }
    }

    /// The error of a call whose connection ended before its reply.
    fn closed_error(&self) -> RpcError {
        RpcError::ConnectionClosed {
            reason: self.closed.reason(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The channel's last handle is gone, and every caller with it.
        self.outbox.close();
    }
}

/// Armed while a call waits for its answer; dropped armed (the caller's
/// future dropped, or its deadline passed) it tells the server with a
/// cancel, queued behind the request itself. The call keeps its permit
/// until the server answers the cancel, or for a while at most.
struct GiveUp<'a> {
    connection: &'a Connection,
    id: Option<u64>,
}

impl Drop for GiveUp<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        if self.connection.pending.abandon(id).is_some() {
            let mut cancel = BytesMut::new();
            envelope::encode_cancel(&mut cancel, id);
            let _ = self.connection.outbox.push(&mut cancel, 0);
            self.connection.gave_up.notify_one();
        }
    }
}

fn response_into_result<R: DeserializeOwned>(
    response: Response,
    service: &str,
    method: &str,
    deadline: Option<Duration>,
) -> Result<R, RpcError> {
    response_decoded(response, service, method, deadline, |body| {
        Body::Own(body).decode()
    })
}

/// [`response_into_result`] decoding an OK body with `decode`.
fn response_decoded<R>(
    response: Response,
    service: &str,
    method: &str,
    deadline: Option<Duration>,
    decode: impl FnOnce(&[u8]) -> Result<R, Failure>,
) -> Result<R, RpcError> {
    let Response { status, body, .. } = response;
    let message = || String::from_utf8_lossy(&body).into_owned();
    if status == Status::OK {
        return decode(&body).map_err(|failure| match failure {
            Failure::Codec(source) => RpcError::Decode {
                what: format!("the reply of {service}.{method}"),
                source,
            },
            Failure::Mismatch(mismatch) => RpcError::Status(CallStatus::new(
                Code::SchemaMismatch,
                format!(
                    "the reply of {service}.{method} does not fit this client's type: {mismatch}"
                ),
            )),
        });
    }
    if status == Status::DEADLINE_EXCEEDED {
        return Err(RpcError::DeadlineExceeded {
            timeout: deadline.unwrap_or_default(),
        });
    }
    Err(RpcError::Status(match Code::from_wire(status.0) {
        Some(code) => CallStatus::new(code, message()),
        None => CallStatus::new(
            Code::Internal,
            format!("unknown status {}: {}", status.0, message()),
        ),
    }))
}

/// Tells the span of the stream call being made (the current one: see
/// `Channel::call_streaming_result`) its request id, known only now.
pub(super) fn record_id(id: u64) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("rpc.request_id", id);
    }
}
