//! [`ServerBuilder`]: a server's services and settings, each setting with
//! its default.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{Semaphore, watch};

use tower_layer::Layer;
use tower_service::Service as TowerService;

use super::interceptor::Interceptor;
use super::layer::{BoxCallService, BoxError, Call, Routed, Wrap, boxed};
use super::log::ConnectionLog;
use super::reflection;
use super::router::Router;
use super::{Listener, Server, Shared};
use crate::duration;
use crate::error::RpcError;
use crate::frame::{DEFAULT_MAX_FRAME_LENGTH, ReceiveBudget};
use crate::service::{Reply, Service};
#[cfg(feature = "tls")]
use crate::tls::ServerTlsConfig;
use crate::transport::{AcceptSettings, DEFAULT_WRITE_TIMEOUT};

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

/// Default bytes of requests the calls running on one connection may hold.
pub const DEFAULT_MAX_RUNNING_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Default time a connection with no call open may stay silent before the
/// server closes it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

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
    max_running_request_bytes: usize,
    stream_window: usize,
    write_timeout: Duration,
    idle_timeout: Duration,
}

/// Services and settings for a [`Server`]; made by [`Server::builder`].
pub struct ServerBuilder {
    router: Router,
    /// The first name added twice, reported when the server is made.
    duplicate: Option<String>,
    interceptors: Vec<Arc<dyn Interceptor>>,
    layers: Vec<Wrap>,
    #[cfg(feature = "tls")]
    tls: Option<ServerTlsConfig>,
    limits: Limits,
    /// Whether the server answers `rpc.Reflection`.
    introspection: bool,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    pub(super) fn new() -> Self {
        ServerBuilder {
            router: Router::default(),
            duplicate: None,
            interceptors: Vec::new(),
            layers: Vec::new(),
            introspection: true,
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
                max_running_request_bytes: DEFAULT_MAX_RUNNING_REQUEST_BYTES,
                stream_window: crate::DEFAULT_STREAM_WINDOW,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
        }
    }

    /// Adds a service, such as a generated `<Trait>Server`. Calls name it
    /// by its [`Service::name`]; one server serves any number of services
    /// on one port. A second service of a name already added makes
    /// [`bind`](ServerBuilder::bind) (and the other ways to finish the
    /// builder) fail with [`RpcError::DuplicateService`].
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        if let Err(name) = self.router.add(Arc::new(service)) {
            self.duplicate.get_or_insert_with(|| name.to_owned());
        }
        self
    }

    /// Runs `interceptor` on every call before anything else looks at it:
    /// it sees the call's names, its metadata and the peer (with its
    /// certificate chain under mutual TLS), and a [`Rejection`](crate::Rejection) answers the
    /// call with [`Code::Unauthenticated`](crate::Code::Unauthenticated) or
    /// [`Code::PermissionDenied`](crate::Code::PermissionDenied) without
    /// running any handler code. It
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
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Wraps every call of the server in `layer`, any
    /// [`tower_layer::Layer`] over [`BoxCallService`]: tower's
    /// `ConcurrencyLimitLayer`, `RateLimitLayer`, `LoadShedLayer` and
    /// `TimeoutLayer`, or a layer of your own. Layers see each [`Call`]
    /// after the interceptors let it through and the connection's limits
    /// admit it, and each [`Reply`](crate::Reply) on its way back. The first
    /// layer added sees a call first. An error a layer returns answers the
    /// call: tower's timeout as [`RpcError::DeadlineExceeded`], load
    /// shedding as [`Code::ResourceExhausted`](crate::Code::ResourceExhausted),
    /// a [`Rejection`](crate::Rejection) with its own status, anything else
    /// as [`Code::Internal`](crate::Code::Internal).
    ///
    /// One instance of the layered service serves every connection, so a
    /// limit counts the whole server; a call waits for it to be ready (the
    /// wait counts against the call's deadline and its connection's call
    /// limit). A server without layers pays nothing for them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rpc_core::Server;
    ///
    /// let builder = Server::builder()
    ///     .layer(tower::limit::ConcurrencyLimitLayer::new(64))
    ///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)));
    /// # drop(builder);
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxCallService> + Send + 'static,
        L::Service: TowerService<Call, Response = Reply> + Send + 'static,
        <L::Service as TowerService<Call>>::Error: Into<BoxError>,
        <L::Service as TowerService<Call>>::Future: Send + 'static,
    {
        self.layers
            .push(Box::new(move |inner| boxed(layer.layer(inner))));
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
    /// would be larger is replaced by a [`Code::Internal`](crate::Code::Internal) status.
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
    /// client that sends more anyway gets [`Code::ResourceExhausted`](crate::Code::ResourceExhausted)
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
    /// [`Server::serve_with_shutdown`]. Calls of a client that has closed
    /// its sending side get the same time to finish.
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

    /// Bytes of requests that the calls running on one connection may hold
    /// before the server stops reading that connection (default
    /// [`DEFAULT_MAX_RUNNING_REQUEST_BYTES`], 16 MiB). Each call is charged
    /// its whole request frame from the moment it waits until it ends.
    /// While they hold this much the server reads nothing more from the
    /// connection, and TCP holds the client back; it reads on as soon as a
    /// call ends. Nothing is refused: one frame more is always read, so a
    /// request of the largest frame size still runs. Calls answered where
    /// they were read, before they wait for anything, are not counted.
    ///
    /// Together with the call limit this bounds what one connection can
    /// make the server hold in requests, however fast it sends: a client
    /// sending 16 MiB calls to a handler that takes its time would
    /// otherwise have up to 100 of them (1.6 GiB) held at once.
    ///
    /// While reading is paused the connection's pings and cancels are not
    /// read either. A handler that waits for another call on the same
    /// connection (one call as a rendezvous for the next) waits for ever if
    /// that call cannot be read: keep such calls' requests under this
    /// limit, or raise it.
    pub fn max_running_request_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_running_request_bytes = bytes;
        self
    }

    /// Bytes of a client's stream that one call lets be in flight: items
    /// the handler has not read yet plus those on their way (default
    /// [`DEFAULT_STREAM_WINDOW`](crate::DEFAULT_STREAM_WINDOW), 256 KiB;
    /// at least 128 KiB, twice the credit every stream starts with, so that
    /// no grant is smaller than that credit). A larger
    /// window is faster over a long link; what the window holds counts
    /// against [`max_running_request_bytes`](ServerBuilder::max_running_request_bytes).
    pub fn stream_window(mut self, bytes: usize) -> Self {
        self.limits.stream_window = bytes;
        self
    }

    /// Time a write may wait for the client to take bytes (default
    /// [`DEFAULT_WRITE_TIMEOUT`](crate::DEFAULT_WRITE_TIMEOUT), 30 s). A
    /// client that stops reading for longer is disconnected and its
    /// running calls are dropped. The timer runs only while a write waits,
    /// so a large reply sent to a slow but steady reader never trips it;
    /// the reader must take 64 KiB per timeout (about 2 KiB/s at the
    /// default) or all that was written, so that a client reading a byte
    /// now and then cannot hold a write open for ever.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.limits.write_timeout = duration::capped(timeout);
        self
    }

    /// Time a connection with no call open may stay silent (default
    /// [`DEFAULT_IDLE_TIMEOUT`], 2 min). Such a connection is closed with a
    /// drain notice, so a call its client sends at that moment fails with
    /// [`RpcError::NotProcessed`] and is safe to send again; the close
    /// comes between one and two timeouts after the last call. Only calls
    /// count as activity, not keepalive pings: a client that pings but
    /// makes no call for this long is closed too (an rpc-core client
    /// reconnects on its next call), so that sockets that only ping cannot
    /// hold every place of [`max_connections`](ServerBuilder::max_connections).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.limits.idle_timeout = duration::capped(timeout).max(Duration::from_millis(1));
        self
    }

    /// Binds a TCP listener. Port 0 picks a free port; see
    /// [`Server::local_addr`].
    pub async fn bind<A: ToSocketAddrs>(self, addr: A) -> Result<Server, RpcError> {
        self.check()?;
        let listener = TcpListener::bind(addr).await.map_err(RpcError::Io)?;
        self.finish(Listener::Tcp(listener))
    }

    /// Binds a listener on a Unix domain socket at `path`, for clients on
    /// the same host ([`Channel::connect_unix`](crate::Channel::connect_unix)):
    /// no TCP stack, and the file's permissions say who may connect. Fails
    /// if `path` exists; removing a stale socket file is the caller's
    /// choice. TLS and every limit apply as on TCP.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), rpc_core::RpcError> {
    /// let server = rpc_core::Server::builder()
    ///     // .add_service(...)
    ///     .bind_unix("/run/calculator.sock")
    ///     .await?;
    /// server.serve().await
    /// # }
    /// ```
    #[cfg(unix)]
    pub async fn bind_unix(self, path: impl AsRef<std::path::Path>) -> Result<Server, RpcError> {
        self.check()?;
        let listener = tokio::net::UnixListener::bind(path).map_err(RpcError::Io)?;
        self.finish(Listener::Unix(listener))
    }

    /// Makes the server without a listener, for
    /// [`Server::serve_incoming`]: connections of any kind that you accept
    /// yourself, or the in-memory transport
    /// ([`transport::memory`](crate::transport::memory)).
    pub fn build(self) -> Result<Server, RpcError> {
        self.check()?;
        self.finish(Listener::None)
    }

    /// Fails on a mistake in the builder's settings, before anything is bound.
    fn check(&self) -> Result<(), RpcError> {
        match &self.duplicate {
            Some(name) => Err(RpcError::DuplicateService { name: name.clone() }),
            None if self.introspection && self.router.get(reflection::NAME).is_some() => {
                Err(RpcError::DuplicateService {
                    name: reflection::NAME.to_owned(),
                })
            }
            None => Ok(()),
        }
    }

    /// Whether the server answers the introspection service
    /// `rpc.Reflection` (on by default): any client may list the services
    /// and have each described as JSON, methods, doc comments, argument
    /// names and types and serde's formats of them (docs/PROTOCOL.md,
    /// "Introspection"), which is how the `rpc` command line and clients in
    /// other languages call a service without its trait. Turn it off when
    /// the server's interface is not for strangers to read; interceptors
    /// see its calls as any other.
    pub fn introspection(mut self, on: bool) -> Self {
        self.introspection = on;
        self
    }

    /// Makes the server on `listener`; [`ServerBuilder::check`] has passed.
    fn finish(self, listener: Listener) -> Result<Server, RpcError> {
        #[cfg(feature = "tls")]
        let tls = self
            .tls
            .as_ref()
            .map(ServerTlsConfig::acceptor)
            .transpose()?;
        let limits = self.limits;
        let (drain, drain_rx) = watch::channel(None);
        let mut router = self.router;
        if self.introspection {
            let reflection = reflection::Reflection::new(router.services());
            // Checked free in `check`.
            let _ = router.add(Arc::new(reflection));
        }
        let schemas = crate::schema::Served::new(router.services());
        let router = Arc::new(router);
        let layered = (!self.layers.is_empty()).then(|| {
            let mut service = boxed(Routed {
                router: router.clone(),
            });
            // The last added wraps the router; the first added, everything.
            for wrap in self.layers.into_iter().rev() {
                service = wrap(service);
            }
            Arc::new(tokio::sync::Mutex::new(service))
        });
        let shared = Shared {
            router,
            interceptors: self.interceptors,
            layered,
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
            max_running_request_bytes: limits.max_running_request_bytes,
            stream_window: limits.stream_window,
            idle_timeout: limits.idle_timeout,
            shutdown_grace: limits.shutdown_grace,
            watchdog: super::watchdog::global(),
            schemas,
            log: ConnectionLog::new(),
        };
        Server::new(
            listener,
            shared,
            limits.max_connections,
            drain,
            limits.shutdown_grace,
        )
    }
}
