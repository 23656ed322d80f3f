//! Typed remote procedure calls over TCP that read like local method calls.
//!
//! Annotate a trait with [`#[rpc_service]`](rpc_service); implement it on the
//! server; call it through the generated client. Calls travel as
//! length-prefixed frames of bincode over one multiplexed TCP connection;
//! docs/PROTOCOL.md in the repository specifies the wire format.
//!
//! ```
//! use rpc_core::{rpc_service, Channel, RpcError, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! pub enum MathError { DivByZero }
//!
//! /// A calculator on the other end of a socket.
//! #[rpc_service]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//!     /// Divides `a` by `b`.
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
//! }
//!
//! struct Calc;
//!
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, MathError> {
//!         if b == 0 { Err(MathError::DivByZero) } else { Ok(a / b) }
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), RpcError> {
//!     let server = Server::builder()
//!         .add_service(CalculatorServer::new(Calc))
//!         .bind("127.0.0.1:0")
//!         .await?;
//!     let addr = server.local_addr();
//!     tokio::spawn(server.serve());
//!
//!     let client = CalculatorClient::connect(addr).await?;
//!     assert_eq!(client.add(2, 3).await?, 5);
//!     assert_eq!(client.div(1, 0).await?, Err(MathError::DivByZero));
//!
//!     // Clients of several services can share one connection.
//!     let channel = Channel::connect(addr).await?;
//!     let calc = CalculatorClient::new(channel.clone());
//!     assert_eq!(calc.add(40, 2).await?, 42);
//!     Ok(())
//! }
//! ```
//!
//! # Beyond the first call
//!
//! - **Synchronous code**: every service also gets a `<Trait>BlockingClient`
//!   whose methods block instead of returning futures, on a runtime the
//!   toolkit owns ([`blocking`]).
//! - **Deadlines and metadata per call**: [`RpcClient::with_timeout`] and
//!   [`RpcClient::with_metadata`] on any generated client; dropping a call's
//!   future cancels it on the server.
//! - **Authentication**: an [`Interceptor`] on the server sees every call's
//!   metadata and peer before any handler; [`BearerToken`] is a ready one.
//! - **TLS and mutual TLS** (cargo feature `tls`): the [`tls`] module,
//!   `ServerBuilder::tls` and `ChannelBuilder::tls`.
//! - **Introspection**: every server describes its services as JSON
//!   through `rpc.Reflection` ([`ServerBuilder::introspection`],
//!   [`describe`]; docs/PROTOCOL.md §9).
//! - **Observability**: a `tracing` span per call on each side; cargo
//!   features `opentelemetry` (W3C trace context across the wire) and
//!   `metrics` (the `metrics` facade). docs/OBSERVABILITY.md in the
//!   repository lists every field and metric.
//! - **Limits, shutdown, keepalive, reconnect**: the settings of
//!   [`ServerBuilder`] and [`ChannelBuilder`]; docs/RELIABILITY.md in the
//!   repository lists each default and what it protects against.
//!
//! The layers, each readable alone: `frame` (length prefix, handshake),
//! `codec` (the one serde/bincode seam), `envelope` (message headers),
//! `metadata` (call metadata), [`transport`] (connections over TCP, Unix
//! sockets, memory or any stream, TLS, the handshake, batched writes), then
//! [`Channel`] on the client
//! side and [`Server`] on the other, which meet only in the [`Service`]
//! trait that generated servers implement.

mod arena;
pub mod blocking;
mod client;
mod codec;
#[cfg(test)]
mod conformance;
mod context;
mod depth;
pub mod describe;
pub mod discovery;
mod duration;
mod envelope;
mod error;
mod frame;
mod metadata;
mod meter;
#[cfg(feature = "opentelemetry")]
mod otel;
mod panic;
mod reason;
mod schema;
mod server;
mod service;
mod stall;
mod status;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod trace;
pub mod transport;

#[cfg(test)]
mod properties;

#[doc(hidden)]
pub mod __private;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz;

pub use client::{
    Channel, ChannelBuilder, DEFAULT_BALANCED_KEEPALIVE, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_RECONNECT_INITIAL_BACKOFF, DEFAULT_RECONNECT_MAX_BACKOFF, DEFAULT_RETRY_MIN_PER_SEC,
    DEFAULT_RETRY_PERCENT, DEFAULT_RETRY_WINDOW, EndpointStatus, RpcClient,
};
pub use context::CallContext;
pub use error::{CodecError, RpcError};
pub use frame::DEFAULT_MAX_FRAME_LENGTH;
pub use metadata::Metadata;
pub use server::{
    BearerToken, BoxCallService, BoxError, Call, CallFuture, CallInfo, DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_QUEUED_REPLY_BYTES, DEFAULT_MAX_RUNNING_REQUEST_BYTES, DEFAULT_MIN_PING_INTERVAL,
    DEFAULT_RECEIVE_BUDGET, DEFAULT_SERVER_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, Extensions,
    Interceptor, Peer, Rejection, Server, ServerBuilder,
};
pub use service::{Reply, Request, ResponseFuture, Service};
pub use status::{Code, Status};
pub use stream::{DEFAULT_STREAM_WINDOW, SendError, StreamSender, Streaming};
pub use transport::{Connector, DEFAULT_WRITE_TIMEOUT, PeerAddr};

/// Turns a trait into an RPC service: a typed client, a server, and the
/// trait itself with `Send` futures.
///
/// ```
/// # use rpc_core::rpc_service;
/// /// Stores notes by key.
/// #[rpc_service]
/// pub trait Notes {
///     /// Saves `text` under `key`, returning the previous text.
///     async fn put(&self, key: String, text: String) -> Option<String>;
///     /// Every key, in order.
///     async fn keys(&self) -> Vec<String>;
///     /// Forgets everything.
///     async fn clear(&self);
/// }
/// ```
///
/// generates, beside the trait:
///
/// - **`NotesClient`**: `Clone + Send + Sync`, made by
///   `NotesClient::connect(addr)` (a connection of its own) or
///   `NotesClient::new(channel)` (a shared [`Channel`]). It has one method per
///   trait method, taking `&self` and the arguments by value and returning
///   `Result<T, RpcError>`: `client.put(k, t).await?` is an `Option<String>`.
///   Doc comments and `#[cfg]`s carry over. It implements [`RpcClient`], whose
///   `with_timeout` and `with_metadata` give calls options.
/// - **`NotesBlockingClient`**: the same methods without `async`, for
///   synchronous code: `NotesBlockingClient::connect(addr)?` in a plain
///   `fn main`, then `client.put(k, t)?`. `Clone + Send + Sync`, made also
///   by `new(channel)`, and an [`RpcClient`] too. Its calls run on a runtime
///   the toolkit owns (one background thread, started on first use and
///   shared); a method that returns a stream returns a
///   [`blocking::BlockingStream`], an iterator. On a thread inside a tokio
///   runtime its calls fail with [`RpcError::InsideRuntime`]
///   rather than block that runtime. See [`blocking`].
/// - **`NotesServer<T>`**: made by `NotesServer::new(imp)` for any
///   `imp: Notes + Send + Sync + 'static` (or `from_arc`); a [`Service`] to
///   pass to [`ServerBuilder::add_service`].
/// - **the trait**, whose methods now return `impl Future + Send`, so the
///   server can run them on any worker thread. Implement it with plain
///   `async fn`s.
///
/// The service's wire name is the trait's name; each method's, its own,
/// unless `#[rpc(name = "...")]` on the method gives another (1 to 255
/// bytes; see below).
///
/// # Rules
///
/// Methods are `async fn` taking `&self` then up to 16 arguments (besides
/// a stream; they travel as one tuple, and serde's tuples stop at 16) with
/// plain names; they are not generic and have no default body. Arguments and
/// return values are owned types that are `Serialize + DeserializeOwned +
/// Send + 'static` (a type that is not serde's is one error, at that type;
/// as a stream's item it is still several). An answer written
/// `Result<T, E>` (or `std::result::Result<T, E>`) is read as std's
/// `Result`, by its name; a `Result` type of one's own travels as a value
/// when it is named by a path (`crate::Result<T, E>`). The trait has no
/// generic parameters or associated items.
/// A method may not be called `new` or `connect` in Rust (the clients'
/// constructors are), but may carry either name on the wire. Breaking a rule is a
/// compile error at the offending tokens that says what to write instead.
///
/// # Streams
///
/// A method may take one [`Streaming<T>`] argument, in any position (the
/// client sends a stream), and may return `Streaming<T>` or
/// `Result<Streaming<T>, E>` (the server sends one; `Err` comes before any
/// item). The client's method takes the `Streaming` it sends by value and
/// returns the one it reads: `client.ticks(s, n).await?` is a
/// `Streaming<Tick>`. `T` and `E` follow the rules for values. A second
/// stream argument, or a `Streaming` anywhere else (`Option<Streaming<T>>`,
/// a tuple, a struct field) is a compile error.
///
/// ```
/// # use rpc_core::{rpc_service, Streaming};
/// /// Moves files.
/// #[rpc_service]
/// pub trait Files {
///     /// The lines of `path`, as they are read.
///     async fn read(&self, path: String) -> Streaming<String>;
///     /// Writes `chunks` to `path`; the bytes written.
///     async fn write(&self, path: String, chunks: Streaming<Vec<u8>>) -> u64;
/// }
/// ```
///
/// # Refusing a call
///
/// A method that returns `Result<T, Rejection>` ([`Rejection`], by that
/// name) may refuse a call with a status of its own, e.g.
/// [`Rejection::permission_denied`] after reading the caller from its
/// [`CallContext`]. The client's method returns `Result<T, RpcError>`: the
/// refusal arrives as [`RpcError::Status`] with the rejection's code and
/// message, apart from `T`, which may itself be a `Result<_, E>` with the
/// method's own error. A stream method may refuse too
/// (`Result<Streaming<T>, Rejection>`), before any item. Refuse before
/// doing anything a retry must not repeat: codes such as
/// `PERMISSION_DENIED` tell a client the call did not run
/// ([`Status::did_not_run`]).
///
/// ```
/// use rpc_core::{rpc_service, CallContext, Rejection};
///
/// /// Keeps a secret.
/// #[rpc_service]
/// pub trait Vault {
///     /// The secret, to callers that say they are the admin.
///     async fn secret(&self) -> Result<String, Rejection>;
/// }
///
/// struct Safe;
///
/// impl Vault for Safe {
///     async fn secret(&self) -> Result<String, Rejection> {
///         let admin = CallContext::current()
///             .is_some_and(|cx| cx.metadata().get_str("role") == Some("admin"));
///         if !admin {
///             return Err(Rejection::permission_denied("admins only"));
///         }
///         Ok("swordfish".to_owned())
///     }
/// }
/// ```
///
/// # Arguments
///
/// `#[rpc_service(name = "BillingAdmin")]` sets the service's name on the
/// wire (1 to 255 bytes; the trait's name by default), so that two traits of
/// one name in different modules can be served side by side: a server
/// refuses two services of one name ([`RpcError::DuplicateService`]).
///
/// On a method, `#[rpc(name = "new")]` sets the method's name on the wire,
/// for a name that Rust does not allow or the clients take; the Rust
/// method keeps its own. Two methods of one wire name are a compile error.
///
/// ```
/// # use rpc_core::rpc_service;
/// /// Makes widgets.
/// #[rpc_service]
/// pub trait Widgets {
///     /// Called `new` on the wire; `client.create(..)` in Rust.
///     #[rpc(name = "new")]
///     async fn create(&self, label: String) -> u64;
/// }
/// ```
///
/// `#[rpc_service(crate = "path::to::rpc_core")]` names the runtime when it
/// is re-exported rather than a direct dependency. Both may be given,
/// separated by a comma.
pub use rpc_macros::rpc_service;
