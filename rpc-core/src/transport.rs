//! TCP connections after the handshake: a stream of incoming frames and a
//! writer that sends many frames per system call.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::error::RpcError;
use crate::frame::{self, FrameDecoder, HelloError, ReceiveBudget};

/// Frames below this size are copied into one buffer and written together;
/// larger ones are written from where they lie, since the copy would cost
/// more than the system call it saves.
const COALESCE_LIMIT: usize = 64 * 1024;

/// First size of a connection's read buffer. It grows to fit the bursts
/// that arrive (and the codec reserves a large frame's length itself), so a
/// small start only keeps idle connections cheap.
const INITIAL_READ_BUFFER: usize = 1024;

/// Incoming frames of one connection, payloads without their prefix.
pub(crate) type FrameReader = FramedRead<OwnedReadHalf, FrameDecoder>;

/// A client connection after the handshake.
pub(crate) struct Connected {
    pub(crate) reader: FrameReader,
    pub(crate) writer: FrameWriter,
    /// Calls the server accepts in flight on this connection; 0: no limit.
    pub(crate) call_limit: u16,
}

/// Opens a connection to the first of `addrs` that accepts, and exchanges
/// handshakes with the server.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    max_frame_length: usize,
    handshake_timeout: Duration,
) -> Result<Connected, RpcError> {
    let mut last = None;
    for candidate in addrs {
        match TcpStream::connect(candidate).await {
            Ok(stream) => {
                return client_handshake(stream, max_frame_length, handshake_timeout).await;
            }
            Err(e) => last = Some((candidate, e)),
        }
    }
    let (addr, source) = match last {
        Some((addr, e)) => (addr.to_string(), e),
        None => (
            "(no address)".to_owned(),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            ),
        ),
    };
    Err(RpcError::Connect { addr, source })
}

async fn client_handshake(
    mut stream: TcpStream,
    max_frame_length: usize,
    handshake_timeout: Duration,
) -> Result<Connected, RpcError> {
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let exchange = async {
        frame::write_hello(&mut stream, 0)
            .await
            .map_err(HelloError::Io)?;
        frame::read_hello(&mut stream).await
    };
    match tokio::time::timeout(handshake_timeout, exchange).await {
        Ok(Ok(call_limit)) => {
            let (reader, writer) = split(stream, max_frame_length, None);
            Ok(Connected {
                reader,
                writer,
                call_limit,
            })
        }
        Ok(Err(HelloError::Io(source))) => Err(RpcError::Connect { addr, source }),
        Ok(Err(e)) => Err(RpcError::Protocol(e.to_string())),
        Err(_) => Err(RpcError::Connect {
            addr,
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no handshake from the server within {handshake_timeout:?}"),
            ),
        }),
    }
}

/// How the server side of a connection is set up.
pub(crate) struct AcceptSettings {
    pub(crate) max_frame_length: usize,
    pub(crate) handshake_timeout: Duration,
    /// Advertised in the handshake; 0: no limit.
    pub(crate) call_limit: u16,
    pub(crate) budget: Arc<ReceiveBudget>,
}

/// Checks a client's handshake and answers it.
pub(crate) async fn accept(
    mut stream: TcpStream,
    settings: &AcceptSettings,
) -> Result<(FrameReader, FrameWriter), String> {
    let handshake_timeout = settings.handshake_timeout;
    let exchange = async {
        frame::read_hello(&mut stream).await?;
        frame::write_hello(&mut stream, settings.call_limit)
            .await
            .map_err(HelloError::Io)
    };
    match tokio::time::timeout(handshake_timeout, exchange).await {
        Ok(Ok(())) => Ok(split(
            stream,
            settings.max_frame_length,
            Some(settings.budget.clone()),
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {handshake_timeout:?}")),
    }
}

fn split(
    stream: TcpStream,
    max_frame_length: usize,
    budget: Option<Arc<ReceiveBudget>>,
) -> (FrameReader, FrameWriter) {
    // Calls are small and latency-bound; batching happens in FrameWriter.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let decoder = FrameDecoder::new(max_frame_length, budget);
    let reader = FramedRead::with_capacity(read, decoder, INITIAL_READ_BUFFER);
    let writer = FrameWriter {
        io: write,
        out: BytesMut::new(),
    };
    (reader, writer)
}

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
    io: OwnedWriteHalf,
    out: BytesMut,
}

impl FrameWriter {
    /// Writes whole frames (prefix included), emptying `frames`, in as few
    /// system calls as their sizes allow.
    pub(crate) async fn write_batch(&mut self, frames: &mut Vec<BytesMut>) -> io::Result<()> {
        if frames.len() == 1 {
            let frame = frames.pop().expect("one frame");
            return self.io.write_all(&frame).await;
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
        self.flush_out().await
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
