//! The server side: a [`Server`] accepts connections and routes each call to
//! one of its services.

mod connection;
mod router;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};

use crate::error::RpcError;
use crate::frame::DEFAULT_MAX_FRAME_LENGTH;
use crate::service::Service;
use router::Router;

/// Default time a new connection has to send its handshake.
pub const DEFAULT_SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error such as running out of file descriptors, so
/// that the loop does not spin while connections close and free some.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A bound listener with its services, ready to [`serve`](Server::serve).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// use rpc_core::Server;
///
/// let server = Server::builder()
///     // .add_service(CalculatorServer::new(Calc)) for each service
///     .bind("127.0.0.1:0")
///     .await?;
/// println!("listening on {}", server.local_addr());
/// tokio::spawn(server.serve());
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Arc<Router>,
    config: Config,
}

/// Per-connection settings, copied into each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) max_frame_length: usize,
    pub(crate) handshake_timeout: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut services: Vec<_> = self.router.names().collect();
        services.sort_unstable();
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("services", &services)
            .field("max_frame_length", &self.config.max_frame_length)
            .finish()
    }
}

impl Server {
    /// Starts describing a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            router: Router::default(),
            config: Config {
                max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
                handshake_timeout: DEFAULT_SERVER_HANDSHAKE_TIMEOUT,
            },
        }
    }

    /// The address the server listens on; with port 0, the port chosen.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts connections and serves them, each on its own task, until the
    /// future is dropped. Dropping it stops accepting; connections already
    /// open keep being served until they close.
    ///
    /// A bad connection (wrong handshake, garbage, an over-size frame) is
    /// closed with a logged reason and does not affect the others. Errors
    /// from `accept` itself, such as running out of file descriptors, are
    /// logged and retried; the future does not end on its own.
    pub async fn serve(self) -> Result<(), RpcError> {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(connection::serve(
                        stream,
                        peer,
                        self.router.clone(),
                        self.config,
                    ));
                }
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!("accept: connection failed before it was accepted: {e}");
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying in {ACCEPT_ERROR_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }
}

/// Errors that concern one incoming connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Services and settings for a [`Server`]; made by [`Server::builder`].
pub struct ServerBuilder {
    router: Router,
    config: Config,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Adds a service, such as a generated `<Trait>Server`. Calls name it
    /// by its [`Service::name`]; one server serves any number of services
    /// on one port.
    ///
    /// # Panics
    ///
    /// If a service of the same name was already added: that is a mistake
    /// in the program, found when it starts.
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        if let Err(name) = self.router.add(Arc::new(service)) {
            panic!("a service named `{name}` was already added to this server");
        }
        self
    }

    /// Largest frame payload accepted or sent, in bytes (default
    /// [`DEFAULT_MAX_FRAME_LENGTH`](crate::DEFAULT_MAX_FRAME_LENGTH), 16 MiB).
    ///
    /// A client that sends a larger frame is disconnected; a reply that
    /// would be larger is replaced by an [`RpcError::Internal`] error.
    pub fn max_frame_length(mut self, bytes: usize) -> Self {
        self.config.max_frame_length = bytes;
        self
    }

    /// Time a new connection has to complete its handshake (default
    /// [`DEFAULT_SERVER_HANDSHAKE_TIMEOUT`], 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Binds the listener. Port 0 picks a free port; see
    /// [`Server::local_addr`].
    pub async fn bind<A: ToSocketAddrs>(self, addr: A) -> Result<Server, RpcError> {
        let listener = TcpListener::bind(addr).await.map_err(RpcError::Io)?;
        let local_addr = listener.local_addr().map_err(RpcError::Io)?;
        Ok(Server {
            listener,
            local_addr,
            router: Arc::new(self.router),
            config: self.config,
        })
    }
}
