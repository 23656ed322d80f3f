//! Stream calls end to end over TCP: the three shapes, their ends and
//! errors, flow control, and giving up.

mod pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{Channel, Code, RpcClient, RpcError, Server, Streaming, rpc_service};
use rpc_tests::{eventually, serve, within_10s};
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
    /// `n` chunks of bytes, chunk `i` holding `i` bytes of value `i`.
    async fn chunks(&self, n: u8) -> Result<Streaming<Vec<u8>>, MarketError>;
    /// Reads the client's stream to its end, then waits for ever.
    async fn settle(&self, chunks: Streaming<Vec<u8>>) -> u64;
    /// Holds the client's stream unread, for ever.
    async fn hold(&self, chunks: Streaming<Vec<u8>>) -> u64;
    /// One chunk of each size, in order.
    async fn sized(&self, sizes: Vec<u32>) -> Streaming<Vec<u8>>;
}

#[derive(Default)]
struct Exchange {
    /// Items `endless` has produced.
    produced: Arc<AtomicU64>,
    /// Set when `endless`'s producer is dropped.
    dropped: Arc<AtomicBool>,
    /// Set when `settle` has read its stream to the end.
    settled: Arc<AtomicBool>,
    /// Chunks `upload` has read.
    uploaded: Arc<AtomicU64>,
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
            self.uploaded.fetch_add(1, Ordering::SeqCst);
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

    async fn chunks(&self, n: u8) -> Result<Streaming<Vec<u8>>, MarketError> {
        Ok(Streaming::from_iter(
            (0..n).map(|i| vec![i; usize::from(i)]),
        ))
    }

    async fn settle(&self, mut chunks: Streaming<Vec<u8>>) -> u64 {
        while chunks.next().await.is_some() {}
        self.settled.store(true, Ordering::SeqCst);
        std::future::pending().await
    }

    async fn hold(&self, chunks: Streaming<Vec<u8>>) -> u64 {
        let _unread = chunks;
        std::future::pending().await
    }

    async fn sized(&self, sizes: Vec<u32>) -> Streaming<Vec<u8>> {
        Streaming::from_iter(sizes.into_iter().map(|size| vec![7; size as usize]))
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

/// Reads `stream` to its end: the items it yielded and its error, if any.
async fn to_end<T: serde::de::DeserializeOwned>(
    what: &str,
    stream: &mut Streaming<T>,
) -> (u64, Option<RpcError>) {
    let (mut items, mut error) = (0, None);
    while let Some(item) = within_10s(what, stream.next()).await {
        match item {
            Ok(_) => items += 1,
            Err(e) => error = Some(e),
        }
    }
    (items, error)
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
async fn streams_of_bytes_travel_both_ways() {
    let (client, ..) = market().await;
    let chunks = collect(client.chunks(200).await.unwrap().unwrap()).await;
    assert_eq!(chunks.len(), 200);
    for (i, chunk) in chunks.into_iter().enumerate() {
        assert_eq!(chunk.unwrap(), vec![i as u8; i]);
    }
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

/// How many items the endless producer makes for `client` while nothing
/// is read, once it has stalled; checks it is dropped after.
async fn made_while_unread(
    client: &MarketClient,
    produced: &AtomicU64,
    dropped: &AtomicBool,
) -> u64 {
    let stream = client.endless().await.unwrap();
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
    drop(stream);
    eventually("the producer to be dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    made
}

#[tokio::test]
async fn a_reader_that_reads_nothing_stops_the_producer_within_its_window() {
    let (client, produced, dropped) = market().await;
    let made = made_while_unread(&client, &produced, &dropped).await;
    // The window is 256 KiB and each u64 item takes at most 9 bytes here,
    // but small items pack tight: what the producer made beyond what the
    // window holds is at most one batch more. Items 0..n encode in 1-9
    // bytes; 256 KiB + 64 KiB holds < 330,000.
    assert!(made < 330_000, "the producer made {made} items unread");
    assert!(made > 1_000, "the producer made only {made} items");
}

#[tokio::test]
async fn a_client_sets_the_window_of_the_streams_it_reads() {
    let exchange = Exchange::default();
    let (produced, dropped) = (exchange.produced.clone(), exchange.dropped.clone());
    let addr = serve(Server::builder().add_service(MarketServer::new(exchange))).await;
    let connect = |window| async move {
        let channel = Channel::builder()
            .stream_window(window)
            .connect(addr)
            .await
            .expect("connect");
        MarketClient::new(channel)
    };
    let small = made_while_unread(&connect(128 * 1024).await, &produced, &dropped).await;
    produced.store(0, Ordering::SeqCst);
    dropped.store(false, Ordering::SeqCst);
    let large = made_while_unread(&connect(1024 * 1024).await, &produced, &dropped).await;
    // Items 251-65,535 take 3 bytes, larger ones 5: 128 KiB (and at most
    // one 32 KiB batch more) hold 44,000-55,000 items, 1 MiB about 240,000
    // (the default 256 KiB about 79,000).
    assert!(small < 62_000, "a 128 KiB window let {small} items be made");
    assert!(
        large > 150_000,
        "a 1 MiB window let only {large} items be made"
    );
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
async fn many_unread_streams_that_fill_the_reply_backlog_do_not_stall_the_connection() {
    // 60 streams, each allowed its 256 KiB window and none read: more than
    // the server's 4 MiB reply backlog. The backlog fills and empties as the
    // client takes the frames in; every stream sender and the reader wait
    // for it, and must all wake. Woken one at a time, the rest slept on
    // with the backlog empty and the connection stalled for good.
    let (client, ..) = market().await;
    // All sent at once, as a pipelining client would: the server reads
    // them while the backlog fills.
    let opens = (0..60).map(|i| client.ticks(format!("S{i}"), 1_000_000));
    let (unread, price) = within_10s(
        "60 streams to open and a unary call after them",
        futures::future::join(
            futures::future::join_all(opens),
            client.price("ACME".into()),
        ),
    )
    .await;
    assert!(unread.iter().all(Result::is_ok));
    assert_eq!(price.unwrap(), 4.2);
}

#[tokio::test]
async fn an_item_that_fits_a_frame_only_alone_goes_in_the_next_one() {
    const LIMIT: usize = 1024 * 1024;
    let addr = serve(
        Server::builder()
            .max_frame_length(LIMIT)
            .add_service(MarketServer::new(Exchange::default())),
    )
    .await;
    let client = MarketClient::connect(addr).await.expect("connect");
    // A frame's header takes 14 bytes, the first item 11, the second's
    // length 5: the second fits a frame alone (14 + 5 + n <= LIMIT), not
    // after the first. Before, its length prefix stayed in the first frame
    // when it did not fit, and the client read a broken frame.
    let large = LIMIT as u32 - 26;
    let items = collect(client.sized(vec![10, large, 3]).await.unwrap()).await;
    let sizes: Vec<usize> = items
        .into_iter()
        .map(|item| item.expect("an item").len())
        .collect();
    assert_eq!(sizes, [10, large as usize, 3]);
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
    let (count, last) = to_end("the deadline", &mut stream).await;
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

/// A request frame with stream flags set: byte 1 of the payload.
fn stream_request(id: u64, method: &str, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = rpc_tests::request_frame(id, "Market", method, body);
    frame[5] = flags;
    frame
}

/// A stream message with `rest` after its header.
fn stream_message(kind: u8, id: u64, rest: &[u8]) -> Vec<u8> {
    let mut payload = vec![kind, 0];
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(rest);
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// An items message of `count` one-byte-length strings of `len` bytes.
fn items(id: u64, count: u32, len: usize) -> Vec<u8> {
    let mut rest = count.to_le_bytes().to_vec();
    for _ in 0..count {
        rest.push(len as u8);
        rest.extend(std::iter::repeat_n(b'x', len));
    }
    stream_message(0x08, id, &rest)
}

async fn raw_market() -> tokio::net::TcpStream {
    let addr = serve(Server::builder().add_service(MarketServer::new(Exchange::default()))).await;
    rpc_tests::raw_connect(addr).await
}

/// `frames` sent on a fresh connection to the market make the server close it.
async fn closes(what: &str, frames: Vec<Vec<u8>>) {
    use tokio::io::AsyncWriteExt;
    let mut stream = raw_market().await;
    for frame in frames {
        // The server may close before it has read everything.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    within_10s(what, rpc_tests::read_until_closed(&mut stream)).await;
}

/// The body of `echo`'s request: no arguments besides the stream.
const NO_ARGS: &[u8] = &[];

#[tokio::test]
async fn items_beyond_the_credit_close_the_connection() {
    // `hold` reads nothing, so no grant comes after the first: 256 KiB in
    // all, and 2,000 frames of 214 bytes (428 KB) overrun it.
    let mut frames = vec![stream_request(1, "hold", 0x02, NO_ARGS)];
    frames.extend((0..2_000).map(|_| items(1, 1, 200)));
    closes("a close for items beyond credit", frames).await;
}

#[tokio::test]
async fn items_within_the_credit_are_held_and_the_connection_stays() {
    use tokio::io::AsyncWriteExt;
    let mut stream = raw_market().await;
    stream
        .write_all(&stream_request(1, "hold", 0x02, NO_ARGS))
        .await
        .unwrap();
    // 1,000 x 214 bytes: within 256 KiB.
    for _ in 0..1_000 {
        stream.write_all(&items(1, 1, 200)).await.unwrap();
    }
    stream
        .write_all(&rpc_tests::request_frame(
            2,
            "Market",
            "price",
            &[4, b'A', b'C', b'M', b'E'],
        ))
        .await
        .unwrap();
    loop {
        let payload = within_10s("the unary answer", rpc_tests::read_frame(&mut stream)).await;
        if payload[0] == 0x02 {
            assert_eq!(payload[2], 2, "the answer to the unary call");
            break;
        }
    }
}

#[tokio::test]
async fn a_grant_past_the_largest_credit_closes_the_connection() {
    let frames = vec![
        stream_request(1, "endless", 0x04, NO_ARGS),
        stream_message(0x0A, 1, &u32::MAX.to_le_bytes()),
    ];
    closes("a close for a huge grant", frames).await;
}

#[tokio::test]
async fn items_after_the_end_and_a_second_end_close_the_connection() {
    let after_end = vec![
        stream_request(1, "hold", 0x02, NO_ARGS),
        stream_message(0x09, 1, &[]),
        items(1, 1, 3),
    ];
    closes("a close for items after the end", after_end).await;
    let two_ends = vec![
        stream_request(1, "hold", 0x02, NO_ARGS),
        stream_message(0x09, 1, &[]),
        stream_message(0x09, 1, &[]),
    ];
    closes("a close for a second end", two_ends).await;
}

#[tokio::test]
async fn a_stop_sent_to_the_server_closes_the_connection() {
    closes("a close for a stop", vec![stream_message(0x0B, 1, &[])]).await;
}

#[tokio::test]
async fn items_that_lie_about_their_count_end_the_stream_not_the_server() {
    use tokio::io::AsyncWriteExt;
    let mut stream = raw_market().await;
    // Says two strings, holds one.
    let mut lying = items(1, 1, 3);
    lying[14..18].copy_from_slice(&2u32.to_le_bytes());
    stream
        .write_all(&stream_request(1, "upload", 0x02, &[1, b'f']))
        .await
        .unwrap();
    stream.write_all(&lying).await.unwrap();
    stream
        .write_all(&stream_message(0x09, 1, &[]))
        .await
        .unwrap();
    // The handler sees an error item, stops reading, and answers; the
    // server tells the client to stop, and the connection stays up.
    let mut stopped = false;
    loop {
        let payload = within_10s("the answer", rpc_tests::read_frame(&mut stream)).await;
        match payload[0] {
            0x0A => {}
            0x0B => stopped = true,
            0x02 => break,
            other => panic!("unexpected message kind {other:#04x}"),
        }
    }
    assert!(stopped, "the server did not stop the stream");
    stream
        .write_all(&rpc_tests::request_frame(
            2,
            "Market",
            "price",
            &[4, b'A', b'C', b'M', b'E'],
        ))
        .await
        .unwrap();
    let (id, status, _) = within_10s("the next call", rpc_tests::read_response(&mut stream)).await;
    assert_eq!((id, status), (2, 0));
}

#[tokio::test]
async fn stream_flags_that_do_not_match_the_method_are_a_bad_request() {
    use tokio::io::AsyncWriteExt;
    let mut stream = raw_market().await;
    // `price` is unary; `ticks` returns a stream but is called as unary.
    stream
        .write_all(&stream_request(1, "price", 0x04, &[1, b'A']))
        .await
        .unwrap();
    stream
        .write_all(&rpc_tests::request_frame(
            2,
            "Market",
            "ticks",
            &[1, b'A', 3],
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        let (id, status, body) =
            within_10s("an answer", rpc_tests::read_response(&mut stream)).await;
        assert_eq!(status, 3, "call {id}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test]
async fn dropping_a_stream_gives_its_call_slot_back() {
    let exchange = Exchange::default();
    let dropped = exchange.dropped.clone();
    // One call at a time: the next call runs only once the dropped stream's
    // call has ended on the server and its answer freed the client's permit.
    let addr = serve(
        Server::builder()
            .max_concurrent_calls(1)
            .add_service(MarketServer::new(exchange)),
    )
    .await;
    let client = MarketClient::connect(addr).await.unwrap();
    for _ in 0..3 {
        let mut stream = client.endless().await.unwrap();
        assert_eq!(
            within_10s("an item", stream.next()).await.unwrap().unwrap(),
            0
        );
        drop(stream);
        let price = within_10s("the next call", client.price("ACME".into())).await;
        assert_eq!(price.unwrap(), 4.2);
    }
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_cut_connection_ends_a_stream_with_an_error() {
    let addr = serve(Server::builder().add_service(MarketServer::new(Exchange::default()))).await;
    let proxy = rpc_tests::CutProxy::start(addr).await;
    let client = MarketClient::connect(proxy.addr()).await.unwrap();
    let mut stream = client.endless().await.unwrap();
    within_10s("an item", stream.next()).await.unwrap().unwrap();
    proxy.cut();
    let (_, last) = to_end("the stream's end", &mut stream).await;
    assert!(
        matches!(last, Some(RpcError::ConnectionClosed { .. })),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_shutdown_lets_short_streams_finish_and_ends_long_ones_with_an_error() {
    let server = Server::builder()
        .shutdown_grace(Duration::from_millis(300))
        .add_service(MarketServer::new(Exchange::default()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let client = MarketClient::connect(addr).await.unwrap();
    let mut endless = client.endless().await.unwrap();
    within_10s("an item", endless.next())
        .await
        .unwrap()
        .unwrap();
    let short = client.ticks("ACME".into(), 10).await.unwrap();
    stop.send(()).unwrap();
    assert_eq!(collect(short).await.len(), 10);
    let (_, last) = to_end("the endless stream's end", &mut endless).await;
    assert!(last.is_some(), "a stream cut by the shutdown ended cleanly");
    within_10s("the server to stop", serving)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn all_three_shapes_work_over_tls() {
    use rpc_core::tls::{ClientTlsConfig, ServerTlsConfig};
    let ca = pki::TestCa::new("stream CA");
    let addr = serve(
        Server::builder()
            .add_service(MarketServer::new(Exchange::default()))
            .tls(ServerTlsConfig::new(ca.server(&["localhost"]).identity())),
    )
    .await;
    let channel = rpc_core::Channel::builder()
        .tls(ClientTlsConfig::new("localhost").ca_certificates(ca.roots()))
        .connect(addr)
        .await
        .unwrap();
    let client = MarketClient::new(channel);
    let ticks = collect(client.ticks("ACME".into(), 20_000).await.unwrap()).await;
    assert_eq!(ticks.len(), 20_000);
    let chunks = (0..32).map(|i| vec![i as u8; 64 * 1024]);
    let total = within_10s(
        "the upload",
        client.upload("f".into(), Streaming::from_iter(chunks)),
    )
    .await
    .unwrap();
    assert_eq!(total, 32 * 64 * 1024);
    let lines: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
    let back = collect(
        client
            .echo(Streaming::from_iter(lines.clone()))
            .await
            .unwrap(),
    )
    .await;
    let back: Vec<String> = back.into_iter().map(Result::unwrap).collect();
    assert_eq!(back, lines);
}

#[tokio::test]
async fn a_second_end_after_the_first_was_read_closes_the_connection() {
    use tokio::io::AsyncWriteExt;
    let exchange = Exchange::default();
    let settled = exchange.settled.clone();
    let addr = serve(Server::builder().add_service(MarketServer::new(exchange))).await;
    let mut stream = rpc_tests::raw_connect(addr).await;
    stream
        .write_all(&stream_request(1, "settle", 0x02, NO_ARGS))
        .await
        .unwrap();
    stream
        .write_all(&stream_message(0x09, 1, &[]))
        .await
        .unwrap();
    eventually("the handler to read the end", || {
        settled.load(Ordering::SeqCst)
    })
    .await;
    stream
        .write_all(&stream_message(0x09, 1, &[]))
        .await
        .unwrap();
    within_10s("a close", rpc_tests::read_until_closed(&mut stream)).await;
}

/// Waits until `count` stops moving: unchanged over two looks 50 ms apart
/// (the absence of progress has no event to wait on).
async fn until_still(count: &AtomicU64) -> u64 {
    within_10s("the count to stop moving", async {
        let mut last = count.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = count.load(Ordering::SeqCst);
            if now == last && now > 0 {
                return now;
            }
            last = now;
        }
    })
    .await
}

#[tokio::test]
async fn a_client_that_grants_much_and_reads_nothing_stalls_the_producer() {
    use tokio::io::AsyncWriteExt;
    let exchange = Exchange::default();
    let produced = exchange.produced.clone();
    // On a runtime of its own, so that the producer runs while this test
    // looks at it.
    let addr =
        rpc_tests::serve_on_own_runtime(Server::builder().add_service(MarketServer::new(exchange)));
    let mut stream = rpc_tests::raw_connect(addr).await;
    stream
        .write_all(&stream_request(1, "endless", 0x04, NO_ARGS))
        .await
        .unwrap();
    // 1 GiB of credit, and nothing read: only the reply backlog (4 MiB)
    // and the socket's buffers may hold what the producer makes.
    stream
        .write_all(&stream_message(0x0A, 1, &(1u32 << 30).to_le_bytes()))
        .await
        .unwrap();
    let made = until_still(&produced).await;
    // Items here encode in 3-5 bytes: 10 M of them is 30 MB or more,
    // far beyond the backlog and any loopback socket buffer.
    assert!(made < 10_000_000, "the producer made {made} items unread");
    drop(stream);
}

#[tokio::test]
async fn many_short_server_streams_are_not_taken_for_a_flood() {
    let (client, ..) = market().await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..300 {
                    let ticks = client.ticks("ACME".into(), 1).await.unwrap();
                    assert_eq!(collect(ticks).await.len(), 1);
                }
            })
        })
        .collect();
    for task in tasks {
        within_10s("the calls", task).await.unwrap();
    }
}

#[tokio::test]
async fn giving_up_an_upload_stops_its_producer_even_if_the_server_never_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server that takes the call, grants 1 GiB and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 8];
        socket.read_exact(&mut hello).await.unwrap();
        socket.write_all(b"RKIT\x01\x00\x00\x00").await.unwrap();
        let request = rpc_tests::read_frame(&mut socket).await;
        let id = u64::from_le_bytes(request[2..10].try_into().unwrap());
        socket
            .write_all(&stream_message(0x0A, id, &(1u32 << 30).to_le_bytes()))
            .await
            .unwrap();
        let mut sink = vec![0u8; 64 * 1024];
        while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let client = MarketClient::connect(addr).await.unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let pulled = Arc::new(AtomicU64::new(0));
    let (guard, count) = (OnDrop(dropped.clone()), pulled.clone());
    let chunks = futures::stream::iter(0u32..).map(move |_| {
        let _ = &guard;
        count.fetch_add(1, Ordering::SeqCst);
        vec![0u8; 1024]
    });
    let result = client
        .with_timeout(Duration::from_millis(200))
        .hold(Streaming::from_stream(chunks))
        .await;
    assert!(
        matches!(result, Err(RpcError::DeadlineExceeded { .. })),
        "{result:?}"
    );
    eventually("the producer to be dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn echo_streams_finish_with_a_small_running_request_limit() {
    let addr = serve(
        Server::builder()
            .max_running_request_bytes(256 * 1024)
            .add_service(MarketServer::new(Exchange::default())),
    )
    .await;
    let client = MarketClient::connect(addr).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let lines: Vec<String> = (0..3_000).map(|n| format!("{i}:{n:0>40}")).collect();
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
            })
        })
        .collect();
    for task in tasks {
        within_10s("an echo", task).await.unwrap();
    }
    assert_eq!(
        within_10s("a unary call", client.price("ACME".into()))
            .await
            .unwrap(),
        4.2
    );
}

#[tokio::test]
async fn a_shutdown_ends_the_clients_streams_to_running_calls_at_once() {
    let exchange = Exchange::default();
    let uploaded = exchange.uploaded.clone();
    let server = Server::builder()
        .shutdown_grace(Duration::from_secs(60))
        .add_service(MarketServer::new(exchange))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    let client = MarketClient::connect(addr).await.unwrap();
    // A stream that never ends by itself.
    let (tx, chunks) = Streaming::channel(4);
    tx.send(vec![1u8; 1000]).await.unwrap();
    let upload = tokio::spawn({
        let client = client.clone();
        async move { client.upload("f".into(), chunks).await }
    });
    // Once the server holds the first chunk, shut it down: the handler's
    // stream ends with an error, `upload` returns what it counted, and
    // the shutdown does not wait out its 60 s grace.
    eventually("the handler to read a chunk", || {
        uploaded.load(Ordering::SeqCst) > 0
    })
    .await;
    stop.send(()).unwrap();
    let counted = within_10s("the upload's answer", upload).await.unwrap();
    assert!(counted.is_ok(), "{counted:?}");
    within_10s("the server to stop", serving)
        .await
        .unwrap()
        .unwrap();
    drop(tx);
}
