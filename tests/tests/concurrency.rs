//! Many calls in flight on one connection: none lost, none mixed up, and a
//! slow call never holds up a fast one.

use std::sync::Arc;

use rpc_core::Server;
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, ShapesClient, ShapesImpl, ShapesServer, serve,
};
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_through_clones() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let client = ShapesClient::connect(addr).await.unwrap();
    let calls: Vec<_> = (0..1000u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let text = format!("call {i} ✓");
                let (n, back) = client.swap((text.clone(), i)).await.expect("call");
                assert_eq!((n, back), (i, text), "reply went to the wrong call");
                i
            })
        })
        .collect();
    let mut done = Vec::new();
    for call in calls {
        done.push(call.await.expect("call task"));
    }
    assert_eq!(done, (0..1000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_does_not_hold_up_a_fast_one() {
    let (service, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(service.clone()))).await;
    let client = ControlClient::connect(addr).await.unwrap();

    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    // The slow call is running on the server and will not finish by itself.
    assert_eq!(started.recv().await, Some(1));

    // A call sent after it on the same connection is answered first.
    assert_eq!(client.fast(2).await.unwrap(), 2);
    assert!(!slow.is_finished());
    assert_eq!(
        service.finished.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    service.open();
    assert_eq!(slow.await.unwrap().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_arrive_out_of_order() {
    let (service, mut started) = ControlImpl::new();
    let addr = serve(Server::builder().add_service(ControlServer::from_arc(service.clone()))).await;
    let client = ControlClient::connect(addr).await.unwrap();

    let waiting: Vec<_> = (0..20)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.gated(n).await })
        })
        .collect();
    for _ in 0..20 {
        started.recv().await.expect("a gated call started");
    }
    // Twenty calls wait; fast ones still pass them.
    for n in 100..110 {
        assert_eq!(client.fast(n).await.unwrap(), n);
    }
    service.open();
    for (n, call) in waiting.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), n as u32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_its_thread_does_not_hold_up_its_connection() {
    let (control, mut started) = ControlImpl::new();
    // The server runs on a runtime of its own, as in production: a test
    // task woken from inside the blocked handler would otherwise wait on
    // the blocked worker thread itself, and so would the test.
    let builder = Server::builder().add_service(ControlServer::from_arc(control.clone()));
    let addr = rpc_tests::serve_on_own_runtime(builder);
    let client = ControlClient::new(rpc_core::Channel::connect(addr).await.unwrap());
    let blocking = tokio::spawn({
        let client = client.clone();
        async move { client.block(1).await }
    });
    assert_eq!(started.recv().await, Some(1));
    // `block` holds its thread until released. Before, its first poll ran
    // on the connection's reading task, so nothing more was read from the
    // connection until it returned: this call waited for ever.
    let quick = tokio::time::timeout(std::time::Duration::from_secs(10), client.fast(2)).await;
    control.unblock();
    assert_eq!(
        quick
            .expect("a quick call beside a blocked handler")
            .unwrap(),
        2
    );
    assert_eq!(blocking.await.unwrap().unwrap(), 1);
}

/// A raw connection to a `Control` server on a runtime of its own, with
/// call 0 stuck in `block` (so that a stand-in reads what comes next).
async fn beside_a_blocked_call() -> (Arc<ControlImpl>, tokio::net::TcpStream) {
    let (control, mut started) = ControlImpl::new();
    let addr = rpc_tests::serve_on_own_runtime(
        Server::builder().add_service(ControlServer::from_arc(control.clone())),
    );
    let mut stream = rpc_tests::raw_connect(addr).await;
    stream
        .write_all(&rpc_tests::request_frame(0, "Control", "block", &[0]))
        .await
        .unwrap();
    assert_eq!(started.recv().await, Some(0));
    (control, stream)
}

/// Sends `frames`, gives a wrong answer time to come, lets call 0 finish,
/// and returns the responses (kind, id, status, body) sent before the
/// connection closed, failing if it stays open.
async fn after_unblocking(
    control: &ControlImpl,
    stream: &mut tokio::net::TcpStream,
    frames: &[Vec<u8>],
) -> Vec<(u8, u64, u8, Vec<u8>)> {
    for frame in frames {
        let _ = stream.write_all(frame).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    control.unblock();
    responses(&rpc_tests::read_until_closed(stream).await)
}

/// The frames in `rest` as (kind, id, status, body).
fn responses(rest: &[u8]) -> Vec<(u8, u64, u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 15 <= rest.len() {
        let len = u32::from_le_bytes(rest[at..at + 4].try_into().unwrap()) as usize;
        let id = u64::from_le_bytes(rest[at + 6..at + 14].try_into().unwrap());
        let end = (at + 4 + len).min(rest.len());
        frames.push((rest[at + 4], id, rest[at + 14], rest[at + 15..end].to_vec()));
        at += 4 + len;
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_violation_read_beside_a_blocked_handler_still_closes() {
    let (control, mut stream) = beside_a_blocked_call().await;
    // A message only servers send, which the stand-in must end the
    // connection for; then a call. Before: a second stand-in read on after
    // the first had ended the connection, and ran it.
    let mut response = (10u32).to_le_bytes().to_vec();
    response.extend_from_slice(&[0x02, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    let call = rpc_tests::request_frame(1, "Control", "fast", &[1]);
    let answers = after_unblocking(&control, &mut stream, &[response, call]).await;
    assert!(
        answers
            .iter()
            .all(|&(kind, id, _, _)| !(kind == 0x02 && id == 1)),
        "call 1 ran on a closed connection: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_the_id_of_a_call_stuck_in_its_first_poll_closes_the_connection() {
    let (control, mut stream) = beside_a_blocked_call().await;
    // Id 0 is in flight: the stand-in must treat this as the protocol
    // violation it is. Before: it answered it, id 0 twice.
    let reuse = rpc_tests::request_frame(0, "Control", "fast", &[7]);
    let answers = after_unblocking(&control, &mut stream, &[reuse]).await;
    assert!(
        !answers.contains(&(0x02, 0, 0, vec![7])),
        "the reused id was answered: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_the_id_of_a_call_stuck_in_its_interceptor_closes_the_connection() {
    let (entered, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(Some(release_rx));
    // The first call's interceptor holds its thread until released.
    let interceptor = move |_: &rpc_core::CallInfo<'_>| {
        if let Some(rx) = release_rx.lock().unwrap().take() {
            let _ = entered.send(());
            let _ = rx.recv();
        }
        Ok(())
    };
    let (control, _started) = ControlImpl::new();
    let addr = rpc_tests::serve_on_own_runtime(
        Server::builder()
            .interceptor(interceptor)
            .add_service(ControlServer::from_arc(control)),
    );
    let mut stream = rpc_tests::raw_connect(addr).await;
    let call = |n: u8| rpc_tests::request_frame(0, "Control", "fast", &[n]);
    stream.write_all(&call(1)).await.unwrap();
    entered_rx.recv().await.unwrap();
    // Id 0 is in flight, in its interceptor. Before: the stand-in took
    // this one as new, and id 0 was answered twice.
    stream.write_all(&call(7)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    release.send(()).unwrap();
    let answers = responses(&rpc_tests::read_until_closed(&mut stream).await);
    assert!(
        !answers.contains(&(0x02, 0, 0, vec![7])),
        "the reused id was answered: {answers:?}"
    );
}
