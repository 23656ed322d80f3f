//! A writer that gives up when the peer stops taking bytes.
//!
//! A peer that never reads fills its receive window, and from then on every
//! write waits. Without a bound that wait pins the writing task, its
//! buffers and the connection's file descriptor for as long as the peer
//! likes. The timer runs only while a write waits, so a large frame sent
//! slowly but steadily never trips it; but the peer must take at least
//! [`PROGRESS_FLOOR`] bytes per timeout for that, or all it has asked for:
//! a peer that reads one byte every 29 s (found in review) would otherwise
//! hold a 30 s timeout off for ever.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

/// Bytes a waiting writer must get out within one timeout to count as
/// progress: 64 KiB per 30 s is about 2 KiB/s, far below any honest link.
pub(crate) const PROGRESS_FLOOR: usize = 64 * 1024;

/// `inner`, failing with `TimedOut` once a write, flush or shutdown has
/// waited `timeout` without [`PROGRESS_FLOOR`] bytes taken or the writing
/// finished.
pub(crate) struct StallTimeout<W> {
    inner: W,
    timeout: Duration,
    /// Made on the first stall and reused after.
    timer: Option<Pin<Box<Sleep>>>,
    /// Set from a stall until the floor is reached or a flush completes.
    armed: bool,
    /// Bytes written since the timer was armed.
    progress: usize,
}

impl<W> StallTimeout<W> {
    pub(crate) fn new(inner: W, timeout: Duration) -> Self {
        StallTimeout {
            inner,
            timeout,
            timer: None,
            armed: false,
            progress: 0,
        }
    }

    /// Notes the outcome of one poll of the inner writer: `written` bytes
    /// taken, or `None` for a flush or shutdown, which ends the writing.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        written: impl FnOnce(&T) -> Option<usize>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(result) = &polled {
            let done = match result {
                Ok(value) => match written(value) {
                    Some(bytes) => {
                        self.progress = self.progress.saturating_add(bytes);
                        self.progress >= PROGRESS_FLOOR
                    }
                    None => true,
                },
                Err(_) => true,
            };
            if done {
                self.armed = false;
            }
            return polled;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
            self.progress = 0;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the peer took under {PROGRESS_FLOOR} bytes in {:?}",
                self.timeout
            ),
        )))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallTimeout<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled, |n| Some(*n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled, |n| Some(*n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled, |()| None)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled, |()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_reads_times_out() {
        let (near, _far) = tokio::io::duplex(16);
        let mut writer = StallTimeout::new(near, Duration::from_secs(5));
        let started = Instant::now();
        let err = writer.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_steady_progress_never_times_out() {
        const CHUNK: usize = 32 * 1024;
        let (near, mut far) = tokio::io::duplex(CHUNK);
        let reading = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; CHUNK];
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                far.read_exact(&mut buf).await.unwrap();
            }
        });
        let mut writer = StallTimeout::new(near, Duration::from_secs(5));
        // 40 s in all, stalls of 2 s each, the floor taken every 4 s.
        writer.write_all(&vec![0; 20 * CHUNK]).await.unwrap();
        writer.flush().await.unwrap();
        reading.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_below_the_floor_times_out() {
        let (near, mut far) = tokio::io::duplex(16);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if far.read(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
        });
        let mut writer = StallTimeout::new(near, Duration::from_secs(5));
        let started = Instant::now();
        // Progress every second, but 16 bytes of it: before, each byte
        // taken restarted the timer and this ran for over an hour.
        let err = writer.write_all(&[0; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_write_disarms_the_timer() {
        let (near, mut far) = tokio::io::duplex(16);
        let mut writer = StallTimeout::new(near, Duration::from_secs(5));
        let reading = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 32];
            tokio::time::sleep(Duration::from_secs(4)).await;
            far.read_exact(&mut buf).await.unwrap();
            far
        });
        // A stall of 4 s that ends with everything written.
        writer.write_all(&[0; 32]).await.unwrap();
        writer.flush().await.unwrap();
        let mut far = reading.await.unwrap();
        // A later stall of 4 s is a new one, not 8 s of the old.
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 32];
            tokio::time::sleep(Duration::from_secs(4)).await;
            far.read_exact(&mut buf).await.unwrap();
        });
        writer.write_all(&[0; 32]).await.unwrap();
    }
}
