//! The reading half of a connection: frames in, each handed to the calls.
//!
//! The connection's own task reads, and polls each small call once where
//! it read it (see [`Calls::poll_here`]). While it is inside a call's
//! first poll it lets go of the read state; if that poll takes too long
//! (the server's watchdog notices), a stand-in task takes the state and
//! reads on, spawning every call it reads, until the stuck poll returns and
//! the connection's task takes the state back. One loop serves both roles.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Ended;
use super::calls::{Calls, MAX_DEFERRED};
use crate::duration::until;
use crate::frame::Incoming;
use crate::server::watchdog::{Stamp, Watched};
use crate::transport::{FrameReader, Release};

/// What reading needs to carry from one frame to the next, whichever task
/// reads.
pub(super) struct ReadState {
    pub(super) frames: FrameReader,
    /// Set while a frame has begun to arrive but not finished.
    frame_deadline: Option<Instant>,
    /// When to let go of the buffer a large frame grew.
    release: Release,
}

/// One connection as its reading tasks share it.
pub(super) struct Connection {
    pub(super) calls: Calls,
    /// `None` once reading is over and the connection's task has taken it
    /// to linger.
    pub(super) read: tokio::sync::Mutex<Option<ReadState>>,
    stamp: Stamp,
    /// Tells a stand-in that the connection's task is back from its poll.
    back: Notify,
    /// How a stand-in's reading ended, for the connection's task to act on.
    outcome: Mutex<Option<Result<Ended, String>>>,
    /// Whether `outcome` holds one: read after every frame, where taking
    /// the lock cost more than the rest of the check.
    recorded: AtomicBool,
    /// Where a stand-in runs: the watchdog that starts one is a thread of
    /// its own.
    runtime: tokio::runtime::Handle,
}

/// Which task reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The connection's own task: polls small calls in place, watches idleness.
    Own,
    /// A stand-in while the own task is stuck: spawns every call.
    StandIn,
}

/// How a read loop stopped.
pub(super) enum Stop {
    /// The connection ends, for this reason.
    Ended(Result<Ended, String>),
    /// A stand-in gives reading back (with the outcome recorded, if the
    /// connection ended while it read).
    Back,
}

impl Connection {
    pub(super) fn new(calls: Calls, frames: FrameReader) -> Self {
        Connection {
            calls,
            read: tokio::sync::Mutex::new(Some(ReadState {
                frames,
                frame_deadline: None,
                release: Release::default(),
            })),
            stamp: Stamp::default(),
            back: Notify::new(),
            outcome: Mutex::new(None),
            recorded: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn take_outcome(&self) -> Option<Result<Ended, String>> {
        if !self.recorded.load(Ordering::Acquire) {
            return None;
        }
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.recorded.store(false, Ordering::Release);
        if outcome.is_some() {
            // The stand-in that recorded it left `rescued` set, so that no
            // other one would read a connection that has ended.
            self.stamp.rescue_over();
        }
        outcome
    }

    fn has_ended(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// Whether the connection has nothing to do: no request since `seen`,
    /// no call running or being polled, nothing queued.
    fn quiet(&self, requests: u64, seen: u64) -> bool {
        requests == seen
            && self.calls.running.count() == 0
            && !self.stamp.polling()
            && self.calls.outbox.backlog().bytes() == 0
    }

    /// Starts the call `payload` carries and, in the own task, polls it
    /// here; inside user code the watchdog watches.
    fn handle(&self, payload: bytes::Bytes, role: Role) -> Result<(), String> {
        if role == Role::StandIn {
            return match self.calls.handle(payload, None)? {
                Some(call) => self.calls.spawn(call),
                None => Ok(()),
            };
        }
        let handled = match self.calls.handle(payload, Some(&self.stamp)) {
            Ok(Some(call)) if call.inline => self.calls.poll_here(call),
            Ok(Some(call)) => self.calls.spawn(call),
            Ok(None) => Ok(()),
            Err(reason) => Err(reason),
        };
        self.calls.handled_here(&self.stamp);
        if self.stamp.rescued() {
            self.back.notify_one();
        }
        handled
    }
}

impl Watched for Connection {
    fn stamp(&self) -> &Stamp {
        &self.stamp
    }

    fn rescue(self: Arc<Self>) {
        let runtime = self.runtime.clone();
        runtime.spawn(async move {
            let writer_gone = async {
                self.calls.outbox.closed().await;
                "the writer stopped".to_owned()
            };
            tokio::pin!(writer_gone);
            read_loop(&self, Role::StandIn, writer_gone).await;
            if !self.has_ended() {
                self.stamp.rescue_over();
            }
        });
    }
}

/// Reads frames and hands each to the calls until the connection ends or,
/// for a stand-in, until the own task is back.
pub(super) async fn read_loop(
    connection: &Connection,
    role: Role,
    mut writer_gone: Pin<&mut impl Future<Output = String>>,
) -> Stop {
    let shared = &*connection.calls.shared;
    let backlog = connection.calls.outbox.backlog();
    let requests = connection.calls.running.requests();
    let mut drain = shared.drain.clone();
    // Made once: a fresh `wait_for` per frame would take the watch's lock
    // per frame, where polling this one again is an atomic load.
    let draining = drain_started(&mut drain);
    tokio::pin!(draining);
    // Checked once per idle timeout rather than reset per frame, which
    // would cost a timer update on every frame of a busy connection.
    let idle_check = tokio::time::sleep(shared.idle_timeout);
    tokio::pin!(idle_check);
    // Requests read when the idle timer was last set: only calls count as
    // activity, or a client pinging now and then would hold its place for
    // ever (1,024 such sockets, 34 pings a second in all, locked every
    // other client out).
    let mut requests_at_check: u64 = 0;
    // Frames handled since the deferred work was last handed on.
    let mut unflushed: usize = 0;
    let mut state = match role {
        Role::Own => connection.read.lock().await,
        // Only while the own task is still stuck: a stand-in that waited
        // for the lock and got it at the next frame would run on the own
        // task's worker, behind whatever that frame's handler does.
        Role::StandIn => tokio::select! {
            biased;
            () = connection.back.notified() => return Stop::Back,
            state = connection.read.lock() => state,
        },
    };
    if role == Role::StandIn && connection.has_ended() {
        return Stop::Back;
    }
    // A stand-in first hands on what the stuck reader had deferred.
    connection.calls.flush();
    let ended = 'reading: loop {
        if role == Role::StandIn && !connection.stamp.polling() {
            connection.calls.flush();
            return Stop::Back;
        }
        if unflushed >= MAX_DEFERRED {
            // A long burst: let the writer and the calls started run now
            // and then, not only when the burst ends.
            connection.calls.flush();
            unflushed = 0;
            tokio::task::yield_now().await;
        }
        let Some(ReadState {
            frames,
            frame_deadline,
            release,
        }) = &mut *state
        else {
            // A stand-in that comes after reading ended.
            connection.calls.flush();
            return Stop::Back;
        };
        // The client sends calls faster than it reads their replies, or
        // than they finish: stop reading until the writer catches up and
        // the running calls give their requests back. One frame more is
        // always read first, so no frame is too large to get through.
        while backlog.full() || requests.full() {
            connection.calls.flush();
            unflushed = 0;
            tokio::select! {
                biased;
                _ = &mut draining => break 'reading Ok(Ended::Draining),
                reason = &mut writer_gone => break 'reading Err(reason),
                () = connection.back.notified(), if role == Role::StandIn => continue 'reading,
                // Not two branches guarded by `full()`: the guards are read
                // again when the select starts, and a backlog emptied since
                // the loop's check left both off, the select waiting on the
                // drain alone, for ever (seen: a client reading replies it
                // had asked for stalled a quarter of the time).
                () = async {
                    backlog.below_limit().await;
                    requests.below_limit().await;
                } => {}
                () = until(*frame_deadline), if frame_deadline.is_some() => {
                    break 'reading Err(frame_late(shared.frame_timeout));
                }
                // A pause can last; the buffer of a large frame read just
                // before it must not (a review held three 16 MiB frames).
                () = release.due(), if release.pending() => release.release(frames),
            }
            // A partial frame's deadline keeps running through the pause:
            // the pause lasts only while the client does not read, and
            // renewing the deadline here would let a client hold a partial
            // frame (and the receive budget) for ever by reading a little
            // now and then.
        }
        // Frames already buffered are taken without the select, whose
        // other branches (a watch, a join handle, timers) cost more than a
        // small call: up to MAX_DEFERRED in a row, after which the select
        // runs again (the flush above resets `unflushed`).
        let buffered = if unflushed > 0 {
            frames.next().now_or_never()
        } else {
            None
        };
        let next = if let Some(next) = buffered {
            next
        } else {
            tokio::select! {
            biased;
            _ = &mut draining => break Ok(Ended::Draining),
            reason = &mut writer_gone => break Err(reason),
            () = connection.back.notified(), if role == Role::StandIn => continue,
            next = frames.next() => next,
            // Nothing to read yet: hand on the deferred work. If bytes of a
            // next frame are already here, let that work run before reading
            // them (the frame could be a handler that blocks, with the work
            // queued behind it); otherwise waiting for the socket lets it run.
            () = std::future::ready(()), if unflushed > 0 => {
                connection.calls.flush();
                unflushed = 0;
                if !frames.read_buffer().is_empty() {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            () = until(*frame_deadline), if frame_deadline.is_some() => {
                break Err(frame_late(shared.frame_timeout));
            }
            () = release.due(), if release.pending() => {
                release.release(frames);
                continue;
            }
            () = &mut idle_check, if role == Role::Own => {
                let requests = connection.calls.requests_read();
                if connection.quiet(requests, requests_at_check) {
                    break Ok(Ended::Idle);
                }
                requests_at_check = requests;
                idle_check.as_mut().reset(Instant::now() + shared.idle_timeout);
                continue;
            }
            }
        };
        match next {
            None => break Ok(Ended::ByClient),
            // TLS ends without close_notify look so: many clients end that
            // way (an exiting process), no worse than a TCP close, and
            // not worth a line per client at INFO. Between frames only: a
            // frame cut short is bad, as over plain TCP.
            Some(Err(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    && frames.read_buffer().is_empty()
                    && frame_deadline.is_none() =>
            {
                tracing::debug!("the client closed the connection without ending it: {e}");
                break Ok(Ended::ByClient);
            }
            Some(Err(e)) => break Err(format!("bad frame: {e}")),
            Some(Ok(Incoming::Started)) => {
                *frame_deadline = Some(Instant::now() + shared.frame_timeout);
            }
            Some(Ok(Incoming::Frame(payload))) => {
                *frame_deadline = None;
                release.saw(payload.len());
                unflushed += 1;
                if role == Role::StandIn {
                    if let Err(reason) = connection.handle(payload.freeze(), role) {
                        break Err(reason);
                    }
                    continue;
                }
                // Let go of the read state while user code runs, so that a
                // stand-in can read if it gets stuck.
                drop(state);
                let handled = connection.handle(payload.freeze(), role);
                // Free unless a stand-in is reading: no future to build.
                state = match connection.read.try_lock() {
                    Ok(state) => state,
                    Err(_) => connection.read.lock().await,
                };
                if let Some(outcome) = connection.take_outcome() {
                    break outcome;
                }
                if let Err(reason) = handled {
                    break Err(reason);
                }
            }
        }
    };
    connection.calls.flush();
    match role {
        Role::Own => Stop::Ended(ended),
        Role::StandIn => {
            // Recorded before the read state is let go, so that the own
            // task finds it as soon as it can read again.
            *connection.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(ended);
            connection.recorded.store(true, Ordering::Release);
            drop(state);
            Stop::Back
        }
    }
}

fn frame_late(timeout: std::time::Duration) -> String {
    format!("a frame was not finished within {timeout:?}")
}

/// Completes when the server starts draining, with its grace deadline.
/// Never completes if the server is dropped without a shutdown: its
/// connections then go on being served.
pub(super) async fn drain_started(drain: &mut watch::Receiver<Option<Instant>>) -> Instant {
    let deadline = match drain.wait_for(Option::is_some).await {
        Ok(deadline) => *deadline,
        Err(_) => None,
    };
    match deadline {
        Some(deadline) => deadline,
        None => std::future::pending().await,
    }
}
