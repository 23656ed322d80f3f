//! A writer that gives up when the peer stops taking bytes.
//!
//! A peer that never reads fills its receive window, and from then on every
//! write waits. Without a bound that wait pins the writing task, its
//! buffers and the connection's file descriptor for as long as the peer
//! likes. The timer runs only while a write waits, so a large frame sent
//! slowly but steadily never trips it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

/// `inner`, failing with `TimedOut` once a write, flush or shutdown has
/// made no progress for `timeout`.
pub(crate) struct StallTimeout<W> {
    inner: W,
    timeout: Duration,
    /// Made on the first stall and reused after; set while a write waits.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<W> StallTimeout<W> {
    pub(crate) fn new(inner: W, timeout: Duration) -> Self {
        StallTimeout {
            inner,
            timeout,
            timer: None,
            waiting: false,
        }
    }

    /// Notes the outcome of one poll of the inner writer.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            timer.as_mut().reset(deadline);
            self.waiting = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer took no bytes for {:?}", self.timeout),
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
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
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
        let (near, mut far) = tokio::io::duplex(16);
        let reading = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 16];
            let mut total = 0;
            while total < 160 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += far.read(&mut buf).await.unwrap();
            }
        });
        let mut writer = StallTimeout::new(near, Duration::from_secs(5));
        // Ten stalls of 4 s each: 40 s in all, none of them 5 s long.
        writer.write_all(&[0; 160]).await.unwrap();
        reading.await.unwrap();
    }
}
