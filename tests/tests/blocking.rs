//! `<Trait>BlockingClient`: calls from plain synchronous code, with no
//! runtime of the caller's, on the toolkit's own.

use std::time::Duration;

use futures::StreamExt;
use rpc_core::blocking::BlockingStream;
use rpc_core::{CallContext, Code, Rejection, RpcClient, RpcError, Server, Streaming, rpc_service};
use rpc_tests::serve_on_own_runtime;

/// What the blocking tests call.
#[rpc_service]
pub trait Desk {
    /// `a + b`.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// The `user` metadata the call carried.
    async fn user(&self) -> Option<String>;
    /// Never answers.
    async fn hang(&self);
    /// `0..count`.
    async fn count(&self, count: u32) -> Streaming<u32>;
    /// `0..count`, or `Err` when `count` is 0.
    async fn count_or_not(&self, count: u32) -> Result<Streaming<u32>, String>;
    /// The sum of what is sent.
    async fn sum(&self, values: Streaming<u32>) -> u64;
    /// Refused, always.
    async fn closed(&self) -> Result<u32, Rejection>;
}

struct Clerk;

impl Desk for Clerk {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn user(&self) -> Option<String> {
        let cx = CallContext::current()?;
        cx.metadata().get_str("user").map(str::to_owned)
    }

    async fn hang(&self) {
        std::future::pending::<()>().await
    }

    async fn count(&self, count: u32) -> Streaming<u32> {
        Streaming::from_iter(0..count)
    }

    async fn count_or_not(&self, count: u32) -> Result<Streaming<u32>, String> {
        match count {
            0 => Err("nothing to count".to_owned()),
            n => Ok(Streaming::from_iter(0..n)),
        }
    }

    async fn sum(&self, mut values: Streaming<u32>) -> u64 {
        let mut sum = 0;
        while let Some(Ok(value)) = values.next().await {
            sum += u64::from(value);
        }
        sum
    }

    async fn closed(&self) -> Result<u32, Rejection> {
        Err(Rejection::permission_denied("the desk is closed"))
    }
}

fn desk() -> std::net::SocketAddr {
    serve_on_own_runtime(Server::builder().add_service(DeskServer::new(Clerk)))
}

#[test]
fn a_blocking_client_calls_from_plain_threads() {
    let addr = desk();
    let client = DeskBlockingClient::connect(addr).unwrap();
    assert_eq!(client.add(2, 3).unwrap(), 5);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    assert_eq!(client.add(t, i).unwrap(), t + i);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no call failed");
    }
    assert_eq!(client.add(40, 2).unwrap(), 42);
}

#[test]
fn a_blocking_client_takes_options_and_reports_errors() {
    let addr = desk();
    let client = DeskBlockingClient::connect(addr).unwrap();
    assert_eq!(client.user().unwrap(), None);
    assert_eq!(
        client
            .with_metadata("user", "ana")
            .user()
            .unwrap()
            .as_deref(),
        Some("ana")
    );
    let timed = client.with_timeout(Duration::from_millis(50)).hang();
    assert!(
        matches!(timed, Err(RpcError::DeadlineExceeded { .. })),
        "{timed:?}"
    );
    match client.closed() {
        Err(RpcError::Status(status)) => assert_eq!(status.code(), Code::PermissionDenied),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The connection is still good.
    assert_eq!(client.add(1, 1).unwrap(), 2);
    let refused = DeskBlockingClient::connect("127.0.0.1:1");
    assert!(
        matches!(refused, Err(RpcError::Connect { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_blocking_client_reads_server_streams_as_iterators() {
    let addr = desk();
    let client = DeskBlockingClient::connect(addr).unwrap();
    let items: Vec<u32> = client
        .count(1_000)
        .unwrap()
        .map(|item| item.unwrap())
        .collect();
    assert_eq!(items, (0..1_000).collect::<Vec<_>>());

    // Dropped half way: the rest is cancelled, the connection goes on.
    let mut half: BlockingStream<u32> = client.count(1_000_000).unwrap();
    assert_eq!(half.next().unwrap().unwrap(), 0);
    drop(half);

    assert_eq!(
        client.count_or_not(0).unwrap().err().as_deref(),
        Some("nothing to count")
    );
    let opened = client.count_or_not(3).unwrap().unwrap();
    assert_eq!(opened.map(Result::unwrap).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        client.sum(Streaming::from_iter(1..=100)).unwrap(),
        5050,
        "a stream argument is sent"
    );
    assert_eq!(client.add(2, 2).unwrap(), 4);
}

#[tokio::test]
async fn a_blocking_client_inside_a_runtime_fails_clearly() {
    let addr = desk();
    let inside = DeskBlockingClient::connect(addr);
    assert!(matches!(inside, Err(RpcError::InsideRuntime)), "{inside:?}");
    let client = std::thread::spawn(move || DeskBlockingClient::connect(addr).unwrap())
        .join()
        .unwrap();
    let task = client.clone();
    let in_task = tokio::spawn(async move { task.add(1, 2) }).await.unwrap();
    assert!(
        matches!(in_task, Err(RpcError::InsideRuntime)),
        "{in_task:?}"
    );
    let in_blocking = tokio::task::spawn_blocking({
        let client = client.clone();
        move || client.add(1, 2)
    })
    .await
    .unwrap();
    assert!(
        matches!(in_blocking, Err(RpcError::InsideRuntime)),
        "{in_blocking:?}"
    );
    // The async client on the same channel works here.
    let channel = RpcClient::channel(&client).clone();
    assert_eq!(DeskClient::new(channel).add(1, 2).await.unwrap(), 3);
}
