//! The two tasks behind a [`Channel`](super::Channel): one writes requests,
//! one routes replies to the calls waiting for them.
//!
//! Callers never share a lock. Each call sends its finished frame and a
//! oneshot sender down one queue. The writer takes everything queued, gives
//! each request the next id (so ids rise in wire order), passes the senders
//! on to the reader's queue (which the reader only drains when a reply needs
//! it, so passing them wakes nobody), then writes all the frames in as few
//! system calls as it can. The reader owns the in-flight map; since a
//! registration is queued before its request is written, a reply whose id
//! is not yet in the map is found by draining the registrations.
//!
//! A caller that gives up (drops its future) queues a notice behind its
//! request. The writer, having registered the request by then, pokes the
//! reader, which finds the calls whose callers are gone and sends a cancel
//! for each. Going through the writer's queue makes sure the reader finds
//! the call's registration when it looks; searching costs nothing per call,
//! and give-ups are rare.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot};

use super::limit::CallLimit;
use crate::envelope::{self, Message, Status};
use crate::frame::Incoming;
use crate::transport::{self, FrameReader, FrameWriter};

/// Most requests taken off the queue for one write.
const MAX_BATCH: usize = 256;

/// Why calls fail after the server announced its shutdown.
const SHUTTING_DOWN: &str = "the server is shutting down";

/// What callers queue for the writer.
pub(crate) enum Outgoing {
    /// A request on its way out; the writer gives it its id.
    Call {
        frame: BytesMut,
        reply: oneshot::Sender<Answer>,
    },
    /// A caller gave up on a call it queued earlier.
    GaveUp,
}

/// How a call ends, as far as the connection can tell.
pub(crate) enum Answer {
    /// The server answered.
    Response(Response),
    /// The server will not run the call (it is draining), or the request
    /// was never written.
    NotProcessed,
}

/// A server's answer to one call.
pub(crate) struct Response {
    pub(crate) status: Status,
    pub(crate) body: Bytes,
}

/// Why the connection ended or stopped taking calls; the first reason
/// recorded wins.
#[derive(Debug, Default)]
pub(crate) struct Closed(OnceLock<String>);

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

/// A call waiting for its reply, on its way from the writer to the reader.
type Registration = (u64, oneshot::Sender<Answer>);

/// How often to probe a quiet connection, and how long to wait for any
/// sign of life after a probe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// What a connection's callers share with its tasks.
pub(crate) struct Handles {
    pub(crate) outgoing: mpsc::UnboundedSender<Outgoing>,
    pub(crate) closed: Arc<Closed>,
}

/// Starts the connection's tasks; the queue closes when they end.
///
/// `permits`, when the server limits calls in flight, holds one permit per
/// call not yet answered: callers take one before sending, the reader gives
/// it back when the call ends (even if the caller has gone), and closes it
/// when the connection ends.
pub(crate) fn spawn(
    frames_in: FrameReader,
    writer: FrameWriter,
    permits: Option<Arc<CallLimit>>,
    keepalive: Option<Keepalive>,
) -> Handles {
    let (outgoing_tx, outgoing_rx) = mpsc::unbounded_channel();
    // Pings and pongs from the reader; rare, so kept off the calls' queue.
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (registrations_tx, registrations_rx) = mpsc::unbounded_channel();
    // Each task holds the sender of a oneshot the other waits on, so that
    // either one ending (and dropping it) ends the other.
    let (writer_alive, writer_done) = oneshot::channel::<()>();
    let (reader_alive, reader_done) = oneshot::channel::<()>();
    let closed = Arc::new(Closed::default());
    let gave_up = Arc::new(Notify::new());
    tokio::spawn(write_loop(
        writer,
        Queues {
            outgoing: outgoing_rx,
            control: control_rx,
            registrations: registrations_tx,
            gave_up: gave_up.clone(),
        },
        permits.clone(),
        reader_done,
        writer_alive,
        closed.clone(),
    ));
    let reader = Reader {
        in_flight: HashMap::default(),
        registrations: registrations_rx,
        first_unread: None,
        permits,
        control: control_tx,
        keepalive,
        gave_up,
    };
    tokio::spawn(reader.run(frames_in, writer_done, reader_alive, closed.clone()));
    Handles {
        outgoing: outgoing_tx,
        closed,
    }
}

/// What the writer reads from and hands on.
struct Queues {
    outgoing: mpsc::UnboundedReceiver<Outgoing>,
    /// Frames that are not calls: pings, pongs, cancels.
    control: mpsc::UnboundedReceiver<BytesMut>,
    registrations: mpsc::UnboundedSender<Registration>,
    /// Wakes the reader to cancel the calls whose callers gave up.
    gave_up: Arc<Notify>,
}

async fn write_loop(
    mut writer: FrameWriter,
    queues: Queues,
    permits: Option<Arc<CallLimit>>,
    mut reader_done: oneshot::Receiver<()>,
    _alive: oneshot::Sender<()>,
    closed: Arc<Closed>,
) {
    // Empty until used; they grow to the batches actually seen.
    let mut batch = Vec::new();
    let mut frames = Vec::new();
    let mut next_id: u64 = 0;
    let Queues {
        mut outgoing,
        mut control,
        registrations,
        gave_up,
    } = queues;
    loop {
        let taken = tokio::select! {
            biased;
            _ = &mut reader_done => return,
            Some(probe) = control.recv() => {
                frames.push(probe);
                if let Err(e) = writer.write_batch(&mut frames).await {
                    closed.set(format!("writing to the server failed: {e}"));
                    return;
                }
                continue;
            }
            taken = outgoing.recv_many(&mut batch, MAX_BATCH) => taken,
        };
        transport::gather_ready(&mut outgoing, &mut batch, MAX_BATCH).await;
        if taken == 0 {
            // Every Channel clone is gone, and with them every caller.
            closed.set("the channel was dropped");
            writer.shutdown().await;
            return;
        }
        if closed.is_closed() {
            // Draining: the server would not read these.
            for item in batch.drain(..) {
                if let Outgoing::Call { reply, .. } = item {
                    let _ = reply.send(Answer::NotProcessed);
                }
            }
            continue;
        }
        let mut someone_gave_up = false;
        for item in batch.drain(..) {
            let (mut frame, reply) = match item {
                Outgoing::Call { frame, reply } => (frame, reply),
                Outgoing::GaveUp => {
                    someone_gave_up = true;
                    continue;
                }
            };
            if reply.is_closed() {
                // Its caller gave up before it was sent: send nothing.
                if let Some(permits) = &permits {
                    permits.release();
                }
                continue;
            }
            envelope::set_request_id(&mut frame, next_id);
            if registrations.send((next_id, reply)).is_err() {
                return;
            }
            next_id += 1;
            frames.push(frame);
        }
        if someone_gave_up {
            // After the registrations above: the reader will find them.
            gave_up.notify_one();
        }
        tokio::select! {
            biased;
            _ = &mut reader_done => return,
            written = writer.write_batch(&mut frames) => if let Err(e) = written {
                closed.set(format!("writing to the server failed: {e}"));
                return;
            },
        }
    }
}

/// A call the reader routes a reply to.
struct Waiting {
    caller: oneshot::Sender<Answer>,
    /// Whether a cancel went out after its caller gave up; the call still
    /// holds its permit until the server answers.
    cancel_sent: bool,
}

/// The reader's state: who waits for which reply.
struct Reader {
    in_flight: HashMap<u64, Waiting, BuildHasherDefault<IdHasher>>,
    registrations: mpsc::UnboundedReceiver<Registration>,
    /// Set by a drain message: requests with this id or higher were not read.
    first_unread: Option<u64>,
    permits: Option<Arc<CallLimit>>,
    /// Frames for the writer that are not calls: pings, pongs, cancels.
    control: mpsc::UnboundedSender<BytesMut>,
    keepalive: Option<Keepalive>,
    gave_up: Arc<Notify>,
}

/// Where the keepalive stands.
#[derive(Clone, Copy)]
enum Probe {
    /// Watching for silence; `seen` frames had arrived when the timer was set.
    Watching { seen: u64 },
    /// A ping is out; `seen` frames had arrived when it was sent.
    Waiting { seen: u64 },
}

impl Reader {
    async fn run(
        mut self,
        mut frames: FrameReader,
        mut writer_done: oneshot::Receiver<()>,
        _alive: oneshot::Sender<()>,
        closed: Arc<Closed>,
    ) {
        // Counts frames received; the keepalive compares counts rather
        // than resetting a timer on every frame.
        let mut seen: u64 = 0;
        let mut probe = Probe::Watching { seen };
        let period = self.keepalive.map_or(Duration::MAX, |k| k.interval);
        let timer = tokio::time::sleep(period);
        tokio::pin!(timer);
        // Made once and remade only when it fires: registering with the
        // Notify takes its lock, and this loop runs once per frame.
        let gave_up = self.gave_up.clone();
        let mut poked = Box::pin(gave_up.notified());
        let reason = loop {
            let frame = tokio::select! {
                biased;
                frame = frames.next() => frame,
                // The writer records its own reason before it ends.
                _ = &mut writer_done => break None,
                () = &mut poked => {
                    poked.set(gave_up.notified());
                    self.cancel_abandoned();
                    continue;
                }
                () = &mut timer, if self.keepalive.is_some() => {
                    let Some(keepalive) = self.keepalive else { continue };
                    let now = tokio::time::Instant::now();
                    probe = match probe {
                        Probe::Watching { seen: then } | Probe::Waiting { seen: then } if then != seen => {
                            timer.as_mut().reset(now + keepalive.interval);
                            Probe::Watching { seen }
                        }
                        Probe::Watching { .. } => {
                            let mut ping = BytesMut::new();
                            envelope::encode_ping(&mut ping, seen, false);
                            let _ = self.control.send(ping);
                            timer.as_mut().reset(now + keepalive.timeout);
                            Probe::Waiting { seen }
                        }
                        Probe::Waiting { .. } => break Some(format!(
                            "the server did not answer a keepalive ping within {:?}",
                            keepalive.timeout
                        )),
                    };
                    continue;
                }
            };
            seen += 1;
            let payload = match frame {
                None => break Some("the server closed the connection".to_owned()),
                Some(Err(e)) => break Some(format!("reading from the server failed: {e}")),
                Some(Ok(Incoming::Frame(payload))) => payload.freeze(),
                Some(Ok(Incoming::Started)) => continue,
            };
            match envelope::decode(&payload) {
                Ok(Message::Response { id, status, body }) => {
                    self.answer(id, Answer::Response(Response { status, body }));
                }
                Ok(Message::Drain { first_unread }) => {
                    tracing::debug!(first_unread, "{SHUTTING_DOWN}");
                    closed.set(SHUTTING_DOWN);
                    self.drain(first_unread);
                }
                Ok(Message::Ping { token }) => {
                    let mut pong = BytesMut::new();
                    envelope::encode_ping(&mut pong, token, true);
                    let _ = self.control.send(pong);
                }
                Ok(Message::Pong { token }) => tracing::trace!(token, "keepalive answered"),
                Ok(Message::Request { .. } | Message::Cancel { .. }) => {
                    break Some(
                        "protocol violation: the server sent a client's message".to_owned(),
                    );
                }
                Err(e) => break Some(format!("protocol violation: {e}")),
            }
        };
        if let Some(reason) = reason {
            tracing::debug!("connection closed: {reason}");
            closed.set(reason);
        }
        if let Some(permits) = &self.permits {
            permits.close();
        }
        // Returning drops `in_flight` and the registrations: every caller
        // still waiting wakes with the reason recorded above.
    }

    /// Hands `answer` to the call with `id`, if one waits for it.
    fn answer(&mut self, id: u64, answer: Answer) {
        let waiting = match self.in_flight.remove(&id) {
            Some(caller) => Some(caller),
            None => {
                self.take_registrations();
                self.in_flight.remove(&id)
            }
        };
        match waiting {
            // A caller that gave up has dropped its receiver; fine.
            Some(waiting) => self.finish(waiting.caller, answer),
            None => tracing::warn!(id, "reply for a request id not in flight; ignored"),
        }
    }

    /// Sends a cancel for each call whose caller has given up. The call
    /// stays in flight until the server answers it, since until then the
    /// server counts it against its limit.
    fn cancel_abandoned(&mut self) {
        self.take_registrations();
        for (&id, waiting) in &mut self.in_flight {
            if !waiting.cancel_sent && waiting.caller.is_closed() {
                waiting.cancel_sent = true;
                let mut cancel = BytesMut::new();
                envelope::encode_cancel(&mut cancel, id);
                let _ = self.control.send(cancel);
            }
        }
    }

    fn finish(&self, caller: oneshot::Sender<Answer>, answer: Answer) {
        let _ = caller.send(answer);
        if let Some(permits) = &self.permits {
            permits.release();
        }
    }

    /// Moves the registrations the writer has queued into the map, failing
    /// those the server has said it will not read.
    fn take_registrations(&mut self) {
        while let Ok((id, caller)) = self.registrations.try_recv() {
            match self.first_unread {
                Some(first) if id >= first => self.finish(caller, Answer::NotProcessed),
                _ => {
                    let waiting = Waiting {
                        caller,
                        cancel_sent: false,
                    };
                    self.in_flight.insert(id, waiting);
                }
            }
        }
    }

    /// The server read no request from `first_unread` on: those calls end
    /// now, the others still get their replies.
    fn drain(&mut self, first_unread: u64) {
        self.first_unread = Some(first_unread);
        self.take_registrations();
        let unread: Vec<u64> = self
            .in_flight
            .keys()
            .copied()
            .filter(|&id| id >= first_unread)
            .collect();
        for id in unread {
            if let Some(waiting) = self.in_flight.remove(&id) {
                self.finish(waiting.caller, Answer::NotProcessed);
            }
        }
    }
}

/// Hashes sequential request ids by Fibonacci multiplication: cheap, and it
/// spreads both the low bits (bucket) and the high bits (hashbrown's tag).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
