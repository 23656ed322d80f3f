//! The implementations under test, each behind the same two traits.

pub mod raw;
pub mod tarpc;
pub mod tonic;
pub mod toolkit;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The object returned by `get_obj` and sent by `send_obj`.
pub const OBJ: &str = "lxx nb";

/// One connection's client of the benchmark service.
pub trait Client: Clone + Send + Sync + 'static {
    /// `add(a, b) -> a + b`.
    fn add(&self, a: i32, b: i32) -> impl Future<Output = i32> + Send;
    /// `echo(data) -> data`.
    fn echo(&self, data: Vec<u8>) -> impl Future<Output = Vec<u8>> + Send;
    /// `get_obj() -> "lxx nb"`.
    fn get_obj(&self) -> impl Future<Output = String> + Send;
    /// `send_obj(data)`.
    fn send_obj(&self, data: String) -> impl Future<Output = ()> + Send;
    /// `numbers(count)`: reads a server stream of `0..count` (each checked)
    /// and returns how many came.
    fn numbers(&self, count: u64) -> impl Future<Output = u64> + Send;
    /// `upload(chunks)`: streams `chunks` copies of `chunk` to the server
    /// and returns the bytes it counted.
    fn upload(&self, chunk: Arc<Vec<u8>>, chunks: usize) -> impl Future<Output = u64> + Send;
}

/// An RPC implementation: how to serve the benchmark service and connect.
pub trait Implementation: 'static {
    /// Its name in the report.
    const NAME: &'static str;
    /// Whether it has streams (tarpc has not: its maintainers declined).
    const STREAMS: bool = true;
    /// Its client.
    type Client: Client;
    /// Starts a server on 127.0.0.1:0 on the current runtime.
    fn serve() -> impl Future<Output = SocketAddr> + Send;
    /// Opens one connection.
    fn connect(addr: SocketAddr) -> impl Future<Output = Self::Client> + Send;
    /// Opens one connection for a blocking client, called from a thread
    /// with no runtime, if the implementation has one: its `add`.
    fn connect_blocking(_addr: SocketAddr) -> Option<BlockingAdd> {
        None
    }
}

/// A blocking client's `add(a, b)`.
pub type BlockingAdd = Box<dyn Fn(i32, i32) -> i32>;
