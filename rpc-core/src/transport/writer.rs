//! The sending half of a connection: buffers of whole frames, in one
//! vectored write where the stream takes them (the outbox has already put
//! small frames together).

use std::io::{self, IoSlice};

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
        match buffers {
            [] => {}
            [one] => self.io.write_all(&one.bytes).await?,
            // Replies batched apart (a burst, then a large frame, then the
            // next burst) still go in one system call.
            _ if self.io.is_write_vectored() => self.write_vectored_all(buffers).await?,
            _ => {
                for buffer in buffers {
                    self.io.write_all(&buffer.bytes).await?;
                }
            }
        }
        // A no-op on TCP; TLS may hold the last record until flushed.
        self.io.flush().await
    }

    async fn write_vectored_all(&mut self, buffers: &[Buffer]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = buffers.iter().map(|b| IoSlice::new(&b.bytes)).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            let written = self.io.write_vectored(rest).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, written);
        }
        Ok(())
    }

    /// Sends FIN: the peer reads end-of-stream after the frames already sent.
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Over TCP, several buffers go out together and arrive whole and in
    /// order, however the socket splits the vectored write.
    #[tokio::test]
    async fn buffers_arrive_in_order_in_one_vectored_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sent, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (mut received, _) = accepted.unwrap();
        let mut writer = FrameWriter {
            io: Box::new(sent.unwrap()),
        };
        assert!(writer.io.is_write_vectored());
        // A large middle buffer, so that the kernel takes it in pieces.
        let sizes = [3, 0, 4 << 20, 5];
        let buffers: Vec<Buffer> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| Buffer {
                bytes: BytesMut::from(&vec![i as u8; len][..]),
                cost: 0,
            })
            .collect();
        let reading = tokio::spawn(async move {
            let mut all = Vec::new();
            received.read_to_end(&mut all).await.unwrap();
            all
        });
        writer.write_buffers(&buffers).await.unwrap();
        writer.shutdown().await;
        let all = reading.await.unwrap();
        let expected: Vec<u8> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, &len)| std::iter::repeat_n(i as u8, len))
            .collect();
        assert_eq!(all.len(), expected.len());
        assert!(all == expected, "bytes reordered or lost");
    }

    /// Takes at most `step` bytes a call, vectored or not; 0 means it
    /// takes nothing at all.
    struct Trickle {
        step: usize,
        vectored: bool,
        got: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl tokio::io::AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.lock().unwrap().extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            let mut left = self.step;
            for buf in bufs {
                let n = buf.len().min(left);
                self.got.lock().unwrap().extend_from_slice(&buf[..n]);
                left -= n;
            }
            std::task::Poll::Ready(Ok(self.step - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Writes `buffers` of these sizes (buffer `i` filled with byte `i`)
    /// through a [`Trickle`]; what it got, or the error.
    async fn through(step: usize, vectored: bool, sizes: &[usize]) -> io::Result<Vec<u8>> {
        let buffers: Vec<Buffer> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| Buffer {
                bytes: BytesMut::from(&vec![i as u8; len][..]),
                cost: 0,
            })
            .collect();
        let got = std::sync::Arc::default();
        let mut writer = FrameWriter {
            io: Box::new(Trickle {
                step,
                vectored,
                got: std::sync::Arc::clone(&got),
            }),
        };
        writer.write_buffers(&buffers).await?;
        let got = got.lock().unwrap().clone();
        Ok(got)
    }

    #[tokio::test]
    async fn partial_writes_of_every_size_lose_nothing_vectored_or_not() {
        let sizes = [3, 0, 7, 0, 0, 1, 5];
        let expected: Vec<u8> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, &len)| std::iter::repeat_n(i as u8, len))
            .collect();
        for vectored in [true, false] {
            for step in 1..=17 {
                let got = through(step, vectored, &sizes).await.unwrap();
                assert_eq!(got, expected, "step {step}, vectored {vectored}");
            }
        }
    }

    #[tokio::test]
    async fn a_stream_that_takes_nothing_is_an_error_not_a_spin() {
        for vectored in [true, false] {
            let err = through(0, vectored, &[2, 3]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        }
    }
}
