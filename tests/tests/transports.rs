//! The same calls over a Unix domain socket and over the in-memory
//! transport, with reconnects through the connector.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::transport::{Connector, memory};
use rpc_core::{CallInfo, Channel, PeerAddr, Server};
use rpc_tests::{ControlClient, ControlImpl, ControlServer};

/// An interceptor that records each call's peer address.
fn recording(
    seen: Arc<std::sync::Mutex<Vec<PeerAddr>>>,
) -> impl Fn(&CallInfo<'_>) -> Result<(), rpc_core::Rejection> + Send + Sync + 'static {
    move |call: &CallInfo<'_>| {
        seen.lock().unwrap().push(call.peer().addr().clone());
        Ok(())
    }
}

#[cfg(unix)]
#[tokio::test]
async fn calls_go_over_a_unix_socket() {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "rpc-tests-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&path);
    let seen = Arc::default();
    let (control, _started) = ControlImpl::new();
    let server = Server::builder()
        .interceptor(recording(Arc::clone(&seen)))
        .add_service(ControlServer::from_arc(control))
        .bind_unix(&path)
        .await
        .unwrap();
    tokio::spawn(server.serve());
    let client = ControlClient::new(Channel::connect_unix(&path).await.unwrap());
    assert_eq!(client.fast(7).await.unwrap(), 7);
    assert!(matches!(seen.lock().unwrap()[0], PeerAddr::Unix(_)));
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn calls_go_over_memory_and_reconnect_through_the_connector() {
    let (connector, incoming) = memory();
    let seen = Arc::default();
    let (control, _started) = ControlImpl::new();
    let server = Server::builder()
        .interceptor(recording(Arc::clone(&seen)))
        // Closes the first connection soon, so the next call reconnects.
        .idle_timeout(Duration::from_millis(20))
        .add_service(ControlServer::from_arc(control))
        .build()
        .unwrap();
    tokio::spawn(server.serve_incoming(incoming));
    let dialled = Arc::new(AtomicUsize::new(0));
    let counting = {
        let dialled = dialled.clone();
        move || {
            dialled.fetch_add(1, Ordering::SeqCst);
            let connector = connector.clone();
            async move { connector.connect().await }
        }
    };
    let channel = Channel::builder().connect_with(counting).await.unwrap();
    let client = ControlClient::new(channel.clone());
    assert_eq!(client.fast(1).await.unwrap(), 1);
    assert_eq!(
        seen.lock().unwrap()[0],
        PeerAddr::Other(Arc::from("memory"))
    );
    rpc_tests::eventually("the idle connection to close", || channel.is_closed()).await;
    assert_eq!(client.fast(2).await.unwrap(), 2);
    assert_eq!(
        dialled.load(Ordering::SeqCst),
        2,
        "one connect, one reconnect"
    );
}

#[tokio::test]
async fn a_server_without_a_listener_says_so() {
    let server = Server::builder().build().unwrap();
    let error = server.serve().await.unwrap_err();
    assert!(format!("{error:?}").contains("serve_incoming"), "{error:?}");
}

#[tokio::test]
async fn a_memory_connector_whose_server_is_gone_fails_to_connect() {
    let (connector, incoming) = memory();
    drop(incoming);
    match Channel::builder().connect_with(connector).await {
        Err(rpc_core::RpcError::Connect { addr, source }) => {
            assert_eq!(addr, "memory");
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}
