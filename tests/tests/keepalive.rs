//! Keepalive: a silent server is noticed, pings are answered, ping floods
//! are cut off.

use std::time::Duration;

use rpc_core::{Channel, RpcError, Server};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, HELLO, raw_connect, read_frame, read_until_closed,
    serve,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ping(token: u64) -> Vec<u8> {
    let mut frame = 10u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0x05, 0]);
    frame.extend_from_slice(&token.to_le_bytes());
    frame
}

#[tokio::test]
async fn a_silent_server_is_noticed_and_waiting_calls_fail() {
    // Completes the handshake, then reads everything and answers nothing:
    // what a vanished host looks like from the client.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 8];
        socket.read_exact(&mut hello).await.unwrap();
        socket.write_all(&HELLO).await.unwrap();
        let mut sink = vec![0u8; 4096];
        while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let channel = Channel::builder()
        .keepalive(Duration::from_millis(50), Duration::from_millis(100))
        .reconnect(false)
        .connect(addr)
        .await
        .unwrap();
    let client = ControlClient::new(channel);
    match client.fast(1).await {
        Err(RpcError::ConnectionClosed { reason }) => {
            assert!(reason.contains("keepalive"), "{reason}");
        }
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
}

#[tokio::test]
async fn pings_are_answered_with_their_token() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .min_ping_interval(Duration::ZERO)
            .add_service(ControlServer::from_arc(control)),
    )
    .await;
    let mut stream = raw_connect(addr).await;
    for token in [7u64, 8, 9, 10] {
        stream.write_all(&ping(token)).await.unwrap();
        let pong = read_frame(&mut stream).await;
        assert_eq!(pong[..2], [0x06, 0]);
        assert_eq!(pong[2..10], token.to_le_bytes());
    }
}

#[tokio::test]
async fn a_client_that_floods_pings_is_disconnected() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(control))).await;
    let bystander = {
        let channel = Channel::connect(addr).await.unwrap();
        ControlClient::new(channel)
    };
    let mut stream = raw_connect(addr).await;
    let flood: Vec<u8> = (0..10).flat_map(ping).collect();
    stream.write_all(&flood).await.unwrap();
    // The connection ends (a flood closes it at once, dropping pongs not
    // yet sent) before all ten pings are answered (14 bytes each).
    let answered = read_until_closed(&mut stream).await;
    assert!(answered.len() < 10 * 14, "{}", answered.len());
    assert_eq!(bystander.fast(1).await.unwrap(), 1);
}

#[tokio::test]
async fn a_client_with_keepalive_works_normally() {
    let (control, _started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .min_ping_interval(Duration::ZERO)
            .add_service(ControlServer::from_arc(control)),
    )
    .await;
    let channel = Channel::builder()
        .keepalive(Duration::from_millis(1), Duration::from_secs(10))
        .connect(addr)
        .await
        .unwrap();
    let client = ControlClient::new(channel.clone());
    for n in 0..200 {
        assert_eq!(client.fast(n).await.unwrap(), n);
    }
    assert!(!channel.is_closed());
}

#[tokio::test]
async fn keepalive_pings_really_go_out() {
    // The other keepalive tests would pass if the client never pinged. A
    // client pinging every 50 ms or so (interval 1 ms, then the pong is
    // awaited for up to 50 ms) outruns a server that allows a burst of
    // three and then one a second, and the server closes it.
    let addr = serve(Server::builder().min_ping_interval(Duration::from_secs(1))).await;
    let channel = Channel::builder()
        .keepalive(Duration::from_millis(1), Duration::from_millis(50))
        .reconnect(false)
        .connect(addr)
        .await
        .unwrap();
    rpc_tests::eventually("the server to close a pinging client", || {
        channel.is_closed()
    })
    .await;
    let client = ControlClient::new(channel);
    match client.fast(1).await {
        Err(RpcError::NotProcessed { reason }) => {
            assert!(reason.contains("server closed"), "{reason}")
        }
        other => panic!("expected NotProcessed, got {other:?}"),
    }
}
