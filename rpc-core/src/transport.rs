//! TCP connections after the handshake: a stream of incoming frames and a
//! writer that sends many frames per system call.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use crate::error::RpcError;
use crate::frame::{self, HelloError};

/// Frames below this size are copied into one buffer and written together;
/// larger ones are written from where they lie, since the copy would cost
/// more than the system call it saves.
const COALESCE_LIMIT: usize = 64 * 1024;

/// First size of a connection's read buffer. It grows to fit the bursts
/// that arrive (and the codec reserves a large frame's length itself), so a
/// small start only keeps idle connections cheap.
const INITIAL_READ_BUFFER: usize = 1024;

/// Incoming frames of one connection, payloads without their prefix.
pub(crate) type FrameReader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;

/// Opens a connection to the first address of `addr` that accepts, and
/// exchanges handshakes with the server.
pub(crate) async fn connect<A: ToSocketAddrs>(
    addr: A,
    max_frame_length: usize,
    handshake_timeout: Duration,
) -> Result<(FrameReader, FrameWriter), RpcError> {
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| RpcError::Connect {
            addr: "(address did not resolve)".to_owned(),
            source,
        })?
        .collect();
    let mut last = None;
    for candidate in &candidates {
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
) -> Result<(FrameReader, FrameWriter), RpcError> {
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let exchange = async {
        frame::write_hello(&mut stream)
            .await
            .map_err(HelloError::Io)?;
        frame::read_hello(&mut stream).await
    };
    match tokio::time::timeout(handshake_timeout, exchange).await {
        Ok(Ok(())) => Ok(split(stream, max_frame_length)),
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

/// Checks a client's handshake and answers it.
pub(crate) async fn accept(
    mut stream: TcpStream,
    max_frame_length: usize,
    handshake_timeout: Duration,
) -> Result<(FrameReader, FrameWriter), String> {
    let exchange = async {
        frame::read_hello(&mut stream).await?;
        frame::write_hello(&mut stream)
            .await
            .map_err(HelloError::Io)
    };
    match tokio::time::timeout(handshake_timeout, exchange).await {
        Ok(Ok(())) => Ok(split(stream, max_frame_length)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {handshake_timeout:?}")),
    }
}

fn split(stream: TcpStream, max_frame_length: usize) -> (FrameReader, FrameWriter) {
    // Calls are small and latency-bound; batching happens in FrameWriter.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let reader =
        FramedRead::with_capacity(read, frame::codec(max_frame_length), INITIAL_READ_BUFFER);
    let writer = FrameWriter {
        io: write,
        out: BytesMut::new(),
    };
    (reader, writer)
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
