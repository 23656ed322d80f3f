//! Helpers for the toolkit's tests: test services, a server on
//! 127.0.0.1:0, a TCP proxy a test can cut, and raw sockets for bad input.

pub mod cluster;
pub mod dns;
pub mod etcd;
pub mod evolving;
pub mod process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rpc_core::{ServerBuilder, rpc_service};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Binds `builder` on 127.0.0.1 port 0, serves it in the background and
/// returns the address.
pub async fn serve(builder: ServerBuilder) -> SocketAddr {
    let server = builder.bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    addr
}

/// A client's handshake (a server's has its call limit in the last two
/// bytes), for tests that speak raw bytes.
pub const HELLO: [u8; 8] = *b"RKIT\x01\x00\x00\x00";

/// Binds `builder` on 127.0.0.1:0 and serves it on a runtime of its own
/// (two worker threads, on a thread of its own), as a server in production
/// runs apart from its clients: a test task woken from inside a handler
/// that blocks its thread would otherwise wait on that very thread.
pub fn serve_on_own_runtime(builder: ServerBuilder) -> SocketAddr {
    let (bound, addr) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        runtime.block_on(async move {
            let server = builder.bind("127.0.0.1:0").await.expect("bind");
            bound.send(server.local_addr()).expect("the test waits");
            server.serve().await
        })
    });
    addr.recv().expect("the server thread binds")
}

/// Opens a raw TCP connection and completes the handshake, returning the
/// stream and the call limit the server advertised.
pub async fn raw_connect_with_limit(addr: SocketAddr) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&HELLO).await.expect("send hello");
    let mut hello = [0u8; 8];
    stream.read_exact(&mut hello).await.expect("read hello");
    assert_eq!(hello[..6], HELLO[..6]);
    (stream, u16::from_le_bytes([hello[6], hello[7]]))
}

/// Opens a raw TCP connection and completes the handshake.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    raw_connect_with_limit(addr).await.0
}

/// Reads until the server closes the connection (end of stream or reset),
/// returning what arrived first. Fails the test if the server keeps the
/// connection open for 10 s: a safety net, not a synchronisation.
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .expect("the server should close the connection");
    seen
}

/// Waits until `condition` holds, checking after each yield; fails the
/// test with `what` if it does not within 10 s (a safety net, not a
/// synchronisation: the condition is the event waited for).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let waiting = async {
        while !condition() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .is_err()
    {
        panic!("waited 10 s for {what}");
    }
}

/// Fails the test instead of hanging it; a safety net, not a timing.
pub async fn within_10s<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 10 s"))
}

/// A request frame, prefix included, as docs/PROTOCOL.md describes it.
pub fn request_frame(id: u64, service: &str, method: &str, body: &[u8]) -> Vec<u8> {
    request_frame_with_deadline(id, service, method, None, body)
}

/// A request frame that may carry the deadline extension (microseconds).
pub fn request_frame_with_deadline(
    id: u64,
    service: &str,
    method: &str,
    deadline_micros: Option<u64>,
    body: &[u8],
) -> Vec<u8> {
    let deadline = deadline_micros.map(u64::to_le_bytes);
    let extensions: Vec<(u16, &[u8])> = deadline.iter().map(|d| (0x0001, &d[..])).collect();
    request_frame_with_extensions(id, service, method, &extensions, body)
}

/// A request frame with an extension block of `(tag, value)` entries
/// (none: no block, flags 0).
pub fn request_frame_with_extensions(
    id: u64,
    service: &str,
    method: &str,
    extensions: &[(u16, &[u8])],
    body: &[u8],
) -> Vec<u8> {
    let mut payload = vec![0x01, u8::from(!extensions.is_empty())];
    payload.extend_from_slice(&id.to_le_bytes());
    payload.push(service.len() as u8);
    payload.extend_from_slice(service.as_bytes());
    payload.push(method.len() as u8);
    payload.extend_from_slice(method.as_bytes());
    if !extensions.is_empty() {
        let block_len: usize = extensions.iter().map(|(_, value)| 6 + value.len()).sum();
        payload.extend_from_slice(&(block_len as u32).to_le_bytes());
        for (tag, value) in extensions {
            payload.extend_from_slice(&tag.to_le_bytes());
            payload.extend_from_slice(&(value.len() as u32).to_le_bytes());
            payload.extend_from_slice(value);
        }
    }
    payload.extend_from_slice(body);
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// Reads one frame and returns its payload, prefix stripped.
pub async fn read_frame(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let len = stream.read_u32_le().await.expect("frame length") as usize;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .expect("frame payload");
    payload
}

/// Reads one response frame: its request id, status and body.
pub async fn read_response(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u64, u8, Vec<u8>) {
    let payload = read_frame(stream).await;
    assert_eq!(payload[0], 0x02, "a response");
    let id = u64::from_le_bytes(payload[2..10].try_into().expect("8 bytes"));
    (id, payload[10], payload[11..].to_vec())
}

/// A record with nested data, for round trips.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Record {
    /// A number.
    pub id: u64,
    /// Text that may hold any Unicode.
    pub name: String,
    /// Optional nested list.
    pub tags: Option<Vec<String>>,
    /// A nested enum.
    pub shape: Shape,
}

/// An enum with every kind of variant.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Shape {
    /// Unit variant.
    Point,
    /// Tuple variant.
    Circle(f64),
    /// Struct variant.
    Rect {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
}

/// An error a method returns as its value.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LookupError {
    /// Nothing under that key.
    Missing(String),
}

/// Every argument and return shape the toolkit promises to carry.
#[rpc_service]
pub trait Shapes {
    /// No arguments, unit result.
    async fn ping(&self);
    /// Six arguments of different types.
    async fn six(
        &self,
        a: u8,
        b: i16,
        c: u32,
        d: i64,
        e: bool,
        f: char,
    ) -> (u8, i16, u32, i64, bool, char);
    /// A struct in, the same struct out.
    async fn record(&self, record: Record) -> Record;
    /// Options both ways.
    async fn option(&self, value: Option<String>) -> Option<usize>;
    /// A map in, its sorted keys out.
    async fn keys(&self, map: HashMap<String, Vec<i32>>) -> Vec<String>;
    /// A tuple in, swapped out.
    async fn swap(&self, pair: (String, u64)) -> (u64, String);
    /// A result as the method's own value.
    async fn lookup(&self, key: String) -> Result<u32, LookupError>;
    /// Bytes echoed back.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Text echoed back.
    async fn echo_text(&self, text: String) -> String;
}

/// The implementation of [`Shapes`].
pub struct ShapesImpl;

impl Shapes for ShapesImpl {
    async fn ping(&self) {}

    async fn six(
        &self,
        a: u8,
        b: i16,
        c: u32,
        d: i64,
        e: bool,
        f: char,
    ) -> (u8, i16, u32, i64, bool, char) {
        (a, b, c, d, e, f)
    }

    async fn record(&self, record: Record) -> Record {
        record
    }

    async fn option(&self, value: Option<String>) -> Option<usize> {
        value.map(|s| s.chars().count())
    }

    async fn keys(&self, map: HashMap<String, Vec<i32>>) -> Vec<String> {
        let mut keys: Vec<_> = map.into_keys().collect();
        keys.sort();
        keys
    }

    async fn swap(&self, pair: (String, u64)) -> (u64, String) {
        (pair.1, pair.0)
    }

    async fn lookup(&self, key: String) -> Result<u32, LookupError> {
        match key.as_str() {
            "one" => Ok(1),
            _ => Err(LookupError::Missing(key)),
        }
    }

    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    async fn echo_text(&self, text: String) -> String {
        text
    }
}

/// Calls whose timing and failure a test controls.
#[rpc_service]
pub trait Control {
    /// Returns `n` at once.
    async fn fast(&self, n: u32) -> u32;
    /// Reports that it started, then waits until the test opens the gate.
    async fn gated(&self, n: u32) -> u32;
    /// As `gated`, reporting and returning the length of `data`: a call
    /// that holds a large request while it waits.
    async fn gated_upload(&self, data: Vec<u8>) -> u32;
    /// As `gated`, but panics if it is dropped before it finishes: a
    /// handler whose clean-up panics.
    async fn gated_panicking_when_dropped(&self, n: u32) -> u32;
    /// Panics with `message` at once.
    async fn panic(&self, message: String) -> u32;
    /// Waits once, then panics with `message`.
    async fn panic_later(&self, message: String) -> u32;
    /// Returns `len` bytes.
    async fn bytes(&self, len: usize) -> Vec<u8>;
    /// Reports that it started, then blocks its thread (no `.await`) until
    /// the test calls [`ControlImpl::unblock`]: a handler doing
    /// synchronous work.
    async fn block(&self, n: u32) -> u32;
}

/// The implementation of [`Control`], shared with the test through an `Arc`.
pub struct ControlImpl {
    gate: watch::Sender<bool>,
    started: mpsc::UnboundedSender<u32>,
    abandoned: mpsc::UnboundedSender<u32>,
    /// How many calls of `gated` have finished.
    pub finished: AtomicUsize,
    blocked: std::sync::Mutex<bool>,
    unblocked: std::sync::Condvar,
}

impl ControlImpl {
    /// A service and the receiver that hears each `gated` call start.
    pub fn new() -> (Arc<ControlImpl>, mpsc::UnboundedReceiver<u32>) {
        let (service, started, _) = Self::with_abandoned();
        (service, started)
    }

    /// Also a receiver that hears each `gated` call the server dropped
    /// before it finished.
    pub fn with_abandoned() -> (
        Arc<ControlImpl>,
        mpsc::UnboundedReceiver<u32>,
        mpsc::UnboundedReceiver<u32>,
    ) {
        let (started, started_rx) = mpsc::unbounded_channel();
        let (abandoned, abandoned_rx) = mpsc::unbounded_channel();
        let service = ControlImpl {
            gate: watch::Sender::new(false),
            started,
            abandoned,
            finished: AtomicUsize::new(0),
            blocked: std::sync::Mutex::new(true),
            unblocked: std::sync::Condvar::new(),
        };
        (Arc::new(service), started_rx, abandoned_rx)
    }

    /// Lets every blocked and future `block` call finish.
    pub fn unblock(&self) {
        *self.blocked.lock().unwrap() = false;
        self.unblocked.notify_all();
    }

    /// Lets every waiting and future `gated` call finish.
    pub fn open(&self) {
        self.gate.send_replace(true);
    }

    /// Makes future `gated` calls wait again.
    pub fn close(&self) {
        self.gate.send_replace(false);
    }
}

impl Control for ControlImpl {
    async fn fast(&self, n: u32) -> u32 {
        n
    }

    async fn gated(&self, n: u32) -> u32 {
        let mut gate = self.gate.subscribe();
        let mut unfinished = Abandoned(Some((n, &self.abandoned)));
        let _ = self.started.send(n);
        let _ = gate.wait_for(|open| *open).await;
        unfinished.0 = None;
        self.finished.fetch_add(1, Ordering::SeqCst);
        n
    }

    async fn gated_upload(&self, data: Vec<u8>) -> u32 {
        self.gated(data.len() as u32).await
    }

    async fn gated_panicking_when_dropped(&self, n: u32) -> u32 {
        let mut armed = PanicIfDropped(true);
        let n = self.gated(n).await;
        armed.0 = false;
        n
    }

    async fn panic(&self, message: String) -> u32 {
        panic!("{message}")
    }

    async fn panic_later(&self, message: String) -> u32 {
        tokio::task::yield_now().await;
        panic!("{message}")
    }

    async fn bytes(&self, len: usize) -> Vec<u8> {
        vec![7; len]
    }

    async fn block(&self, n: u32) -> u32 {
        let _ = self.started.send(n);
        let mut blocked = self.blocked.lock().unwrap();
        while *blocked {
            blocked = self.unblocked.wait(blocked).unwrap();
        }
        n
    }
}

/// Reports a call dropped before it finished.
struct Abandoned<'a>(Option<(u32, &'a mpsc::UnboundedSender<u32>)>);

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some((n, abandoned)) = self.0 {
            let _ = abandoned.send(n);
        }
    }
}

/// Panics when dropped while armed.
struct PanicIfDropped(bool);

impl Drop for PanicIfDropped {
    fn drop(&mut self) {
        if self.0 && !std::thread::panicking() {
            panic!("dropped before it finished");
        }
    }
}

/// A TCP proxy on 127.0.0.1:0 whose connections a test can cut.
pub struct CutProxy {
    addr: SocketAddr,
    /// Counts cuts; each connection ends at the first cut after it began.
    cuts: watch::Sender<u64>,
    accepting: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts a proxy that forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cuts, _) = watch::channel(0u64);
        let cuts_seen = cuts.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = cuts_seen.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                    // Dropping both streams closes both sides.
                });
            }
        });
        CutProxy {
            addr,
            cuts,
            accepting,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the proxy; new ones still pass.
    pub fn cut(&self) {
        self.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Cuts every connection and stops listening: connecting is refused.
    pub async fn close(mut self) {
        self.accepting.abort();
        let _ = (&mut self.accepting).await;
        self.cut();
    }
}

/// Compiles and runs the README's quick start as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeQuickStart;
