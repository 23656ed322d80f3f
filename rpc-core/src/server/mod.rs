//! The server side: a [`Server`] accepts connections (TCP, a Unix socket,
//! or any stream of connections) and routes each call to one of its
//! services, within limits that keep a stranger from exhausting it.

mod bearer;
mod builder;
mod connection;
mod held;
mod interceptor;
pub(crate) mod layer;
mod log;
mod rate;
mod reflection;
mod router;
mod running;
mod watchdog;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::error::RpcError;
use crate::transport::{self, AcceptSettings, AsyncStream, Io, PeerAddr};
pub use bearer::BearerToken;
pub use builder::{
    DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUED_REPLY_BYTES, DEFAULT_MAX_RUNNING_REQUEST_BYTES,
    DEFAULT_MIN_PING_INTERVAL, DEFAULT_RECEIVE_BUDGET, DEFAULT_SERVER_HANDSHAKE_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE, ServerBuilder,
};
pub use interceptor::{CallInfo, Interceptor, Peer, Rejection};
pub use layer::{BoxCallService, BoxError, Call, CallFuture, Extensions};
use log::ConnectionLog;
use router::Router;

/// Time, after the grace deadline, for connections to notice it and close.
const CLOSE_MARGIN: Duration = Duration::from_millis(50);

/// Pause after an accept error such as running out of file descriptors, so
/// that the loop does not spin while connections close and free some.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A server with its services and, once bound, its listener, ready to
/// [`serve`](Server::serve).
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
    listener: Listener,
    /// The TCP listener's address, read once when bound.
    tcp_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    max_connections: usize,
    /// Set to the grace deadline when a shutdown starts.
    drain: watch::Sender<Option<Instant>>,
    shutdown_grace: Duration,
}

/// Where a server takes its connections from.
pub(crate) enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
    /// None: connections come from [`Server::serve_incoming`].
    None,
}

/// What every connection of one server reads.
pub(crate) struct Shared {
    pub(crate) router: Arc<Router>,
    /// See every call before routing, in order; the first to refuse a call
    /// answers it.
    pub(crate) interceptors: Vec<Arc<dyn Interceptor>>,
    /// The services wrapped in the builder's layers; `None` without layers,
    /// and calls then go straight to the router.
    pub(crate) layered: Option<Arc<tokio::sync::Mutex<layer::BoxCallService>>>,
    pub(crate) accept: AcceptSettings,
    pub(crate) max_concurrent_calls: usize,
    pub(crate) frame_timeout: Duration,
    /// `Some(grace deadline)` once the server is shutting down.
    pub(crate) drain: watch::Receiver<Option<Instant>>,
    pub(crate) min_ping_interval: Duration,
    pub(crate) max_queued_reply_bytes: usize,
    pub(crate) max_running_request_bytes: usize,
    /// Bytes of a client's stream one call lets be in flight.
    pub(crate) stream_window: usize,
    pub(crate) idle_timeout: Duration,
    /// How long calls may run on after a shutdown starts, or after their
    /// client has finished sending.
    pub(crate) shutdown_grace: Duration,
    /// Rescues connections whose reader is stuck in a handler.
    pub(crate) watchdog: Arc<watchdog::Watchdog>,
    /// The services' schemas, for calls that claim one (docs/EVOLUTION.md).
    pub(crate) schemas: crate::schema::Served,
    log: ConnectionLog,
}

impl Shared {
    /// Logs why a connection was refused or closed, within a rate.
    pub(crate) fn log_closed(&self, peer: &dyn std::fmt::Display, reason: &str) {
        self.log.closed(peer, reason);
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut services: Vec<_> = self.shared.router.names().collect();
        services.sort_unstable();
        f.debug_struct("Server")
            .field("local_addr", &self.tcp_addr)
            .field("services", &services)
            .finish_non_exhaustive()
    }
}

/// Connections as the accept loop takes them.
type Connections<'a> = Pin<Box<dyn Stream<Item = io::Result<(Io, PeerAddr)>> + Send + 'a>>;

impl Server {
    /// Starts describing a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    fn new(
        listener: Listener,
        shared: Shared,
        max_connections: usize,
        drain: watch::Sender<Option<Instant>>,
        shutdown_grace: Duration,
    ) -> Result<Server, RpcError> {
        let tcp_addr = match &listener {
            Listener::Tcp(listener) => Some(listener.local_addr().map_err(RpcError::Io)?),
            _ => None,
        };
        Ok(Server {
            listener,
            tcp_addr,
            shared: Arc::new(shared),
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            drain,
            shutdown_grace,
        })
    }

    /// The TCP address the server listens on; with port 0, the port chosen.
    ///
    /// # Panics
    ///
    /// If the server does not listen on TCP (made by
    /// [`ServerBuilder::bind_unix`] or [`ServerBuilder::build`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp_addr
            .expect("`local_addr` is for servers bound with `ServerBuilder::bind` (TCP)")
    }

    /// Accepts connections and serves them, each on its own task, until the
    /// future is dropped. Dropping it stops accepting; connections already
    /// open keep being served until they close. For a graceful stop, see
    /// [`Server::serve_with_shutdown`].
    ///
    /// A bad connection (wrong handshake, garbage, an over-size frame, a
    /// frame left unfinished) is closed with a logged reason and does not
    /// affect the others. A connection beyond the connection limit is closed
    /// at once. Errors from `accept` itself, such as running out of file
    /// descriptors, are logged and retried; the future does not end on its
    /// own. A server made by [`ServerBuilder::build`] has no listener: this
    /// fails at once with [`RpcError::Io`]; use [`Server::serve_incoming`].
    pub async fn serve(self) -> Result<(), RpcError> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves like [`Server::serve`] until `signal` completes, then shuts
    /// down gracefully and returns:
    ///
    /// 1. it stops accepting: new connections are refused;
    /// 2. every connection stops reading requests and tells its client which
    ///    requests it had read (docs/PROTOCOL.md, "Drain"); the client fails
    ///    the others with [`RpcError::NotProcessed`], so they are safe to
    ///    retry elsewhere;
    /// 3. calls already read run to completion and are answered, for up to
    ///    the [shutdown grace](ServerBuilder::shutdown_grace) (10 s by
    ///    default);
    /// 4. connections still open then are closed, failing their remaining
    ///    calls with [`RpcError::ConnectionClosed`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rpc_core::RpcError> {
    /// use rpc_core::Server;
    /// use tokio::sync::oneshot;
    ///
    /// let server = Server::builder().bind("127.0.0.1:0").await?;
    /// let (stop, stopped) = oneshot::channel::<()>();
    /// let serving = tokio::spawn(server.serve_with_shutdown(async {
    ///     let _ = stopped.await;
    /// }));
    /// // ... later, e.g. on Ctrl-C:
    /// let _ = stop.send(());
    /// serving.await.expect("server task")?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve_with_shutdown<F>(mut self, signal: F) -> Result<(), RpcError>
    where
        F: Future<Output = ()> + Send,
    {
        let listener = std::mem::replace(&mut self.listener, Listener::None);
        let connections: Connections<'static> = match listener {
            Listener::Tcp(listener) => Box::pin(futures::stream::poll_fn(move |cx| {
                poll_tcp(&listener, cx).map(Some)
            })),
            #[cfg(unix)]
            Listener::Unix(listener) => Box::pin(futures::stream::poll_fn(move |cx| {
                listener.poll_accept(cx).map(|accepted| {
                    Some(accepted.map(|(stream, addr)| {
                        let path = addr.as_pathname().map(std::path::Path::to_owned);
                        (Io::Unix(stream), PeerAddr::Unix(path))
                    }))
                })
            })),
            Listener::None => {
                return Err(RpcError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this server has no listener: bind it, or give it connections with \
                     `Server::serve_incoming`",
                )));
            }
        };
        self.accept_until(connections, signal).await
    }

    /// Serves the connections `incoming` yields, of any stream type, until
    /// it ends (connections already open go on being served); use with a
    /// server made by [`ServerBuilder::build`]. Each item is a connected
    /// stream and the address of its peer, shown to the interceptor; an
    /// error item is logged and skipped. The connection limit, TLS and
    /// every other setting apply as for TCP. See
    /// [`transport::memory`](crate::transport::memory) for an example.
    pub async fn serve_incoming<I, S>(self, incoming: I) -> Result<(), RpcError>
    where
        I: Stream<Item = io::Result<(S, PeerAddr)>> + Send,
        S: AsyncStream,
    {
        self.serve_incoming_with_shutdown(incoming, std::future::pending())
            .await
    }

    /// Serves like [`Server::serve_incoming`] until `signal` completes, then
    /// shuts down gracefully as [`Server::serve_with_shutdown`] does.
    pub async fn serve_incoming_with_shutdown<I, S, F>(
        self,
        incoming: I,
        signal: F,
    ) -> Result<(), RpcError>
    where
        I: Stream<Item = io::Result<(S, PeerAddr)>> + Send,
        S: AsyncStream,
        F: Future<Output = ()> + Send,
    {
        let connections =
            incoming.map(|item| item.map(|(stream, peer)| (Io::Boxed(Box::new(stream)), peer)));
        self.accept_until(Box::pin(connections), signal).await
    }

    async fn accept_until<F>(
        self,
        mut connections: Connections<'_>,
        signal: F,
    ) -> Result<(), RpcError>
    where
        F: Future<Output = ()> + Send,
    {
        tokio::pin!(signal);
        loop {
            let accepted = tokio::select! {
                accepted = connections.next() => accepted,
                () = &mut signal => break,
            };
            match accepted {
                // The stream of connections ended: nothing more to accept.
                None => return Ok(()),
                Some(Ok((io, peer))) => match self.connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = self.shared.clone();
                        tokio::spawn(async move {
                            connection::serve(io, peer, shared).await;
                            drop(permit);
                        });
                    }
                    Err(_) => self.shared.log_closed(
                        &peer,
                        &format!("{} connections already open", self.max_connections),
                    ),
                },
                Some(Err(e)) if is_connection_error(&e) => {
                    tracing::debug!("accept: connection failed before it was accepted: {e}");
                }
                Some(Err(e)) => {
                    tracing::warn!("accept failed: {e}; retrying in {ACCEPT_ERROR_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
        drop(connections);
        self.shut_down().await;
        Ok(())
    }

    async fn shut_down(self) {
        let Server {
            listener,
            connections,
            max_connections,
            drain,
            shutdown_grace,
            ..
        } = self;
        drop(listener);
        let deadline = Instant::now() + shutdown_grace;
        tracing::info!("shutting down: draining connections for up to {shutdown_grace:?}");
        drain.send_replace(Some(deadline));
        // Every connection holds a permit until it ends: having them all
        // back means every connection has closed.
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let closed =
            tokio::time::timeout_at(deadline + CLOSE_MARGIN, connections.acquire_many(all)).await;
        if closed.is_err() {
            tracing::warn!("shutdown: connections still open after the grace period");
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

fn poll_tcp(listener: &TcpListener, cx: &mut Context<'_>) -> Poll<io::Result<(Io, PeerAddr)>> {
    listener.poll_accept(cx).map(|accepted| {
        accepted.map(|(stream, addr)| {
            transport::tune_tcp(&stream);
            (Io::Tcp(stream), PeerAddr::Tcp(addr))
        })
    })
}
