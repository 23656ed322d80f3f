//! The server side: a [`Server`] accepts connections and routes each call to
//! one of its services, within limits that keep a stranger from exhausting
//! it.

mod backlog;
mod bearer;
mod connection;
mod interceptor;
mod rate;
mod router;
mod running;
mod watchdog;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::duration;
use crate::error::RpcError;
use crate::frame::{DEFAULT_MAX_FRAME_LENGTH, ReceiveBudget};
use crate::service::Service;
#[cfg(feature = "tls")]
use crate::tls::ServerTlsConfig;
use crate::transport::{AcceptSettings, DEFAULT_WRITE_TIMEOUT};
pub use bearer::BearerToken;
pub use interceptor::{CallInfo, Interceptor, Peer, Rejection};
use rate::Rate;
use router::Router;

/// Default time a new connection has to send its handshake.
pub const DEFAULT_SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default number of calls one connection may have running at once.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 100;

/// Default number of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default time a frame has to arrive whole once its first bytes have.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Default bytes all connections together may hold in frames they have
/// begun but not finished receiving.
pub const DEFAULT_RECEIVE_BUDGET: usize = 64 * 1024 * 1024;

/// Default bytes of replies one connection may have waiting to be written
/// before the server stops reading its requests.
pub const DEFAULT_MAX_QUEUED_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Default time a connection with no call open may stay silent before the
/// server closes it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Connection-level log lines (a connection refused or closed for cause)
/// written per second at most, beyond a burst; the rest are counted and the
/// count is reported with the next line written, so that a host churning
/// connections cannot fill the disk.
const LOG_LINES_PER_SECOND: u32 = 10;
const LOG_BURST: u32 = 50;

/// Default shortest time a client must leave between keepalive pings.
pub const DEFAULT_MIN_PING_INTERVAL: Duration = Duration::from_secs(1);

/// Default time connections have, once a shutdown starts, to finish the
/// calls they had read.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bytes of a partial frame each connection holds outside the receive
/// budget: a few calls that arrive in two reads never depend on the budget,
/// so connections that keep it spent cannot make small calls fail. 1,024
/// connections hold 16 MiB this way at most.
const FREE_PARTIAL_FRAME: usize = 16 * 1024;

/// Time, after the grace deadline, for connections to notice it and close.
const CLOSE_MARGIN: Duration = Duration::from_millis(50);

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
    shared: Arc<Shared>,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    max_connections: usize,
    /// Set to the grace deadline when a shutdown starts.
    drain: watch::Sender<Option<Instant>>,
    shutdown_grace: Duration,
}

/// What every connection of one server reads.
pub(crate) struct Shared {
    pub(crate) router: Router,
    /// Sees every call before routing; `None`: every call is let through.
    pub(crate) interceptor: Option<Arc<dyn Interceptor>>,
    pub(crate) accept: AcceptSettings,
    pub(crate) max_concurrent_calls: usize,
    pub(crate) frame_timeout: Duration,
    /// `Some(grace deadline)` once the server is shutting down.
    pub(crate) drain: watch::Receiver<Option<Instant>>,
    pub(crate) min_ping_interval: Duration,
    pub(crate) max_queued_reply_bytes: usize,
    pub(crate) idle_timeout: Duration,
    /// Rescues connections whose reader is stuck in a handler.
    pub(crate) watchdog: Arc<watchdog::Watchdog>,
    log: ConnectionLog,
}

/// Rate-limited log lines about single connections.
struct ConnectionLog {
    rate: std::sync::Mutex<Rate>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl ConnectionLog {
    fn new() -> Self {
        ConnectionLog {
            rate: std::sync::Mutex::new(Rate::new(
                Duration::from_secs(1) / LOG_LINES_PER_SECOND,
                LOG_BURST,
            )),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now, and how many were held back
    /// since the last one.
    fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let allowed = self.rate.lock().unwrap_or_else(|e| e.into_inner()).allow();
        if allowed {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Shared {
    /// Logs at INFO why a connection was refused or closed, within the rate.
    pub(crate) fn log_closed(&self, peer: &dyn std::fmt::Display, reason: &str) {
        match self.log.allow() {
            Some(0) => tracing::info!(%peer, "closing connection: {reason}"),
            Some(held) => tracing::info!(
                %peer,
                "closing connection: {reason} ({held} similar lines held back)"
            ),
            None => tracing::debug!(%peer, "closing connection: {reason}"),
        }
    }
}

/// The settings a builder collects.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame_length: usize,
    handshake_timeout: Duration,
    max_concurrent_calls: usize,
    max_connections: usize,
    frame_timeout: Duration,
    receive_budget: usize,
    shutdown_grace: Duration,
    min_ping_interval: Duration,
    max_queued_reply_bytes: usize,
    write_timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut services: Vec<_> = self.shared.router.names().collect();
        services.sort_unstable();
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("services", &services)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts describing a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            router: Router::default(),
            interceptor: None,
            #[cfg(feature = "tls")]
            tls: None,
            limits: Limits {
                max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
                handshake_timeout: DEFAULT_SERVER_HANDSHAKE_TIMEOUT,
                max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                frame_timeout: DEFAULT_FRAME_TIMEOUT,
                receive_budget: DEFAULT_RECEIVE_BUDGET,
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
                min_ping_interval: DEFAULT_MIN_PING_INTERVAL,
                max_queued_reply_bytes: DEFAULT_MAX_QUEUED_REPLY_BYTES,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
        }
    }

    /// The address the server listens on; with port 0, the port chosen.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
    /// own.
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
    pub async fn serve_with_shutdown<F>(self, signal: F) -> Result<(), RpcError>
    where
        F: Future<Output = ()> + Send,
    {
        tokio::pin!(signal);
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut signal => break,
            };
            match accepted {
                Ok((stream, peer)) => match self.connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = self.shared.clone();
                        tokio::spawn(async move {
                            connection::serve(stream, peer, shared).await;
                            drop(permit);
                        });
                    }
                    Err(_) => self.shared.log_closed(
                        &peer,
                        &format!("{} connections already open", self.max_connections),
                    ),
                },
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!("accept: connection failed before it was accepted: {e}");
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying in {ACCEPT_ERROR_BACKOFF:?}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
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

/// Services and settings for a [`Server`]; made by [`Server::builder`].
pub struct ServerBuilder {
    router: Router,
    interceptor: Option<Arc<dyn Interceptor>>,
    #[cfg(feature = "tls")]
    tls: Option<ServerTlsConfig>,
    limits: Limits,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
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

    /// Runs `interceptor` on every call before anything else looks at it:
    /// it sees the call's names, its metadata and the peer (with its
    /// certificate chain under mutual TLS), and a [`Rejection`] answers the
    /// call with [`RpcError::Unauthenticated`] or
    /// [`RpcError::PermissionDenied`] without running any handler code. It
    /// runs on the connection's reading task, so it must not block; one
    /// interceptor per server (a later one replaces an earlier one).
    ///
    /// ```
    /// use rpc_core::{CallInfo, Rejection, Server};
    ///
    /// let builder = Server::builder().interceptor(|call: &CallInfo<'_>| {
    ///     match call.metadata().get("tenant") {
    ///         Some(_) => Ok(()),
    ///         None => Err(Rejection::unauthenticated("say which tenant you are")),
    ///     }
    /// });
    /// # drop(builder);
    /// ```
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptor = Some(Arc::new(interceptor));
        self
    }

    /// Speaks TLS with every client (feature `tls`); see
    /// [`ServerTlsConfig`] for mutual TLS. The handshake timeout bounds the
    /// TLS handshake and the protocol's together.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: ServerTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Largest frame payload accepted or sent, in bytes (default
    /// [`DEFAULT_MAX_FRAME_LENGTH`](crate::DEFAULT_MAX_FRAME_LENGTH), 16 MiB).
    ///
    /// A client that sends a larger frame is disconnected; a reply that
    /// would be larger is replaced by an [`RpcError::Internal`] error.
    pub fn max_frame_length(mut self, bytes: usize) -> Self {
        self.limits.max_frame_length = bytes;
        self
    }

    /// Time a new connection has to complete its handshake (default
    /// [`DEFAULT_SERVER_HANDSHAKE_TIMEOUT`], 10 s), the TLS handshake
    /// included.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = duration::capped(timeout);
        self
    }

    /// Calls one connection may have running at once (default
    /// [`DEFAULT_MAX_CONCURRENT_CALLS`], 100; at least 1).
    ///
    /// The server tells clients the limit in its handshake, and rpc-core
    /// clients hold further calls back until earlier ones are answered. A
    /// client that sends more anyway gets [`RpcError::ResourceExhausted`]
    /// for each call beyond the limit. Values above 65,535 are advertised
    /// as 65,535.
    pub fn max_concurrent_calls(mut self, calls: usize) -> Self {
        self.limits.max_concurrent_calls = calls.max(1);
        self
    }

    /// Connections served at once (default [`DEFAULT_MAX_CONNECTIONS`],
    /// 1,024). Connections beyond it are accepted and closed at once, with
    /// a logged warning.
    pub fn max_connections(mut self, connections: usize) -> Self {
        // Also the most a tokio semaphore can count.
        self.limits.max_connections = connections
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        self
    }

    /// Time a frame has to arrive whole once its first bytes have (default
    /// [`DEFAULT_FRAME_TIMEOUT`], 30 s). A connection that takes longer is
    /// closed, so slow senders cannot hold memory indefinitely.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.limits.frame_timeout = duration::capped(timeout);
        self
    }

    /// Bytes that all connections together may hold in frames they have
    /// begun but not finished receiving (default [`DEFAULT_RECEIVE_BUDGET`],
    /// 64 MiB). A connection whose partial frame would exceed what is left
    /// is closed. The first 16 KiB of each connection's partial frame are
    /// not charged, so connections that keep the budget spent cannot make
    /// other clients' small calls fail. Receive buffers grow with the bytes that arrive, never
    /// with the length a frame claims, so this bounds the memory that slow
    /// or lying senders can pin, however many connect.
    ///
    /// Honest frames count too while their bytes are still arriving, so
    /// keep it well above the largest frames expected in transit at once
    /// (the default is four frames of the default maximum size).
    pub fn receive_budget(mut self, bytes: usize) -> Self {
        self.limits.receive_budget = bytes;
        self
    }

    /// Time connections have, once a shutdown starts, to finish the calls
    /// they had read (default [`DEFAULT_SHUTDOWN_GRACE`], 10 s); see
    /// [`Server::serve_with_shutdown`].
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.limits.shutdown_grace = duration::capped(grace);
        self
    }

    /// Shortest time a client must leave between keepalive pings (default
    /// [`DEFAULT_MIN_PING_INTERVAL`], 1 s). Each ping is answered, but a
    /// client whose pings come sooner three times in a row is disconnected,
    /// so pings cannot be used to make the server work for nothing.
    pub fn min_ping_interval(mut self, interval: Duration) -> Self {
        self.limits.min_ping_interval = duration::capped(interval);
        self
    }

    /// Bytes of replies one connection may have waiting to be written
    /// before the server stops reading its requests (default
    /// [`DEFAULT_MAX_QUEUED_REPLY_BYTES`], 4 MiB). A client that sends calls but does not read
    /// the replies is then held back by TCP flow control instead of growing
    /// the server's memory; it resumes as soon as it reads. At least one
    /// frame is always let through, so a single reply larger than the limit
    /// still goes out. Calls already running when the limit is reached
    /// still answer (at most
    /// [`max_concurrent_calls`](ServerBuilder::max_concurrent_calls) of
    /// them), so a connection's replies can pass the limit by their size.
    pub fn max_queued_reply_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_queued_reply_bytes = bytes.max(1);
        self
    }

    /// Time a write may wait for the client to take bytes (default
    /// [`DEFAULT_WRITE_TIMEOUT`](crate::DEFAULT_WRITE_TIMEOUT), 30 s). A
    /// client that stops reading for longer is disconnected and its
    /// running calls are dropped. The timer runs only while a write waits,
    /// so a large reply sent to a slow but steady reader never trips it.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.limits.write_timeout = duration::capped(timeout);
        self
    }

    /// Time a connection with no call open may stay silent (default
    /// [`DEFAULT_IDLE_TIMEOUT`], 2 min). Such a connection is closed with a
    /// drain notice, so a call its client sends at that moment fails with
    /// [`RpcError::NotProcessed`] and is safe to send again; the close
    /// comes between one and two timeouts after the last frame. Anything
    /// the client sends (a keepalive ping included) counts as activity.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle_timeout = duration::capped(timeout).max(Duration::from_millis(1));
        self
    }

    /// Binds the listener. Port 0 picks a free port; see
    /// [`Server::local_addr`].
    pub async fn bind<A: ToSocketAddrs>(self, addr: A) -> Result<Server, RpcError> {
        #[cfg(feature = "tls")]
        let tls = self
            .tls
            .as_ref()
            .map(ServerTlsConfig::acceptor)
            .transpose()?;
        let listener = TcpListener::bind(addr).await.map_err(RpcError::Io)?;
        let local_addr = listener.local_addr().map_err(RpcError::Io)?;
        let limits = self.limits;
        let (drain, drain_rx) = watch::channel(None);
        let shared = Shared {
            router: self.router,
            interceptor: self.interceptor,
            accept: AcceptSettings {
                max_frame_length: limits.max_frame_length,
                handshake_timeout: limits.handshake_timeout,
                call_limit: u16::try_from(limits.max_concurrent_calls).unwrap_or(u16::MAX),
                write_timeout: limits.write_timeout,
                budget: Arc::new(ReceiveBudget::with_allowance(
                    limits.receive_budget,
                    FREE_PARTIAL_FRAME,
                )),
                #[cfg(feature = "tls")]
                tls,
            },
            max_concurrent_calls: limits.max_concurrent_calls,
            frame_timeout: limits.frame_timeout,
            drain: drain_rx,
            min_ping_interval: limits.min_ping_interval,
            max_queued_reply_bytes: limits.max_queued_reply_bytes,
            idle_timeout: limits.idle_timeout,
            watchdog: Arc::default(),
            log: ConnectionLog::new(),
        };
        Ok(Server {
            listener,
            local_addr,
            shared: Arc::new(shared),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            max_connections: limits.max_connections,
            drain,
            shutdown_grace: limits.shutdown_grace,
        })
    }
}
