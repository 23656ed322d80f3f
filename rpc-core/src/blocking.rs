//! Calls from plain synchronous code: the runtime that the generated
//! `<Trait>BlockingClient`s run on, and the iterator their server streams
//! are read through.
//!
//! The toolkit owns that runtime: one background thread, started by the
//! first blocking call and shared by every blocking client in the process.
//! A call runs on the caller's thread, which sleeps until the answer comes;
//! the background thread drives the sockets and timers. A caller's own
//! runtime, if it has one, is never used.
//!
//! ```
//! # mod demo {
//! # use rpc_core::rpc_service;
//! /// Adds.
//! #[rpc_service]
//! pub trait Calculator {
//!     /// The sum.
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//! # }
//! use demo::CalculatorBlockingClient;
//!
//! fn main() -> Result<(), rpc_core::RpcError> {
//!     # let addr = serve();
//!     // A plain `fn main`: no runtime, no `.await`.
//!     let client = CalculatorBlockingClient::connect(addr)?;
//!     assert_eq!(client.add(2, 3)?, 5);
//!     let other = client.clone(); // Clone + Send + Sync: one connection
//!     std::thread::spawn(move || other.add(1, 1)).join().unwrap()?;
//!     Ok(())
//! }
//! # struct Calc;
//! # impl demo::Calculator for Calc {
//! #     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//! # }
//! # fn serve() -> std::net::SocketAddr {
//! #     let (tx, rx) = std::sync::mpsc::channel();
//! #     std::thread::spawn(move || {
//! #         let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! #         runtime.block_on(async move {
//! #             let server = rpc_core::Server::builder()
//! #                 .add_service(demo::CalculatorServer::new(Calc))
//! #                 .bind("127.0.0.1:0").await.unwrap();
//! #             tx.send(server.local_addr()).unwrap();
//! #             server.serve().await
//! #         })
//! #     });
//! #     rx.recv().unwrap()
//! # }
//! ```

use std::future::Future;
use std::sync::OnceLock;

use futures::StreamExt;
use tokio::runtime::{Builder, Handle};

use crate::error::RpcError;
use crate::stream::Streaming;

/// Runs `call` to completion on the toolkit's runtime, blocking this
/// thread until it ends: how a blocking client makes each call, and how
/// synchronous code opens a channel of its own
/// (`block_on(Channel::builder().connect(addr))`).
///
/// Fails with [`RpcError::InsideRuntime`], without running `call`, on a
/// thread that is inside a tokio runtime (a task, `block_on`,
/// `spawn_blocking`): blocking there would stall that runtime's work, or
/// deadlock if the answer needed it. Use the async client there.
///
/// ```
/// use rpc_core::{Channel, blocking};
///
/// // No runtime here: a plain `fn main`.
/// let refused = blocking::block_on(Channel::connect("127.0.0.1:1"));
/// assert!(refused.is_err());
/// ```
pub fn block_on<T>(call: impl Future<Output = Result<T, RpcError>>) -> Result<T, RpcError> {
    if Handle::try_current().is_ok() {
        return Err(RpcError::InsideRuntime);
    }
    runtime()?.block_on(call)
}

/// The toolkit's runtime, started on first use. A start that fails (no
/// thread could be made, say) is tried again by the next call rather than
/// remembered.
fn runtime() -> Result<&'static Handle, RpcError> {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(handle) = RUNTIME.get() {
        return Ok(handle);
    }
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = RUNTIME.get() {
        return Ok(handle);
    }
    let handle = start().map_err(|reason| RpcError::Io(std::io::Error::other(reason)))?;
    Ok(RUNTIME.get_or_init(|| handle))
}

/// Starts a one-thread runtime on a thread of its own, which drives its
/// sockets and timers for the rest of the process.
fn start() -> Result<Handle, String> {
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("could not start the blocking clients' runtime: {e}"))?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("rpc-blocking".to_owned())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| format!("could not start the blocking clients' thread: {e}"))?;
    Ok(handle)
}

/// A stream the server sends, read item by item from synchronous code:
/// what a blocking client's streaming method returns. Each `next` blocks
/// until the next item, the end, or an error.
///
/// Dropping it before the end cancels the rest of the stream, as dropping a
/// [`Streaming`] does.
#[derive(Debug)]
pub struct BlockingStream<T> {
    stream: Streaming<T>,
    /// Set once an item could not be waited for, so that a loop over the
    /// iterator ends after that one error.
    failed: bool,
}

impl<T> BlockingStream<T> {
    /// Reads `stream` from synchronous code.
    pub fn new(stream: Streaming<T>) -> Self {
        BlockingStream {
            stream,
            failed: false,
        }
    }

    /// The stream itself, for async code.
    pub fn into_inner(self) -> Streaming<T> {
        self.stream
    }
}

impl<T: serde::de::DeserializeOwned> Iterator for BlockingStream<T> {
    type Item = Result<T, RpcError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match block_on(async { Ok(self.stream.next().await) }) {
            Ok(item) => item,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
