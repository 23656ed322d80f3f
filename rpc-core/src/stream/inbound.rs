//! The receiving end of one stream: item frames as the connection's reader
//! hands them over, items as the consumer takes them, and the credit that
//! taking them gives back to the sender.
//!
//! The reader never waits here: what it hands over was paid for with
//! credit, so the bytes held are bounded by the window plus one frame.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;

use super::INITIAL_CREDIT;
use crate::codec;
use crate::envelope;
use crate::error::RpcError;

/// Decodes up to `count` items from the front of the bytes onto the back
/// of the queue, returning the bytes they took.
pub(crate) type Decode<T> =
    fn(&[u8], usize, &mut VecDeque<T>) -> Result<usize, crate::error::CodecError>;

/// [`Decode`] for items that travel as `W` and are read as `T` (the same
/// type, or a wrapper that decodes faster: see `__private::ByteBuf`).
pub(crate) fn decode<W: DeserializeOwned, T: From<W>>(
    bytes: &[u8],
    count: usize,
    out: &mut VecDeque<T>,
) -> Result<usize, crate::error::CodecError> {
    codec::decode_run::<W>(bytes, count, |item| out.push_back(T::from(item)))
}

/// The smallest window a receiver keeps: it grants half its window at a
/// time, and a server counts grants under the initial credit as free work
/// that it limits (a 64 KiB window's 32 KiB grants had a fast stream's
/// connection closed as a flood).
const MIN_WINDOW: usize = 2 * INITIAL_CREDIT as usize;

/// Items decoded from a frame at a time at most: decoding a run costs less
/// per item than one at a time, and a small run bounds what decoded items
/// can take beyond the frame's bytes.
const RUN: u32 = 64;

/// What a stream's receiving end needs of its connection.
pub(crate) trait Link: Send + Sync {
    /// Queues a whole frame for the peer; `false` once the connection is
    /// gone.
    fn send(&self, frame: BytesMut) -> bool;

    /// The consumer let go of stream `id` before its end: tell the peer
    /// (a client cancels the call, a server stops the client's stream).
    fn abandon(&self, id: u64);

    /// When the connection has no room for more frames, what completes once
    /// it has: a sender waits for it as for credit.
    fn room(&self) -> Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        None
    }

    /// Ready with how stream `id` ended, for a side that learns it other
    /// than by [`Inbound::finish`] (a client, from the call's answer).
    fn poll_end(&self, id: u64, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        let _ = (id, cx);
        Poll::Pending
    }
}

/// One stream's receiving end, shared by the connection's reader (which
/// fills it) and the [`Streaming`](super::Streaming) that reads it.
#[derive(Clone)]
pub(crate) struct Inbound(Arc<Shared>);

struct Shared {
    id: u64,
    window: usize,
    link: Arc<dyn Link>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    /// What the sender may still send as the receiver counts it: credit
    /// given minus item bytes received. Never below the cost of one frame
    /// under zero, since a frame is refused once it is not positive.
    allowance: i64,
    /// Bytes taken by the consumer since credit was last granted.
    taken: usize,
    /// Whether any item frame arrived: a server stream is open from then on.
    opened: bool,
    /// How the stream ended, once it has; taken by the consumer after the
    /// last item.
    end: Option<Result<(), RpcError>>,
    /// The consumer saw the end.
    finished: bool,
    /// The sender ended its stream (an end message): kept once the end has
    /// been read, so that items or a second end after it are still seen.
    ended_by_peer: bool,
    /// The consumer let go.
    dropped: bool,
    waker: Option<Waker>,
}

/// An item frame not yet read to its end.
pub(crate) struct Frame {
    items: Bytes,
    /// Where the next item starts.
    at: usize,
    /// Items left in it.
    left: u32,
    /// What it took of the credit.
    cost: usize,
}

impl Inbound {
    /// The receiving end of stream `id`, granting the sender up to
    /// `window` bytes in flight; the grant beyond the initial credit goes
    /// out at once.
    pub(crate) fn new(id: u64, window: usize, link: Arc<dyn Link>) -> Self {
        let inbound = Self::unannounced(id, window, link);
        inbound.announce();
        inbound
    }

    /// Like [`Inbound::new`], but the grant goes out only with
    /// [`Inbound::announce`]: a client enters the stream before its request
    /// is queued, and grants after it.
    pub(crate) fn unannounced(id: u64, window: usize, link: Arc<dyn Link>) -> Self {
        let window = window.clamp(MIN_WINDOW, i32::MAX as usize);
        Inbound(Arc::new(Shared {
            id,
            window,
            link,
            state: Mutex::new(State {
                allowance: window as i64,
                ..State::default()
            }),
        }))
    }

    /// Grants the sender the window beyond the initial credit.
    pub(crate) fn announce(&self) {
        let more = self.0.window - INITIAL_CREDIT as usize;
        if more > 0 {
            let mut frame = BytesMut::new();
            envelope::encode_credit(&mut frame, self.0.id, more as u32);
            self.0.link.send(frame);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned state is still sound.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an item frame off the wire. An error is a protocol violation
    /// that closes the connection: items after the end, or beyond credit.
    pub(crate) fn push(&self, count: u32, items: Bytes, cost: usize) -> Result<(), String> {
        let mut state = self.lock();
        if state.ended_by_peer {
            return Err(format!("stream items for call {} after its end", self.0.id));
        }
        if state.end.is_some() && state.dropped {
            return Ok(());
        }
        if state.allowance <= 0 {
            return Err(format!(
                "stream items for call {} beyond the credit granted",
                self.0.id
            ));
        }
        state.allowance -= cost as i64;
        state.opened = true;
        if state.dropped || count == 0 {
            // Nothing to keep: the credit goes back as if it were read.
            let waker = state.waker.take();
            drop(state);
            self.taken(cost);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Ok(());
        }
        if items.is_empty() {
            return Err(format!(
                "a frame of {count} stream items for call {} holds no bytes",
                self.0.id
            ));
        }
        state.frames.push_back(Frame {
            items,
            at: 0,
            left: count,
            cost,
        });
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The stream ended as `end` says (the items already pushed are still
    /// read first). Only the first end counts.
    pub(crate) fn finish(&self, end: Result<(), RpcError>) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The sender ended its stream with an end message; an error (a
    /// second end) is a protocol violation.
    pub(crate) fn end_by_peer(&self) -> Result<(), String> {
        let mut state = self.lock();
        if std::mem::replace(&mut state.ended_by_peer, true) {
            return Err(format!("a second end of the stream of call {}", self.0.id));
        }
        drop(state);
        self.finish(Ok(()));
        Ok(())
    }

    /// Ready once the stream is open (an item frame arrived) or has ended.
    pub(crate) fn poll_opened(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.opened || state.end.is_some() {
            return Poll::Ready(());
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether an item frame has arrived.
    pub(crate) fn opened(&self) -> bool {
        self.lock().opened
    }

    /// Decodes the next run of items of `current` (taking the next frame
    /// out first if it is done) onto `decoded`: `Ok` with the frame's cost
    /// once its last run is decoded, `Err` with the end, or with the error
    /// that ends the stream after the items decoded before it.
    /// Items are decoded from a frame the consumer has taken out whole, so
    /// that the lock is taken once a frame, not once an item.
    fn poll_run<T>(
        &self,
        cx: &mut Context<'_>,
        decode: Decode<T>,
        current: &mut Option<Frame>,
        decoded: &mut VecDeque<T>,
    ) -> Poll<Result<Option<usize>, Option<RpcError>>> {
        let frame = match current {
            Some(frame) => frame,
            None => match self.poll_frame(cx) {
                Poll::Ready(Ok(frame)) => current.insert(frame),
                Poll::Ready(Err(end)) => return Poll::Ready(Err(end)),
                Poll::Pending => return Poll::Pending,
            },
        };
        let run = frame.left.min(RUN);
        let checked = match decode(&frame.items[frame.at..], run as usize, decoded) {
            Ok(read) => {
                frame.at += read;
                frame.left -= run;
                let done = frame.left == 0;
                // A frame short of items fails in the next run's decode.
                if done && frame.at != frame.items.len() {
                    Err(format!(
                        "{} bytes after the last item of a stream frame",
                        frame.items.len() - frame.at
                    ))
                } else {
                    Ok(done)
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match checked {
            Ok(false) => Poll::Ready(Ok(None)),
            Ok(true) => {
                let cost = frame.cost;
                *current = None;
                Poll::Ready(Ok(Some(cost)))
            }
            Err(reason) => {
                // Nothing after an item that does not decode can be trusted.
                *current = None;
                self.give_up();
                Poll::Ready(Err(Some(RpcError::Decode {
                    what: format!("an item of the stream of call {}", self.0.id),
                    source: crate::error::CodecError::new(reason),
                })))
            }
        }
    }

    /// The next whole frame, or the end: `Err(None)` a clean one,
    /// `Err(Some(error))` with the error item to yield.
    fn poll_frame(&self, cx: &mut Context<'_>) -> Poll<Result<Frame, Option<RpcError>>> {
        let mut state = self.lock();
        if state.finished {
            return Poll::Ready(Err(None));
        }
        if let Some(frame) = state.frames.pop_front() {
            return Poll::Ready(Ok(frame));
        }
        if let Some(end) = state.end.take() {
            state.finished = true;
            return Poll::Ready(Err(end.err()));
        }
        state.waker = Some(cx.waker().clone());
        drop(state);
        // Items come before the answer on the wire, so once the answer is
        // here no item is still to come.
        match self.0.link.poll_end(self.0.id, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(end) => {
                let mut state = self.lock();
                if let Some(frame) = state.frames.pop_front() {
                    // Pushed in between: read it (and the rest) first.
                    state.end.get_or_insert(end);
                    return Poll::Ready(Ok(frame));
                }
                state.finished = true;
                Poll::Ready(Err(end.err()))
            }
        }
    }

    /// The consumer reads no more: what it holds is let go, and the peer told.
    fn give_up(&self) {
        let mut state = self.lock();
        state.frames.clear();
        state.finished = true;
        state.dropped = true;
        drop(state);
        self.0.link.abandon(self.0.id);
    }

    /// Counts `cost` bytes as taken, granting them back once half the
    /// window is: a grant per half window, not per item.
    fn taken(&self, cost: usize) {
        let mut state = self.lock();
        state.taken += cost;
        if state.taken < self.0.window / 2 || state.dropped || state.end.is_some() {
            return;
        }
        let grant = std::mem::take(&mut state.taken);
        state.allowance += grant as i64;
        drop(state);
        let mut frame = BytesMut::new();
        envelope::encode_credit(&mut frame, self.0.id, grant as u32);
        self.0.link.send(frame);
    }
}

/// The consumer's hold on a stream of `T`s: the deadline it reads by, if
/// any, and the items decoded but not yet taken. Dropped, a stream let go
/// before its end tells the peer.
pub(crate) struct Reader<T> {
    inbound: Hold,
    deadline: Option<(std::pin::Pin<Box<tokio::time::Sleep>>, std::time::Duration)>,
    /// The frame being read.
    current: Option<Frame>,
    decode: Decode<T>,
    /// Items of the frame decoded, in order, yet to be taken.
    decoded: VecDeque<T>,
    /// What ends the stream once `decoded` is empty, if it ended badly.
    failed: Option<RpcError>,
    /// The cost of the frame `decoded` finished, given back as credit once
    /// the consumer has taken its last item: what the window bounds is what
    /// the consumer has not taken, decoded or not.
    owed: usize,
    /// What the call's span learns of the stream; `None` when no
    /// subscriber wants the span (boxed: a stream is not worth 40 bytes
    /// more to a program that does not trace).
    seen: Option<Box<Seen>>,
}

impl<T> Reader<T> {
    pub(crate) fn new(
        inbound: Inbound,
        deadline: Option<(std::pin::Pin<Box<tokio::time::Sleep>>, std::time::Duration)>,
        decode: Decode<T>,
    ) -> Self {
        Reader {
            inbound: Hold(inbound),
            deadline,
            current: None,
            decode,
            decoded: VecDeque::new(),
            failed: None,
            owed: 0,
            seen: {
                // Made inside the call (its handler, or the client's call
                // future), whose span is the current one.
                let span = tracing::Span::current();
                (!span.is_disabled()).then(|| {
                    Box::new(Seen {
                        span,
                        items: 0,
                        ends_call: false,
                    })
                })
            },
        }
    }

    /// The same stream read as `U`s, decoded with `decode`; any items
    /// already decoded are converted with `convert`.
    pub(crate) fn retyped<U>(self, convert: fn(T) -> U, decode: Decode<U>) -> Reader<U> {
        Reader {
            inbound: self.inbound,
            deadline: self.deadline,
            current: self.current,
            decode,
            decoded: self.decoded.into_iter().map(convert).collect(),
            failed: self.failed,
            owed: self.owed,
            seen: self.seen,
        }
    }

    /// Marks the stream as the answer to the call: its clean end is the
    /// call's.
    pub(crate) fn ending_call(mut self) -> Self {
        if let Some(seen) = &mut self.seen {
            seen.ends_call = true;
        }
        self
    }

    /// The next item; the end's error, if any, after the last. The deadline
    /// is checked as each run is decoded, not for every item.
    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, RpcError>>> {
        loop {
            if let Some(item) = self.decoded.pop_front() {
                if self.decoded.is_empty() && self.owed > 0 {
                    self.inbound.0.taken(std::mem::take(&mut self.owed));
                }
                if let Some(seen) = &mut self.seen {
                    seen.items += 1;
                }
                return Poll::Ready(Some(Ok(item)));
            }
            if let Some(error) = self.failed.take() {
                Seen::record(&self.seen, Some(&error));
                return Poll::Ready(Some(Err(error)));
            }
            if let Some((sleep, timeout)) = &mut self.deadline
                && sleep.as_mut().poll(cx).is_ready()
            {
                let timeout = *timeout;
                self.deadline = None;
                let finished = self.inbound.0.lock().finished;
                if !finished {
                    self.current = None;
                    self.inbound.0.give_up();
                    let error = RpcError::DeadlineExceeded { timeout };
                    Seen::record(&self.seen, Some(&error));
                    return Poll::Ready(Some(Err(error)));
                }
            }
            let run =
                self.inbound
                    .0
                    .poll_run(cx, self.decode, &mut self.current, &mut self.decoded);
            match run {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(None)) => {}
                Poll::Ready(Ok(Some(cost))) => self.owed = cost,
                Poll::Ready(Err(None)) => {
                    Seen::record(&self.seen, None);
                    return Poll::Ready(None);
                }
                Poll::Ready(Err(Some(error))) => self.failed = Some(error),
            }
        }
    }
}

/// The span of the call a stream belongs to, and the items taken so far:
/// the span learns how many came when the stream ends, or is dropped.
struct Seen {
    span: tracing::Span,
    items: u64,
    /// Whether the stream's end is the call's (a server stream the client
    /// reads), so that a clean end is the call's status.
    ends_call: bool,
}

impl Seen {
    /// Tells the span how many items came, and the error that ended the
    /// stream, if one did.
    fn record(seen: &Option<Box<Seen>>, error: Option<&RpcError>) {
        let Some(seen) = seen else { return };
        seen.span.record("rpc.items_received", seen.items);
        match error {
            Some(error) => crate::trace::failed(&seen.span, error),
            None if seen.ends_call => crate::trace::ended(&seen.span, Some(crate::Code::Ok)),
            None => {}
        }
    }
}

impl Drop for Seen {
    fn drop(&mut self) {
        self.span.record("rpc.items_received", self.items);
    }
}

/// A consumer's hold on an [`Inbound`]: let go before the stream's end,
/// it tells the peer.
struct Hold(Inbound);

impl Drop for Hold {
    fn drop(&mut self) {
        let inbound = &self.0;
        let mut state = inbound.lock();
        let early = !state.finished && state.end.is_none();
        state.dropped = true;
        state.frames.clear();
        drop(state);
        if early {
            inbound.0.link.abandon(inbound.0.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Detached;

    /// `values` encoded one after the other, as an items frame holds them.
    fn items(values: &[u32]) -> Bytes {
        let mut buf = BytesMut::new();
        for value in values {
            codec::encode(value, &mut buf, usize::MAX).unwrap();
        }
        buf.freeze()
    }

    fn read(count: u32, bytes: Bytes) -> Vec<Result<u32, String>> {
        let inbound = Inbound::new(1, 0, Arc::new(Detached));
        let cost = bytes.len();
        inbound.push(count, bytes, cost).unwrap();
        inbound.finish(Ok(()));
        crate::stream::read_now::<u32>(inbound)
            .into_iter()
            .map(|item| item.map_err(|e| format!("{e:?}")))
            .collect()
    }

    /// A connection that keeps the grants a receiver sends.
    #[derive(Default)]
    struct Grants(Mutex<Vec<u32>>);

    impl Link for Grants {
        fn send(&self, frame: BytesMut) -> bool {
            let payload = frame.freeze().slice(crate::frame::PREFIX_LEN..);
            match envelope::decode(&payload) {
                Ok(envelope::Message::Credit { bytes, .. }) => self.0.lock().unwrap().push(bytes),
                other => panic!("not a grant: {other:?}"),
            }
            true
        }

        fn abandon(&self, _id: u64) {}
    }

    #[test]
    fn no_grant_is_smaller_than_the_initial_credit() {
        // A server counts smaller grants as free work and limits them.
        let link = Arc::new(Grants::default());
        let inbound = Inbound::new(1, 64 * 1024, link.clone());
        let mut reader = Reader::new(inbound.clone(), None, decode::<u32, u32>);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..8 {
            inbound.push(1, items(&[5]), 24 * 1024).unwrap();
            assert!(matches!(
                reader.poll_item(&mut cx),
                Poll::Ready(Some(Ok(5)))
            ));
        }
        let grants = link.0.lock().unwrap().clone();
        assert!(grants.len() > 2, "{grants:?}");
        assert!(
            grants.iter().all(|&bytes| bytes >= INITIAL_CREDIT),
            "{grants:?}"
        );
    }

    #[test]
    fn credit_goes_back_once_every_item_of_a_frame_is_taken() {
        let link = Arc::new(Grants::default());
        let sent = || link.0.lock().unwrap().len();
        let inbound = Inbound::new(1, MIN_WINDOW, link.clone());
        let opening = sent();
        // Half the window, so that taking it all makes a grant.
        let values: Vec<u32> = (0..10).collect();
        inbound.push(10, items(&values), MIN_WINDOW / 2).unwrap();
        let mut reader = Reader::new(inbound, None, decode::<u32, u32>);
        let mut cx = Context::from_waker(Waker::noop());
        for i in 0..9 {
            assert!(matches!(reader.poll_item(&mut cx), Poll::Ready(Some(Ok(n))) if n == i));
        }
        assert_eq!(sent(), opening, "no grant while an item is still unread");
        assert!(matches!(
            reader.poll_item(&mut cx),
            Poll::Ready(Some(Ok(9)))
        ));
        assert_eq!(sent(), opening + 1, "the grant once the last is taken");
    }

    #[test]
    fn a_frame_of_many_runs_reads_in_order() {
        let values: Vec<u32> = (0..3 * RUN + 5).map(|i| i * 1_000).collect();
        let read = read(values.len() as u32, items(&values));
        assert_eq!(read, values.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn items_before_a_bad_one_come_first_then_one_error() {
        let values: Vec<u32> = (0..RUN + 10).collect();
        let mut bytes = items(&values).to_vec();
        // Item RUN + 3 (a one-byte varint) becomes the tag of a u64 varint,
        // which a u32 cannot hold.
        bytes[RUN as usize + 3] = 253;
        let read = read(values.len() as u32, Bytes::from(bytes));
        let (good, bad): (Vec<_>, Vec<_>) = read.iter().partition(|item| item.is_ok());
        assert_eq!(
            good.len(),
            RUN as usize + 3,
            "every item before the bad one"
        );
        assert_eq!(bad.len(), 1, "one error: {read:?}");
        assert!(read.last().unwrap().is_err(), "the error is last");
    }

    #[test]
    fn a_frame_short_of_items_or_with_bytes_left_is_an_error() {
        let values: Vec<u32> = (0..RUN + 1).collect();
        let short = read(values.len() as u32 + 1, items(&values));
        assert!(short.last().unwrap().is_err(), "{short:?}");
        assert_eq!(short.iter().filter(|item| item.is_err()).count(), 1);
        let long = read(values.len() as u32 - 1, items(&values));
        let last = long.last().unwrap().as_ref().unwrap_err();
        assert!(last.contains("after the last item"), "{last}");
    }
}
