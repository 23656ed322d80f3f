//! Stream calls end to end over TCP: the three shapes, their ends and
//! errors, flow control, and giving up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{Code, RpcClient, RpcError, Server, Streaming, rpc_service};
use rpc_tests::{eventually, serve};
use serde::{Deserialize, Serialize};

/// One price change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Which.
    pub symbol: String,
    /// Its place in the stream.
    pub seq: u32,
}

/// Why a market call failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MarketError {
    /// Not traded here.
    UnknownSymbol(String),
}

/// A market with every stream shape.
#[rpc_service]
pub trait Market {
    /// `count` ticks of `symbol`.
    async fn ticks(&self, symbol: String, count: u32) -> Streaming<Tick>;
    /// Ticks of a known symbol, or an error before any.
    async fn history(&self, symbol: String) -> Result<Streaming<Tick>, MarketError>;
    /// Bytes received.
    async fn upload(&self, name: String, chunks: Streaming<Vec<u8>>) -> u64;
    /// Every line back.
    async fn echo(&self, input: Streaming<String>) -> Streaming<String>;
    /// A unary method beside the streaming ones.
    async fn price(&self, symbol: String) -> f64;
    /// Counts forever, recording how far it got, until dropped.
    async fn endless(&self) -> Streaming<u64>;
    /// `ok` items, then a panic in the producer.
    async fn broken(&self, ok: u32) -> Streaming<u32>;
}

#[derive(Default)]
struct Exchange {
    /// Items `endless` has produced.
    produced: Arc<AtomicU64>,
    /// Set when `endless`'s producer is dropped.
    dropped: Arc<AtomicBool>,
}

/// Sets its flag when dropped.
struct OnDrop(Arc<AtomicBool>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Market for Exchange {
    async fn ticks(&self, symbol: String, count: u32) -> Streaming<Tick> {
        Streaming::from_iter((0..count).map(move |seq| Tick {
            symbol: symbol.clone(),
            seq,
        }))
    }

    async fn history(&self, symbol: String) -> Result<Streaming<Tick>, MarketError> {
        if symbol != "ACME" {
            return Err(MarketError::UnknownSymbol(symbol));
        }
        Ok(self.ticks(symbol, 3).await)
    }

    async fn upload(&self, _name: String, mut chunks: Streaming<Vec<u8>>) -> u64 {
        let mut total = 0;
        while let Some(Ok(chunk)) = chunks.next().await {
            total += chunk.len() as u64;
        }
        total
    }

    async fn echo(&self, mut input: Streaming<String>) -> Streaming<String> {
        let (tx, out) = Streaming::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(line)) = input.next().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        out
    }

    async fn price(&self, _symbol: String) -> f64 {
        4.2
    }

    async fn endless(&self) -> Streaming<u64> {
        let produced = self.produced.clone();
        let guard = OnDrop(self.dropped.clone());
        Streaming::from_stream(futures::stream::iter(0u64..).map(move |n| {
            let _ = &guard;
            produced.fetch_add(1, Ordering::SeqCst);
            n
        }))
    }

    async fn broken(&self, ok: u32) -> Streaming<u32> {
        Streaming::from_stream(futures::stream::iter(0..=ok).map(move |n| {
            assert!(n < ok, "the producer broke");
            n
        }))
    }
}

async fn market() -> (MarketClient, Arc<AtomicU64>, Arc<AtomicBool>) {
    let exchange = Exchange::default();
    let (produced, dropped) = (exchange.produced.clone(), exchange.dropped.clone());
    let addr = serve(Server::builder().add_service(MarketServer::new(exchange))).await;
    let client = MarketClient::connect(addr).await.expect("connect");
    (client, produced, dropped)
}

/// Fails the test instead of hanging it; a safety net, not a timing.
async fn within_10s<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 10 s"))
}

async fn collect<T: serde::de::DeserializeOwned>(stream: Streaming<T>) -> Vec<Result<T, RpcError>> {
    within_10s("the stream's end", stream.collect::<Vec<_>>()).await
}

#[tokio::test]
async fn a_server_stream_keeps_the_order_of_100_000_items() {
    let (client, ..) = market().await;
    let ticks = client.ticks("ACME".into(), 100_000).await.unwrap();
    let ticks = collect(ticks).await;
    assert_eq!(ticks.len(), 100_000);
    for (i, tick) in ticks.into_iter().enumerate() {
        assert_eq!(tick.unwrap().seq, i as u32);
    }
}

#[tokio::test]
async fn empty_and_one_item_streams_end_cleanly() {
    let (client, ..) = market().await;
    assert!(
        collect(client.ticks("ACME".into(), 0).await.unwrap())
            .await
            .is_empty()
    );
    let one = collect(client.ticks("ACME".into(), 1).await.unwrap()).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].as_ref().unwrap().seq, 0);
}

#[tokio::test]
async fn an_error_before_the_stream_is_the_methods_own() {
    let (client, ..) = market().await;
    match client.history("NOPE".into()).await.unwrap() {
        Err(MarketError::UnknownSymbol(symbol)) => assert_eq!(symbol, "NOPE"),
        Ok(_) => panic!("a stream for an unknown symbol"),
    }
    let ticks = client.history("ACME".into()).await.unwrap().unwrap();
    assert_eq!(collect(ticks).await.len(), 3);
}

#[tokio::test]
async fn a_client_stream_is_read_to_its_end() {
    let (client, ..) = market().await;
    // 4 MiB in 64 KiB chunks: many windows' worth.
    let chunks = (0..64).map(|i| vec![i as u8; 64 * 1024]);
    let total = within_10s(
        "the upload",
        client.upload("f".into(), Streaming::from_iter(chunks)),
    )
    .await
    .unwrap();
    assert_eq!(total, 64 * 64 * 1024);
    let empty = client
        .upload("e".into(), Streaming::from_iter(Vec::<Vec<u8>>::new()))
        .await
        .unwrap();
    assert_eq!(empty, 0);
}

#[tokio::test]
async fn a_bidirectional_stream_echoes_10_000_lines() {
    let (client, ..) = market().await;
    let lines: Vec<String> = (0..10_000).map(|i| format!("line {i}")).collect();
    let back = client
        .echo(Streaming::from_iter(lines.clone()))
        .await
        .unwrap();
    let back: Vec<String> = collect(back)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(back, lines);
}

#[tokio::test]
async fn a_reader_that_reads_nothing_stops_the_producer_within_its_window() {
    let (client, produced, dropped) = market().await;
    let stream = client.endless().await.unwrap();
    // The window is 256 KiB and each u64 item takes at most 9 bytes here,
    // but small items pack tight: what the producer made beyond what the
    // window holds is at most one batch more.
    eventually("the producer to stall", || {
        let before = produced.load(Ordering::SeqCst);
        before > 0 && before == produced.load(Ordering::SeqCst)
    })
    .await;
    // Let it run on if it could; it must not.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let made = produced.load(Ordering::SeqCst);
    // Items 0..n encode in 1-9 bytes; 256 KiB + 64 KiB holds < 330,000.
    assert!(made < 330_000, "the producer made {made} items unread");
    assert!(made > 1_000, "the producer made only {made} items");
    drop(stream);
    eventually("the producer to be dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn a_stream_and_unary_calls_share_a_connection_while_one_stream_is_unread() {
    let (client, ..) = market().await;
    let _unread = client.endless().await.unwrap();
    let mut streams = Vec::new();
    for i in 0..100u32 {
        let client = client.clone();
        streams.push(tokio::spawn(async move {
            let ticks = client.ticks(format!("S{i}"), 100 + i).await.unwrap();
            let price = client.price("ACME".into()).await.unwrap();
            (collect(ticks).await.len(), price)
        }));
    }
    for (i, stream) in streams.into_iter().enumerate() {
        let (len, price) = within_10s("a stream", stream).await.unwrap();
        assert_eq!(len, 100 + i);
        assert_eq!(price, 4.2);
    }
}

#[tokio::test]
async fn a_panicking_producer_ends_the_stream_with_an_error() {
    let (client, ..) = market().await;
    let items = collect(client.broken(5).await.unwrap()).await;
    assert_eq!(items.len(), 6, "{items:?}");
    for (i, item) in items[..5].iter().enumerate() {
        assert_eq!(*item.as_ref().unwrap(), i as u32);
    }
    match &items[5] {
        Err(RpcError::Status(status)) => {
            assert_eq!(status.code(), Code::HandlerPanicked);
            assert!(status.message().contains("the producer broke"));
        }
        other => panic!("not a panic status: {other:?}"),
    }
}

#[tokio::test]
async fn a_deadline_ends_an_endless_stream_with_an_error() {
    let (client, _, dropped) = market().await;
    let mut stream = client
        .with_timeout(Duration::from_millis(200))
        .endless()
        .await
        .unwrap();
    let mut last = None;
    let mut count = 0u64;
    while let Some(item) = within_10s("the deadline", stream.next()).await {
        match item {
            Ok(_) => count += 1,
            Err(e) => last = Some(e),
        }
    }
    assert!(count > 0);
    assert!(
        matches!(last, Some(RpcError::DeadlineExceeded { .. })),
        "{last:?}"
    );
    eventually("the producer to be dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}
