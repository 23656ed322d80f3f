//! The writing half of a connection: replies queued by the calls go out in
//! batches, and what is queued is counted against the reply backlog.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::oneshot;

use crate::server::held::Held;
use crate::transport::{self, Batch, Buffer, FrameWriter};

/// Bytes a queued reply is counted beyond its buffer: the allocator's
/// header and the queue's share, rounded up.
const QUEUED_FRAME_OVERHEAD: usize = 64;

/// Where calls put their replies; cloned into every call's task. The
/// writer ends once every clone is dropped and the queue is written.
#[derive(Clone)]
pub(super) struct Outbox(Arc<Senders>);

/// What every clone of an [`Outbox`] shares; the last one dropped tells
/// the writer that nothing more is coming.
struct Senders {
    queue: Arc<transport::Outbox>,
    backlog: Arc<Held>,
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Outbox {
    /// Queues a frame for the writer, counting it against the backlog until
    /// it is written.
    /// `false` if the connection already closed.
    pub(super) fn send(&self, mut frame: BytesMut) -> bool {
        let cost = held_by(&frame);
        self.0.backlog.add(cost);
        if self.0.queue.push(&mut frame, cost).is_err() {
            self.0.backlog.sub(cost);
            return false;
        }
        true
    }

    /// Adds a frame to `batch`, a burst to queue in one go with
    /// [`Outbox::send_batch`], counting it against the backlog from now on:
    /// a reader that defers its replies must not read on past the limit
    /// meanwhile.
    pub(super) fn hold_in(&self, batch: &mut Batch, mut frame: BytesMut) {
        let cost = held_by(&frame);
        self.0.backlog.add(cost);
        batch.push(&mut frame, cost);
    }

    /// Queues a batch made with [`Outbox::hold_in`], leaving it empty.
    pub(super) fn send_batch(&self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        // Fails only if the connection already closed; nobody to tell.
        if self.0.queue.push_batch(batch).is_err() {
            self.0.backlog.sub(batch.clear());
        }
    }

    pub(super) fn backlog(&self) -> &Held {
        &self.0.backlog
    }

    /// Completes when the writer has stopped.
    pub(super) async fn closed(&self) {
        self.0.queue.writer_gone().await;
    }
}

/// Starts the writer of a connection: the outbox calls queue into, and the
/// task, which ends with the reason writing failed, if it did. Dropping
/// the returned sender stops the writer at once, unsent replies dropped.
pub(super) fn spawn(
    writer: FrameWriter,
    max_queued_reply_bytes: usize,
) -> (
    Outbox,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let queue = Arc::new(transport::Outbox::default());
    let (stop, stopped) = oneshot::channel();
    let backlog = Arc::new(Held::new(max_queued_reply_bytes));
    let task = tokio::spawn(write_loop(writer, queue.clone(), stopped, backlog.clone()));
    (Outbox(Arc::new(Senders { queue, backlog })), stop, task)
}

/// What a queued frame is counted as: its allocation, not just its bytes
/// (a 16-byte reply sits in a 128-byte buffer until it is queued), plus
/// the allocator's own bookkeeping. Counting only the bytes let 4 MiB of
/// small replies take 44 MiB.
fn held_by(frame: &BytesMut) -> usize {
    frame.capacity() + QUEUED_FRAME_OVERHEAD
}

async fn write_loop(
    mut writer: FrameWriter,
    queue: Arc<transport::Outbox>,
    mut stopped: oneshot::Receiver<()>,
    backlog: Arc<Held>,
) -> Result<(), String> {
    // However it ends, what is left unsent stops counting.
    let _stop = Stop {
        queue: &queue,
        backlog: &backlog,
    };
    // Empty until used: an idle connection should cost next to nothing.
    let mut buffers: Vec<Buffer> = Vec::new();
    let ended = loop {
        let more = tokio::select! {
            biased;
            _ = &mut stopped => break Ok(()),
            more = std::future::poll_fn(|cx| queue.poll_queued(cx)) => more,
        };
        if !more {
            writer.shutdown().await;
            break Ok(());
        }
        // The task that woke the writer ran first; let the others that are
        // ready queue their replies too, so that they go out together. Not
        // after a reader's batch alone: that is its whole burst, and the
        // yield cost a sequential caller a round through the scheduler, often
        // to the other worker (a round trip from Python took 40 us, 13-25 us
        // without it).
        if queue.has_singles() {
            tokio::task::yield_now().await;
        }
        queue.take_now(&mut buffers);
        let written = tokio::select! {
            biased;
            _ = &mut stopped => break Ok(()),
            written = writer.write_buffers(&buffers) => written,
        };
        backlog.sub(buffers.drain(..).map(|buffer| buffer.cost).sum());
        if let Err(e) = written {
            break Err(format!("writing replies failed: {e}"));
        }
    };
    // Taken but not written: the connection is ending, but a reader
    // waiting for room must not see them held.
    backlog.sub(buffers.iter().map(|buffer| buffer.cost).sum());
    ended
}

/// Marks the queue's writer as stopped, and gives back what it held.
struct Stop<'a> {
    queue: &'a transport::Outbox,
    backlog: &'a Held,
}

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let unsent: usize = self.queue.writer_stopped().iter().map(|b| b.cost).sum();
        self.backlog.sub(unsent);
    }
}
