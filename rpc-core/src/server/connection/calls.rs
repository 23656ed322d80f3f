//! What a connection does with each frame it reads: start a call (checked,
//! routed, limited), cancel one, answer a ping.

use std::any::Any;
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::streams::{self, ServerLink};
use super::writer::Outbox;
use crate::context::CallContext;
use crate::envelope::{self, Message, Status};
use crate::metadata::Metadata;
use crate::schema::Refused;
use crate::server::Shared;
use crate::server::interceptor::{CallInfo, Peer};
use crate::server::layer::{self, Call, Extensions};
use crate::server::rate::Rate;
use crate::server::running::{Cancelled, Running};
use crate::server::watchdog::Stamp;
use crate::service::{Reply, Request, ResponseFuture, Service};
use crate::status::Code;
use crate::stream::{Routed, Streams};
use crate::transport::Batch;
use crate::{meter, trace};

/// Pings a client may send at once; after that, one per minimum ping
/// interval, or it is disconnected for flooding.
const PING_BURST: u32 = 3;

/// Frames that make the server work but carry no call (pings, pongs,
/// cancels of calls not running) a client may send at once, and how often
/// one more is allowed after that. A client that sends more is
/// disconnected: 14-byte frames at line rate would otherwise take a core.
/// Generous, because late cancels are normal: a client that gives up many
/// calls just as they are answered sends one for each.
const CONTROL_BURST: u32 = 10_000;
const CONTROL_EVERY: std::time::Duration = std::time::Duration::from_micros(100);

/// Bytes of schemas the server had not read that one connection's claims
/// may have read at once (the server's store of them holds as much), and
/// a byte more every 1/65,536 s after that. A schema costs up to a hundred
/// times as much to read as a plain request of its size. An honest client
/// sends few distinct schemas (one per method, sent again on each call
/// only where it differs from the server's, and then usually kept); one
/// that sends new schema after new schema would otherwise keep a core
/// busy for 5 MB/s.
const SCHEMA_READ_BURST: u32 = 1 << 20;
const SCHEMA_READ_EVERY: std::time::Duration = std::time::Duration::from_nanos(15_259);

/// No call is being polled where it was read; the reserved id, which no
/// request carries.
const NOT_POLLING: u64 = u64::MAX;

/// Calls with arguments up to this size are polled once where they are
/// read; larger ones go straight to a task of their own, so that copying
/// their payload does not stall reading.
const INLINE_BODY_LIMIT: usize = 8 * 1024;

/// The state of one connection that its calls share.
pub(super) struct Calls {
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: Outbox,
    /// Calls running on tasks of their own, until they end: they count
    /// against the limit, a cancel message stops one, and a request reusing
    /// the id of one is a protocol violation. Calls answered where they
    /// were read never enter it.
    pub(super) running: Arc<Running>,
    /// One more than the highest request id read: what a drain announces.
    first_unread: AtomicU64,
    /// Requests read so far, for the idle check.
    requests_read: AtomicU64,
    /// The id of the call the own reader is polling, or [`NOT_POLLING`].
    polling: AtomicU64,
    /// How often the client may ping.
    pings: std::sync::Mutex<Rate>,
    /// How often the client may send frames that carry no call.
    control: std::sync::Mutex<Rate>,
    /// Bytes of schemas the server had not read that claims may still have
    /// read (`SCHEMA_READ_BURST`).
    schema_reads: std::sync::Mutex<Rate>,
    /// Cancelled when the connection ends: calls still running then are
    /// dropped, so a client cannot leave work behind by disconnecting.
    pub(super) gone: CancellationToken,
    /// Who is at the other end, for the interceptor.
    peer: Arc<Peer>,
    /// What the reader has made since it last waited: replies to queue and
    /// calls to start on tasks (see [`Calls::flush`]).
    deferred: std::sync::Mutex<Deferred>,
    /// The open streams of the calls, by id.
    streams: Arc<Streams>,
    /// What those streams send through.
    link: Arc<ServerLink>,
}

/// Work a reader hands on only when it is about to wait.
///
/// Queuing a reply wakes the writer, and spawning a call makes a task;
/// tokio runs the task a worker woke last on that same worker, next, where
/// no other worker can take it. Were the reader to wake the writer and then
/// poll a handler that blocks its thread, the writer (and with it every
/// reply of the connection) would wait for that handler. So the reader
/// keeps what it makes here, and hands it on just before it waits (or every
/// [`MAX_DEFERRED`] items, yielding after): a handler it polls never has a
/// task of this connection queued behind it.
#[derive(Default)]
struct Deferred {
    replies: Batch,
    calls: Vec<Registered>,
}

/// Items a reader defers at most before it hands them on and yields.
pub(super) const MAX_DEFERRED: usize = 64;

/// A call counted as running, to be started on a task of its own.
struct Registered {
    id: u64,
    future: ResponseFuture,
    span: Option<tracing::Span>,
    meter: meter::Call,
    context: Option<CallContext>,
    deadline: Option<Instant>,
    cancelled: CancellationToken,
    running: crate::server::running::RunningCall,
}

/// A call that has started and has yet to be polled.
pub(super) struct Started {
    id: u64,
    future: ResponseFuture,
    /// The call's span, entered while it is polled.
    span: Option<tracing::Span>,
    /// The call, as the metrics count it.
    meter: meter::Call,
    /// What the call's code sees as [`CallContext::current`] while it is
    /// polled.
    context: Option<CallContext>,
    /// When the server stops it, if the client gave it a deadline.
    deadline: Option<Instant>,
    /// Bytes of its request frame, which it holds while it runs.
    size: usize,
    /// Whether it may be polled where it was read.
    pub(super) inline: bool,
}

impl Calls {
    pub(super) fn new(shared: Arc<Shared>, outbox: Outbox, peer: Peer) -> Self {
        let running = Arc::new(Running::new(shared.max_running_request_bytes));
        let link = Arc::new(ServerLink {
            outbox: outbox.clone(),
        });
        Calls {
            pings: std::sync::Mutex::new(Rate::new(shared.min_ping_interval, PING_BURST)),
            control: std::sync::Mutex::new(Rate::new(CONTROL_EVERY, CONTROL_BURST)),
            schema_reads: std::sync::Mutex::new(Rate::new(SCHEMA_READ_EVERY, SCHEMA_READ_BURST)),
            running,
            streams: Arc::default(),
            link,
            shared,
            outbox,
            first_unread: AtomicU64::new(0),
            polling: AtomicU64::new(NOT_POLLING),
            requests_read: AtomicU64::new(0),
            gone: CancellationToken::new(),
            peer: Arc::new(peer),
            deferred: std::sync::Mutex::default(),
        }
    }

    /// Requests read so far.
    pub(super) fn requests_read(&self) -> u64 {
        self.requests_read.load(Ordering::Relaxed)
    }

    /// One more than the highest request id read.
    pub(super) fn first_unread(&self) -> u64 {
        self.first_unread.load(Ordering::Relaxed)
    }

    fn reply(&self, reply: Reply) {
        self.defer(reply.into_frame());
    }

    /// Keeps a frame to queue at the next flush, counted against the
    /// backlog from now on: 64 deferred replies to calls answered at once
    /// could otherwise be 64 frames of the largest size.
    fn defer(&self, frame: BytesMut) {
        self.outbox
            .hold_in(&mut lock(&self.deferred).replies, frame);
    }

    /// Queues the replies and starts the calls the readers have deferred.
    pub(super) fn flush(&self) {
        // Drained in place under the lock, which only readers take: the
        // vectors keep their room, so deferring costs no allocation per
        // call (taking them out cost one: 2 -> 3 per call in rpc-bench).
        let mut deferred = lock(&self.deferred);
        let Deferred { replies, calls } = &mut *deferred;
        // One hand-over for the whole burst: the small replies are already
        // copied together.
        self.outbox.send_batch(replies);
        for call in calls.drain(..) {
            self.launch(call);
        }
    }

    /// Handles the message a frame carries: a call that is started comes
    /// back to be polled; anything else is done here. An error says why the
    /// connection must close. Never waits.
    ///
    /// The own reader passes its stamp: from the moment a request's id is
    /// known to be free, the watchdog watches (the interceptor and the
    /// service are user code), and the id counts as in flight until
    /// [`Calls::handled_here`], so that a stand-in reading meanwhile
    /// catches a request that reuses it.
    pub(super) fn handle(
        &self,
        payload: Bytes,
        own: Option<&Stamp>,
    ) -> Result<Option<Started>, String> {
        let (id, service, method, deadline, metadata, schema, streams, body) =
            match envelope::decode(&payload) {
                Ok(Message::Request {
                    id,
                    service,
                    method,
                    deadline,
                    metadata,
                    schema,
                    streams,
                    body,
                }) => (
                    id, service, method, deadline, metadata, schema, streams, body,
                ),
                Ok(Message::Items {
                    id,
                    count,
                    items,
                    cost,
                }) => {
                    if count == 0 {
                        // Useless from a client, and its credit comes back
                        // at once: free work, unless counted.
                        self.control_frame("empty stream item frames")?;
                    }
                    let routed = self.streams.items(id, count, items, cost)?;
                    return self.routed(routed, "stream items for calls not running");
                }
                Ok(Message::End { id }) => {
                    let routed = self.streams.end(id)?;
                    return self.routed(routed, "stream ends for calls not running");
                }
                Ok(Message::Credit { id, bytes }) => {
                    // A grant is cheap, so tiny ones could come at line
                    // rate. rpc-core clients grant 128 KiB and more at a
                    // time (and one per server stream as it opens, which a
                    // review saw trip the limit when every grant counted):
                    // only small grants count.
                    if bytes < crate::stream::INITIAL_CREDIT {
                        self.control_frame("small stream credit grants")?;
                    }
                    self.streams.credit(id, bytes)?;
                    return Ok(None);
                }
                Ok(Message::Cancel { id }) => return self.cancel(id).map(|()| None),
                Ok(Message::Ping { token }) => return self.pong(token).map(|()| None),
                Ok(Message::Pong { .. }) => return self.control_frame("pongs").map(|()| None),
                Ok(Message::Response { .. } | Message::Drain { .. } | Message::Stop { .. }) => {
                    return Err("the client sent a message only servers send".to_owned());
                }
                Err(e) => return Err(format!("protocol violation: {e}")),
            };
        if id == u64::MAX {
            // A drain announces one more than the highest id read, which
            // this id would overflow.
            return Err("request id 2^64-1 is reserved".to_owned());
        }
        if self.running.contains(id) || self.polling.load(Ordering::Relaxed) == id {
            return Err(format!("request id {id} is already in flight"));
        }
        if let Some(stamp) = own {
            // Stored before the watchdog's SeqCst stamp, which a stand-in
            // is started after, so a stand-in always sees it.
            self.polling.store(id, Ordering::Relaxed);
            self.shared.watchdog.enter(stamp);
        }
        self.first_unread.fetch_max(id + 1, Ordering::Relaxed);
        let span = trace::server(service, method, id, self.peer.addr(), metadata);
        let meter = meter::Call::start(meter::Side::Server, || self.labels(service, method));
        // Made only if an interceptor attaches something.
        let attached = RefCell::new(None);
        let admitted = trace::within(&span, || {
            self.admit(id, service, method, deadline, metadata, &attached)
        });
        let target = match admitted {
            Ok(target) => target,
            Err(refusal) => {
                ended(&span, meter, refusal.code());
                self.reply(refusal);
                return Ok(None);
            }
        };
        // Only calls that run keep a connection from being idle: one a
        // stranger sends every two minutes to be refused must not hold
        // its place for ever.
        self.requests_read.fetch_add(1, Ordering::Relaxed);
        // Capped on receipt (envelope::MAX_DEADLINE), so this cannot overflow.
        let deadline = deadline.map(|left| Instant::now() + left);
        // The whole frame, not only the arguments: the names, metadata and
        // extensions come with it, and a layered call keeps all of them.
        let size = payload.len();
        let inline = body.len() <= INLINE_BODY_LIMIT;
        let mut request = Request::new(id, body, self.shared.accept.max_frame_length);
        if let Some(claim) = schema {
            let may_read = |bytes: usize| {
                u32::try_from(bytes).is_ok_and(|bytes| lock(&self.schema_reads).take(bytes))
            };
            match self.shared.schemas.agree(service, method, claim, may_read) {
                Ok(agreement) => request.agreement = Some(Box::new(agreement)),
                Err(refused) => {
                    let refusal = match refused {
                        Refused::Mismatch(message) => {
                            Reply::error(id, Status::SCHEMA_MISMATCH, &message)
                        }
                        Refused::Busy => Reply::error(
                            id,
                            Status::RESOURCE_EXHAUSTED,
                            "the call was not run: this connection sent more schemas the server \
                             had not read than it reads (1 MiB at once, 64 KiB a second after that)",
                        ),
                    };
                    ended(&span, meter, refusal.code());
                    self.reply(refusal);
                    return Ok(None);
                }
            }
        }
        let mut context = CallContext::new(
            &payload,
            service.as_bytes(),
            method.as_bytes(),
            metadata.block(),
            id,
            self.peer.clone(),
            deadline,
        );
        let attached = attached.into_inner();
        if streams != 0 {
            request.streams = Some(streams::open(
                &self.streams,
                &self.link,
                id,
                streams,
                self.shared.stream_window,
            ));
        }
        if let Some(layered) = &self.shared.layered {
            let mut call = Call::new(
                request,
                slice_of(&payload, service.as_bytes()),
                slice_of(&payload, method.as_bytes()),
                slice_of(&payload, metadata.block()),
                self.peer.clone(),
                deadline,
            );
            // Layers see what interceptors attached; the routed service
            // hands all of it to the context.
            if let Some(attached) = attached {
                *call.extensions_mut() = attached;
            }
            return Ok(Some(Started {
                id,
                future: Box::pin(layer::run(layered.clone(), call)),
                span,
                meter,
                context: Some(context),
                deadline,
                size,
                inline,
            }));
        }
        if let Some(attached) = attached {
            context.attach(attached);
        }
        // Generated `call`s only build a future, but a hand-written one could panic.
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| target.call(method, request)));
        let refusal = match started {
            Ok(Some(future)) => {
                return Ok(Some(Started {
                    id,
                    future,
                    span,
                    meter,
                    context: Some(context),
                    deadline,
                    size,
                    inline,
                }));
            }
            Ok(None) => Reply::error(
                id,
                Status::UNKNOWN_METHOD,
                &format!("service `{service}` has no method `{method}`"),
            ),
            Err(panic) => panicked(id, panic),
        };
        ended(&span, meter, refusal.code());
        self.reply(refusal);
        Ok(None)
    }

    /// The service and method names a call is counted under in the
    /// metrics: the names it gave if the server has them, `unknown` if not,
    /// so that a client cannot make labels without bound.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn labels<'a>(&self, service: &'a str, method: &'a str) -> (&'a str, &'a str) {
        const UNKNOWN: &str = "unknown";
        match self.shared.router.get(service) {
            None => (UNKNOWN, UNKNOWN),
            Some(target) if target.methods().contains(&method) => (service, method),
            Some(_) => (service, UNKNOWN),
        }
    }

    /// The own reader is done with the frame it passed its stamp for: the
    /// call it started has been answered or counted as running.
    pub(super) fn handled_here(&self, stamp: &Stamp) {
        self.polling.store(NOT_POLLING, Ordering::Relaxed);
        self.shared.watchdog.leave(stamp);
    }

    /// Polls a started call once; if it is not done, moves it to a task.
    pub(super) fn poll_here(&self, mut call: Started) -> Result<(), String> {
        let polled = trace::within(&call.span, || {
            crate::context::within(&mut call.context, || poll_once(&mut call.future))
        });
        let reply = match polled {
            Ok(Poll::Ready(reply)) => reply,
            Err(panic) => panicked(call.id, panic),
            Ok(Poll::Pending) => return self.spawn(call),
        };
        trace::within(&call.span, || discard(call.id, call.future));
        ended(&call.span, call.meter, reply.code());
        self.reply(reply);
        Ok(())
    }

    /// The service to run a call, or the answer to a call that must not
    /// start: rejected by the interceptor (checked first, so that strangers
    /// learn nothing of the services), addressed to no service, over the
    /// connection's call limit, or out of time.
    fn admit(
        &self,
        id: u64,
        service: &str,
        method: &str,
        deadline: Option<std::time::Duration>,
        metadata: Metadata<'_>,
        attached: &RefCell<Option<Extensions>>,
    ) -> Result<&Arc<dyn Service>, Reply> {
        for interceptor in &self.shared.interceptors {
            let call = CallInfo {
                service,
                method,
                metadata,
                peer: &self.peer,
                attached,
            };
            let checked = std::panic::catch_unwind(AssertUnwindSafe(|| interceptor.check(&call)));
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(rejection)) => {
                    tracing::debug!(request_id = id, service, method, peer = %self.peer.addr(), "call rejected: {rejection}");
                    return Err(Reply::refused(id, &rejection));
                }
                Err(panic) => return Err(panicked(id, panic)),
            }
        }
        let Some(target) = self.shared.router.get(service) else {
            return Err(Reply::error(
                id,
                Status::UNKNOWN_SERVICE,
                &format!("the server has no service `{service}`"),
            ));
        };
        let limit = self.shared.max_concurrent_calls;
        if self.running.count() >= limit {
            return Err(Reply::error(
                id,
                Status::RESOURCE_EXHAUSTED,
                &format!("{limit} calls are already running on this connection"),
            ));
        }
        if deadline.is_some_and(|left| left.is_zero()) {
            return Err(Reply::error(
                id,
                Status::DEADLINE_EXCEEDED,
                "the call's deadline had passed when it arrived",
            ));
        }
        Ok(target)
    }

    /// Counts a call as running (a cancel finds it from now on) and defers
    /// moving it to a task of its own, which answers it unless the
    /// connection ends first.
    pub(super) fn spawn(&self, call: Started) -> Result<(), String> {
        let Started {
            id,
            future,
            span,
            meter,
            mut context,
            deadline,
            size,
            ..
        } = call;
        if let Some(context) = &mut context {
            context.detach();
        }
        let cancelled = self.gone.child_token();
        let Some(running) = self.running.start(id, size, cancelled.clone()) else {
            return Err(format!("request id {id} is already in flight"));
        };
        lock(&self.deferred).calls.push(Registered {
            id,
            span,
            meter,
            context,
            future,
            deadline,
            cancelled,
            running,
        });
        Ok(())
    }

    fn launch(&self, call: Registered) {
        let Registered {
            id,
            mut future,
            span,
            meter,
            mut context,
            deadline,
            cancelled,
            running,
        } = call;
        let outbox = self.outbox.clone();
        let gone = self.gone.clone();
        tokio::spawn(async move {
            let reply = tokio::select! {
                biased;
                () = cancelled.cancelled() => {
                    (!gone.is_cancelled()).then(|| {
                        Reply::error(id, Status::CANCELLED, "the client cancelled the call")
                    })
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() =>
                {
                    Some(Reply::error(id, Status::DEADLINE_EXCEEDED, "the call ran past its deadline"))
                }
                ended = AssertUnwindSafe(std::future::poll_fn(|cx| {
                    trace::within(&span, || {
                        crate::context::within(&mut context, || future.as_mut().poll(cx))
                    })
                }))
                .catch_unwind() => Some(match ended {
                    Ok(reply) => reply,
                    Err(panic) => panicked(id, panic),
                }),
            };
            // Within the context: a guard in a handler cut off by a cancel or
            // its deadline may ask which call it was.
            trace::within(&span, || {
                crate::context::within(&mut context, || discard(id, future))
            });
            // The handler's future is dropped by now: the call no longer
            // runs, and its id may be used again.
            drop(running);
            // No reply: the connection went, and the call with it.
            ended(
                &span,
                meter,
                reply.as_ref().map_or(Some(Code::Cancelled), Reply::code),
            );
            if let Some(reply) = reply {
                let _ = outbox.send(reply.into_frame());
            }
        });
    }

    /// Stops the call with `id` if it is still running; its task answers
    /// it with CANCELLED. A cancel for any other id is late (the answer is
    /// on its way) or wrong, and harmless either way, within the rate of
    /// frames that carry no call.
    fn cancel(&self, id: u64) -> Result<(), String> {
        match self.running.cancel(id) {
            Cancelled::Now => return Ok(()),
            // A call stays registered until its task sees the cancel, and
            // repeating the cancel meanwhile must not be free.
            Cancelled::Already => return self.control_frame("cancels of calls already cancelled"),
            Cancelled::NotRunning => {}
        }
        tracing::trace!(request_id = id, "cancel for a call not running; ignored");
        self.control_frame("cancels of calls not running")
    }

    /// Reading is over (`why`): the clients' streams to the calls still
    /// running end with an error rather than wait for items that cannot
    /// come.
    pub(super) fn end_input_streams(&self, why: &str) {
        self.streams
            .end_inbound(|| crate::error::RpcError::ConnectionClosed {
                reason: why.to_owned(),
            });
    }

    /// A stream message that found no stream is free work, counted as such.
    fn routed(&self, routed: Routed, what: &str) -> Result<Option<Started>, String> {
        match routed {
            Routed::Done => Ok(None),
            Routed::Unknown => self.control_frame(what).map(|()| None),
        }
    }

    /// Counts a frame that costs work but carries no call.
    fn control_frame(&self, what: &str) -> Result<(), String> {
        let allowed = lock(&self.control).allow();
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "the client sent too many {what} (frames that carry no call): more than \
                 {CONTROL_BURST} at once, or more than one per {CONTROL_EVERY:?} after that"
            ))
        }
    }

    /// Answers a ping, unless the client pings too often.
    fn pong(&self, token: u64) -> Result<(), String> {
        let min = self.shared.min_ping_interval;
        if !lock(&self.pings).allow() {
            return Err(format!(
                "the client pinged more than {PING_BURST} times at once, or more often \
                 than every {min:?} after that"
            ));
        }
        let mut pong = BytesMut::new();
        envelope::encode_ping(&mut pong, token, true);
        self.defer(pong);
        Ok(())
    }
}

/// `part` of `payload` as a handle on the same buffer, without a copy.
fn slice_of(payload: &Bytes, part: &[u8]) -> Bytes {
    if part.is_empty() {
        Bytes::new()
    } else {
        payload.slice_ref(part)
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these, but a poisoned value is still sound.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `future` once with a waker that wakes nobody, catching a panic: a
/// call still pending moves to a task, whose first poll registers the real
/// waker.
fn poll_once(future: &mut ResponseFuture) -> Result<Poll<Reply>, Box<dyn Any + Send>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)))
}

/// Drops a call's future, which is user code too: a panic in its `Drop`
/// would otherwise unwind the task that dropped it (the connection's
/// reader, for a call answered where it was read) and lose the reply.
fn discard(id: u64, future: ResponseFuture) {
    if std::panic::catch_unwind(AssertUnwindSafe(move || drop(future))).is_err() {
        tracing::warn!(
            request_id = id,
            "a handler's future panicked while it was dropped"
        );
    }
}

/// Records how a call ended, in its span and its metrics.
fn ended(span: &Option<tracing::Span>, meter: meter::Call, code: Option<Code>) {
    if let Some(span) = span {
        trace::ended(span, code);
    }
    meter.ended(code);
}

fn panicked(id: u64, panic: Box<dyn Any + Send>) -> Reply {
    let message = crate::panic::message(&*panic);
    tracing::warn!(request_id = id, "handler panicked: {message}");
    Reply::error(id, Status::HANDLER_PANICKED, &message)
}
