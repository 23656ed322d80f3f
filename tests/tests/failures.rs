//! Handler panics, cut connections and frame limits end calls with definite
//! errors; nothing hangs and the server goes on serving.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use rpc_core::Code;
use rpc_core::{Channel, RpcError, Server};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, CutProxy, ShapesClient, ShapesImpl, ShapesServer,
    eventually, serve,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_only_its_call() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let client = ControlClient::connect(addr).await.unwrap();
    match client.panic("deliberate test panic".to_owned()).await {
        Err(RpcError::Status(s)) if s.code() == Code::HandlerPanicked => {
            let message = s.message();
            assert_eq!(message, "deliberate test panic")
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    // Same connection, and a new one, both still served.
    assert_eq!(client.fast(1).await.unwrap(), 1);
    let other = ControlClient::connect(addr).await.unwrap();
    assert_eq!(other.fast(2).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_after_waiting_fails_only_its_call() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let client = ControlClient::connect(addr).await.unwrap();
    match client.panic_later("late test panic".to_owned()).await {
        Err(RpcError::Status(s)) if s.code() == Code::HandlerPanicked => {
            let message = s.message();
            assert_eq!(message, "late test panic")
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert_eq!(client.fast(1).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_call_fails_the_call_at_once() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let proxy = CutProxy::start(addr).await;
    let client = ControlClient::connect(proxy.addr()).await.unwrap();

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    assert_eq!(started.recv().await, Some(1), "the call reached the server");
    proxy.cut();

    match call.await.unwrap() {
        Err(RpcError::ConnectionClosed { reason }) => assert!(!reason.is_empty()),
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    // The next call opens a new connection (the proxy still forwards).
    assert_eq!(client.fast(2).await.unwrap(), 2);
    // The server is unaffected.
    control.open();
    let direct = ControlClient::connect(addr).await.unwrap();
    assert_eq!(direct.fast(3).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnect_a_dead_channel_fails_calls_as_not_processed() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let proxy = CutProxy::start(addr).await;
    let channel = Channel::builder()
        .reconnect(false)
        .connect(proxy.addr())
        .await
        .unwrap();
    let client = ControlClient::new(channel.clone());
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    started.recv().await.unwrap();
    proxy.cut();
    assert!(matches!(
        call.await.unwrap(),
        Err(RpcError::ConnectionClosed { .. })
    ));
    assert!(channel.is_closed());
    assert!(matches!(
        client.fast(2).await,
        Err(RpcError::NotProcessed { .. })
    ));
}

#[tokio::test]
async fn a_failed_reconnect_backs_off_and_fails_fast_meanwhile() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let proxy = CutProxy::start(addr).await;
    let channel = Channel::builder()
        // Far longer than the test: the second call surely falls inside it.
        .reconnect_backoff(Duration::from_secs(3600), Duration::from_secs(3600))
        .connect(proxy.addr())
        .await
        .unwrap();
    let client = ControlClient::new(channel.clone());
    assert_eq!(client.fast(1).await.unwrap(), 1);
    proxy.close().await;
    // Wait for the client to notice, rather than guess how long it takes.
    eventually("the channel to notice the cut", || channel.is_closed()).await;
    // The next call tries to reconnect, and the refusal is its error...
    assert!(matches!(
        client.fast(2).await,
        Err(RpcError::Connect { .. })
    ));
    // ...and calls during the backoff fail at once without trying.
    match client.fast(3).await {
        Err(RpcError::NotProcessed { reason }) => {
            assert!(reason.contains("next is due in"), "{reason}")
        }
        other => panic!("expected NotProcessed, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_of_a_client_that_disconnects_are_dropped() {
    let (control, mut started, mut abandoned) = ControlImpl::with_abandoned();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let mut stream = rpc_tests::raw_connect(addr).await;
    for id in 0..3u64 {
        stream
            .write_all(&rpc_tests::request_frame(
                id,
                "Control",
                "gated",
                &[id as u8],
            ))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        started.recv().await.unwrap();
    }
    drop(stream);
    // The gate never opens: only the server dropping the calls ends them.
    let mut dropped = Vec::new();
    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(10), abandoned.recv())
            .await
            .expect("the server should drop the calls of a closed connection");
        dropped.push(n.unwrap());
    }
    dropped.sort();
    assert_eq!(dropped, [0, 1, 2]);
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    match Channel::connect(addr).await {
        Err(RpcError::Connect { addr: shown, .. }) => assert_eq!(shown, addr.to_string()),
        other => panic!("expected Connect, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_to_something_else_is_a_protocol_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    match Channel::connect(addr).await {
        Err(RpcError::Protocol(message)) => {
            assert!(message.contains("does not speak"), "{message}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
}

#[tokio::test]
async fn oversize_arguments_fail_locally_and_the_channel_stays_up() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let channel = Channel::builder()
        .max_frame_length(1024)
        .connect(addr)
        .await
        .unwrap();
    let client = ShapesClient::new(channel);
    match client.echo(vec![0; 2048]).await {
        Err(RpcError::FrameTooLarge { limit }) => assert_eq!(limit, 1024),
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert_eq!(client.echo(vec![1; 100]).await.unwrap(), vec![1; 100]);
}

#[tokio::test]
async fn an_oversize_reply_becomes_an_error_reply() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .max_frame_length(4096)
            .add_service(ControlServer::from_arc(control)),
    )
    .await;
    let client = ControlClient::connect(addr).await.unwrap();
    match client.bytes(10_000).await {
        Err(RpcError::Status(s)) if s.code() == Code::Internal => {
            let message = s.message();
            assert!(message.contains("frame limit"), "{message}")
        }
        other => panic!("expected Internal, got {other:?}"),
    }
    assert_eq!(client.bytes(10).await.unwrap(), vec![7; 10]);
}

#[tokio::test]
async fn a_reply_over_the_clients_limit_closes_the_connection() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let channel = Channel::builder()
        .max_frame_length(4096)
        .connect(addr)
        .await
        .unwrap();
    let client = ControlClient::new(channel.clone());
    match client.bytes(10_000).await {
        Err(RpcError::ConnectionClosed { reason }) => assert!(reason.contains("frame"), "{reason}"),
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    assert!(channel.is_closed());
}

#[tokio::test]
async fn an_unpolled_call_sends_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A fake server that records the first request frame it receives.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first_frame = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 8];
        socket.read_exact(&mut hello).await.unwrap();
        socket.write_all(&rpc_tests::HELLO).await.unwrap();
        rpc_tests::read_frame(&mut socket).await
    });
    let client = ControlClient::connect(addr).await.unwrap();
    drop(client.gated(1));
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.fast(2).await }
    });
    let payload = first_frame.await.unwrap();
    let text = String::from_utf8_lossy(&payload);
    assert!(text.contains("fast") && !text.contains("gated"), "{text}");
    // The fake server closes without answering: the waiting call ends.
    assert!(matches!(
        second.await.unwrap(),
        Err(RpcError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn an_abandoned_call_is_cancelled_and_harms_nothing() {
    let (control, mut started, mut dropped) = ControlImpl::with_abandoned();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let client = ControlClient::connect(addr).await.unwrap();
    let abandoned = tokio::spawn({
        let client = client.clone();
        async move { client.gated(2).await }
    });
    assert_eq!(started.recv().await, Some(2));
    abandoned.abort();
    // The server hears the cancel and drops the handler, gate still shut
    // (before cancel messages existed, this waited for ever).
    let cancelled = tokio::time::timeout(Duration::from_secs(10), dropped.recv()).await;
    assert_eq!(cancelled.expect("a cancel reaches the server"), Some(2));
    control.open();
    // The connection carries on.
    assert_eq!(client.fast(3).await.unwrap(), 3);
    assert_eq!(client.gated(4).await.unwrap(), 4);
}

#[tokio::test]
async fn a_shapes_client_survives_many_calls_after_errors() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let client = ShapesClient::connect(addr).await.unwrap();
    for i in 0..50u64 {
        let (n, s) = client.swap((i.to_string(), i)).await.unwrap();
        assert_eq!((n, s), (i, i.to_string()));
    }
}

#[tokio::test]
async fn a_client_that_half_closes_gets_every_reply() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let mut stream = rpc_tests::raw_connect(addr).await;
    for id in 0..3u64 {
        // bincode's varint: a small u32 is one byte.
        let frame = rpc_tests::request_frame(id, "Control", "gated", &[id as u8]);
        stream.write_all(&frame).await.unwrap();
    }
    for _ in 0..3 {
        started.recv().await.unwrap();
    }
    // Finished sending, still reading: like `nc -N` or a script.
    stream.shutdown().await.unwrap();
    // The server's first probe says it has read the end of the stream;
    // only then may the calls finish, or this would pass on a server that
    // drops them at end-of-stream.
    assert_eq!(rpc_tests::read_frame(&mut stream).await[0], 0x05, "a ping");
    control.open();
    let mut answered = Vec::new();
    while answered.len() < 3 {
        let payload = rpc_tests::read_frame(&mut stream).await;
        match payload[0] {
            0x05 => continue, // the server's probe that someone still reads
            0x02 => {
                let id = u64::from_le_bytes(payload[2..10].try_into().unwrap());
                assert_eq!(payload[10], 0, "call {id} answered OK");
                answered.push(id);
            }
            kind => panic!("unexpected frame kind {kind:#x}"),
        }
    }
    answered.sort();
    assert_eq!(answered, [0, 1, 2]);
    // Then the server closes.
    let rest = rpc_tests::read_until_closed(&mut stream).await;
    assert!(rest.len() % 14 == 0, "nothing but pings after the replies");
}
