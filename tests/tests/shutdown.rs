//! Graceful shutdown: stop accepting, tell clients which calls were read,
//! finish those within the grace period, then close.

use std::net::SocketAddr;
use std::time::Duration;

use rpc_core::{Channel, RpcError, Server, ServerBuilder};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, eventually, raw_connect, read_frame,
    read_until_closed, request_frame, serve, within_10s,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server whose shutdown the test starts by sending on the returned sender.
async fn stoppable(
    builder: ServerBuilder,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), RpcError>>,
) {
    let server = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    (addr, stop, serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_across_a_shutdown_and_new_connections_are_refused() {
    let (control, mut started) = ControlImpl::new();
    let (addr, stop, serving) = stoppable(
        Server::builder()
            .shutdown_grace(Duration::from_secs(5))
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    // 1,000 calls over ten connections (the per-connection limit is 100),
    // every one running when the shutdown starts.
    let mut calls = Vec::new();
    for _ in 0..10 {
        let client = ControlClient::connect(addr).await.unwrap();
        for n in 0..100 {
            let client = client.clone();
            calls.push(tokio::spawn(async move { client.gated(n).await }));
        }
    }
    for _ in 0..1000 {
        started.recv().await.unwrap();
    }
    stop.send(()).unwrap();
    // The listener is closed once the drain has begun; wait for that rather
    // than guess how long it takes.
    let refused = async {
        loop {
            match Channel::connect(addr).await {
                Err(RpcError::Connect { .. }) => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("the listener closes once the drain begins");
    control.open();
    for call in calls {
        call.await
            .unwrap()
            .expect("a call read before the shutdown is answered");
    }
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_drain_message_says_which_requests_were_read() {
    let (control, mut started) = ControlImpl::new();
    let (addr, stop, serving) =
        stoppable(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let mut stream = raw_connect(addr).await;
    for id in [0u64, 1] {
        stream
            .write_all(&request_frame(id, "Control", "gated", &[id as u8]))
            .await
            .unwrap();
    }
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    stop.send(()).unwrap();
    // kind 0x07, no flags, first unread id 2.
    let drain = read_frame(&mut stream).await;
    assert_eq!(drain[..2], [0x07, 0]);
    assert_eq!(drain[2..10], 2u64.to_le_bytes());
    // Sent after the drain: never read, never answered.
    stream
        .write_all(&request_frame(2, "Control", "fast", &[2]))
        .await
        .unwrap();
    // Done sending, as an rpc-core client is once the server closes its side.
    stream.shutdown().await.unwrap();
    control.open();
    let rest = read_until_closed(&mut stream).await;
    // Two replies, for ids 0 and 1, then the server closed: 2 response
    // frames of 4 + 10 + 1 + 1 bytes.
    assert_eq!(rest.len(), 2 * 16, "{rest:?}");
    serving.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_drain_new_calls_are_not_processed_or_reconnect() {
    let (control, mut started) = ControlImpl::new();
    let (addr, stop, serving) =
        stoppable(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let fixed = Channel::builder()
        .reconnect(false)
        .connect(addr)
        .await
        .unwrap();
    let reconnecting = Channel::connect(addr).await.unwrap();
    let client = ControlClient::new(fixed.clone());
    let running = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    started.recv().await.unwrap();
    stop.send(()).unwrap();
    // Wait for the drain notice to arrive, rather than guess how long it takes.
    eventually("both channels to see the drain", || {
        fixed.is_closed() && reconnecting.is_closed()
    })
    .await;
    match client.fast(2).await {
        Err(RpcError::NotProcessed { reason }) => {
            assert!(reason.contains("shutting down"), "{reason}")
        }
        other => panic!("expected NotProcessed, got {other:?}"),
    }
    // A reconnecting channel tries a new connection, which the draining
    // server refuses.
    let other = ControlClient::new(reconnecting);
    assert!(matches!(other.fast(3).await, Err(RpcError::Connect { .. })));
    // The call the server had read is still answered.
    control.open();
    assert_eq!(running.await.unwrap().unwrap(), 1);
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn calls_still_running_when_the_grace_period_ends_fail_definitely() {
    let (control, mut started) = ControlImpl::new();
    let (addr, stop, serving) = stoppable(
        Server::builder()
            .shutdown_grace(Duration::from_millis(100))
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    let client = ControlClient::connect(addr).await.unwrap();
    let stuck = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    started.recv().await.unwrap();
    stop.send(()).unwrap();
    // The gate never opens: the server gives up after the grace period.
    match stuck.await.unwrap() {
        Err(RpcError::ConnectionClosed { reason }) => {
            assert!(reason.contains("shutting down"), "{reason}")
        }
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn dropping_the_serve_future_leaves_open_connections_served() {
    let (control, _started) = ControlImpl::new();
    let server = Server::builder()
        .add_service(ControlServer::from_arc(control))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let serving = tokio::spawn(server.serve());
    let client = ControlClient::connect(addr).await.unwrap();
    assert_eq!(client.fast(1).await.unwrap(), 1);
    serving.abort();
    let _ = serving.await;
    assert_eq!(client.fast(2).await.unwrap(), 2);
}

/// A peer that does the handshake and then never closes its end: close()
/// still returns (after the linger, here on a paused clock) and frees the
/// connection.
#[tokio::test(start_paused = true)]
async fn close_returns_even_if_the_server_never_closes_its_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (half_closed, client_ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 8];
        socket.read_exact(&mut hello).await.unwrap();
        socket.write_all(&rpc_tests::HELLO).await.unwrap();
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink).await;
        let _ = half_closed.send(());
        // Holds its end open for ever.
        std::future::pending::<()>().await;
    });
    let channel = rpc_core::Channel::connect(addr).await.unwrap();
    // The clock is paused: the linger passes as soon as nothing else can
    // happen, and the minute is a bound, not a wait.
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(channel.close(), async {
            client_ended.await.unwrap();
        })
    })
    .await;
    assert!(closed.is_ok(), "close() waited for ever");
    assert!(channel.is_closed());
}

/// close() while a call is reconnecting: the reconnect does not install a
/// connection behind it.
#[tokio::test]
async fn close_during_a_reconnect_leaves_no_connection_behind() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (control, _started) = ControlImpl::new();
    let target = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    // A proxy: the first connection passes and can be cut; later ones
    // wait for `release` before they are forwarded.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let (cut, release, accepted) = (cut.clone(), release.clone(), accepted.clone());
        async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let n = accepted.fetch_add(1, Ordering::SeqCst);
                let (cut, release) = (cut.clone(), release.clone());
                tokio::spawn(async move {
                    if n > 0 {
                        let _ = release.acquire().await.unwrap();
                    }
                    let mut out = tokio::net::TcpStream::connect(target).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        () = cut.notified(), if n == 0 => {}
                    }
                });
            }
        }
    });
    let channel = Channel::connect(addr).await.unwrap();
    let client = ControlClient::new(channel.clone());
    assert_eq!(client.fast(1).await.unwrap(), 1);
    cut.notify_waiters();
    eventually("the cut is noticed", || channel.is_closed()).await;
    let reconnecting = tokio::spawn({
        let client = client.clone();
        async move { client.fast(2).await }
    });
    eventually("the call is reconnecting", || {
        accepted.load(Ordering::SeqCst) == 2
    })
    .await;
    let closing = tokio::spawn({
        let channel = channel.clone();
        async move { channel.close().await }
    });
    release.add_permits(1);
    within_10s("close", closing).await.unwrap();
    // Answered if the reconnect won the race with the close, refused if
    // not; either way no connection is left behind.
    let call = within_10s("the call", reconnecting).await.unwrap();
    assert!(
        matches!(call, Ok(2) | Err(RpcError::NotProcessed { .. })),
        "{call:?}"
    );
    assert!(
        channel.is_closed(),
        "no connection outlives Channel::close()"
    );
    assert!(matches!(
        client.fast(3).await,
        Err(RpcError::NotProcessed { .. })
    ));
}
