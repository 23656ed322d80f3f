//! Connections after the handshake: a stream of incoming frames and a
//! writer that sends many frames per system call.
//!
//! Everything above this module sees a connection as two boxed halves of
//! any `AsyncRead + AsyncWrite` stream: plain TCP, or TLS over it when the
//! `tls` feature is on. The boxes cost one allocation per connection and a
//! virtual call per read or write, next to a system call each.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::error::RpcError;
use crate::frame::{self, FrameDecoder, HelloError, ReceiveBudget};
use crate::stall::StallTimeout;
#[cfg(feature = "tls")]
use crate::tls;

/// Frames below this size are copied into one buffer and written together;
/// larger ones are written from where they lie, since the copy would cost
/// more than the system call it saves.
const COALESCE_LIMIT: usize = 64 * 1024;

/// First size of a connection's read buffer. It grows to fit the bursts
/// that arrive (and the codec reserves a large frame's length itself), so a
/// small start only keeps idle connections cheap.
const INITIAL_READ_BUFFER: usize = 1024;

/// Default time a write may wait for the peer to take bytes before the
/// connection is given up.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle time before the kernel starts probing a connection (TCP keepalive),
/// and the time between probes: a peer that vanished without a FIN or RST
/// (a powered-off host, a dropped NAT entry) is found within minutes.
const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The receiving half of a connection's byte stream.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The sending half of a connection's byte stream.
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Incoming frames of one connection, payloads without their prefix.
pub(crate) type FrameReader = FramedRead<ReadHalf, FrameDecoder>;

/// A client connection after the handshake.
pub(crate) struct Connected {
    pub(crate) reader: FrameReader,
    pub(crate) writer: FrameWriter,
    /// Calls the server accepts in flight on this connection; 0: no limit.
    pub(crate) call_limit: u16,
}

/// How a client connects.
#[derive(Clone)]
pub(crate) struct ConnectSettings {
    pub(crate) max_frame_length: usize,
    /// Bounds the TLS handshake and the protocol's together.
    pub(crate) handshake_timeout: Duration,
    pub(crate) write_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tls::Connector>,
}

/// Opens a connection to the first of `addrs` that accepts, and exchanges
/// handshakes with the server.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    settings: &ConnectSettings,
) -> Result<Connected, RpcError> {
    let mut last = None;
    for candidate in addrs {
        // A host that drops SYNs would otherwise hold the caller for the
        // kernel's retry time (minutes); the handshake timeout bounds it.
        let connecting =
            tokio::time::timeout(settings.handshake_timeout, TcpStream::connect(candidate));
        let connected = connecting.await.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TCP connection within {:?}", settings.handshake_timeout),
            ))
        });
        match connected {
            Ok(stream) => {
                keep_alive(&stream);
                return client_handshake(stream, settings).await;
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
    stream: TcpStream,
    settings: &ConnectSettings,
) -> Result<Connected, RpcError> {
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // Calls are small and latency-bound; batching happens in FrameWriter.
    let _ = stream.set_nodelay(true);
    let handshake_timeout = settings.handshake_timeout;
    let exchange = async {
        let (mut read, mut write) = client_stream(stream, settings).await?;
        frame::write_hello(&mut write, 0)
            .await
            .map_err(HelloError::Io)?;
        let call_limit = frame::read_hello(&mut read).await?;
        Ok::<_, HelloError>((read, write, call_limit))
    };
    match tokio::time::timeout(handshake_timeout, exchange).await {
        Ok(Ok((read, write, call_limit))) => {
            let (reader, writer) = framed(
                read,
                write,
                settings.max_frame_length,
                settings.write_timeout,
                None,
            );
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

/// The client's halves of `stream`: TLS over it if the settings ask.
async fn client_stream(
    stream: TcpStream,
    settings: &ConnectSettings,
) -> Result<(ReadHalf, WriteHalf), HelloError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &settings.tls {
        // Boxed: the handshake's state is large, and unboxed it would
        // enlarge every connection's future, plaintext ones included.
        let stream = Box::pin(tls.connect(stream))
            .await
            .map_err(HelloError::Io)?;
        let (read, write) = tokio::io::split(stream);
        return Ok((Box::new(read), Box::new(write)));
    }
    #[cfg(not(feature = "tls"))]
    let _ = settings;
    let (read, write) = stream.into_split();
    Ok((Box::new(read), Box::new(write)))
}

/// How the server side of a connection is set up.
pub(crate) struct AcceptSettings {
    pub(crate) max_frame_length: usize,
    /// Bounds the TLS handshake and the protocol's together.
    pub(crate) handshake_timeout: Duration,
    /// Advertised in the handshake; 0: no limit.
    pub(crate) call_limit: u16,
    pub(crate) write_timeout: Duration,
    pub(crate) budget: Arc<ReceiveBudget>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tls::Acceptor>,
}

/// A server connection after the handshake.
pub(crate) struct Accepted {
    pub(crate) reader: FrameReader,
    pub(crate) writer: FrameWriter,
    /// What the client proved of itself: its certificate chain under
    /// mutual TLS.
    pub(crate) identity: PeerIdentity,
}

/// What TLS established about a client; empty without TLS.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerIdentity {
    #[cfg(feature = "tls")]
    pub(crate) certificates: Option<Arc<[tls::CertificateDer<'static>]>>,
}

/// Checks a client's handshake (TLS first, if configured) and answers it.
pub(crate) async fn accept(
    stream: TcpStream,
    settings: &AcceptSettings,
) -> Result<Accepted, String> {
    let _ = stream.set_nodelay(true);
    keep_alive(&stream);
    let handshake_timeout = settings.handshake_timeout;
    let exchange = async {
        let (mut read, mut write, identity) = server_stream(stream, settings).await?;
        frame::read_hello(&mut read).await?;
        frame::write_hello(&mut write, settings.call_limit)
            .await
            .map_err(HelloError::Io)?;
        Ok::<_, HelloError>((read, write, identity))
    };
    match tokio::time::timeout(handshake_timeout, exchange).await {
        Ok(Ok((read, write, identity))) => {
            let (reader, writer) = framed(
                read,
                write,
                settings.max_frame_length,
                settings.write_timeout,
                Some(settings.budget.clone()),
            );
            Ok(Accepted {
                reader,
                writer,
                identity,
            })
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {handshake_timeout:?}")),
    }
}

/// The server's halves of `stream`: TLS over it if the settings ask.
async fn server_stream(
    stream: TcpStream,
    settings: &AcceptSettings,
) -> Result<(ReadHalf, WriteHalf, PeerIdentity), HelloError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &settings.tls {
        // Boxed: the handshake's state is large, and unboxed it would
        // enlarge every connection's task, plaintext ones included.
        let stream = Box::pin(tls.accept(stream)).await.map_err(HelloError::Io)?;
        let identity = PeerIdentity {
            certificates: tls::peer_certificates(&stream),
        };
        let (read, write) = tokio::io::split(stream);
        return Ok((Box::new(read), Box::new(write), identity));
    }
    #[cfg(not(feature = "tls"))]
    let _ = settings;
    let (read, write) = stream.into_split();
    Ok((Box::new(read), Box::new(write), PeerIdentity::default()))
}

/// Turns on TCP keepalive, so that a peer that vanished is noticed even on
/// a connection that is otherwise silent. Best effort: a socket that
/// refuses is served without it.
fn keep_alive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_TIME)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!("could not turn on TCP keepalive: {e}");
    }
}

fn framed(
    read: ReadHalf,
    write: WriteHalf,
    max_frame_length: usize,
    write_timeout: Duration,
    budget: Option<Arc<ReceiveBudget>>,
) -> (FrameReader, FrameWriter) {
    let decoder = FrameDecoder::new(max_frame_length, budget);
    let reader = FramedRead::with_capacity(read, decoder, INITIAL_READ_BUFFER);
    let writer = FrameWriter {
        io: Box::new(StallTimeout::new(write, write_timeout)),
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
    io: WriteHalf,
    out: BytesMut,
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
