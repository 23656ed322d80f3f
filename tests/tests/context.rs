//! A handler's view of the call it serves: `CallContext::current()`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{Call, CallContext, Channel, RpcClient, Server, Streaming, rpc_service};
use rpc_tests::{eventually, serve, within_10s};
use serde::{Deserialize, Serialize};

/// What a handler saw of its call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// Service and method, as named on the wire.
    pub names: (String, String),
    /// The request id.
    pub id: u64,
    /// The `x-request-id` metadata value.
    pub request_id: Option<String>,
    /// The peer's address, as text.
    pub peer: String,
    /// Milliseconds left before the deadline.
    pub remaining_ms: Option<u64>,
    /// The user a layer attached.
    pub user: Option<String>,
}

/// A user, attached by a layer.
#[derive(Debug, Clone)]
struct User(String);

/// Reports the context its calls run in.
#[rpc_service]
pub trait Probe {
    /// What the handler sees.
    async fn seen(&self) -> Option<Seen>;
    /// What the stream's producer sees, per item.
    async fn seen_by_items(&self, count: u32) -> Streaming<Option<u64>>;
    /// The context as `Debug` prints it.
    async fn debugged(&self, secret: String) -> String;
    /// Waits for ever, holding a guard that records, when dropped, the
    /// request id its context had then.
    async fn wait(&self) -> ();
}

#[derive(Default)]
struct Prober {
    /// What `wait`'s guard saw as it was dropped.
    dropped_in: Arc<Mutex<Option<Option<u64>>>>,
}

/// Records the current call's id when dropped.
struct Guard(Arc<Mutex<Option<Option<u64>>>>);

impl Drop for Guard {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(CallContext::current().map(|cx| cx.id()));
    }
}

fn seen() -> Option<Seen> {
    let cx = CallContext::current()?;
    Some(Seen {
        names: (cx.service().to_owned(), cx.method().to_owned()),
        id: cx.id(),
        request_id: cx
            .metadata()
            .get("x-request-id")
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        peer: cx.peer().addr().to_string(),
        remaining_ms: cx.remaining().map(|left| left.as_millis() as u64),
        user: cx.extensions().get::<User>().map(|user| user.0.clone()),
    })
}

impl Probe for Prober {
    async fn seen(&self) -> Option<Seen> {
        // Across an await, the context stays.
        tokio::task::yield_now().await;
        seen()
    }

    async fn debugged(&self, secret: String) -> String {
        let _ = secret;
        format!("{:?}", CallContext::current().expect("a context"))
    }

    async fn wait(&self) {
        let _guard = Guard(self.dropped_in.clone());
        std::future::pending::<()>().await;
    }

    async fn seen_by_items(&self, count: u32) -> Streaming<Option<u64>> {
        Streaming::from_stream(
            futures::stream::iter(0..count).map(|_| CallContext::current().map(|cx| cx.id())),
        )
    }
}

#[tokio::test]
async fn a_handler_sees_its_call() {
    let addr = serve(Server::builder().add_service(ProbeServer::new(Prober::default()))).await;
    let channel = Channel::connect(addr).await.unwrap();
    let client = ProbeClient::new(channel);
    let plain = client.seen().await.unwrap().expect("a context");
    assert_eq!(plain.names, ("Probe".to_owned(), "seen".to_owned()));
    assert_eq!(plain.request_id, None);
    assert_eq!(plain.remaining_ms, None);
    assert_eq!(plain.user, None);
    assert!(plain.peer.contains("127.0.0.1"), "{}", plain.peer);

    let tagged = client
        .with_metadata("x-request-id", "abc-1")
        .with_timeout(Duration::from_secs(30))
        .seen()
        .await
        .unwrap()
        .expect("a context");
    assert_eq!(tagged.request_id.as_deref(), Some("abc-1"));
    let left = tagged.remaining_ms.expect("a deadline");
    assert!(left > 0 && left <= 30_000, "{left} ms left");
    assert_ne!(tagged.id, plain.id, "each call its own id");
}

#[tokio::test]
async fn outside_a_call_there_is_no_context() {
    assert!(CallContext::current().is_none());
    assert_eq!(
        Prober::default().seen().await,
        None,
        "a trait method called directly"
    );
}

#[tokio::test]
async fn a_handler_reads_what_a_layer_attached() {
    // Behind tower's buffer too, which calls the inner services on a task
    // of its own.
    for buffered in [false, true] {
        let tag = tower::util::MapRequestLayer::new(|mut call: Call| {
            call.extensions_mut().insert(User("ana".to_owned()));
            call
        });
        let mut builder = Server::builder().layer(tag);
        if buffered {
            builder = builder.layer(tower::buffer::BufferLayer::new(16));
        }
        let addr = serve(builder.add_service(ProbeServer::new(Prober::default()))).await;
        let client = ProbeClient::connect(addr).await.unwrap();
        let seen = client.seen().await.unwrap().expect("a context");
        assert_eq!(seen.user.as_deref(), Some("ana"), "buffered: {buffered}");
        assert_eq!(seen.names.1, "seen");
    }
}

#[tokio::test]
async fn a_stream_producer_sees_the_call_it_serves() {
    let addr = serve(Server::builder().add_service(ProbeServer::new(Prober::default()))).await;
    let client = ProbeClient::connect(addr).await.unwrap();
    let items: Vec<_> = within_10s(
        "the stream",
        client.seen_by_items(100).await.unwrap().collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(items.len(), 100);
    let ids: Vec<Option<u64>> = items.into_iter().map(Result::unwrap).collect();
    assert!(ids[0].is_some(), "the producer has a context");
    assert!(ids.iter().all(|id| *id == ids[0]), "one call's: {ids:?}");
}

/// Calls `Probe.seen` on a backend, within what is left of its own time.
#[rpc_service]
pub trait Front {
    /// The backend's view of the nested call, and this call's time left.
    async fn relay(&self) -> (Option<Seen>, Option<u64>);
}

struct Relay {
    backend: Channel,
}

impl Front for Relay {
    async fn relay(&self) -> (Option<Seen>, Option<u64>) {
        let cx = CallContext::current().expect("a context");
        let backend = match cx.remaining() {
            Some(left) => self.backend.with_timeout(left),
            None => self.backend.clone(),
        };
        let seen = ProbeClient::new(backend).seen().await.ok().flatten();
        (seen, cx.remaining().map(|left| left.as_millis() as u64))
    }
}

#[tokio::test]
async fn a_nested_call_inherits_what_is_left_of_the_deadline() {
    let backend_addr =
        serve(Server::builder().add_service(ProbeServer::new(Prober::default()))).await;
    let backend = Channel::connect(backend_addr).await.unwrap();
    let front_addr =
        serve(Server::builder().add_service(FrontServer::new(Relay { backend }))).await;
    let front = FrontClient::connect(front_addr).await.unwrap();

    let (seen, left) = front
        .with_timeout(Duration::from_secs(20))
        .relay()
        .await
        .unwrap();
    let nested = seen
        .expect("the backend answered")
        .remaining_ms
        .expect("a deadline");
    assert!(nested <= 20_000, "{nested} ms");
    // Measured after the nested call, so no more than it had (a millisecond
    // for rounding).
    assert!(
        left.is_some_and(|left| left <= nested + 1),
        "{left:?} after {nested}"
    );

    let (seen, left) = front.relay().await.unwrap();
    assert_eq!(left, None);
    assert_eq!(
        seen.expect("the backend answered").remaining_ms,
        None,
        "no deadline, none passed on"
    );
}

#[tokio::test]
async fn debug_shows_no_metadata_values_nor_arguments() {
    let addr = serve(Server::builder().add_service(ProbeServer::new(Prober::default()))).await;
    let client = ProbeClient::connect(addr).await.unwrap();
    let printed = client
        .with_metadata("authorization", "Bearer s3cr3t-token")
        .debugged("password=hunter2".to_owned())
        .await
        .unwrap();
    assert!(printed.contains("authorization"), "{printed}");
    assert!(printed.contains("debugged"), "{printed}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[tokio::test]
async fn a_handler_cut_off_by_its_deadline_is_dropped_within_its_context() {
    let prober = Prober::default();
    let dropped_in = prober.dropped_in.clone();
    let addr = serve(Server::builder().add_service(ProbeServer::new(prober))).await;
    let client = ProbeClient::connect(addr).await.unwrap();
    let cut = client.with_timeout(Duration::from_millis(100)).wait().await;
    assert!(matches!(cut, Err(ref e) if e.is_timeout()), "{cut:?}");
    eventually("the handler to be dropped", || {
        dropped_in.lock().unwrap().is_some()
    })
    .await;
    let seen = dropped_in.lock().unwrap().unwrap();
    assert!(seen.is_some(), "the guard saw no context");
}

/// Lets calls with a known token through, attaching who sent them.
fn authenticate(call: &rpc_core::CallInfo<'_>) -> Result<(), rpc_core::Rejection> {
    match call.metadata().get("authorization") {
        Some(b"Bearer ana-token") => {
            call.attach(User("ana".to_owned()));
            Ok(())
        }
        _ => Err(rpc_core::Rejection::unauthenticated("who are you?")),
    }
}

#[tokio::test]
async fn a_handler_reads_what_an_interceptor_attached() {
    for layered in [false, true] {
        let mut builder = Server::builder().interceptor(authenticate);
        if layered {
            builder = builder.layer(tower::layer::util::Identity::new());
        }
        let addr = serve(builder.add_service(ProbeServer::new(Prober::default()))).await;
        let client = ProbeClient::connect(addr).await.unwrap();
        let seen = client
            .with_metadata("authorization", "Bearer ana-token")
            .seen()
            .await
            .unwrap()
            .expect("a context");
        assert_eq!(seen.user.as_deref(), Some("ana"), "layered: {layered}");
        let refused = client.seen().await;
        assert!(refused.is_err(), "no token, no call: {refused:?}");
    }
}
