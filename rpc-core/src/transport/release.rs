//! Letting go of a read buffer that grew for a large frame.
//!
//! A frame is a slice of its connection's read buffer, and the buffer
//! keeps the size of the largest frame it held. While large frames keep
//! coming it is reused in place (replacing it after every frame cost a
//! fifth of W4 1 MiB throughput); once none has come for [`KEPT`], it is
//! replaced by one just large enough for what it holds. Without this a
//! connection that sent one 12 MiB call kept 16 MiB for as long as it
//! lived, on the server and on the client alike.

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::FrameReader;
use crate::duration::until;

/// Frames at least this large grow the buffer enough to be worth releasing.
const LARGE_FRAME: usize = 64 * 1024;

/// How long a buffer is kept after the last large frame.
const KEPT: Duration = Duration::from_secs(1);

/// When, if at all, a connection's read buffer is to be let go.
#[derive(Debug, Default)]
pub(crate) struct Release {
    at: Option<Instant>,
}

impl Release {
    /// Notes a frame of `len` bytes just read.
    pub(crate) fn saw(&mut self, len: usize) {
        if len >= LARGE_FRAME {
            self.at = Some(Instant::now() + KEPT);
        }
    }

    /// Whether a release is due some time.
    pub(crate) fn pending(&self) -> bool {
        self.at.is_some()
    }

    /// Completes when the release is due; never if none is. Costs nothing
    /// until polled, so a disabled `select!` branch can build it freely.
    pub(crate) fn due(&self) -> impl Future<Output = ()> + use<> {
        until(self.at)
    }

    /// Replaces the buffer, keeping what is in it: at most a frame being
    /// received.
    pub(crate) fn release(&mut self, frames: &mut FrameReader) {
        self.at = None;
        let buffer = frames.read_buffer_mut();
        *buffer = BytesMut::from(&buffer[..]);
    }
}
