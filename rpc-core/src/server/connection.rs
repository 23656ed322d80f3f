//! One accepted connection: read requests, start each call, write the
//! replies in batches.
//!
//! A call is polled once where it is read. Most handlers finish without
//! waiting for anything, and answering those in place saves a task spawn and
//! two wake-ups per call; a call that does wait moves to a task of its own,
//! so it never holds up the calls read after it.

use std::any::Any;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::backlog::Backlog;
use super::interceptor::{CallInfo, Peer};
use super::rate::Rate;
use super::running::Running;
use crate::envelope::{self, Message, Status};
use crate::frame::Incoming;
use crate::metadata::Metadata;
use crate::service::{Reply, Request, ResponseFuture, Service};
use crate::transport::{self, FrameWriter};

/// Most replies taken off the queue for one write.
const MAX_BATCH: usize = 256;

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

/// A read buffer that held a frame at least this large is replaced once
/// the connection has received no such frame for [`BUFFER_KEPT`]. While
/// large frames keep coming the buffer is reused in place, which is what
/// makes bulk calls fast; an idle connection must not keep the memory of
/// the largest call it ever sent.
const LARGE_FRAME: usize = 64 * 1024;
const BUFFER_KEPT: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes a queued reply costs beyond its buffer: a queue slot and the
/// allocator's header, rounded up.
const QUEUED_FRAME_OVERHEAD: usize = 64;

/// How long a connection closed for idleness or by a drain goes on reading
/// (and dropping) what its client sends, so that closing does not reset
/// the connection under replies the client has yet to read.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Calls with arguments up to this size are polled once where they are
/// read; larger ones go straight to a task of their own, so that copying
/// their payload does not stall reading (see the module docs).
const INLINE_BODY_LIMIT: usize = 8 * 1024;

/// Serves one connection until it ends, logging why it ended. Once the
/// server drains, the connection ends by the grace deadline at the latest.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut drain = shared.drain.clone();
    // One future: `select!` drops the other branch as soon as this one's
    // future completes, and `run` must go on until the deadline itself.
    let grace_over = async {
        let deadline = drain_started(&mut drain).await;
        tokio::time::sleep_until(deadline).await;
    };
    let ended = tokio::select! {
        ended = run(stream, peer, &shared) => ended,
        () = grace_over => Err("the shutdown grace period ended".to_owned()),
    };
    match ended {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(reason) => shared.log_closed(&peer, &reason),
    }
}

/// The state of one connection that its calls share.
struct Calls<'a> {
    shared: &'a Shared,
    replies: mpsc::UnboundedSender<BytesMut>,
    /// Bytes of replies queued and not yet written; the queue above is
    /// bounded by the reader pausing while this is full.
    backlog: Arc<Backlog>,
    /// Calls running on tasks of their own, until they end: they count
    /// against the limit, a cancel message stops one, and a request reusing
    /// the id of one is a protocol violation. Calls answered where they
    /// were read never enter it.
    running: Arc<Running>,
    /// One more than the highest request id read: what a drain announces.
    first_unread: AtomicU64,
    /// How often the client may ping.
    pings: std::sync::Mutex<Rate>,
    /// How often the client may send frames that carry no call.
    control: std::sync::Mutex<Rate>,
    /// Cancelled when the connection ends: calls still running then are
    /// dropped, so a client cannot leave work behind by disconnecting.
    gone: CancellationToken,
    /// Who is at the other end, for the interceptor.
    peer: Peer,
}

/// How the read loop ended without an error.
enum Ended {
    /// The client finished sending.
    ByClient,
    /// The server is shutting down.
    Draining,
    /// No call was open and nothing arrived for the idle timeout.
    Idle,
}

async fn run(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<(), String> {
    let accepted = transport::accept(stream, &shared.accept).await?;
    let mut reader = accepted.reader;
    let writer = accepted.writer;
    let (replies, replies_rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel();
    let backlog = Arc::new(Backlog::new(shared.max_queued_reply_bytes));
    let mut writing = tokio::spawn(write_loop(writer, replies_rx, stopped, backlog.clone()));
    let calls = Calls {
        shared,
        replies,
        backlog,
        running: Arc::default(),
        first_unread: AtomicU64::new(0),
        pings: std::sync::Mutex::new(Rate::new(shared.min_ping_interval, PING_BURST)),
        control: std::sync::Mutex::new(Rate::new(CONTROL_EVERY, CONTROL_BURST)),
        gone: CancellationToken::new(),
        peer: Peer::new(peer, accepted.identity),
    };
    // However `run` ends (returning, or dropped at the grace deadline).
    let _cancel_calls = calls.gone.clone().drop_guard();
    let mut drain = shared.drain.clone();
    // Made once: a fresh `wait_for` per frame would take the watch's lock
    // per frame, where polling this one again is an atomic load.
    let draining = drain_started(&mut drain);
    tokio::pin!(draining);
    // Checked once per idle timeout rather than reset per frame, which
    // would cost a timer update on every frame of a busy connection.
    let idle_check = tokio::time::sleep(shared.idle_timeout);
    tokio::pin!(idle_check);
    let mut frames_seen: u64 = 0;
    let mut frames_at_check: u64 = 0;

    // Set while a frame has begun to arrive but not finished.
    let mut frame_deadline: Option<Instant> = None;
    // Set after a large frame: when to let go of the buffer it grew.
    let mut release_buffer: Option<Instant> = None;
    let ended = loop {
        if calls.backlog.held() >= shared.max_queued_reply_bytes {
            // The client is not reading its replies as fast as it sends
            // calls: stop reading until the writer catches up.
            tokio::select! {
                biased;
                _ = &mut draining => break Ok(Ended::Draining),
                written = &mut writing => break Err(writer_ended(written)),
                () = calls.backlog.below_limit() => {}
                _ = tokio::time::sleep_until(frame_deadline.unwrap_or_else(Instant::now)),
                    if frame_deadline.is_some() =>
                {
                    break Err(frame_late(shared.frame_timeout));
                }
            }
            // A partial frame's deadline keeps running through the pause:
            // the pause lasts only while the client does not read, and
            // renewing the deadline here would let a client hold a partial
            // frame (and the receive budget) for ever by reading a little
            // now and then.
        }
        let next = tokio::select! {
            biased;
            _ = &mut draining => break Ok(Ended::Draining),
            written = &mut writing => break Err(writer_ended(written)),
            next = reader.next() => next,
            _ = tokio::time::sleep_until(frame_deadline.unwrap_or_else(Instant::now)),
                if frame_deadline.is_some() =>
            {
                break Err(frame_late(shared.frame_timeout));
            }
            _ = tokio::time::sleep_until(release_buffer.unwrap_or_else(Instant::now)),
                if release_buffer.is_some() =>
            {
                release_buffer = None;
                let buffer = reader.read_buffer_mut();
                // What is left is at most a frame being received.
                *buffer = BytesMut::from(&buffer[..]);
                continue;
            }
            () = &mut idle_check => {
                let quiet = frames_seen == frames_at_check
                    && calls.running.count() == 0
                    && calls.backlog.held() == 0;
                if quiet {
                    break Ok(Ended::Idle);
                }
                frames_at_check = frames_seen;
                idle_check.as_mut().reset(Instant::now() + shared.idle_timeout);
                continue;
            }
        };
        frames_seen += 1;
        match next {
            None => break Ok(Ended::ByClient),
            Some(Err(e)) => break Err(format!("bad frame: {e}")),
            Some(Ok(Incoming::Started)) => {
                frame_deadline = Some(Instant::now() + shared.frame_timeout);
            }
            Some(Ok(Incoming::Frame(payload))) => {
                frame_deadline = None;
                if payload.len() >= LARGE_FRAME {
                    release_buffer = Some(Instant::now() + BUFFER_KEPT);
                }
                if let Err(reason) = calls.dispatch(payload.freeze()).await {
                    break Err(reason);
                }
            }
        }
    };
    match ended {
        // The client is gone (rpc-core clients never half-close): its calls
        // still running are dropped, the replies already made are sent.
        Ok(Ended::ByClient) => {
            calls.gone.cancel();
            drop(calls);
            let _ = writing.await;
            Ok(())
        }
        // Say which requests were read, let those still running answer,
        // then read and drop whatever the client sent meanwhile until it
        // closes, so that closing does not reset the connection under
        // replies it has yet to read. `serve` bounds a drain by the grace
        // period; an idle connection has nothing running.
        Ok(ended @ (Ended::Draining | Ended::Idle)) => {
            let mut notice = BytesMut::new();
            envelope::encode_drain(&mut notice, calls.first_unread.load(Ordering::Relaxed));
            let _ = calls.replies.send(notice);
            drop(calls);
            let _ = writing.await;
            let linger = async { while let Some(Ok(_)) = reader.next().await {} };
            let _ = tokio::time::timeout(LINGER, linger).await;
            if matches!(ended, Ended::Idle) {
                tracing::debug!(%peer, "closed an idle connection");
            }
            Ok(())
        }
        // A broken stream cannot be trusted further: close at once.
        Err(reason) => {
            drop(stop);
            Err(reason)
        }
    }
}

fn frame_late(timeout: std::time::Duration) -> String {
    format!("a frame was not finished within {timeout:?}")
}

/// Why the writer stopped while the reader still ran.
fn writer_ended(written: Result<Result<(), String>, tokio::task::JoinError>) -> String {
    match written {
        Ok(Err(reason)) => reason,
        Ok(Ok(())) => "the writer stopped".to_owned(),
        Err(e) => format!("the writer failed: {e}"),
    }
}

/// Completes when the server starts draining, with its grace deadline.
/// Never completes if the server is dropped without a shutdown: its
/// connections then go on being served.
async fn drain_started(drain: &mut watch::Receiver<Option<Instant>>) -> Instant {
    let deadline = match drain.wait_for(Option::is_some).await {
        Ok(deadline) => *deadline,
        Err(_) => None,
    };
    match deadline {
        Some(deadline) => deadline,
        None => std::future::pending().await,
    }
}

impl Calls<'_> {
    fn reply(&self, reply: Reply) {
        send(&self.replies, &self.backlog, reply.into_frame());
    }

    /// Starts the call a frame carries, or says why the connection must
    /// close. Never waits: it only polls the call once.
    async fn dispatch(&self, payload: Bytes) -> Result<(), String> {
        let (id, service, method, deadline, metadata, body) = match envelope::decode(&payload) {
            Ok(Message::Request {
                id,
                service,
                method,
                deadline,
                metadata,
                body,
            }) => (id, service, method, deadline, metadata, body),
            Ok(Message::Cancel { id }) => return self.cancel(id),
            Ok(Message::Ping { token }) => return self.pong(token),
            Ok(Message::Pong { .. }) => return self.control_frame("pongs"),
            Ok(Message::Response { .. } | Message::Drain { .. }) => {
                return Err("the client sent a message only servers send".to_owned());
            }
            Err(e) => return Err(format!("protocol violation: {e}")),
        };
        if id == u64::MAX {
            // A drain announces one more than the highest id read, which
            // this id would overflow.
            return Err("request id 2^64-1 is reserved".to_owned());
        }
        if self.running.contains(id) {
            return Err(format!("request id {id} is already in flight"));
        }
        self.first_unread.fetch_max(id + 1, Ordering::Relaxed);
        let target = match self.admit(id, service, method, deadline, metadata) {
            Ok(target) => target,
            Err(refusal) => {
                self.reply(refusal);
                return Ok(());
            }
        };
        // Capped on receipt (envelope::MAX_DEADLINE), so this cannot overflow.
        let deadline = deadline.map(|left| Instant::now() + left);
        let inline = body.len() <= INLINE_BODY_LIMIT;
        let request = Request::new(id, body, self.shared.accept.max_frame_length);
        // Generated `call`s only build a future, but a hand-written one could panic.
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| target.call(method, request)));
        let mut future = match started {
            Ok(Some(future)) => future,
            Ok(None) => {
                self.reply(Reply::error(
                    id,
                    Status::UNKNOWN_METHOD,
                    &format!("service `{service}` has no method `{method}`"),
                ));
                return Ok(());
            }
            Err(panic) => {
                self.reply(panicked(id, panic));
                return Ok(());
            }
        };
        let polled = if inline {
            poll_once(&mut future).await
        } else {
            Ok(Poll::Pending)
        };
        match polled {
            Ok(Poll::Ready(reply)) => self.reply(reply),
            Err(panic) => self.reply(panicked(id, panic)),
            Ok(Poll::Pending) => self.spawn(id, future, deadline)?,
        }
        Ok(())
    }

    /// The service to run a call, or the answer to a call that must not
    /// start: rejected by the interceptor (checked first, so that strangers
    /// learn nothing of the services), addressed to no service, over the
    /// connection's limit, or out of time.
    fn admit(
        &self,
        id: u64,
        service: &str,
        method: &str,
        deadline: Option<std::time::Duration>,
        metadata: Metadata<'_>,
    ) -> Result<&Arc<dyn Service>, Reply> {
        if let Some(interceptor) = &self.shared.interceptor {
            let call = CallInfo {
                service,
                method,
                metadata,
                peer: &self.peer,
            };
            let checked = std::panic::catch_unwind(AssertUnwindSafe(|| interceptor.check(&call)));
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(rejection)) => {
                    tracing::debug!(request_id = id, service, method, peer = %self.peer.addr(), "call rejected: {rejection}");
                    return Err(Reply::error(id, rejection.status, &rejection.message));
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

    /// Moves a call that waits to a task of its own, which answers it
    /// unless the connection ends first.
    fn spawn(
        &self,
        id: u64,
        future: ResponseFuture,
        deadline: Option<Instant>,
    ) -> Result<(), String> {
        let cancelled = self.gone.child_token();
        let Some(running) = self.running.start(id, cancelled.clone()) else {
            return Err(format!("request id {id} is already in flight"));
        };
        let backlog = self.backlog.clone();
        let replies = self.replies.clone();
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
                ended = AssertUnwindSafe(future).catch_unwind() => Some(match ended {
                    Ok(reply) => reply,
                    Err(panic) => panicked(id, panic),
                }),
            };
            // The handler's future is dropped by now: the call no longer
            // runs, and its id may be used again.
            drop(running);
            if let Some(reply) = reply {
                send(&replies, &backlog, reply.into_frame());
            }
        });
        Ok(())
    }

    /// Stops the call with `id` if it is still running; its task answers
    /// it with CANCELLED. A cancel for any other id is late (the answer is
    /// on its way) or wrong, and harmless either way, within the rate of
    /// frames that carry no call.
    fn cancel(&self, id: u64) -> Result<(), String> {
        if self.running.cancel(id) {
            return Ok(());
        }
        tracing::trace!(request_id = id, "cancel for a call not running; ignored");
        self.control_frame("cancels of calls not running")
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
}

impl Calls<'_> {
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
        send(&self.replies, &self.backlog, pong);
        Ok(())
    }
}

/// Queues a frame for the writer, counting it against the backlog until
/// it is written.
fn send(replies: &mpsc::UnboundedSender<BytesMut>, backlog: &Backlog, frame: BytesMut) {
    backlog.add(held_by(&frame));
    // Fails only if the connection already closed; nobody to tell.
    if let Err(unsent) = replies.send(frame) {
        backlog.sub(held_by(&unsent.0));
    }
}

/// What a queued frame costs in memory: its allocation, not just its
/// bytes (a 16-byte reply sits in a 128-byte buffer), plus its slot in the
/// queue and the allocator's own bookkeeping. Counting only the bytes let
/// 4 MiB of small replies take 44 MiB.
fn held_by(frame: &BytesMut) -> usize {
    frame.capacity() + QUEUED_FRAME_OVERHEAD
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these, but a poisoned value is still sound.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `future` once, catching a panic.
async fn poll_once(future: &mut ResponseFuture) -> Result<Poll<Reply>, Box<dyn Any + Send>> {
    poll_fn(|cx| {
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        Poll::Ready(polled)
    })
    .await
}

fn panicked(id: u64, panic: Box<dyn Any + Send>) -> Reply {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
    tracing::warn!(request_id = id, "handler panicked: {message}");
    Reply::error(id, Status::HANDLER_PANICKED, &message)
}

async fn write_loop(
    mut writer: FrameWriter,
    mut replies: mpsc::UnboundedReceiver<BytesMut>,
    mut stopped: oneshot::Receiver<()>,
    backlog: Arc<Backlog>,
) -> Result<(), String> {
    // Empty until used: an idle connection should cost next to nothing.
    let mut frames = Vec::new();
    loop {
        let taken = tokio::select! {
            biased;
            _ = &mut stopped => return Ok(()),
            taken = replies.recv_many(&mut frames, MAX_BATCH) => taken,
        };
        transport::gather_ready(&mut replies, &mut frames, MAX_BATCH).await;
        if taken == 0 {
            writer.shutdown().await;
            return Ok(());
        }
        let bytes: usize = frames.iter().map(held_by).sum();
        tokio::select! {
            biased;
            _ = &mut stopped => return Ok(()),
            written = writer.write_batch(&mut frames) => if let Err(e) = written {
                return Err(format!("writing replies failed: {e}"));
            },
        }
        backlog.sub(bytes);
    }
}
