//! The server's limits: calls in flight per connection, connections, time to
//! finish a frame, and memory held in unfinished frames.

use std::time::Duration;

use rpc_core::{Channel, RpcError, Server};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, ShapesClient, ShapesImpl, ShapesServer, raw_connect,
    raw_connect_with_limit, read_response, read_until_closed, request_frame,
    request_frame_with_extensions, serve,
};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hold_calls_beyond_the_advertised_limit() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .max_concurrent_calls(5)
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    let client = ControlClient::connect(addr).await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.gated(n).await })
        })
        .collect();
    for _ in 0..5 {
        started.recv().await.expect("a call started");
    }
    control.open();
    // Had the client sent all 20, the server would have refused 15.
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), n as u32);
    }
}

/// How long a negative check waits for something that must not happen.
const NOT_MEANWHILE: Duration = Duration::from_millis(200);

/// Whether no call starts for [`NOT_MEANWHILE`].
async fn none_starts(started: &mut tokio::sync::mpsc::UnboundedReceiver<u32>) -> bool {
    tokio::time::timeout(NOT_MEANWHILE, started.recv())
        .await
        .is_err()
}

#[tokio::test]
async fn running_calls_cannot_hold_more_request_bytes_than_the_limit() {
    const KIB: usize = 1024;
    let (control, mut started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .max_running_request_bytes(1024 * KIB)
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    let client = ControlClient::connect(addr).await.unwrap();
    let upload = |len: usize| {
        let client = client.clone();
        tokio::spawn(async move { client.gated_upload(vec![1; len]).await })
    };
    // A call larger than the limit is read and runs: one frame more is
    // always read.
    let large = upload(1536 * KIB);
    assert_eq!(started.recv().await, Some(1536 * KIB as u32));
    // Not refused but held back: the server stops reading while the
    // running calls hold the limit. Without the bound it would start.
    let small = upload(KIB);
    assert!(
        none_starts(&mut started).await,
        "a call was read while the running calls held more than the limit"
    );
    control.open();
    assert_eq!(large.await.unwrap().unwrap(), 1536 * KIB as u32);
    assert_eq!(
        started.recv().await,
        Some(KIB as u32),
        "read once bytes are back"
    );
    assert_eq!(small.await.unwrap().unwrap(), KIB as u32);
    control.close();

    // Below the limit calls are read and run side by side; reading stops
    // once they reach it, and resumes when they end.
    let held: Vec<_> = (0..3).map(|_| upload(400 * KIB)).collect();
    for _ in 0..3 {
        assert_eq!(started.recv().await, Some(400 * KIB as u32));
    }
    let late = upload(100 * KIB);
    assert!(
        none_starts(&mut started).await,
        "1,200 KiB held: nothing more is read"
    );
    control.open();
    for call in held {
        assert_eq!(call.await.unwrap().unwrap(), 400 * KIB as u32);
    }
    assert_eq!(late.await.unwrap().unwrap(), 100 * KIB as u32);
}

#[tokio::test]
async fn a_call_is_charged_its_whole_frame_not_only_its_arguments() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .max_running_request_bytes(1024 * 1024)
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    // Arguments of 4 bytes, and 600 KiB in an extension the server skips:
    // a layered call keeps all of it while it runs.
    let padding = vec![0; 600 * 1024];
    let frame = |id: u64| {
        request_frame_with_extensions(id, "Control", "gated", &[(0x0100, &padding)], &[7])
    };
    let mut stream = raw_connect(addr).await;
    for id in 0..2 {
        stream.write_all(&frame(id)).await.unwrap();
        assert_eq!(started.recv().await, Some(7));
    }
    // 1,200 KiB held. Charged only their arguments, this call would start.
    stream.write_all(&frame(2)).await.unwrap();
    assert!(
        none_starts(&mut started).await,
        "a call was read while the running calls' frames held more than the limit"
    );
    control.open();
    let mut answered: Vec<u64> = Vec::new();
    for _ in 0..3 {
        let (id, status, _) = read_response(&mut stream).await;
        assert_eq!(status, 0);
        answered.push(id);
    }
    answered.sort_unstable();
    assert_eq!(answered, [0, 1, 2]);
}

#[tokio::test]
async fn calls_beyond_the_limit_are_refused_with_resource_exhausted() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .max_concurrent_calls(2)
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    // A client that ignores the advertised limit.
    let (mut stream, limit) = raw_connect_with_limit(addr).await;
    assert_eq!(limit, 2);
    for id in 0..2u64 {
        stream
            .write_all(&request_frame(id, "Control", "gated", &[id as u8]))
            .await
            .unwrap();
    }
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    stream
        .write_all(&request_frame(2, "Control", "gated", &[2]))
        .await
        .unwrap();
    let (id, status, message) = read_response(&mut stream).await;
    assert_eq!(
        (id, status),
        (2, 6),
        "{}",
        String::from_utf8_lossy(&message)
    );
    control.open();
    let mut answered = [
        read_response(&mut stream).await,
        read_response(&mut stream).await,
    ];
    answered.sort();
    assert_eq!(
        answered.map(|(id, status, _)| (id, status)),
        [(0, 0), (1, 0)]
    );
}

#[tokio::test]
async fn resource_exhausted_says_why() {
    let (control, mut started) = ControlImpl::new();
    let addr = serve(
        Server::builder()
            .max_concurrent_calls(1)
            .add_service(ControlServer::from_arc(control.clone())),
    )
    .await;
    let mut stream = raw_connect(addr).await;
    stream
        .write_all(&request_frame(0, "Control", "gated", &[0]))
        .await
        .unwrap();
    started.recv().await.unwrap();
    stream
        .write_all(&request_frame(1, "Control", "fast", &[1]))
        .await
        .unwrap();
    let (_, status, message) = read_response(&mut stream).await;
    assert_eq!(status, 6);
    assert!(String::from_utf8_lossy(&message).contains("1 calls are already running"));
    control.open();
    // A well-behaved client never sees it: it queues instead.
    let client = ControlClient::connect(addr).await.unwrap();
    assert_eq!(client.fast(3).await.unwrap(), 3);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_the_rest_carry_on() {
    let addr = serve(
        Server::builder()
            .max_connections(2)
            .add_service(ShapesServer::new(ShapesImpl)),
    )
    .await;
    let first = ShapesClient::connect(addr).await.unwrap();
    let second = ShapesClient::connect(addr).await.unwrap();
    // Both are served, so the server holds both permits.
    assert_eq!(first.echo_text("1".to_owned()).await.unwrap(), "1");
    assert_eq!(second.echo_text("2".to_owned()).await.unwrap(), "2");
    match Channel::connect(addr).await {
        Err(RpcError::Connect { .. }) => {}
        other => panic!("expected the third connection to be refused, got {other:?}"),
    }
    assert_eq!(first.echo_text("still".to_owned()).await.unwrap(), "still");
}

#[tokio::test]
async fn a_frame_left_unfinished_closes_its_connection() {
    let addr = serve(
        Server::builder()
            .frame_timeout(Duration::from_millis(100))
            .add_service(ShapesServer::new(ShapesImpl)),
    )
    .await;
    let bystander = ShapesClient::connect(addr).await.unwrap();
    let mut stream = raw_connect(addr).await;
    // Claims 100 bytes, sends 10, then nothing.
    stream.write_all(&100u32.to_le_bytes()).await.unwrap();
    stream.write_all(&[1; 10]).await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    assert_eq!(bystander.echo_text("ok".to_owned()).await.unwrap(), "ok");
}

#[tokio::test]
async fn unfinished_frames_cannot_hold_more_than_the_receive_budget() {
    let addr = serve(
        Server::builder()
            .receive_budget(64 * 1024)
            .add_service(ShapesServer::new(ShapesImpl)),
    )
    .await;
    let bystander = ShapesClient::connect(addr).await.unwrap();
    let mut greedy = raw_connect(addr).await;
    // Claims 1 MiB (within the frame limit) and sends more than the budget.
    greedy.write_all(&(1u32 << 20).to_le_bytes()).await.unwrap();
    greedy.write_all(&[0; 100 * 1024]).await.unwrap();
    assert!(read_until_closed(&mut greedy).await.is_empty());
    // The closed connection gave its bytes back: frames within the budget
    // still arrive, even in pieces.
    let data = vec![9u8; 40_000];
    assert_eq!(bystander.echo(data.clone()).await.unwrap(), data);
}

#[tokio::test]
async fn extreme_settings_are_accepted_and_never_panic() {
    let (control, mut started) = ControlImpl::new();
    let server = Server::builder()
        .max_connections(usize::MAX)
        .max_concurrent_calls(usize::MAX)
        .frame_timeout(Duration::MAX)
        .shutdown_grace(Duration::MAX)
        .handshake_timeout(Duration::MAX)
        .min_ping_interval(Duration::MAX)
        .receive_budget(usize::MAX)
        .max_frame_length(usize::MAX)
        .add_service(ControlServer::from_arc(control.clone()))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    let channel = Channel::builder()
        .handshake_timeout(Duration::MAX)
        .keepalive(Duration::MAX, Duration::MAX)
        .reconnect_backoff(Duration::MAX, Duration::MAX)
        .max_frame_length(usize::MAX)
        .connect(addr)
        .await
        .unwrap();
    let client = ControlClient::new(channel);
    // A frame that arrives in pieces sets the frame deadline: the
    // connection must live through that and answer.
    let mut stream = raw_connect(addr).await;
    let frame = request_frame(7, "Control", "fast", &[5]);
    stream.write_all(&frame[..4]).await.unwrap();
    assert_eq!(client.fast(0).await.unwrap(), 0);
    stream.write_all(&frame[4..]).await.unwrap();
    let (id, status, body) = read_response(&mut stream).await;
    assert_eq!((id, status, body), (7, 0, vec![5]));
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    started.recv().await.unwrap();
    control.open();
    assert_eq!(call.await.unwrap().unwrap(), 1);
    assert_eq!(client.bytes(70_000).await.unwrap().len(), 70_000);
}
