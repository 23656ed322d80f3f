//! The reading half of a client connection: answers routed to their calls,
//! the server's drain and pings, the keepalive, and the expiry of calls
//! whose callers gave up.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::{Closed, Keepalive};
use crate::client::limit::CallLimit;
use crate::client::pending::{Answer, Pending, Response};
use crate::envelope::{self, Message};
use crate::error::RpcError;
use crate::frame::Incoming;
use crate::stream::Streams;
use crate::transport::{FrameReader, Outbox, Release};

/// Why calls fail after the server announced its shutdown.
const SHUTTING_DOWN: &str = "the server is shutting down";

/// What the reader works with.
pub(super) struct Reader {
    pub(super) pending: Arc<Pending>,
    pub(super) permits: Option<Arc<CallLimit>>,
    /// Where its pings and pongs go out.
    pub(super) outbox: Arc<Outbox>,
    pub(super) keepalive: Option<Keepalive>,
    /// Poked when a caller gives up, so that its call's expiry is timed.
    pub(super) gave_up: Arc<Notify>,
    /// The streams of calls in flight.
    pub(super) streams: Arc<Streams>,
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
    pub(super) async fn run(
        self,
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
        // When the next call given up stops holding its permit.
        let mut expiry: Option<Instant> = None;
        let expiry_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(expiry_timer);
        // Made once and remade only when it fires: registering with the
        // Notify takes its lock, and this loop runs once per frame.
        let gave_up = self.gave_up.clone();
        let mut poked = Box::pin(gave_up.notified());
        // When to let go of the buffer a large reply grew.
        let mut release = Release::default();
        // The highest id answered, and whether a DRAIN came: a DRAIN that
        // contradicts either is a lie that would have calls that ran sent
        // again elsewhere.
        let mut highest_answered: Option<u64> = None;
        let mut drained: Option<u64> = None;
        let reason = loop {
            let frame = tokio::select! {
                biased;
                frame = frames.next() => frame,
                () = release.due(), if release.pending() => {
                    release.release(&mut frames);
                    continue;
                }
                // The writer records its own reason before it ends.
                _ = &mut writer_done => break None,
                () = &mut poked => {
                    poked.set(gave_up.notified());
                    expiry = self.pending.expire(Instant::now());
                    if let Some(at) = expiry {
                        expiry_timer.as_mut().reset(at);
                    }
                    continue;
                }
                () = &mut expiry_timer, if expiry.is_some() => {
                    expiry = self.pending.expire(Instant::now());
                    if let Some(at) = expiry {
                        expiry_timer.as_mut().reset(at);
                    }
                    continue;
                }
                () = &mut timer, if self.keepalive.is_some() => {
                    let Some(keepalive) = self.keepalive else { continue };
                    let now = Instant::now();
                    probe = match probe {
                        Probe::Watching { seen: then } | Probe::Waiting { seen: then } if then != seen => {
                            timer.as_mut().reset(now + keepalive.interval);
                            Probe::Watching { seen }
                        }
                        Probe::Watching { .. } => {
                            let mut ping = BytesMut::new();
                            envelope::encode_ping(&mut ping, seen, false);
                            let _ = self.outbox.push(&mut ping, 0);
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
                Some(Ok(Incoming::Frame(payload))) => {
                    release.saw(payload.len());
                    payload.freeze()
                }
                Some(Ok(Incoming::Started)) => continue,
            };
            match envelope::decode(&payload) {
                Ok(Message::Response {
                    id,
                    status,
                    schema,
                    body,
                }) => {
                    if drained.is_some_and(|first_unread| id >= first_unread) {
                        break Some(format!(
                            "protocol violation: an answer to request {id}, which the server's DRAIN said it had not read"
                        ));
                    }
                    highest_answered = highest_answered.max(Some(id));
                    // The call is over: a stream it was sending stops.
                    self.streams.remove(id);
                    let schema =
                        schema.map(|claim| (claim.fingerprint, payload.slice_ref(claim.text)));
                    let answer = Answer::Response(Response {
                        status,
                        schema,
                        body,
                    });
                    if !self.pending.finish(id, answer) {
                        // Late for a call given up long ago, or a server bug.
                        tracing::debug!(id, "reply for a request id not in flight; ignored");
                    }
                }
                Ok(Message::Items {
                    id,
                    count,
                    items,
                    cost,
                }) => match self.streams.items(id, count, items, cost) {
                    Ok(_) => {}
                    Err(e) => break Some(format!("protocol violation: {e}")),
                },
                Ok(Message::Credit { id, bytes }) => {
                    if let Err(e) = self.streams.credit(id, bytes) {
                        break Some(format!("protocol violation: {e}"));
                    }
                }
                Ok(Message::Stop { id }) => {
                    self.streams.stop(id);
                }
                Ok(Message::Drain { first_unread }) => {
                    if drained.is_some() {
                        break Some("protocol violation: a second DRAIN".to_owned());
                    }
                    if highest_answered.is_some_and(|id| id >= first_unread) {
                        break Some(format!(
                            "protocol violation: a DRAIN says request {first_unread} and later were not read, but request {} was answered",
                            highest_answered.unwrap_or_default()
                        ));
                    }
                    drained = Some(first_unread);
                    tracing::debug!(first_unread, "{SHUTTING_DOWN}");
                    closed.set(SHUTTING_DOWN);
                    self.pending.drain(first_unread);
                    self.streams.drain(first_unread, || RpcError::NotProcessed {
                        reason: SHUTTING_DOWN.to_owned(),
                    });
                }
                Ok(Message::Ping { token }) => {
                    let mut pong = BytesMut::new();
                    envelope::encode_ping(&mut pong, token, true);
                    let _ = self.outbox.push(&mut pong, 0);
                }
                Ok(Message::Pong { token }) => tracing::trace!(token, "keepalive answered"),
                Ok(Message::Request { .. } | Message::Cancel { .. } | Message::End { .. }) => {
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
        // After the reason is set: the callers woken here read it.
        self.pending.close();
        let reason = closed.reason();
        self.streams.close(|| RpcError::ConnectionClosed {
            reason: reason.clone(),
        });
        if let Some(permits) = &self.permits {
            permits.close();
        }
    }
}
