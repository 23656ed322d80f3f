//! Per-call deadlines: the caller gets a definite error at the deadline and
//! the server stops the call; deadlines from the wire are capped.

use std::time::Duration;

use rpc_core::{Channel, RpcError, Server};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, raw_connect, read_response,
    request_frame_with_deadline, serve,
};
use tokio::io::AsyncWriteExt;

/// A request for `Control.<method>` whose deadline extension says `micros`.
fn request_with_deadline(id: u64, method: &str, body: &[u8], micros: u64) -> Vec<u8> {
    request_frame_with_deadline(id, "Control", method, Some(micros), body)
}

#[tokio::test]
async fn a_call_past_its_deadline_fails_and_the_server_stops_it() {
    let (control, mut started, mut abandoned) = ControlImpl::with_abandoned();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let channel = Channel::builder()
        .call_timeout(Duration::from_millis(100))
        .connect(addr)
        .await
        .unwrap();
    let client = ControlClient::new(channel);
    // The gate never opens: only the deadline ends the call.
    match client.gated(1).await {
        Err(RpcError::DeadlineExceeded { timeout }) => {
            assert_eq!(timeout, Duration::from_millis(100));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(started.recv().await, Some(1));
    assert_eq!(
        abandoned.recv().await,
        Some(1),
        "the server stopped the call"
    );
    assert_eq!(client.fast(2).await.unwrap(), 2);
}

#[tokio::test]
async fn calls_within_their_deadline_succeed() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let channel = Channel::builder()
        .call_timeout(Duration::from_secs(30))
        .connect(addr)
        .await
        .unwrap();
    let client = ControlClient::new(channel);
    for n in 0..50 {
        assert_eq!(client.fast(n).await.unwrap(), n);
    }
}

#[tokio::test]
async fn deadlines_from_the_wire_are_checked_and_capped() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let mut stream = raw_connect(addr).await;
    // Already past: answered DEADLINE_EXCEEDED (7) without running.
    stream
        .write_all(&request_with_deadline(1, "gated", &[1], 0))
        .await
        .unwrap();
    let (id, status, _) = read_response(&mut stream).await;
    assert_eq!((id, status), (1, 7));
    assert!(started.try_recv().is_err(), "an expired call must not run");
    // u64::MAX microseconds would overflow an Instant: capped, and the call runs.
    stream
        .write_all(&request_with_deadline(2, "gated", &[2], u64::MAX))
        .await
        .unwrap();
    assert_eq!(started.recv().await, Some(2));
    control.open();
    let (id, status, body) = read_response(&mut stream).await;
    assert_eq!((id, status, body), (2, 0, vec![2]));
}

#[tokio::test]
async fn a_deadline_covers_the_wait_for_a_full_call_limit() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .max_concurrent_calls(1)
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    let client = ControlClient::new(Channel::connect(addr).await.unwrap());
    let holder = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    assert_eq!(started.recv().await, Some(1));
    // Before: the timer started only once the call was sent, so this
    // waited behind `gated` for as long as it ran (here: until the safety
    // net).
    let timed = rpc_core::RpcClient::with_timeout(&client, Duration::from_millis(50));
    let result = tokio::time::timeout(Duration::from_secs(5), timed.fast(2))
        .await
        .expect("the deadline should end the wait for a permit");
    assert!(matches!(result, Err(ref e) if e.is_timeout()), "{result:?}");
    control.open();
    assert_eq!(holder.await.unwrap().unwrap(), 1);
    // The permit of the timed-out call was never taken: calls go on.
    assert_eq!(client.fast(3).await.unwrap(), 3);
}

#[tokio::test]
async fn a_deadline_that_cuts_a_reconnect_still_backs_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    // Answers the first connection's handshake, then drops it; later
    // connections are accepted and never answered (a server gone slow).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (first_done, first_dropped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let (mut first, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let mut hello = [0u8; 8];
            first.read_exact(&mut hello).await.unwrap();
            first.write_all(&rpc_tests::HELLO).await.unwrap();
            let _ = first_dropped.await;
            drop(first);
            let mut held = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        }
    });
    let channel = Channel::connect(addr).await.unwrap();
    first_done.send(()).unwrap();
    rpc_tests::eventually("the channel to see its connection drop", || {
        channel.is_closed()
    })
    .await;
    let client = ControlClient::new(channel.with_timeout(Duration::from_millis(50)));
    for n in 0..5 {
        assert!(client.fast(n).await.is_err());
    }
    // Before: each call's deadline dropped its reconnect attempt before the
    // backoff heard of it, so each call dialled again (6 connections).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dialled = accepted.load(Ordering::SeqCst);
    assert!(
        dialled <= 2,
        "{dialled} connections for 5 calls within the backoff"
    );
}

#[tokio::test]
async fn a_timed_out_call_is_cancelled_and_its_permit_comes_back_from_a_silent_server() {
    use tokio::io::AsyncReadExt;
    // A server that allows one call in flight, reads everything, and never
    // answers anything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, mut frames) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 8];
        stream.read_exact(&mut hello).await.unwrap();
        stream.write_all(b"RKIT\x01\x00\x01\x00").await.unwrap();
        loop {
            let payload = rpc_tests::read_frame(&mut stream).await;
            let id = u64::from_le_bytes(payload[2..10].try_into().unwrap());
            let _ = seen.send((payload[0], id));
        }
    });
    let mut next_frame = async move || {
        tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await
            .ok()
            .flatten()
    };
    let client = ControlClient::new(Channel::connect(addr).await.unwrap());
    let timed = rpc_core::RpcClient::with_timeout(&client, Duration::from_millis(50));
    assert!(timed.fast(1).await.unwrap_err().is_timeout());
    assert_eq!(next_frame().await, Some((0x01, 0)), "the request");
    // Before: no cancel went out for a call whose deadline passed.
    assert_eq!(next_frame().await, Some((0x03, 0)), "its cancel");
    // The server has not answered the cancel, so it may still count the
    // call: the permit is kept a while...
    assert!(timed.fast(2).await.unwrap_err().is_timeout());
    // ...but not for ever. Before: it came back only with an answer, so
    // this waited as long as the silent server lived.
    let third = tokio::spawn(async move { client.fast(3).await });
    assert_eq!(
        next_frame().await,
        Some((0x01, 1)),
        "the third call goes out, with the next id, once the permit is back"
    );
    third.abort();
}
