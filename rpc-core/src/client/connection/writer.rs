//! The writing half of a client connection: requests and cancels from the
//! callers, pings and pongs from the reader, written in batches.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};

use super::Closed;
use crate::transport::{self, FrameWriter};

/// Most frames taken off the queue for one write.
const MAX_BATCH: usize = 256;

/// Writes what the callers queue until every caller's queue handle is gone
/// (then it half-closes) or the reader ends. Frames of the reader go first.
pub(super) async fn write_loop(
    mut writer: FrameWriter,
    mut calls: mpsc::UnboundedReceiver<BytesMut>,
    mut control: mpsc::UnboundedReceiver<BytesMut>,
    mut reader_done: oneshot::Receiver<()>,
    _alive: oneshot::Sender<()>,
    closed: Arc<Closed>,
) {
    // Empty until used; it grows to the batches actually seen.
    let mut frames = Vec::new();
    loop {
        let taken = tokio::select! {
            biased;
            _ = &mut reader_done => return,
            Some(frame) = control.recv() => {
                frames.push(frame);
                1
            }
            taken = calls.recv_many(&mut frames, MAX_BATCH) => {
                if taken == 0 {
                    // Every Channel clone is gone, and with them every caller.
                    closed.set("the channel was dropped");
                    writer.shutdown().await;
                    return;
                }
                taken
            }
        };
        debug_assert!(taken > 0);
        transport::gather_ready(&mut calls, &mut frames, MAX_BATCH).await;
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
