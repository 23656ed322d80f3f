//! The calls of one connection that await their answers, by id.
//!
//! A call gets its id here, when it starts, and is entered under the same
//! lock that queues its request for the writer: ids therefore rise in the
//! order requests go on the wire, which is what makes a drain's
//! "first unread id" exact (docs/PROTOCOL.md, "Drain"), and a reply always
//! finds its call. Each entry holds the call's permit, so that however an
//! entry leaves (answered, drained, expired, the connection closed) the
//! permit goes back with it.
//!
//! The answer waits in the entry itself, and the caller's waker beside it:
//! a oneshot channel per call cost an allocation and about 800
//! instructions of a client's 4,100 per small call (rpc-bench W2, counted
//! with callgrind).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::limit::Permit;
use crate::envelope::Status;

/// How long a call whose caller gave up keeps its permit while the server
/// has not answered the cancel. The server counts the call until it
/// answers, so giving the permit back at once would let the next call be
/// refused; never giving it back would let a server that ignores cancels
/// use up every permit.
pub(crate) const ABANDONED_KEPT: Duration = Duration::from_secs(2);

/// How a call ends, as far as the connection can tell.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The server answered.
    Response(Response),
    /// The server will not run the call (it is draining).
    NotProcessed,
}

/// A server's answer to one call.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: Status,
    /// The server's schema claim (fingerprint, text), if it made one.
    pub(crate) schema: Option<(u64, Bytes)>,
    pub(crate) body: Bytes,
}

/// The connection ended before the call was answered.
#[derive(Debug)]
pub(crate) struct Closed;

/// A call entered and not yet taken by its caller.
struct Entry {
    slot: Slot,
    /// Given back as soon as the call is answered, before the caller runs.
    permit: Option<Permit>,
}

enum Slot {
    /// Not answered; the caller is woken through this once it is.
    Waiting(Option<Waker>),
    /// Not answered, and the caller has given up.
    GivenUp,
    /// Answered; the caller has yet to take it.
    Answered(Answer),
}

#[derive(Default)]
struct State {
    next_id: u64,
    by_id: HashMap<u64, Entry, BuildHasherDefault<IdHasher>>,
    /// Calls given up, oldest first, with when they stop holding their
    /// permit (always [`ABANDONED_KEPT`] after, so in order).
    abandoned: VecDeque<(Instant, u64)>,
    /// Set once the connection takes no more calls.
    refusing: bool,
}

/// The calls in flight on one connection.
#[derive(Default)]
pub(crate) struct Pending {
    state: Mutex<State>,
    /// How many calls are entered, as of the last lock let go: the load a
    /// balancer reads without taking the lock.
    entered: AtomicUsize,
}

/// The state, locked; letting go of it publishes the count of calls.
struct Locked<'a> {
    state: MutexGuard<'a, State>,
    entered: &'a AtomicUsize,
}

impl Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.entered
            .store(self.state.by_id.len(), Ordering::Relaxed);
    }
}

/// The connection takes no more calls.
#[derive(Debug)]
pub(crate) struct Refused;

impl Pending {
    fn lock(&self) -> Locked<'_> {
        // Nothing panics while holding it; a poisoned map is still sound.
        Locked {
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            entered: &self.entered,
        }
    }

    /// Calls in flight (stream calls until they end), and calls given up
    /// that the server may still be running: this connection's load.
    pub(crate) fn load(&self) -> usize {
        self.entered.load(Ordering::Relaxed)
    }

    /// Whether a caller still waits for an answer.
    pub(crate) fn has_callers(&self) -> bool {
        self.lock()
            .by_id
            .values()
            .any(|entry| matches!(entry.slot, Slot::Waiting(_)))
    }

    /// Gives a call the next id, enters it, and has `queue` queue its
    /// request with that id, all under one lock, so that ids go out in
    /// order. `queue` returns `false` if the writer has gone. `caller` is
    /// woken when the answer comes, which is then taken with
    /// [`Pending::poll_answer`].
    pub(crate) fn start(
        &self,
        permit: Option<Permit>,
        caller: Waker,
        queue: impl FnOnce(u64) -> bool,
    ) -> Result<u64, Refused> {
        let mut state = self.lock();
        if state.refusing {
            return Err(Refused);
        }
        let id = state.next_id;
        if !queue(id) {
            return Err(Refused);
        }
        state.next_id += 1;
        let entry = Entry {
            slot: Slot::Waiting(Some(caller)),
            permit,
        };
        state.by_id.insert(id, entry);
        Ok(id)
    }

    /// The answer to call `id` once it has come (the entry then leaves),
    /// or `Closed` if the connection ended first.
    pub(crate) fn poll_answer(
        &self,
        id: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Answer, Closed>> {
        let mut state = self.lock();
        let Some(entry) = state.by_id.get_mut(&id) else {
            return Poll::Ready(Err(Closed));
        };
        match &mut entry.slot {
            Slot::Waiting(waker) => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Slot::GivenUp => Poll::Ready(Err(Closed)),
            Slot::Answered(_) => {
                let Some(Entry {
                    slot: Slot::Answered(answer),
                    ..
                }) = state.by_id.remove(&id)
                else {
                    unreachable!("the entry was just seen answered");
                };
                Poll::Ready(Ok(answer))
            }
        }
    }

    /// Hands `answer` to the call `id`; `false` if no call waits for one
    /// (it expired, or the server is wrong).
    pub(crate) fn finish(&self, id: u64, answer: Answer) -> bool {
        let mut state = self.lock();
        let Some(entry) = state.by_id.get_mut(&id) else {
            return false;
        };
        let permit = entry.permit.take();
        let waker = match std::mem::replace(&mut entry.slot, Slot::Answered(answer)) {
            Slot::Waiting(waker) => waker,
            // Nobody will take it.
            Slot::GivenUp => {
                state.by_id.remove(&id);
                None
            }
            Slot::Answered(earlier) => {
                // Answered twice: the server is wrong; keep the first.
                entry.slot = Slot::Answered(earlier);
                return false;
            }
        };
        drop(state);
        // Outside the lock: the permit may wake a caller, and so may this.
        drop(permit);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The caller of `id` no longer waits. The call keeps its permit until
    /// the server answers or [`ABANDONED_KEPT`] passes; returns when that
    /// is, if the call was still unanswered.
    pub(crate) fn abandon(&self, id: u64) -> Option<Instant> {
        let mut state = self.lock();
        let entry = state.by_id.get_mut(&id)?;
        match entry.slot {
            Slot::Waiting(_) => entry.slot = Slot::GivenUp,
            Slot::GivenUp => return None,
            Slot::Answered(_) => {
                // Answered but never taken: nothing to cancel.
                state.by_id.remove(&id);
                return None;
            }
        }
        // Calls answered since they were given up need no expiry: drop
        // them from the front, so that a caller who gives up calls fast
        // does not grow this faster than the server answers.
        while let Some(&(_, oldest)) = state.abandoned.front() {
            if state.by_id.contains_key(&oldest) {
                break;
            }
            state.abandoned.pop_front();
        }
        let until = Instant::now() + ABANDONED_KEPT;
        state.abandoned.push_back((until, id));
        Some(until)
    }

    /// Lets go of the calls given up whose time to keep their permit has
    /// come; returns when the next one's does.
    pub(crate) fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        while let Some(&(until, id)) = state.abandoned.front() {
            if until > now {
                return Some(until);
            }
            state.abandoned.pop_front();
            // Ids are never reused: an entry still there is this call,
            // still unanswered.
            if state
                .by_id
                .get(&id)
                .is_some_and(|entry| matches!(entry.slot, Slot::GivenUp))
            {
                state.by_id.remove(&id);
            }
        }
        None
    }

    /// The server read no request from `first_unread` on: those calls fail
    /// as not processed, and no call starts from now on.
    pub(crate) fn drain(&self, first_unread: u64) {
        let mut wake = Vec::new();
        let mut permits = Vec::new();
        {
            let mut state = self.lock();
            state.refusing = true;
            state.by_id.retain(|&id, entry| {
                if id < first_unread || matches!(entry.slot, Slot::Answered(_)) {
                    return true;
                }
                permits.extend(entry.permit.take());
                match std::mem::replace(&mut entry.slot, Slot::Answered(Answer::NotProcessed)) {
                    Slot::Waiting(waker) => {
                        wake.extend(waker);
                        true
                    }
                    _ => false,
                }
            });
        }
        drop(permits);
        for waker in wake {
            waker.wake();
        }
    }

    /// The connection has ended: every call still waiting wakes (and finds
    /// the connection's reason), every permit goes back. Answers already
    /// in stay for their callers to take.
    pub(crate) fn close(&self) {
        let mut unanswered = Vec::new();
        {
            let mut state = self.lock();
            state.refusing = true;
            state.abandoned.clear();
            let by_id = std::mem::take(&mut state.by_id);
            for (id, entry) in by_id {
                if matches!(entry.slot, Slot::Answered(_)) {
                    state.by_id.insert(id, entry);
                } else {
                    unanswered.push(entry);
                }
            }
        }
        for entry in unanswered {
            if let Slot::Waiting(Some(waker)) = entry.slot {
                waker.wake();
            }
        }
    }

    /// Calls entered and not yet let go.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_id.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::limit::CallLimit;
    use std::future::poll_fn;
    use std::sync::Arc;

    fn noop() -> Waker {
        futures::task::noop_waker()
    }

    async fn answer(pending: &Pending, id: u64) -> Result<Answer, Closed> {
        poll_fn(|cx| pending.poll_answer(id, cx)).await
    }

    fn ok() -> Answer {
        Answer::Response(Response {
            status: Status::OK,
            schema: None,
            body: Bytes::new(),
        })
    }

    #[test]
    fn ids_rise_in_the_order_frames_are_queued() {
        let pending = Pending::default();
        let mut queued = Vec::new();
        for expected in 0..3 {
            let id = pending
                .start(None, noop(), |id| {
                    queued.push(id);
                    true
                })
                .unwrap();
            assert_eq!(id, expected);
        }
        assert_eq!(queued, [0, 1, 2]);
    }

    #[test]
    fn a_call_the_writer_cannot_take_is_refused_and_uses_no_id() {
        let pending = Pending::default();
        assert!(pending.start(None, noop(), |_| false).is_err());
        let id = pending.start(None, noop(), |_| true).unwrap();
        assert_eq!(id, 0);
    }

    #[tokio::test]
    async fn an_answer_reaches_its_caller_and_frees_its_permit() {
        let limit = Arc::new(CallLimit::new(1));
        let pending = Pending::default();
        let permit = limit.acquire().await.unwrap();
        let id = pending.start(Some(permit), noop(), |_| true).unwrap();
        assert!(
            limit.try_acquire().is_none(),
            "the call holds the only permit"
        );
        assert!(pending.finish(id, ok()));
        assert!(limit.try_acquire().is_some(), "back before the caller runs");
        assert!(!pending.finish(id, ok()), "answered once");
        assert!(matches!(
            answer(&pending, id).await,
            Ok(Answer::Response(_))
        ));
        assert!(!pending.finish(id, ok()), "taken");
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_given_up_keeps_its_permit_until_answered_or_expired() {
        let limit = Arc::new(CallLimit::new(2));
        let pending = Pending::default();
        let first = pending
            .start(limit.try_acquire(), noop(), |_| true)
            .unwrap();
        let second = pending
            .start(limit.try_acquire(), noop(), |_| true)
            .unwrap();
        let until = pending.abandon(first).unwrap();
        pending.abandon(second).unwrap();
        assert!(limit.try_acquire().is_none());
        // The server answers the first; the second never.
        assert!(pending.finish(first, ok()));
        let permit = limit.try_acquire().expect("the answered call's permit");
        drop(permit);
        assert_eq!(pending.expire(Instant::now()), Some(until));
        tokio::time::advance(ABANDONED_KEPT).await;
        assert_eq!(pending.expire(Instant::now()), None);
        assert_eq!(pending.len(), 0);
        assert!(limit.try_acquire().is_some() && limit.try_acquire().is_some());
    }

    #[tokio::test]
    async fn a_drain_fails_unread_calls_and_refuses_new_ones() {
        let pending = Pending::default();
        for _ in 0..4 {
            pending.start(None, noop(), |_| true).unwrap();
        }
        pending.drain(2);
        assert!(pending.start(None, noop(), |_| true).is_err());
        for unread in 2..4 {
            assert!(matches!(
                answer(&pending, unread).await,
                Ok(Answer::NotProcessed)
            ));
        }
        assert!(pending.finish(0, ok()) && pending.finish(1, ok()));
        assert!(matches!(answer(&pending, 0).await, Ok(Answer::Response(_))));
        assert!(matches!(answer(&pending, 1).await, Ok(Answer::Response(_))));
    }

    #[tokio::test]
    async fn closing_wakes_every_caller_and_frees_every_permit() {
        let limit = Arc::new(CallLimit::new(2));
        let pending = Pending::default();
        let waiting = pending
            .start(limit.try_acquire(), noop(), |_| true)
            .unwrap();
        let given_up = pending
            .start(limit.try_acquire(), noop(), |_| true)
            .unwrap();
        pending.abandon(given_up);
        let answered = pending.start(None, noop(), |_| true).unwrap();
        assert!(pending.finish(answered, ok()));
        let mut call = Box::pin(answer(&pending, waiting));
        assert!(futures::FutureExt::now_or_never(&mut call).is_none());
        pending.close();
        assert!(call.await.is_err(), "woken without an answer");
        assert!(
            matches!(answer(&pending, answered).await, Ok(Answer::Response(_))),
            "an answer that came before the close is still taken"
        );
        assert!(limit.try_acquire().is_some() && limit.try_acquire().is_some());
        assert!(pending.start(None, noop(), |_| true).is_err());
    }

    #[tokio::test]
    async fn a_waiting_caller_is_woken_by_its_answer() {
        let pending = Arc::new(Pending::default());
        let id = pending.start(None, noop(), |_| true).unwrap();
        let caller = tokio::spawn({
            let pending = pending.clone();
            async move { answer(&pending, id).await }
        });
        tokio::task::yield_now().await;
        assert!(pending.finish(id, ok()));
        assert!(matches!(caller.await.unwrap(), Ok(Answer::Response(_))));
    }

    #[test]
    fn an_answered_call_given_up_leaves_nothing_behind() {
        let pending = Pending::default();
        let id = pending.start(None, noop(), |_| true).unwrap();
        assert!(pending.finish(id, ok()));
        assert_eq!(pending.abandon(id), None, "nothing to cancel");
        assert_eq!(pending.len(), 0);
        let id = pending.start(None, noop(), |_| true).unwrap();
        assert!(pending.abandon(id).is_some());
        assert!(pending.finish(id, ok()));
        assert_eq!(pending.len(), 0, "an answer nobody takes is dropped");
    }
}
