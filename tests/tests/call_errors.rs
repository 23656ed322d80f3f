//! Errors a caller can act on: every status the protocol defines maps to
//! its own error, and a timed call outside a runtime fails instead of
//! panicking.

use std::time::Duration;

use rpc_core::Code;
use rpc_core::{Channel, RpcClient, RpcError};
use rpc_tests::{ControlClient, HELLO, read_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server of one connection that answers its first request with
/// `status` and `message`.
async fn answering(status: u8, message: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 8];
        stream.read_exact(&mut hello).await.unwrap();
        stream.write_all(&HELLO).await.unwrap();
        let request = read_frame(&mut stream).await;
        let mut payload = vec![0x02, 0];
        payload.extend_from_slice(&request[2..10]);
        payload.push(status);
        payload.extend_from_slice(message.as_bytes());
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&payload);
        stream.write_all(&frame).await.unwrap();
        // Hold the connection until the client goes.
        let _ = stream.read(&mut [0u8; 1]).await;
    });
    addr
}

#[tokio::test]
async fn cancelled_is_its_own_error() {
    let addr = answering(10, "stopped").await;
    let client = ControlClient::new(Channel::connect(addr).await.unwrap());
    // Before: Internal("unknown status 10: stopped").
    match client.fast(1).await {
        Err(RpcError::Status(s)) if s.code() == Code::Cancelled => {
            let message = s.message();
            assert_eq!(message, "stopped")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn not_processed_is_retryable_and_a_deadline_is_a_timeout() {
    let addr = answering(7, "the deadline had passed").await;
    let client = ControlClient::new(Channel::connect(addr).await.unwrap());
    let err = client.fast(1).await.unwrap_err();
    assert!(err.is_timeout() && !err.is_retryable(), "{err:?}");
    let refused = RpcError::NotProcessed {
        reason: "draining".to_owned(),
    };
    assert!(refused.is_retryable() && !refused.is_timeout());
}

#[test]
fn a_timed_call_outside_a_runtime_fails_without_panicking() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr = runtime.block_on(answering(0, ""));
    let client =
        runtime.block_on(async { ControlClient::new(Channel::connect(addr).await.unwrap()) });
    // Before: "there is no reactor running" panicked inside the timer.
    let timed = client.with_timeout(Duration::from_secs(1));
    let result = futures::executor::block_on(timed.fast(1));
    assert!(matches!(result, Err(RpcError::NoRuntime)), "{result:?}");
}

#[tokio::test]
async fn every_status_the_protocol_defines_comes_back_as_its_code() {
    for status in 1..=10u8 {
        let addr = answering(status, "why").await;
        let client = ControlClient::new(Channel::connect(addr).await.unwrap());
        let error = client.fast(1).await.unwrap_err();
        assert_eq!(
            error.code(),
            rpc_core::Code::from_wire(status),
            "status {status}: {error:?}"
        );
        assert_eq!(error.code().map(rpc_core::Code::wire), Some(status));
    }
    // Local and connection failures carry no status.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let refused = Channel::connect(addr).await.unwrap_err();
    assert_eq!(refused.code(), None, "{refused:?}");
}

#[tokio::test]
async fn a_name_too_long_is_a_local_mistake_not_the_peers() {
    let (control, _started) = rpc_tests::ControlImpl::new();
    let addr = rpc_tests::serve(
        rpc_core::Server::builder().add_service(rpc_tests::ControlServer::from_arc(control)),
    )
    .await;
    let channel = Channel::connect(addr).await.unwrap();
    let long = "s".repeat(300);
    // Before: RpcError::Protocol, as if the server had broken the protocol.
    match channel.call::<_, u32>(&long, "fast", (1u32,)).await {
        Err(RpcError::InvalidCall { message }) => {
            assert!(message.contains("300 bytes"), "{message}")
        }
        other => panic!("expected InvalidCall, got {other:?}"),
    }
    assert_eq!(ControlClient::new(channel).fast(2).await.unwrap(), 2);
}
