//! How a client opens a connection: to TCP addresses, a Unix socket, or
//! through a [`Connector`] of its own. The same way is used again on every
//! reconnect.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::stream::{AsyncStream, BoxedStream, Io};

/// Opens byte streams to a server, for
/// [`ChannelBuilder::connect_with`](crate::ChannelBuilder::connect_with):
/// called for the first connection and again on every reconnect. The
/// channel does the protocol's handshake (and TLS, if configured) over
/// what it returns.
///
/// Any `Fn() -> impl Future<Output = io::Result<S>>` is one, for any
/// stream `S`; the in-memory transport
/// ([`memory`](crate::transport::memory)) is another.
pub trait Connector: Send + Sync + 'static {
    /// Opens a new stream to the server.
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send + '_>>;

    /// Where it connects, for errors and logs.
    fn describe(&self) -> String {
        "a custom connector".to_owned()
    }
}

impl<F, Fut, S> Connector for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncStream,
{
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send + '_>> {
        let connecting = self();
        Box::pin(async move { Ok(Box::new(connecting.await?) as BoxedStream) })
    }
}

/// Where a channel connects.
#[derive(Clone)]
pub(crate) enum Dial {
    /// The first of these addresses that accepts.
    Tcp(Vec<SocketAddr>),
    #[cfg(unix)]
    Unix(PathBuf),
    Custom(Arc<dyn Connector>),
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Dial {
    /// Where it connects, for errors.
    pub(crate) fn describe(&self) -> String {
        match self {
            Dial::Tcp(addrs) => match addrs.as_slice() {
                [one] => one.to_string(),
                many => format!("{many:?}"),
            },
            #[cfg(unix)]
            Dial::Unix(path) => format!("unix:{}", path.display()),
            Dial::Custom(connector) => connector.describe(),
        }
    }

    /// Opens a stream, each attempt bounded by `timeout`: a host that drops
    /// SYNs would otherwise hold the caller for the kernel's retry time
    /// (minutes). Errors name where it tried.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<Io, (String, io::Error)> {
        match self {
            Dial::Tcp(addrs) => {
                let mut last = None;
                for candidate in addrs {
                    match bounded(timeout, TcpStream::connect(candidate)).await {
                        Ok(stream) => {
                            super::tune_tcp(&stream);
                            return Ok(Io::Tcp(stream));
                        }
                        Err(e) => last = Some((candidate.to_string(), e)),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    let nothing = io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the address resolved to nothing",
                    );
                    ("(no address)".to_owned(), nothing)
                }))
            }
            #[cfg(unix)]
            Dial::Unix(path) => bounded(timeout, tokio::net::UnixStream::connect(path))
                .await
                .map(Io::Unix)
                .map_err(|e| (self.describe(), e)),
            Dial::Custom(connector) => bounded(timeout, connector.connect())
                .await
                .map(Io::Boxed)
                .map_err(|e| (self.describe(), e)),
        }
    }
}

async fn bounded<T>(
    timeout: Duration,
    connecting: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(timeout, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))
        })
}
