//! Graceful shutdown: stop accepting, tell clients which calls were read,
//! finish those within the grace period, then close.

use std::net::SocketAddr;
use std::time::Duration;

use rpc_core::{Channel, RpcError, Server, ServerBuilder};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, eventually, raw_connect, read_frame,
    read_until_closed, request_frame,
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
