//! The sending half of a connection: many frames per system call.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::stream::WriteHalf;

/// Frames below this size are copied into one buffer and written together;
/// larger ones are written from where they lie, since the copy would cost
/// more than the system call it saves.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Completes a batch whose first items just arrived on `queue`.
///
/// Under tokio's scheduling the task that woke the writer runs first and the
/// writer right after it, finding one item: one system call per call.
/// Yielding once lets every other task that is ready to send queue its
/// frame, and they all go out together; at low load it costs one task
/// switch.
pub(crate) async fn gather_ready<T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    max: usize,
) {
    if batch.is_empty() || batch.len() >= max {
        return;
    }
    tokio::task::yield_now().await;
    while batch.len() < max {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

/// The sending half of a connection.
pub(crate) struct FrameWriter {
    pub(super) io: WriteHalf,
    pub(super) out: BytesMut,
}

impl FrameWriter {
    /// Writes whole frames (prefix included), emptying `frames`, in as few
    /// system calls as their sizes allow.
    pub(crate) async fn write_batch(&mut self, frames: &mut Vec<BytesMut>) -> io::Result<()> {
        if frames.len() == 1 {
            let frame = frames.pop().expect("one frame");
            self.io.write_all(&frame).await?;
            // A no-op on TCP; TLS may hold the last record until flushed.
            return self.io.flush().await;
        }
        for frame in frames.drain(..) {
            if frame.len() >= COALESCE_LIMIT {
                self.flush_out().await?;
                self.io.write_all(&frame).await?;
            } else {
                self.out.extend_from_slice(&frame);
                if self.out.len() >= COALESCE_LIMIT {
                    self.flush_out().await?;
                }
            }
        }
        self.flush_out().await?;
        self.io.flush().await
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends FIN: the peer reads end-of-stream after the frames already sent.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}
