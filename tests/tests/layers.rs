//! tower's own layers doing their jobs through `ServerBuilder::layer`, a
//! layer of our own that reads calls and replies, and interceptors that
//! compose.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{
    BoxCallService, Call, CallInfo, Code, Rejection, Reply, RpcClient, RpcError, Server,
};
use rpc_tests::{ControlClient, ControlImpl, ControlServer, serve};
use tower::{Service as _, ServiceExt};

async fn control_with(
    builder: rpc_core::ServerBuilder,
) -> (
    Arc<ControlImpl>,
    tokio::sync::mpsc::UnboundedReceiver<u32>,
    ControlClient,
) {
    let (control, started) = ControlImpl::new();
    let addr = serve(builder.add_service(ControlServer::from_arc(control.clone()))).await;
    let client = ControlClient::connect(addr).await.unwrap();
    (control, started, client)
}

#[tokio::test]
async fn a_concurrency_limit_holds_calls_until_one_ends() {
    let (control, mut started, client) =
        control_with(Server::builder().layer(tower::limit::ConcurrencyLimitLayer::new(1))).await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    assert_eq!(started.recv().await, Some(1));
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.gated(2).await }
    });
    // The second call is held by the limit, not run: a quick call behind it
    // waits too, while the first runs.
    let quick = client
        .with_timeout(Duration::from_millis(200))
        .fast(3)
        .await;
    assert!(matches!(quick, Err(ref e) if e.is_timeout()), "{quick:?}");
    assert!(started.try_recv().is_err(), "the second call did not start");
    control.open();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(client.fast(4).await.unwrap(), 4);
}

#[tokio::test]
async fn a_timeout_layer_answers_deadline_exceeded_and_stops_the_call() {
    let (control, mut started, client) = control_with(
        Server::builder().layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50))),
    )
    .await;
    match client.gated(1).await {
        Err(e @ RpcError::DeadlineExceeded { .. }) => {
            assert_eq!(e.code(), Some(Code::DeadlineExceeded))
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(started.recv().await, Some(1));
    // The call was dropped, not left running: it never finished.
    control.open();
    assert_eq!(client.fast(2).await.unwrap(), 2);
    assert_eq!(control.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn load_shedding_refuses_what_the_limit_cannot_take() {
    let (control, mut started, client) = control_with(
        Server::builder()
            .layer(tower::load_shed::LoadShedLayer::new())
            .layer(tower::limit::ConcurrencyLimitLayer::new(1)),
    )
    .await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.gated(1).await }
    });
    assert_eq!(started.recv().await, Some(1));
    match client.fast(2).await {
        Err(RpcError::Status(s)) if s.code() == Code::ResourceExhausted => {
            let message = s.message();
            assert!(message.contains("overloaded"))
        }
        other => panic!("expected ResourceExhausted, got {other:?}"),
    }
    control.open();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(client.fast(3).await.unwrap(), 3);
}

#[tokio::test]
async fn a_rate_limit_holds_calls_beyond_the_rate() {
    let (_control, _started, client) = control_with(Server::builder().layer(
        tower::limit::RateLimitLayer::new(1, Duration::from_secs(3600)),
    ))
    .await;
    assert_eq!(client.fast(1).await.unwrap(), 1);
    let held = client
        .with_timeout(Duration::from_millis(200))
        .fast(2)
        .await;
    assert!(matches!(held, Err(ref e) if e.is_timeout()), "{held:?}");
}

/// Counts replies by status, and refuses calls to `panic` with a status of
/// its own: a layer written with tower's `service_fn`.
#[tokio::test]
async fn a_layer_of_our_own_sees_calls_and_replies() {
    let codes: Arc<Mutex<Vec<Option<Code>>>> = Arc::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let layer = {
        let (codes, seen) = (codes.clone(), seen.clone());
        tower::layer::layer_fn(move |inner: BoxCallService| {
            let (codes, seen) = (codes.clone(), seen.clone());
            let inner = Arc::new(tokio::sync::Mutex::new(inner));
            tower::service_fn(move |mut call: Call| {
                let (codes, seen, inner) = (codes.clone(), seen.clone(), inner.clone());
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    if call.method() == "panic" {
                        return Err::<Reply, rpc_core::BoxError>(Box::new(Rejection::new(
                            Code::PermissionDenied,
                            "no panics here",
                        )));
                    }
                    call.extensions_mut().insert("tagged");
                    assert_eq!(call.extensions().get::<&str>(), Some(&"tagged"));
                    assert_eq!(call.metadata().get_str("tenant"), Some("a"));
                    assert!(call.peer().addr().socket_addr().is_some());
                    let mut inner = inner.lock().await;
                    let reply = inner.ready().await?.call(call).await?;
                    codes.lock().unwrap().push(reply.code());
                    Ok(reply)
                }
            })
        })
    };
    let (_control, _started, client) = control_with(Server::builder().layer(layer)).await;
    let client = client.with_metadata("tenant", "a");
    assert_eq!(client.fast(1).await.unwrap(), 1);
    match client.panic("boom".to_owned()).await {
        Err(RpcError::Status(s)) if s.code() == Code::PermissionDenied => {
            let message = s.message();
            assert_eq!(message, "no panics here")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert_eq!(*codes.lock().unwrap(), [Some(Code::Ok)]);
}

#[tokio::test]
async fn interceptors_run_in_order_and_the_first_refusal_answers() {
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let first = {
        let order = order.clone();
        move |_: &CallInfo<'_>| {
            order.lock().unwrap().push("first");
            Ok(())
        }
    };
    let second = {
        let order = order.clone();
        move |call: &CallInfo<'_>| {
            order.lock().unwrap().push("second");
            match call.method() {
                "panic" => Err(Rejection::permission_denied("second says no")),
                _ => Ok(()),
            }
        }
    };
    let third = {
        let order = order.clone();
        move |_: &CallInfo<'_>| {
            order.lock().unwrap().push("third");
            Ok(())
        }
    };
    let (_control, _started, client) = control_with(
        Server::builder()
            .interceptor(first)
            .interceptor(second)
            .interceptor(third),
    )
    .await;
    assert_eq!(client.fast(1).await.unwrap(), 1);
    assert_eq!(*order.lock().unwrap(), ["first", "second", "third"]);
    order.lock().unwrap().clear();
    // Before: a later interceptor replaced an earlier one.
    assert!(matches!(
        client.panic("x".to_owned()).await,
        Err(ref e) if e.code() == Some(Code::PermissionDenied)
    ));
    assert_eq!(*order.lock().unwrap(), ["first", "second"]);
}
