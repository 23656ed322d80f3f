//! Giving up on a call: the server is told and stops it, the connection's
//! call slot comes back, and cancels or ids that make no sense are handled.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rpc_core::{Channel, RpcClient, RpcError, Server};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, raw_connect, read_response, read_until_closed,
    request_frame, serve, within_10s,
};
use tokio::io::AsyncWriteExt;

/// Status of a call the client cancelled (docs/PROTOCOL.md §4).
const CANCELLED: u8 = 10;

/// A cancel frame for `id`, prefix included.
fn cancel_frame(id: u64) -> Vec<u8> {
    let mut frame = 10u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0x03, 0x00]);
    frame.extend_from_slice(&id.to_le_bytes());
    frame
}

#[tokio::test]
async fn dropping_a_call_stops_it_on_the_server_and_frees_its_slot() {
    let (control, mut started, mut abandoned) = ControlImpl::with_abandoned();
    // One call at a time: the next call can only run once the server has
    // answered the cancelled one.
    let addr = serve(
        Server::builder()
            .add_service(ControlServer::from_arc(control.clone()))
            .max_concurrent_calls(1),
    )
    .await;
    let client = ControlClient::new(Channel::connect(addr).await.unwrap());
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    assert_eq!(started.recv().await, Some(1));
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert_eq!(
        within_10s("the server dropping the call", abandoned.recv()).await,
        Some(1)
    );
    assert_eq!(
        within_10s("the next call", client.fast(7)).await.unwrap(),
        7
    );
    assert_eq!(control.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_timeout_for_one_call_leaves_the_client_as_it_was() {
    let (control, mut started, mut abandoned) = ControlImpl::with_abandoned();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let client = ControlClient::connect(addr).await.unwrap();
    match client
        .with_timeout(Duration::from_millis(50))
        .gated(2)
        .await
    {
        Err(RpcError::DeadlineExceeded { timeout }) => {
            assert_eq!(timeout, Duration::from_millis(50));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(started.recv().await, Some(2));
    assert_eq!(
        within_10s("the server stopping the call", abandoned.recv()).await,
        Some(2)
    );
    // No deadline on the original client: this one waits for the gate.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.gated(3).await }
    });
    assert_eq!(started.recv().await, Some(3));
    control.open();
    assert_eq!(waiting.await.unwrap().unwrap(), 3);
}

#[tokio::test]
async fn a_cancel_is_answered_cancelled_and_stray_cancels_are_ignored() {
    let (control, mut started, mut abandoned) = ControlImpl::with_abandoned();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let mut stream = raw_connect(addr).await;
    // For ids never used, and before anything ran: ignored.
    stream.write_all(&cancel_frame(999)).await.unwrap();
    stream.write_all(&cancel_frame(u64::MAX)).await.unwrap();
    stream
        .write_all(&request_frame(5, "Control", "gated", &[5]))
        .await
        .unwrap();
    assert_eq!(started.recv().await, Some(5));
    stream.write_all(&cancel_frame(5)).await.unwrap();
    let (id, status, body) = read_response(&mut stream).await;
    assert_eq!(
        (id, status),
        (5, CANCELLED),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(abandoned.recv().await, Some(5));
    // Late: the call has already been answered.
    stream.write_all(&cancel_frame(5)).await.unwrap();
    // The id is free again, and the connection still serves.
    stream
        .write_all(&request_frame(5, "Control", "fast", &[9]))
        .await
        .unwrap();
    let (id, status, body) = read_response(&mut stream).await;
    assert_eq!((id, status, body), (5, 0, vec![9]));
}

#[tokio::test]
async fn a_duplicate_id_among_running_calls_closes_only_that_connection() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control.clone()))).await;
    let bystander = ControlClient::connect(addr).await.unwrap();
    let mut stream = raw_connect(addr).await;
    stream
        .write_all(&request_frame(1, "Control", "gated", &[1]))
        .await
        .unwrap();
    assert_eq!(started.recv().await, Some(1));
    stream
        .write_all(&request_frame(1, "Control", "gated", &[2]))
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream).await;
    assert!(seen.is_empty(), "no reply to either call: {seen:?}");
    assert_eq!(bystander.fast(3).await.unwrap(), 3);
    control.open();
}

#[tokio::test]
async fn a_handler_that_panics_when_cancelled_is_still_answered() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let mut stream = raw_connect(addr).await;
    stream
        .write_all(&request_frame(
            4,
            "Control",
            "gated_panicking_when_dropped",
            &[4],
        ))
        .await
        .unwrap();
    assert_eq!(started.recv().await, Some(4));
    stream.write_all(&cancel_frame(4)).await.unwrap();
    // Before: the panic in the handler's drop unwound the call's task, and
    // the answer was never sent.
    let (id, status, _) = within_10s("the answer", read_response(&mut stream)).await;
    assert_eq!((id, status), (4, CANCELLED));
    stream
        .write_all(&request_frame(5, "Control", "fast", &[5]))
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut stream).await.0,
        5,
        "the connection lives on"
    );
}
