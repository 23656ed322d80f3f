//! The byte streams a connection can run over, and who is at the other end.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Any byte stream a connection can run over: TCP, a Unix socket, TLS, an
/// in-memory pipe, or a stream of your own. Implemented for every type that
/// is `AsyncRead + AsyncWrite + Send + Unpin + 'static`.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A boxed [`AsyncStream`], as a [`Connector`](super::Connector) returns it.
pub type BoxedStream = Box<dyn AsyncStream>;

/// Where the other end of a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A Unix domain socket peer, with its path if it bound one (clients
    /// usually do not).
    Unix(Option<PathBuf>),
    /// A peer over a transport of its own, described in words (the
    /// in-memory transport says `memory`).
    Other(Arc<str>),
}

impl PeerAddr {
    /// The TCP address, for a TCP peer.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Tcp(addr) => Some(*addr),
            _ => None,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
            PeerAddr::Other(what) => f.write_str(what),
        }
    }
}

/// The receiving half of a connection's byte stream.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The sending half of a connection's byte stream.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// A stream as the transport takes it: sockets stay themselves, since they
/// split into halves without a lock; anything else is boxed.
pub(crate) enum Io {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    Boxed(BoxedStream),
}

impl Io {
    /// The stream's two halves.
    pub(crate) fn halves(self) -> (ReadHalf, WriteHalf) {
        match self {
            Io::Tcp(stream) => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            #[cfg(unix)]
            Io::Unix(stream) => {
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            Io::Boxed(stream) => {
                let (read, write) = tokio::io::split(stream);
                (Box::new(read), Box::new(write))
            }
        }
    }

    /// The stream as one box, for a layer on top such as TLS.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn boxed(self) -> BoxedStream {
        match self {
            Io::Tcp(stream) => Box::new(stream),
            #[cfg(unix)]
            Io::Unix(stream) => Box::new(stream),
            Io::Boxed(stream) => stream,
        }
    }
}
