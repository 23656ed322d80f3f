//! What a connection has to send, in the order it was queued, for its
//! writer to take in one go; clients and servers each have one per
//! connection.
//!
//! Small frames are copied into one buffer as they are queued, so a batch
//! of calls or replies is one buffer and one write, with no channel and
//! nothing to free per frame: a frame per call on an `mpsc` queue cost the
//! client an allocation and about 500 instructions per small call
//! (rpc-bench W2, counted with callgrind). A large frame keeps its own
//! buffer, queued behind what came before it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::sync::Notify;

/// Frames at least this large are queued as buffers of their own; smaller
/// ones are copied.
const COPY_LIMIT: usize = 64 * 1024;

/// Room a new shared buffer starts with.
const FIRST_BUFFER: usize = 512;

/// One connection's queue of frames for its writer.
#[derive(Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The writer has stopped: nothing queued from now on is sent. Read
    /// without the lock on every call; set under it.
    writer_gone: AtomicBool,
    /// Woken when the writer stops.
    stopped: Notify,
}

#[derive(Default)]
struct State {
    queued: Batch,
    /// The writer, waiting for something to send.
    writer: Option<Waker>,
    /// Nothing more will be queued: the writer sends what is and stops.
    closed: bool,
    /// Something queued came alone (`push`): from a task whose siblings
    /// may have frames ready too, worth letting them queue theirs before
    /// writing. What came as a batch is a server reader's whole burst.
    singles: bool,
}

/// Frames in the order they go out, small ones copied together: what an
/// outbox queues, and what a server's reader gathers before it hands a
/// burst of replies on in one go.
#[derive(Default)]
pub(crate) struct Batch {
    /// Each buffer with the sum of the costs of its frames; small frames
    /// are appended to the last one.
    buffers: VecDeque<Buffer>,
    /// Whether the last buffer takes more small frames: not once it holds
    /// a large frame, nor once it has been taken.
    tail_open: bool,
}

impl Batch {
    /// Adds the whole frame in `frame`, copying it if it is small; a large
    /// one is taken out of `frame`, which is left empty either way.
    pub(crate) fn push(&mut self, frame: &mut BytesMut, cost: usize) {
        if frame.len() >= COPY_LIMIT {
            self.buffers.push_back(Buffer {
                bytes: frame.split(),
                cost,
            });
            self.tail_open = false;
            return;
        }
        if !self.tail_open {
            self.buffers.push_back(Buffer {
                bytes: BytesMut::with_capacity(frame.len().max(FIRST_BUFFER)),
                cost: 0,
            });
            self.tail_open = true;
        }
        let tail = self.buffers.back_mut().expect("an open tail");
        tail.bytes.extend_from_slice(frame);
        tail.cost += cost;
        frame.clear();
    }

    /// Whether it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    /// Drops what it holds, returning the sum of its costs.
    pub(crate) fn clear(&mut self) -> usize {
        let cost = self.buffers.iter().map(|b| b.cost).sum();
        self.buffers.clear();
        self.tail_open = false;
        cost
    }

    /// Moves its buffers to the end of `into`.
    fn drain_into(&mut self, into: &mut impl Extend<Buffer>) {
        into.extend(self.buffers.drain(..));
        self.tail_open = false;
    }
}

/// Whole frames, ready for one write.
pub(crate) struct Buffer {
    pub(crate) bytes: BytesMut,
    /// The sum of the costs its frames were queued with.
    pub(crate) cost: usize,
}

/// The writer has stopped; the frame was not queued.
#[derive(Debug)]
pub(crate) struct WriterGone;

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned queue is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the whole frame in `frame` (prefix included), copying it if
    /// it is small; a large one is taken out of `frame`, which is left
    /// empty either way. `cost` is handed back with the buffer it went
    /// into, for the caller's own accounting.
    pub(crate) fn push(&self, frame: &mut BytesMut, cost: usize) -> Result<(), WriterGone> {
        let mut state = self.lock();
        if self.writer_gone.load(Ordering::Relaxed) {
            frame.clear();
            return Err(WriterGone);
        }
        state.queued.push(frame, cost);
        state.singles = true;
        self.wake(state);
        Ok(())
    }

    /// Queues everything in `batch`, leaving it empty: one lock for a whole
    /// burst. On `WriterGone` the batch is left as it was.
    pub(crate) fn push_batch(&self, batch: &mut Batch) -> Result<(), WriterGone> {
        let mut state = self.lock();
        if self.writer_gone.load(Ordering::Relaxed) {
            return Err(WriterGone);
        }
        batch.drain_into(&mut state.queued.buffers);
        state.queued.tail_open = false;
        self.wake(state);
        Ok(())
    }

    fn wake(&self, mut state: MutexGuard<'_, State>) {
        let writer = state.writer.take();
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
    }

    /// Ready with `true` once something is queued, with `false` once
    /// nothing is and nothing more will be. Takes nothing: the writer
    /// first lets the other tasks that are ready queue theirs, and small
    /// frames queued meanwhile are copied into the same buffer, so that
    /// the burst goes out in one write (taking the first frame at once
    /// cost a second write per burst, 20,355 writes for 222,000 calls
    /// against raw framing's 11,907).
    pub(crate) fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.lock();
        if !state.queued.is_empty() {
            return Poll::Ready(true);
        }
        if state.closed {
            return Poll::Ready(false);
        }
        match &state.writer {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.writer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Moves whatever is queued now into `into`; whether there was any.
    pub(crate) fn take_now(&self, into: &mut Vec<Buffer>) -> bool {
        self.lock().take(into)
    }

    /// Whether anything queued since the last take came alone rather than
    /// in a batch (see [`Outbox::push_batch`]).
    pub(crate) fn has_singles(&self) -> bool {
        self.lock().singles
    }

    /// Nothing more will be queued: the writer sends what is, then stops.
    pub(crate) fn close(&self) {
        let writer = {
            let mut state = self.lock();
            state.closed = true;
            state.writer.take()
        };
        if let Some(writer) = writer {
            writer.wake();
        }
    }

    /// The writer has stopped; what is queued is dropped and returned, so
    /// that its cost can be given back.
    pub(crate) fn writer_stopped(&self) -> Vec<Buffer> {
        let dropped = {
            let mut state = self.lock();
            self.writer_gone.store(true, Ordering::Relaxed);
            let mut dropped = Vec::new();
            state.queued.drain_into(&mut dropped);
            dropped
        };
        self.stopped.notify_waiters();
        dropped
    }

    /// Whether the writer has stopped.
    pub(crate) fn is_writer_gone(&self) -> bool {
        self.writer_gone.load(Ordering::Relaxed)
    }

    /// Completes once the writer has stopped.
    pub(crate) async fn writer_gone(&self) {
        let stopped = self.stopped.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if self.is_writer_gone() {
            return;
        }
        stopped.await;
    }
}

impl State {
    fn take(&mut self, into: &mut Vec<Buffer>) -> bool {
        if self.queued.is_empty() {
            return false;
        }
        self.queued.drain_into(into);
        self.singles = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use futures::task::noop_waker_ref;

    fn frame(len: usize, byte: u8) -> BytesMut {
        BytesMut::from(&vec![byte; len][..])
    }

    /// Each buffer's length, first byte and cost.
    fn lengths_firsts_costs(taken: &[Buffer]) -> Vec<(usize, u8, usize)> {
        taken
            .iter()
            .map(|b| (b.bytes.len(), b.bytes[0], b.cost))
            .collect()
    }

    #[test]
    fn small_frames_share_a_buffer_and_large_ones_keep_their_place() {
        let outbox = Outbox::default();
        for byte in [1, 2] {
            outbox.push(&mut frame(10, byte), 10).unwrap();
        }
        let mut large = frame(COPY_LIMIT, 3);
        outbox.push(&mut large, 7).unwrap();
        assert!(large.is_empty());
        outbox.push(&mut frame(10, 4), 1).unwrap();
        let mut taken = Vec::new();
        assert!(outbox.take_now(&mut taken));
        let seen = lengths_firsts_costs(&taken);
        assert_eq!(seen, [(20, 1, 20), (COPY_LIMIT, 3, 7), (10, 4, 1)]);
        assert_eq!(taken[0].bytes[10], 2);
        assert!(!outbox.take_now(&mut taken), "nothing left");
    }

    #[test]
    fn a_batch_goes_in_whole_and_behind_what_was_queued() {
        let outbox = Outbox::default();
        outbox.push(&mut frame(10, 1), 1).unwrap();
        let mut batch = Batch::default();
        batch.push(&mut frame(10, 2), 2);
        batch.push(&mut frame(10, 3), 3);
        outbox.push_batch(&mut batch).unwrap();
        assert!(batch.is_empty());
        outbox.push(&mut frame(10, 4), 4).unwrap();
        let mut taken = Vec::new();
        assert!(outbox.take_now(&mut taken));
        let seen = lengths_firsts_costs(&taken);
        assert_eq!(seen, [(10, 1, 1), (20, 2, 5), (10, 4, 4)]);
    }

    #[test]
    fn only_frames_queued_alone_are_singles() {
        let outbox = Outbox::default();
        let mut batch = Batch::default();
        batch.push(&mut frame(10, 1), 1);
        outbox.push_batch(&mut batch).unwrap();
        assert!(!outbox.has_singles(), "a batch is a whole burst");
        outbox.push(&mut frame(10, 2), 1).unwrap();
        assert!(outbox.has_singles());
        let mut taken = Vec::new();
        assert!(outbox.take_now(&mut taken));
        assert!(!outbox.has_singles(), "taken, nothing is left alone");
    }

    #[test]
    fn the_writer_waits_for_frames_and_stops_once_the_queue_closes() {
        let outbox = Outbox::default();
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut taken = Vec::new();
        assert!(outbox.poll_queued(&mut cx).is_pending());
        outbox.push(&mut frame(5, 1), 0).unwrap();
        assert_eq!(outbox.poll_queued(&mut cx), Poll::Ready(true));
        assert_eq!(
            outbox.poll_queued(&mut cx),
            Poll::Ready(true),
            "still queued"
        );
        outbox.push(&mut frame(5, 2), 0).unwrap();
        outbox.close();
        assert_eq!(outbox.poll_queued(&mut cx), Poll::Ready(true), "sent first");
        assert!(outbox.take_now(&mut taken));
        assert_eq!(lengths_firsts_costs(&taken), [(10, 1, 0)], "one buffer");
        assert_eq!(outbox.poll_queued(&mut cx), Poll::Ready(false));
    }

    #[test]
    fn once_the_writer_stops_nothing_is_queued_and_waiters_hear_of_it() {
        let outbox = Outbox::default();
        let mut waiting = Box::pin(outbox.writer_gone());
        assert!((&mut waiting).now_or_never().is_none());
        outbox.push(&mut frame(5, 1), 3).unwrap();
        let dropped = outbox.writer_stopped();
        assert_eq!(dropped.iter().map(|b| b.cost).sum::<usize>(), 3);
        assert!(waiting.now_or_never().is_some());
        assert!(outbox.push(&mut frame(5, 1), 0).is_err());
        assert!(outbox.is_writer_gone());
    }
}
