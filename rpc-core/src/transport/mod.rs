//! Bytes in motion: how connections are opened and accepted over any byte
//! stream, their handshake, and the framed halves everything above sees.
//!
//! A connection runs over TCP, a Unix domain socket, an in-memory pipe
//! ([`memory`]) or any [`AsyncStream`], with TLS on top when configured.
//! Everything above this module sees two boxed halves; the boxes cost one
//! allocation per connection and a virtual call per read or write, next to
//! a system call each.

mod connector;
mod memory;
mod outbox;
mod release;
mod stream;
mod writer;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::error::RpcError;
use crate::frame::{self, FrameDecoder, HelloError, ReceiveBudget};
use crate::meter;
use crate::stall::StallTimeout;
#[cfg(feature = "tls")]
use crate::tls;
pub use connector::Connector;
pub(crate) use connector::Dial;
pub use memory::{MemoryConnector, MemoryIncoming, memory};
pub(crate) use outbox::{Batch, Buffer, Outbox};
pub(crate) use release::Release;
pub(crate) use stream::Io;
pub use stream::{AsyncStream, BoxedStream, PeerAddr};
pub(crate) use stream::{ReadHalf, WriteHalf};
pub(crate) use writer::FrameWriter;

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
    /// Bounds the connect, and then the TLS handshake and the protocol's
    /// together.
    pub(crate) handshake_timeout: Duration,
    pub(crate) write_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tls::Connector>,
}

/// Opens a connection the way `dial` says and exchanges handshakes with
/// the server.
pub(crate) async fn connect(
    dial: &Dial,
    settings: &ConnectSettings,
) -> Result<Connected, RpcError> {
    let io = dial
        .open(settings.handshake_timeout)
        .await
        .map_err(|(addr, source)| RpcError::Connect { addr, source })?;
    let addr = dial.describe();
    let handshake_timeout = settings.handshake_timeout;
    let exchange = async {
        let (read, write) = client_stream(io, settings).await?;
        let (mut read, mut write) = meter::bytes(read, write, meter::Side::Client);
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
        Ok(Err(HelloError::Io(source))) => Err(RpcError::Connect {
            addr,
            source: explained(source, settings),
        }),
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

/// `error`, if the server closed the connection during the handshake,
/// with what that usually means: the two sides disagree about TLS.
fn explained(error: io::Error, settings: &ConnectSettings) -> io::Error {
    if error.kind() != io::ErrorKind::UnexpectedEof {
        return error;
    }
    #[cfg(feature = "tls")]
    let tls = settings.tls.is_some();
    #[cfg(not(feature = "tls"))]
    let tls = {
        let _ = settings;
        false
    };
    let hint = if tls {
        "the server closed the connection during the TLS handshake: it may not use TLS \
         (connect without ChannelBuilder::tls)"
    } else {
        "the server closed the connection during the handshake: it may expect TLS \
         (connect with ChannelBuilder::tls)"
    };
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("{hint}; {error}"))
}

/// The client's halves of `io`: TLS over it if the settings ask.
async fn client_stream(
    io: Io,
    settings: &ConnectSettings,
) -> Result<(ReadHalf, WriteHalf), HelloError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &settings.tls {
        // Boxed: the handshake's state is large, and unboxed it would
        // enlarge every connection's future, plaintext ones included.
        let stream = Box::pin(tls.connect(io.boxed()))
            .await
            .map_err(HelloError::Io)?;
        let (read, write) = tokio::io::split(stream);
        return Ok((Box::new(read), Box::new(write)));
    }
    #[cfg(not(feature = "tls"))]
    let _ = settings;
    Ok(io.halves())
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
pub(crate) async fn accept(io: Io, settings: &AcceptSettings) -> Result<Accepted, String> {
    let handshake_timeout = settings.handshake_timeout;
    let exchange = async {
        let (read, write, identity) = server_stream(io, settings).await?;
        let (mut read, mut write) = meter::bytes(read, write, meter::Side::Server);
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

/// The server's halves of `io`: TLS over it if the settings ask.
async fn server_stream(
    io: Io,
    settings: &AcceptSettings,
) -> Result<(ReadHalf, WriteHalf, PeerIdentity), HelloError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &settings.tls {
        // Boxed: the handshake's state is large, and unboxed it would
        // enlarge every connection's task, plaintext ones included.
        let stream = Box::pin(tls.accept(io.boxed()))
            .await
            .map_err(HelloError::Io)?;
        let identity = PeerIdentity {
            certificates: tls::peer_certificates(&stream),
        };
        let (read, write) = tokio::io::split(stream);
        return Ok((Box::new(read), Box::new(write), identity));
    }
    #[cfg(not(feature = "tls"))]
    let _ = settings;
    let (read, write) = io.halves();
    Ok((read, write, PeerIdentity::default()))
}

/// Sets up a TCP socket of either side: no Nagle delay (calls are small
/// and latency-bound; batching happens in [`FrameWriter`]), and TCP
/// keepalive, so that a peer that vanished is noticed even on a connection
/// that is otherwise silent. Best effort: a socket that refuses is served
/// without them.
pub(crate) fn tune_tcp(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
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
    };
    (reader, writer)
}
