//! The writing half of a client connection: what the callers and the
//! reader queue in the outbox, written in batches.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::Closed;
use crate::client::pending::Pending;
use crate::transport::{Buffer, FrameWriter, Outbox};

/// How long a connection whose channel was closed or dropped waits for the
/// server to close its end once no caller waits for an answer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes what is queued until every caller is gone (then it half-closes)
/// or the reader ends.
pub(super) async fn write_loop(
    mut writer: FrameWriter,
    outbox: Arc<Outbox>,
    mut reader_done: oneshot::Receiver<()>,
    _alive: oneshot::Sender<()>,
    closed: Arc<Closed>,
    pending: Arc<Pending>,
) {
    // However the loop ends, nothing more is queued for it.
    let _stopped = Stopped(&outbox);
    let mut buffers: Vec<Buffer> = Vec::new();
    loop {
        let more = tokio::select! {
            biased;
            _ = &mut reader_done => return,
            more = std::future::poll_fn(|cx| outbox.poll_queued(cx)) => more,
        };
        if !more {
            // `Channel::close`, or every Channel clone gone (and with them
            // every caller).
            let by_close = closed.is_closed() && closed.reason() == super::CLOSED_BY_CALLER;
            closed.set("the channel was dropped");
            writer.shutdown().await;
            // The reader goes on until the server closes its end (it
            // answers what it has read first): ending here would end the
            // reader, and the answers with it. But not for ever: once no
            // caller waits (a close waits for its calls; a dropped
            // channel has none), the server gets a while to close, and
            // then returning ends the reader and frees the socket.
            loop {
                tokio::select! {
                    _ = &mut reader_done => return,
                    () = tokio::time::sleep(LINGER) => {
                        if !by_close || !pending.has_callers() {
                            return;
                        }
                    }
                }
            }
        }
        // The caller that woke the writer ran first; let the others that
        // are ready queue their calls too, so that they go out together.
        tokio::task::yield_now().await;
        outbox.take_now(&mut buffers);
        tokio::select! {
            biased;
            _ = &mut reader_done => return,
            written = writer.write_buffers(&buffers) => if let Err(e) = written {
                closed.set(format!("writing to the server failed: {e}"));
                return;
            },
        }
        buffers.clear();
    }
}

/// Marks the outbox's writer as stopped when the write loop ends.
struct Stopped<'a>(&'a Outbox);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        // A client counts nothing against what it queues.
        drop(self.0.writer_stopped());
    }
}
