//! The writing half of a connection: replies queued by the calls go out in
//! batches, and what is queued is counted against the reply backlog.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use crate::server::held::Held;
use crate::transport::{self, FrameWriter};

/// Most replies taken off the queue for one write.
const MAX_BATCH: usize = 256;

/// Bytes a queued reply costs beyond its buffer: a queue slot and the
/// allocator's header, rounded up.
const QUEUED_FRAME_OVERHEAD: usize = 64;

/// Where calls put their replies; cloned into every call's task. The
/// writer ends once every clone is dropped and the queue is written.
#[derive(Clone)]
pub(super) struct Outbox {
    replies: mpsc::UnboundedSender<BytesMut>,
    backlog: Arc<Held>,
}

impl Outbox {
    /// Queues a frame for the writer, counting it against the backlog until
    /// it is written.
    pub(super) fn send(&self, frame: BytesMut) {
        self.hold(&frame);
        self.send_held(frame);
    }

    /// Counts a frame against the backlog before it is queued: a reader
    /// that defers its replies must not read on past the limit meanwhile.
    pub(super) fn hold(&self, frame: &BytesMut) {
        self.backlog.add(held_by(frame));
    }

    /// Queues a frame already counted by [`Outbox::hold`].
    pub(super) fn send_held(&self, frame: BytesMut) {
        // Fails only if the connection already closed; nobody to tell.
        if let Err(unsent) = self.replies.send(frame) {
            self.backlog.sub(held_by(&unsent.0));
        }
    }

    pub(super) fn backlog(&self) -> &Held {
        &self.backlog
    }

    /// Completes when the writer has stopped.
    pub(super) async fn closed(&self) {
        self.replies.closed().await;
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
    let (replies, queued) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel();
    let backlog = Arc::new(Held::new(max_queued_reply_bytes));
    let task = tokio::spawn(write_loop(writer, queued, stopped, backlog.clone()));
    (Outbox { replies, backlog }, stop, task)
}

/// What a queued frame costs in memory: its allocation, not just its
/// bytes (a 16-byte reply sits in a 128-byte buffer), plus its slot in the
/// queue and the allocator's own bookkeeping. Counting only the bytes let
/// 4 MiB of small replies take 44 MiB.
fn held_by(frame: &BytesMut) -> usize {
    frame.capacity() + QUEUED_FRAME_OVERHEAD
}

async fn write_loop(
    mut writer: FrameWriter,
    mut replies: mpsc::UnboundedReceiver<BytesMut>,
    mut stopped: oneshot::Receiver<()>,
    backlog: Arc<Held>,
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
