//! The client side: a [`Channel`] is one multiplexed connection that any
//! number of generated clients and tasks share, replaced by a new one when
//! it dies.

mod backoff;
mod balance;
mod connection;
mod deadline;
mod limit;
mod pending;
mod typed;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::ToSocketAddrs;
use tokio::time::Instant;

use crate::discovery::Discover;
use crate::duration;
use crate::error::RpcError;
use crate::frame::DEFAULT_MAX_FRAME_LENGTH;
use crate::metadata;
use crate::schema::{Body, Failure, Local, MethodSchema};
use crate::stream::Streaming;
#[cfg(feature = "tls")]
use crate::tls::ClientTlsConfig;
use crate::transport::{self, ConnectSettings, Connector, Dial};
use crate::{meter, trace};
use backoff::Backoff;
pub use backoff::{DEFAULT_RECONNECT_INITIAL_BACKOFF, DEFAULT_RECONNECT_MAX_BACKOFF};
use balance::Balancer;
pub use balance::{
    DEFAULT_RETRY_MIN_PER_SEC, DEFAULT_RETRY_PERCENT, DEFAULT_RETRY_WINDOW, EndpointStatus,
};
use connection::{Connection, Keepalive};
use deadline::Deadline;
use tracing::Instrument;
pub use typed::RpcClient;

/// The keepalive of a balanced channel's connections unless
/// [`ChannelBuilder::keepalive`] sets another: a probe after this long
/// without a word from the server, and the connection closed if the probe
/// is not answered within as long again.
pub const DEFAULT_BALANCED_KEEPALIVE: Duration = Duration::from_secs(5);

/// Default time allowed for the server's handshake after the TCP connect.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a server, shared by every clone.
///
/// Many calls can be in flight at once; each carries its own request id and
/// replies may arrive in any order. Cloning is cheap (one reference count).
/// The connection closes when the last clone is dropped.
///
/// If the connection breaks, calls in flight fail at once with
/// [`RpcError::ConnectionClosed`]; they are never sent again, since a call
/// that may have run must not run twice. The next call opens a new
/// connection to the same addresses. If that fails, calls fail fast with
/// [`RpcError::NotProcessed`] until the next attempt is due: 1 s after the
/// first failure, then 1.6 times longer each time (±20 % at random), up to
/// 120 s ([`ChannelBuilder::reconnect_backoff`]). When the server shuts down
/// gracefully, calls it had read still get their replies, and the others
/// fail with [`RpcError::NotProcessed`]: safe to retry.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_core::RpcError> {
/// # let server = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
/// # let addr = server.local_addr();
/// # tokio::spawn(server.serve());
/// use rpc_core::Channel;
///
/// let channel = Channel::builder()
///     .max_frame_length(1024 * 1024)
///     .connect(addr)
///     .await?;
/// let also_channel = channel.clone(); // same connection
/// # drop(also_channel);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Channel {
    route: Route,
    /// What this handle's calls carry; clones made by
    /// [`Channel::with_timeout`] and [`Channel::with_metadata`] differ here
    /// only.
    options: CallOptions,
}

/// Where a channel's calls go.
#[derive(Clone)]
enum Route {
    /// One server, one connection.
    One(Arc<Inner>),
    /// The endpoints of a discovery source.
    Balanced(Arc<Balancer>),
}

/// A deadline and metadata given to calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    /// Whole metadata extension entries, encoded once when set.
    metadata: Option<Arc<[u8]>>,
}

impl CallOptions {
    pub(crate) fn metadata(&self) -> &[u8] {
        self.metadata.as_deref().unwrap_or_default()
    }
}

struct Inner {
    /// The connection calls use now.
    current: ArcSwap<Connection>,
    /// Where to reconnect: the addresses the first connect resolved, or the
    /// socket path, or the connector.
    dial: Dial,
    /// How to reconnect, TLS included.
    connect: ConnectSettings,
    settings: ChannelBuilder,
    /// Held while reconnecting, so that many callers make one attempt.
    backoff: tokio::sync::Mutex<Backoff>,
    /// Set by [`Channel::close`]: no call, and no reconnect, after it.
    closed: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Channel");
        match &self.route {
            Route::One(inner) => f
                .field("server", &inner.dial)
                .field("settings", &inner.settings),
            Route::Balanced(balancer) => f.field("endpoints", &balancer.addresses()),
        };
        f.field("closed", &self.is_closed())
            .field("timeout", &self.options.timeout)
            .finish()
    }
}

impl Channel {
    /// Connects with default settings; see [`Channel::builder`] for others.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> Result<Channel, RpcError> {
        Channel::builder().connect(addr).await
    }

    /// Connects over a Unix domain socket with default settings; see
    /// [`ChannelBuilder::connect_unix`].
    #[cfg(unix)]
    pub async fn connect_unix(path: impl AsRef<std::path::Path>) -> Result<Channel, RpcError> {
        Channel::builder().connect_unix(path).await
    }

    /// Settings for a new channel.
    pub fn builder() -> ChannelBuilder {
        ChannelBuilder {
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            reconnect: true,
            initial_backoff: DEFAULT_RECONNECT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_RECONNECT_MAX_BACKOFF,
            keepalive: None,
            call_timeout: None,
            stream_window: crate::DEFAULT_STREAM_WINDOW,
            retries: balance::RetrySettings::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// A handle on the same connection whose calls each get `timeout` to
    /// finish, instead of the channel's
    /// [`call_timeout`](ChannelBuilder::call_timeout). Cheap: no new
    /// connection. For one call of a generated client, see
    /// [`RpcClient::with_timeout`](crate::RpcClient::with_timeout).
    ///
    /// The deadline travels with the request: the server does not start a
    /// call whose time is up and stops one that overruns (servers cap
    /// deadlines at a day); the caller gets [`RpcError::DeadlineExceeded`]
    /// at the deadline either way.
    pub fn with_timeout(&self, timeout: Duration) -> Channel {
        let mut channel = self.clone();
        channel.options.timeout = Some(duration::capped(timeout));
        channel
    }

    /// A handle on the same connection whose calls also carry the pair
    /// `key`/`value`, for the server's
    /// [`Interceptor`](crate::Interceptor) to read (credentials, a tenant,
    /// a trace id). Pairs add up over repeated calls; keys may repeat. The
    /// pairs are encoded here, once, not per call.
    ///
    /// Metadata is sent in the clear unless the channel uses TLS.
    ///
    /// # Panics
    ///
    /// If `key` is empty or longer than 65,535 bytes.
    ///
    /// ```
    /// # async fn run(channel: rpc_core::Channel) {
    /// let authorised = channel.with_metadata("authorization", "Bearer s3cret");
    /// # drop(authorised);
    /// # }
    /// ```
    pub fn with_metadata(&self, key: &str, value: impl AsRef<[u8]>) -> Channel {
        let mut entries = self.options.metadata().to_vec();
        metadata::put_entry(&mut entries, key, value.as_ref());
        let mut channel = self.clone();
        channel.options.metadata = Some(entries.into());
        channel
    }

    /// Closes the connection cleanly, for every clone of this channel: new
    /// calls fail at once with [`RpcError::NotProcessed`] (and the channel
    /// does not reconnect); calls already sent still get their answers;
    /// then this side ends its half (under TLS with `close_notify`, so
    /// that the server sees a well-behaved client) and waits for the server
    /// to close the other. Returns once the connection is gone.
    ///
    /// Dropping the last clone closes the connection too, but on a task of
    /// its own that a program about to exit may never run: call this
    /// before `main` returns. It waits for the calls in flight, which their
    /// deadlines bound (wrap it in `tokio::time::timeout` to bound it
    /// otherwise), and then at most 10 s for a server that does not close
    /// its end, after which it ends the connection itself.
    ///
    /// ```
    /// # async fn run(channel: rpc_core::Channel) {
    /// channel.close().await;
    /// assert!(channel.is_closed());
    /// # }
    /// ```
    ///
    /// A balanced channel closes every endpoint's connection so, and stops
    /// following its discovery source.
    pub async fn close(&self) {
        let inner = match &self.route {
            Route::One(inner) => inner,
            Route::Balanced(balancer) => return balancer.close().await,
        };
        inner
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        // A reconnect under way finishes first, and sees the flag before it
        // would install a connection.
        let connection = {
            let _reconnecting = inner.backoff.lock().await;
            inner.current.load_full()
        };
        connection.close().await;
    }

    /// Whether the current connection has ended (or is draining). The next
    /// call reconnects, unless reconnecting is turned off. A balanced
    /// channel is closed once [`Channel::close`]d, and while none of its
    /// endpoints is connected.
    pub fn is_closed(&self) -> bool {
        match &self.route {
            Route::One(inner) => inner.current.load().is_closed(),
            Route::Balanced(balancer) => balancer.is_closed(),
        }
    }

    /// A channel over the endpoints `discover` finds, with default
    /// settings; see [`ChannelBuilder::balanced`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rpc_core::RpcError> {
    /// # let a = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
    /// # let b = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
    /// # let (a_addr, b_addr) = (a.local_addr().to_string(), b.local_addr().to_string());
    /// # tokio::spawn(a.serve());
    /// # tokio::spawn(b.serve());
    /// use rpc_core::{Channel, discovery::Static};
    ///
    /// let channel = Channel::balanced(Static::new([a_addr, b_addr])).await?;
    /// assert_eq!(channel.endpoints().len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn balanced(discover: impl Discover) -> Result<Channel, RpcError> {
        Channel::builder().balanced(discover).await
    }

    /// The endpoints of a balanced channel as they are now: address,
    /// weight, whether connected, calls in flight, the last connect error.
    /// Empty for a channel to one server.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        match &self.route {
            Route::One(_) => Vec::new(),
            Route::Balanced(balancer) => balancer.statuses(),
        }
    }

    /// Waits until `done` says yes of this balanced channel's endpoints,
    /// and returns them: it is asked now, and again each time an endpoint
    /// comes, goes, connects or loses its connection (not when only its
    /// calls in flight change). For a channel to one server it is asked
    /// once, of an empty list, and if it says no this never returns. A
    /// program that waits for its cluster, or a test, uses it; bound it
    /// with `tokio::time::timeout`.
    ///
    /// ```
    /// # async fn run(channel: rpc_core::Channel) {
    /// // Until two endpoints take calls.
    /// channel
    ///     .endpoints_until(|endpoints| endpoints.iter().filter(|e| e.connected).count() >= 2)
    ///     .await;
    /// # }
    /// ```
    pub async fn endpoints_until(
        &self,
        mut done: impl FnMut(&[EndpointStatus]) -> bool,
    ) -> Vec<EndpointStatus> {
        let Route::Balanced(balancer) = &self.route else {
            if done(&[]) {
                return Vec::new();
            }
            return std::future::pending().await;
        };
        let mut changes = balancer.changes();
        loop {
            changes.borrow_and_update();
            let endpoints = balancer.statuses();
            if done(&endpoints) {
                return endpoints;
            }
            // The sender lives as long as the balancer, which `self` holds.
            let _ = changes.changed().await;
        }
    }

    /// The options of a call traced in `span`, when its trace context goes
    /// with it (cargo feature `opentelemetry`); `None`: the channel's own.
    fn traced_options(&self, span: Option<&tracing::Span>) -> Option<CallOptions> {
        #[cfg(feature = "opentelemetry")]
        if let Some(span) = span {
            let metadata = crate::otel::inject(span, self.options.metadata())?;
            return Some(CallOptions {
                timeout: self.options.timeout,
                metadata: Some(metadata.into()),
            });
        }
        let _ = span;
        None
    }

    /// Calls `method` of `service` with `args` (a tuple of the method's
    /// arguments) and decodes the reply as `R`.
    ///
    /// Generated clients call this; use it directly only to call a service
    /// without its trait. The request is encoded when the future is first
    /// polled, so a future that is never polled sends nothing. If the
    /// server limits the calls in flight per connection (it says so in its
    /// handshake), a call beyond the limit waits here for an earlier one to
    /// be answered.
    ///
    /// Dropping the future before it completes gives the call up: the
    /// server is told, and stops the call if it is still running.
    pub fn call<'a, A, R>(
        &'a self,
        service: &'a str,
        method: &'a str,
        args: A,
    ) -> impl Future<Output = Result<R, RpcError>> + 'a
    where
        A: Serialize + 'a,
        R: DeserializeOwned + 'a,
    {
        self.unary(service, method, args, None, decode::<R>, false)
    }

    /// Like [`Channel::call`], for a method marked `#[rpc(idempotent)]`:
    /// one that may run twice with no harm. On a balanced channel, such a
    /// call that failed in a way that leaves it unknown whether it ran
    /// (its connection broke, the server was out of room) is sent to
    /// another endpoint, within its deadline and the channel's
    /// [retry allowance](ChannelBuilder::retry_allowance); any call that
    /// did not run at all is, idempotent or not. On a channel to one
    /// server it is the same as [`Channel::call`].
    pub fn call_idempotent<'a, A, R>(
        &'a self,
        service: &'a str,
        method: &'a str,
        args: A,
    ) -> impl Future<Output = Result<R, RpcError>> + 'a
    where
        A: Serialize + 'a,
        R: DeserializeOwned + 'a,
    {
        self.unary(service, method, args, None, decode::<R>, true)
    }

    /// [`Channel::call`] (or, with `idempotent`, [`Channel::call_idempotent`])
    /// for a generated client, which knows its types' schemas: they are
    /// claimed until the server says its own are the same, and where they
    /// differ each side reads the other's values by name
    /// (docs/EVOLUTION.md).
    #[doc(hidden)]
    pub fn call_with_schema<'a, A, R>(
        &'a self,
        schemas: &'static Local,
        service: &'a str,
        method: &'a str,
        args: A,
        idempotent: bool,
    ) -> impl Future<Output = Result<R, RpcError>> + 'a
    where
        A: Serialize + 'a,
        R: DeserializeOwned + 'a,
    {
        let local = schemas.method(method);
        self.unary(service, method, args, local, decode::<R>, idempotent)
    }

    /// A unary call whose reply `decode` decodes, traced when a
    /// subscriber wants it; the one path of [`Channel::call`],
    /// [`Channel::call_idempotent`] and [`Channel::call_seeded`].
    async fn unary<A, R>(
        &self,
        service: &str,
        method: &str,
        args: A,
        local: Option<&MethodSchema>,
        decode: impl FnOnce(Body<'_>) -> Result<R, Failure>,
        idempotent: bool,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
    {
        let meter = meter::Call::start(meter::Side::Client, || (service, method));
        let Some(span) = trace::client(service, method) else {
            // Not through `traced`: one more future around the call, moved
            // in, cost the client 400 bytes of copying per call.
            //
            // The deadline runs from here: the wait for a reconnect and for
            // a permit count against it, not only the wait for the reply.
            let result = match &self.route {
                Route::One(inner) => match self.connection_to(inner).await {
                    Ok((connection, deadline)) => {
                        connection
                            .call(
                                service,
                                method,
                                args,
                                &self.options,
                                deadline,
                                None,
                                local,
                                decode,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                },
                // Not boxed: copying the boxed future in cost a balanced
                // call more (300 instructions, callgrind) than its size
                // costs a call to one server (20).
                Route::Balanced(balancer) => {
                    let call = balancer.call(
                        service,
                        method,
                        &args,
                        &self.options,
                        None,
                        local,
                        decode,
                        idempotent,
                    );
                    call.await
                }
            };
            meter.ended_with(&result);
            return result;
        };
        // Boxed, so that the untraced call's future stays its own size.
        let call = self.call_traced(span, service, method, args, local, decode, idempotent);
        let result = Box::pin(call).await;
        meter.ended_with(&result);
        result
    }

    /// A unary call in `span`, its reply decoded with `decode`.
    #[allow(clippy::too_many_arguments)]
    async fn call_traced<A, R>(
        &self,
        span: tracing::Span,
        service: &str,
        method: &str,
        args: A,
        local: Option<&MethodSchema>,
        decode: impl FnOnce(Body<'_>) -> Result<R, Failure>,
        idempotent: bool,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
    {
        let options = self.traced_options(Some(&span));
        let options = options.as_ref().unwrap_or(&self.options);
        let call = async {
            let inner = match &self.route {
                Route::One(inner) => inner,
                Route::Balanced(balancer) => {
                    let span = Some(&span);
                    return (balancer.call(
                        service, method, &args, options, span, local, decode, idempotent,
                    ))
                    .await;
                }
            };
            let (connection, deadline) = self.connection_to(inner).await?;
            connection
                .call(
                    service,
                    method,
                    args,
                    options,
                    deadline,
                    Some(&span),
                    local,
                    decode,
                )
                .await
        };
        let result = call.instrument(span.clone()).await;
        trace::ended_with(&span, &result);
        result
    }

    /// Calls `method` of `service` with `args`, decoding the reply with
    /// `seed`: for a caller that knows the reply's type only at run time,
    /// as the `rpc` command line does from the server's description
    /// (docs/PROTOCOL.md §9; serde-reflection's `json_converter` makes such
    /// seeds). Otherwise as [`Channel::call`].
    ///
    /// With `schema`, the schema `args` are written with, the call claims
    /// it (every time: nothing is remembered), so that a server whose own
    /// differs reads them by name and the reply, written with the server's
    /// schema, is read by name into what `seed` asks for (docs/EVOLUTION.md).
    pub async fn call_seeded<A, S, V>(
        &self,
        service: &str,
        method: &str,
        args: A,
        schema: Option<&MethodSchema>,
        seed: S,
    ) -> Result<V, RpcError>
    where
        A: Serialize,
        S: for<'de> serde::de::DeserializeSeed<'de, Value = V>,
    {
        let decode = move |body: Body<'_>| body.decode_with(seed);
        self.unary(service, method, args, schema, decode, false)
            .await
    }

    /// Calls `method` of `service` with `args` and the stream `input`
    /// (the method's [`Streaming`] argument), and decodes the reply as `R`.
    ///
    /// Generated clients call this for methods that take a stream and
    /// return one value. The stream is sent on a task of its own, as fast
    /// as the server grants credit; the call's timeout covers all of it.
    pub async fn call_with_stream<A, U, R>(
        &self,
        service: &str,
        method: &str,
        args: A,
        input: Streaming<U>,
    ) -> Result<R, RpcError>
    where
        A: Serialize,
        U: Serialize + DeserializeOwned + Send + 'static,
        R: DeserializeOwned,
    {
        let span = trace::client(service, method);
        let options = self.traced_options(span.as_ref());
        let options = options.as_ref().unwrap_or(&self.options);
        let call = async {
            let (connection, deadline) = self.connection().await?;
            connection
                .open(service, method, args, options, deadline, Some(input), false)
                .await?
                .answer()
                .await
        };
        traced(span, service, method, call).await
    }

    /// Calls `method` of `service`, whose reply is a stream of `T`; `input`
    /// is the method's own stream argument, if it takes one.
    ///
    /// Generated clients call this for methods that return
    /// `Streaming<T>`. It returns once the stream is open; the call's
    /// timeout then bounds the reading too.
    pub async fn call_streaming<A, U, T>(
        &self,
        service: &str,
        method: &str,
        args: A,
        input: Option<Streaming<U>>,
    ) -> Result<Streaming<T>, RpcError>
    where
        A: Serialize,
        U: Serialize + DeserializeOwned + Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        let opened = self.call_streaming_result::<A, U, T, ()>(service, method, args, input);
        opened.await?.map_err(|()| {
            RpcError::Protocol(format!(
                "{service}.{method} answered with an error it does not have"
            ))
        })
    }

    /// Like [`Channel::call_streaming`], for a method that returns
    /// `Result<Streaming<T>, E>`: `Ok(Err(e))` is the method's own error,
    /// sent before any item.
    pub async fn call_streaming_result<A, U, T, E>(
        &self,
        service: &str,
        method: &str,
        args: A,
        input: Option<Streaming<U>>,
    ) -> Result<Result<Streaming<T>, E>, RpcError>
    where
        A: Serialize,
        U: Serialize + DeserializeOwned + Send + 'static,
        T: DeserializeOwned + Send + 'static,
        E: DeserializeOwned,
    {
        // The stream returned holds the span until it ends: the call's
        // status is recorded then, or when it fails.
        let meter = meter::Call::start(meter::Side::Client, || (service, method));
        let span = trace::client(service, method);
        let options = self.traced_options(span.as_ref());
        let options = options.as_ref().unwrap_or(&self.options);
        let call = async {
            let (connection, deadline) = self.connection().await?;
            connection
                .open(service, method, args, options, deadline, input, true)
                .await?
                .stream()
                .await
        };
        // Counted as finished once the stream is open (or refused).
        let Some(span) = span else {
            let opened = call.await;
            meter.ended_with(&opened);
            return opened;
        };
        let opened = call.instrument(span.clone()).await;
        meter.ended_with(&opened);
        match &opened {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => trace::ended(&span, Some(crate::Code::Ok)),
            Err(e) => trace::failed(&span, e),
        }
        opened
    }

    /// The connection to call over, and the call's deadline, which runs
    /// from here: on a balanced channel the less loaded of two endpoints,
    /// otherwise the one connection, reconnected if need be.
    async fn connection(&self) -> Result<(Arc<Connection>, Option<Deadline>), RpcError> {
        match &self.route {
            Route::One(inner) => self.connection_to(inner).await,
            Route::Balanced(balancer) => balancer.connection(&self.options).await,
        }
    }

    /// The connection of `inner`, reconnected if need be, and the call's
    /// deadline.
    async fn connection_to(
        &self,
        inner: &Inner,
    ) -> Result<(Arc<Connection>, Option<Deadline>), RpcError> {
        if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(RpcError::NotProcessed {
                reason: "the channel was closed (Channel::close)".to_owned(),
            });
        }
        let deadline = Deadline::start(self.options.timeout)?;
        let mut connection = inner.current.load_full();
        if connection.is_closed() && inner.settings.reconnect {
            connection = Deadline::within(deadline, inner.reconnect(connection)).await??;
        }
        Ok((connection, deadline))
    }
}

impl Inner {
    /// Replaces the dead connection `dead`, unless another caller already
    /// has or the backoff says to wait.
    async fn reconnect(&self, dead: Arc<Connection>) -> Result<Arc<Connection>, RpcError> {
        let backoff = self.backoff.lock().await;
        let current = self.current.load_full();
        if !Arc::ptr_eq(&current, &dead) && !current.is_closed() {
            return Ok(current);
        }
        if let Some(wait) = backoff.wait_remaining(Instant::now()) {
            return Err(RpcError::NotProcessed {
                reason: format!(
                    "the connection is down ({}); the last attempt to reconnect failed ({}) and the next is due in {wait:.1?}",
                    dead.close_reason(),
                    backoff.last_error
                ),
            });
        }
        let settings = &self.settings;
        // A caller's deadline may drop this future mid-attempt; that counts
        // as a failed attempt, or every short-deadline call would start a
        // fresh connect and a slow server would be hammered.
        let mut attempt = Attempt(Some(backoff));
        let connecting = transport::connect(&self.dial, &self.connect).await;
        let mut backoff = attempt.0.take().expect("taken once");
        match connecting {
            Ok(connected) => {
                backoff.succeeded();
                let fresh = Arc::new(Connection::start(
                    connected,
                    settings.max_frame_length,
                    settings.keepalive,
                    settings.stream_window,
                ));
                // `close` ran meanwhile: it waits for this lock, so the
                // fresh connection must not outlive it. Dropped here, it
                // closes (its only handle).
                if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                    return Err(RpcError::NotProcessed {
                        reason: "the channel was closed (Channel::close)".to_owned(),
                    });
                }
                self.current.store(fresh.clone());
                tracing::debug!("reconnected after: {}", dead.close_reason());
                Ok(fresh)
            }
            Err(e) => {
                let delay = backoff.failed(Instant::now(), e.to_string());
                tracing::debug!("reconnecting failed: {e}; next attempt in {delay:.1?}");
                Err(e)
            }
        }
    }
}

/// A reconnect attempt in progress, holding the backoff's lock; dropped
/// unfinished, it records a failure.
struct Attempt<'a>(Option<tokio::sync::MutexGuard<'a, Backoff>>);

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(backoff) = &mut self.0 {
            let reason = "a reconnect attempt outlasted its caller's deadline".to_owned();
            backoff.failed(Instant::now(), reason);
        }
    }
}

/// Settings for a [`Channel`]; made by [`Channel::builder`].
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    max_frame_length: usize,
    handshake_timeout: Duration,
    reconnect: bool,
    initial_backoff: Duration,
    max_backoff: Duration,
    keepalive: Option<Keepalive>,
    call_timeout: Option<Duration>,
    stream_window: usize,
    retries: balance::RetrySettings,
    #[cfg(feature = "tls")]
    tls: Option<ClientTlsConfig>,
}

impl ChannelBuilder {
    /// Largest frame payload this side sends or accepts, in bytes (default
    /// [`DEFAULT_MAX_FRAME_LENGTH`](crate::DEFAULT_MAX_FRAME_LENGTH), 16 MiB).
    ///
    /// A call whose arguments would exceed it fails locally with
    /// [`RpcError::FrameTooLarge`]; a larger reply closes the connection.
    pub fn max_frame_length(mut self, bytes: usize) -> Self {
        self.max_frame_length = bytes;
        self
    }

    /// Time allowed for the TCP connection to each address, and then for
    /// the server's handshake (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s
    /// each), the TLS handshake included.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = duration::capped(timeout);
        self
    }

    /// Whether a call on a dead connection opens a new one (default `true`).
    /// When off, a channel whose connection died fails every later call
    /// with [`RpcError::NotProcessed`].
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// The delay after a first failed reconnect attempt, and the longest
    /// delay between attempts (defaults
    /// [`DEFAULT_RECONNECT_INITIAL_BACKOFF`], 1 s, and
    /// [`DEFAULT_RECONNECT_MAX_BACKOFF`], 120 s). Delays grow 1.6 times per
    /// failure, each moved by up to 20 % at random.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = duration::capped(initial);
        self.max_backoff = duration::capped(max.max(initial));
        self
    }

    /// Probes the connection when nothing has arrived from the server for
    /// `interval`, and closes it if nothing arrives within `timeout` of the
    /// probe: a server that vanished without closing (a crashed host, a
    /// dropped route) is then noticed, and the calls waiting on it fail with
    /// [`RpcError::ConnectionClosed`] instead of waiting forever. Off by
    /// default. Servers refuse probes more frequent than they allow (1 s by
    /// default, [`ServerBuilder::min_ping_interval`](crate::ServerBuilder::min_ping_interval)).
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some(Keepalive {
            interval: duration::capped(interval),
            timeout: duration::capped(timeout),
        });
        self
    }

    /// Gives every call on this channel `timeout` to finish (default: no
    /// limit); [`Channel::with_timeout`] sets another for some calls. The
    /// deadline travels with the request: the server does not start a call
    /// whose time is up, and stops one that overruns (servers cap deadlines
    /// at a day). The caller gets [`RpcError::DeadlineExceeded`] at the
    /// deadline either way.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(duration::capped(timeout));
        self
    }

    /// Bytes of a server's stream that one call lets be in flight: items
    /// not read yet plus those on their way (default
    /// [`DEFAULT_STREAM_WINDOW`](crate::DEFAULT_STREAM_WINDOW), 256 KiB;
    /// at least 128 KiB, twice the credit every stream starts with, so that
    /// no grant is smaller than that credit (a server limits small grants
    /// as free work), and at most
    /// 2 GiB). A larger window is faster over a long link; a stream
    /// nobody reads holds up to this much (plus one frame) of the
    /// client's memory.
    pub fn stream_window(mut self, bytes: usize) -> Self {
        self.stream_window = bytes;
        self
    }

    /// How many calls a balanced channel may send again to another
    /// endpoint: each call earns `percent` of a retry (0.0 to 1.0) for
    /// `window`, and `min_per_sec` retries a second come whatever the
    /// traffic (defaults [`DEFAULT_RETRY_PERCENT`], 20 %,
    /// [`DEFAULT_RETRY_MIN_PER_SEC`], 10, and [`DEFAULT_RETRY_WINDOW`],
    /// 10 s: Finagle's). When it is spent, a call that could be retried
    /// fails with its own error instead, so that a failing cluster sees at
    /// most that much more traffic. `percent` is clamped to 0.0-1.0 and
    /// `window` to 1-60 s.
    pub fn retry_allowance(mut self, percent: f32, min_per_sec: u32, window: Duration) -> Self {
        self.retries = balance::RetrySettings {
            window: window.clamp(Duration::from_secs(1), Duration::from_secs(60)),
            min_per_sec: min_per_sec.min(1_000_000),
            percent: if percent.is_nan() {
                0.0
            } else {
                percent.clamp(0.0, 1.0)
            },
        };
        self
    }

    /// Speaks TLS to the server (feature `tls`): the server's certificate
    /// must chain to the configured CA certificates and be valid for the
    /// configured server name, or connecting fails.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Opens a TCP connection to the first of the addresses `addr`
    /// resolves to that accepts; reconnects go to the same addresses. Must
    /// be called within a tokio runtime, which runs the connection's tasks.
    pub async fn connect<A: ToSocketAddrs>(self, addr: A) -> Result<Channel, RpcError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|source| RpcError::Connect {
                addr: "(address did not resolve)".to_owned(),
                source,
            })?
            .collect();
        self.open(Dial::Tcp(addrs)).await
    }

    /// Opens a connection over the Unix domain socket at `path` (where a
    /// server made by [`ServerBuilder::bind_unix`](crate::ServerBuilder::bind_unix)
    /// listens); reconnects go to the same path. TLS works over it too.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), rpc_core::RpcError> {
    /// let channel = rpc_core::Channel::builder()
    ///     .connect_unix("/run/calculator.sock")
    ///     .await?;
    /// # drop(channel);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(unix)]
    pub async fn connect_unix(
        self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Channel, RpcError> {
        self.open(Dial::Unix(path.as_ref().to_owned())).await
    }

    /// Opens a connection with `connector`, which is called again for
    /// every reconnect: any byte stream works (an in-memory pipe from
    /// [`transport::memory`](crate::transport::memory), a socket set up in
    /// a way of your own, a tunnel). The handshake, TLS if configured, and
    /// the connect timeout (the handshake timeout) apply as for TCP.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rpc_core::RpcError> {
    /// # let server = rpc_core::Server::builder().bind("127.0.0.1:0").await?;
    /// # let addr = server.local_addr();
    /// # tokio::spawn(server.serve());
    /// use rpc_core::Channel;
    ///
    /// // A TCP connection made by hand, made again on every reconnect.
    /// let channel = Channel::builder()
    ///     .connect_with(move || tokio::net::TcpStream::connect(addr))
    ///     .await?;
    /// # drop(channel);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(self, connector: impl Connector) -> Result<Channel, RpcError> {
        self.open(Dial::Custom(Arc::new(connector))).await
    }

    /// A channel over the endpoints `discover` finds, each with these
    /// settings (TLS, keepalive, timeouts, frame limit, stream window,
    /// backoff); every generated client's `new` takes it.
    ///
    /// Each endpoint gets one multiplexed connection, with keepalive on
    /// ([`DEFAULT_BALANCED_KEEPALIVE`] unless
    /// [`keepalive`](ChannelBuilder::keepalive) says otherwise), opened as soon as
    /// the endpoint is known (eagerly) by a task of its own, and opened
    /// again when it breaks (at once, then after the
    /// [backoff](ChannelBuilder::reconnect_backoff) if that fails); an
    /// endpoint without a live connection gets no calls. Each call goes
    /// to the less loaded of two endpoints drawn at random in proportion
    /// to their weights (power of two choices), the load being the calls
    /// each connection carries. A server that drains gets no new calls
    /// from the moment its DRAIN arrives.
    ///
    /// A unary call that did not run (the server drained before reading
    /// it, the connection was down) is sent to another endpoint; one that
    /// may have run only if its method is idempotent
    /// ([`Channel::call_idempotent`]). Both count against the
    /// [retry allowance](ChannelBuilder::retry_allowance) and the call's
    /// deadline, and no endpoint is tried twice. Stream calls are never
    /// sent twice. With no endpoint connected, calls fail at once with
    /// [`RpcError::NotProcessed`], which lists the endpoints and why each
    /// is down.
    ///
    /// Returns once `discover` has given its first endpoints and each has
    /// been tried once (for at most the handshake timeout), so that the
    /// first calls spread; an error of the source's first answer is
    /// returned. Later errors of the source are logged, and the endpoints
    /// known stay.
    pub async fn balanced(self, discover: impl Discover) -> Result<Channel, RpcError> {
        let settings = balance::Settings {
            connect: self.connect_settings()?,
            max_frame_length: self.max_frame_length,
            // A server gone silent must not keep its calls, and its place
            // in the rotation, for ever.
            keepalive: self.keepalive.or(Some(Keepalive {
                interval: DEFAULT_BALANCED_KEEPALIVE,
                timeout: DEFAULT_BALANCED_KEEPALIVE,
            })),
            stream_window: self.stream_window,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
        };
        let balancer = Balancer::start(discover, settings, self.retries).await?;
        Ok(Channel {
            route: Route::Balanced(Arc::new(balancer)),
            options: CallOptions {
                timeout: self.call_timeout,
                metadata: None,
            },
        })
    }

    fn connect_settings(&self) -> Result<ConnectSettings, RpcError> {
        Ok(ConnectSettings {
            max_frame_length: self.max_frame_length,
            handshake_timeout: self.handshake_timeout,
            write_timeout: crate::transport::DEFAULT_WRITE_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: self
                .tls
                .as_ref()
                .map(ClientTlsConfig::connector)
                .transpose()?,
        })
    }

    async fn open(self, dial: Dial) -> Result<Channel, RpcError> {
        let connect = self.connect_settings()?;
        let connected = transport::connect(&dial, &connect).await?;
        let connection = Connection::start(
            connected,
            self.max_frame_length,
            self.keepalive,
            self.stream_window,
        );
        let options = CallOptions {
            timeout: self.call_timeout,
            metadata: None,
        };
        Ok(Channel {
            options,
            route: Route::One(Arc::new(Inner {
                current: ArcSwap::from_pointee(connection),
                dial,
                connect,
                backoff: tokio::sync::Mutex::new(Backoff::new(
                    self.initial_backoff,
                    self.max_backoff,
                )),
                settings: self,
                closed: std::sync::atomic::AtomicBool::new(false),
            })),
        })
    }
}

/// A reply's body as `R`, for any lifetime of the body.
fn decode<R: DeserializeOwned>(body: Body<'_>) -> Result<R, Failure> {
    body.decode()
}

/// Runs a unary call in a span of its own, when a subscriber wants one;
/// otherwise just runs it (no wrapper, nothing entered).
async fn traced<R>(
    span: Option<tracing::Span>,
    service: &str,
    method: &str,
    call: impl Future<Output = Result<R, RpcError>>,
) -> Result<R, RpcError> {
    let meter = meter::Call::start(meter::Side::Client, || (service, method));
    let result = match span {
        None => call.await,
        Some(span) => {
            let result = call.instrument(span.clone()).await;
            trace::ended_with(&span, &result);
            result
        }
    };
    meter.ended_with(&result);
    result
}
