//! The interceptor: calls it rejects get a definite error and run no
//! handler code; the bearer-token interceptor over plaintext and TLS.

mod pki;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use pki::TestCa;
use rpc_core::Code;
use rpc_core::tls::{ClientTlsConfig, ServerTlsConfig};
use rpc_core::{
    BearerToken, CallInfo, Channel, Interceptor, Rejection, RpcClient, RpcError, Server,
};
use rpc_tests::{
    ControlClient, ControlImpl, ControlServer, ShapesClient, ShapesImpl, ShapesServer, serve,
};

/// A server whose `Control.gated` counts finished runs, behind `token`.
async fn guarded(token: &str) -> (std::net::SocketAddr, Arc<ControlImpl>) {
    let (control, _started) = ControlImpl::new();
    control.open();
    let addr = serve(
        Server::builder()
            .add_service(ControlServer::from_arc(control.clone()))
            .interceptor(BearerToken::new(token)),
    )
    .await;
    (addr, control)
}

/// A client of a `Shapes` server whose calls pass `interceptor` first.
async fn shapes_behind(interceptor: impl Interceptor) -> ShapesClient {
    let addr = serve(
        Server::builder()
            .add_service(ShapesServer::new(ShapesImpl))
            .interceptor(interceptor),
    )
    .await;
    ShapesClient::connect(addr).await.unwrap()
}

fn expect_unauthenticated<T: std::fmt::Debug>(result: Result<T, RpcError>, message: &str) {
    match result {
        Err(RpcError::Status(s)) if s.code() == Code::Unauthenticated => {
            let got = s.message();
            assert_eq!(got, message)
        }
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_unauthenticated_and_runs_no_handler() {
    let (addr, control) = guarded("s3cret").await;
    let channel = Channel::connect(addr).await.unwrap();
    let anonymous = ControlClient::new(channel.clone());
    expect_unauthenticated(
        anonymous.gated(1).await,
        "the call carries no `authorization` metadata; send `Bearer <token>`",
    );
    for wrong in [
        "Bearer s3cre",
        "Bearer s3cret ",
        "bearer s3cret",
        "s3cret",
        "Bearer S3CRET",
    ] {
        let client = anonymous.with_metadata("authorization", wrong);
        expect_unauthenticated(client.gated(2).await, "the bearer token is not valid");
    }
    assert_eq!(control.finished.load(Ordering::SeqCst), 0, "no handler ran");

    // The same connection, with the right token.
    let authorised = anonymous.with_metadata("authorization", "Bearer s3cret");
    assert_eq!(authorised.gated(3).await.unwrap(), 3);
    assert_eq!(control.finished.load(Ordering::SeqCst), 1);
    // The token rode on that handle only.
    expect_unauthenticated(
        anonymous.gated(4).await,
        "the call carries no `authorization` metadata; send `Bearer <token>`",
    );
}

#[tokio::test]
async fn rejection_comes_before_routing_so_strangers_learn_no_service_names() {
    let (addr, _control) = guarded("s3cret").await;
    let channel = Channel::connect(addr).await.unwrap();
    let stranger: Result<u32, _> = channel.call("NoSuchService", "method", ()).await;
    expect_unauthenticated(
        stranger,
        "the call carries no `authorization` metadata; send `Bearer <token>`",
    );
    let insider: Result<u32, _> = channel
        .with_metadata("authorization", "Bearer s3cret")
        .call("NoSuchService", "method", ())
        .await;
    assert!(
        matches!(insider, Err(ref e) if e.code() == Some(Code::UnknownService)),
        "{insider:?}"
    );
}

#[tokio::test]
async fn an_interceptor_sees_names_and_every_pair_and_can_deny_permission() {
    let interceptor = |call: &CallInfo<'_>| {
        let pairs: Vec<(&str, &[u8])> = call.metadata().iter().collect();
        if call.method() == "ping" {
            return Ok(());
        }
        match (call.service(), call.metadata().get_str("role"), &pairs[..]) {
            ("Shapes", Some("admin"), [("trace", b"\x00\x01"), ("role", b"admin")]) => Ok(()),
            ("Shapes", Some(role), _) => Err(Rejection::permission_denied(format!(
                "role `{role}` may not call {}",
                call.method()
            ))),
            _ => Err(Rejection::unauthenticated("say who you are")),
        }
    };
    let client = shapes_behind(interceptor).await;
    client.ping().await.unwrap();
    let traced = client.with_metadata("trace", [0u8, 1]);
    let admin = traced.with_metadata("role", "admin");
    assert_eq!(admin.echo_text("hi".to_owned()).await.unwrap(), "hi");
    match traced
        .with_metadata("role", "guest")
        .echo_text("hi".to_owned())
        .await
    {
        Err(RpcError::Status(s)) if s.code() == Code::PermissionDenied => {
            let message = s.message();
            assert_eq!(message, "role `guest` may not call echo_text");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

#[tokio::test]
async fn a_panicking_interceptor_fails_the_call_not_the_server() {
    let interceptor = |call: &CallInfo<'_>| -> Result<(), Rejection> {
        if call.method() == "echo_text" {
            panic!("interceptor bug");
        }
        Ok(())
    };
    let client = shapes_behind(interceptor).await;
    let failed = client.echo_text("x".to_owned()).await;
    assert!(
        matches!(failed, Err(ref e) if e.code() == Some(Code::HandlerPanicked)),
        "{failed:?}"
    );
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_bearer_token_over_mutual_tls() {
    let ca = TestCa::new("test CA");
    let (control, _started) = ControlImpl::new();
    control.open();
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity())
        .client_ca_certificates(ca.roots());
    let addr = serve(
        Server::builder()
            .add_service(ControlServer::from_arc(control.clone()))
            .tls(tls)
            .interceptor(BearerToken::new("s3cret")),
    )
    .await;
    let channel = Channel::builder()
        .tls(
            ClientTlsConfig::new("localhost")
                .ca_certificates(ca.roots())
                .identity(ca.client("alice").identity()),
        )
        .connect(addr)
        .await
        .unwrap();
    let client = ControlClient::new(channel);
    expect_unauthenticated(
        client
            .with_metadata("authorization", "Bearer nope")
            .gated(1)
            .await,
        "the bearer token is not valid",
    );
    assert_eq!(control.finished.load(Ordering::SeqCst), 0);
    let client = client.with_metadata("authorization", "Bearer s3cret");
    assert_eq!(client.gated(2).await.unwrap(), 2);
    assert_eq!(control.finished.load(Ordering::SeqCst), 1);
}
