//! The sending half of a connection: buffers of whole frames, one write
//! each (the outbox has already put small frames together).

use std::io;

use tokio::io::AsyncWriteExt;

use super::Buffer;
use super::stream::WriteHalf;

/// The sending half of a connection.
pub(crate) struct FrameWriter {
    pub(super) io: WriteHalf,
}

impl FrameWriter {
    /// Writes `buffers`, each of whole frames (prefix included), in order.
    pub(crate) async fn write_buffers(&mut self, buffers: &[Buffer]) -> io::Result<()> {
        for buffer in buffers {
            self.io.write_all(&buffer.bytes).await?;
        }
        // A no-op on TCP; TLS may hold the last record until flushed.
        self.io.flush().await
    }

    /// Sends FIN: the peer reads end-of-stream after the frames already sent.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}
