//! TLS and mutual TLS over real sockets, with certificates made at test
//! time: what is refused is refused at connect, before any call.

mod pki;

use std::error::Error as _;
use std::time::Duration;

use pki::TestCa;
use rpc_core::Code;
use rpc_core::tls::{ClientTlsConfig, Identity, ServerTlsConfig, certificates_from_pem};
use rpc_core::{CallInfo, Channel, Interceptor, Rejection, RpcError, Server};
use rpc_tests::{ShapesClient, ShapesImpl, ShapesServer, read_until_closed, serve};
use tokio::io::AsyncWriteExt;

fn shapes() -> ShapesServer<ShapesImpl> {
    ShapesServer::new(ShapesImpl)
}

async fn connect(
    addr: std::net::SocketAddr,
    tls: ClientTlsConfig,
) -> Result<ShapesClient, RpcError> {
    let channel = Channel::builder()
        .tls(tls)
        .handshake_timeout(Duration::from_secs(5))
        .connect(addr)
        .await?;
    Ok(ShapesClient::new(channel))
}

/// A TLS server of `Shapes` whose calls pass `interceptor` first.
async fn serve_with_interceptor(
    tls: ServerTlsConfig,
    interceptor: impl Interceptor,
) -> std::net::SocketAddr {
    serve(
        Server::builder()
            .add_service(shapes())
            .tls(tls)
            .interceptor(interceptor),
    )
    .await
}

/// The whole error chain, for assertions on why a connect failed.
fn chain(e: &RpcError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn expect_refused(result: Result<ShapesClient, RpcError>, why: &str) {
    match result {
        Err(e @ RpcError::Connect { .. }) => {
            let text = chain(&e);
            assert!(text.contains(why), "expected `{why}` in: {text}");
        }
        Err(other) => panic!("expected a connect error, got {other:?}"),
        Ok(_) => panic!("expected the connection to be refused ({why})"),
    }
}

#[tokio::test]
async fn calls_round_trip_over_tls_with_pem_files_read_back() {
    let ca = TestCa::new("test CA");
    let (cert, key) = ca.server(&["localhost"]).pem();
    let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let addr = serve(
        Server::builder()
            .add_service(shapes())
            .tls(ServerTlsConfig::new(identity)),
    )
    .await;
    let roots = certificates_from_pem(ca.pem().as_bytes()).unwrap();
    let client = connect(
        addr,
        ClientTlsConfig::new("localhost").ca_certificates(roots),
    )
    .await
    .unwrap();
    assert_eq!(
        client.echo_text("over tls".to_owned()).await.unwrap(),
        "over tls"
    );
    // Large enough to span many TLS records.
    let data = vec![0x5a; 3 * 1024 * 1024];
    assert_eq!(client.echo(data.clone()).await.unwrap(), data);
    let calls = (0..200u32).map(|i| client.echo_text(i.to_string()));
    for (i, answer) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap(), i.to_string());
    }
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused() {
    let ca = TestCa::new("test CA");
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity());
    let addr = serve(Server::builder().add_service(shapes()).tls(tls)).await;
    let wrong_name = ClientTlsConfig::new("rpc.example.com").ca_certificates(ca.roots());
    expect_refused(connect(addr, wrong_name).await, "not valid for name");
    // An IP address is a name too, and this certificate does not carry it.
    let by_ip = ClientTlsConfig::new("127.0.0.1").ca_certificates(ca.roots());
    expect_refused(connect(addr, by_ip).await, "not valid for name");
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused() {
    let ca = TestCa::new("test CA");
    let other = TestCa::new("another CA");
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity());
    let addr = serve(Server::builder().add_service(shapes()).tls(tls)).await;
    let trusts_other = ClientTlsConfig::new("localhost").ca_certificates(other.roots());
    expect_refused(connect(addr, trusts_other).await, "UnknownIssuer");
}

#[tokio::test]
async fn mutual_tls_admits_a_client_with_a_certificate_and_shows_it_to_the_interceptor() {
    let ca = TestCa::new("test CA");
    let alice = ca.client("alice");
    let alice_der = alice.der().clone();
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity())
        .client_ca_certificates(ca.roots());
    let interceptor = move |call: &CallInfo<'_>| match call.peer().certificates() {
        Some([leaf, ..]) if *leaf == alice_der => Ok(()),
        _ => Err(Rejection::permission_denied("not alice")),
    };
    let addr = serve_with_interceptor(tls, interceptor).await;
    let client = connect(
        addr,
        ClientTlsConfig::new("localhost")
            .ca_certificates(ca.roots())
            .identity(alice.identity()),
    )
    .await
    .unwrap();
    assert_eq!(client.echo_text("mtls".to_owned()).await.unwrap(), "mtls");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_or_with_a_foreign_one() {
    let ca = TestCa::new("test CA");
    let other = TestCa::new("another CA");
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity())
        .client_ca_certificates(ca.roots());
    let addr = serve(Server::builder().add_service(shapes()).tls(tls)).await;
    let anonymous = ClientTlsConfig::new("localhost").ca_certificates(ca.roots());
    expect_refused(connect(addr, anonymous).await, "CertificateRequired");
    let foreign = ClientTlsConfig::new("localhost")
        .ca_certificates(ca.roots())
        .identity(other.client("mallory").identity());
    expect_refused(connect(addr, foreign).await, "UnknownCA");
    // The server goes on serving clients that do have a certificate.
    let good = ClientTlsConfig::new("localhost")
        .ca_certificates(ca.roots())
        .identity(ca.client("bob").identity());
    let client = connect(addr, good).await.unwrap();
    assert_eq!(
        client.echo_text("still here".to_owned()).await.unwrap(),
        "still here"
    );
}

#[tokio::test]
async fn an_optional_client_certificate_leaves_the_choice_to_the_interceptor() {
    let ca = TestCa::new("test CA");
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity())
        .client_ca_certificates(ca.roots())
        .client_certificate_optional(true);
    let interceptor = |call: &CallInfo<'_>| match call.peer().certificates() {
        Some(_) => Ok(()),
        None if call.method() == "ping" => Ok(()),
        None => Err(Rejection::unauthenticated("present a client certificate")),
    };
    let addr = serve_with_interceptor(tls, interceptor).await;
    let anonymous = connect(
        addr,
        ClientTlsConfig::new("localhost").ca_certificates(ca.roots()),
    )
    .await
    .unwrap();
    anonymous.ping().await.unwrap();
    match anonymous.echo_text("x".to_owned()).await {
        Err(RpcError::Status(s)) if s.code() == Code::Unauthenticated => {
            let message = s.message();
            assert_eq!(message, "present a client certificate");
        }
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plaintext_client_is_refused_by_a_tls_server_which_keeps_serving() {
    let ca = TestCa::new("test CA");
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity());
    let addr = serve(Server::builder().add_service(shapes()).tls(tls)).await;
    let plain = Channel::builder()
        .handshake_timeout(Duration::from_secs(5))
        .connect(addr)
        .await;
    let refused = chain(&plain.expect_err("a plaintext handshake must not pass for TLS"));
    assert!(
        refused.contains("it may expect TLS") || refused.contains("peer speaks TLS"),
        "the error says TLS is probably needed: {refused}"
    );
    let client = connect(
        addr,
        ClientTlsConfig::new("localhost").ca_certificates(ca.roots()),
    )
    .await
    .unwrap();
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_silent_client_is_closed_by_the_tls_handshake_timeout() {
    let ca = TestCa::new("test CA");
    let tls = ServerTlsConfig::new(ca.server(&["localhost"]).identity());
    let addr = serve(
        Server::builder()
            .add_service(shapes())
            .tls(tls)
            .handshake_timeout(Duration::from_millis(200)),
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let opened = std::time::Instant::now();
    // A TLS record header that promises a ClientHello that never comes.
    silent
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let seen = read_until_closed(&mut silent).await;
    assert!(
        seen.is_empty(),
        "nothing is sent before a ClientHello: {seen:?}"
    );
    // Closed by the timeout, not by anything earlier.
    assert!(opened.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn unusable_tls_settings_are_errors_not_panics() {
    let ca = TestCa::new("test CA");
    match Identity::from_pem(b"not pem", b"not pem either") {
        Err(RpcError::Tls { message }) => assert!(message.contains("PEM"), "{message}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    // A key that does not belong to the certificate.
    let leaf = ca.server(&["localhost"]);
    let stranger = ca.server(&["localhost"]);
    let mismatched = Identity::new(vec![leaf.der().clone()], stranger.identity_key());
    let bound = Server::builder()
        .tls(ServerTlsConfig::new(mismatched))
        .bind("127.0.0.1:0")
        .await;
    assert!(matches!(bound, Err(RpcError::Tls { .. })), "{bound:?}");
    let no_roots = Channel::builder()
        .tls(ClientTlsConfig::new("localhost"))
        .connect("127.0.0.1:1")
        .await;
    match no_roots {
        Err(RpcError::Tls { message }) => assert!(message.contains("ca_certificates"), "{message}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let bad_name = Channel::builder()
        .tls(ClientTlsConfig::new("not a name!").ca_certificates(ca.roots()))
        .connect("127.0.0.1:1")
        .await;
    assert!(
        matches!(bad_name, Err(RpcError::Tls { .. })),
        "{bad_name:?}"
    );
}

#[tokio::test]
async fn tls_works_over_the_in_memory_transport_too() {
    let ca = TestCa::new("test CA");
    let (connector, incoming) = rpc_core::transport::memory();
    let server = Server::builder()
        .add_service(shapes())
        .tls(ServerTlsConfig::new(ca.server(&["localhost"]).identity()))
        .build()
        .unwrap();
    tokio::spawn(server.serve_incoming(incoming));
    let channel = Channel::builder()
        .tls(ClientTlsConfig::new("localhost").ca_certificates(ca.roots()))
        .connect_with(connector.clone())
        .await
        .unwrap();
    let client = ShapesClient::new(channel);
    assert_eq!(
        client.echo_text("tunnelled".to_owned()).await.unwrap(),
        "tunnelled"
    );
    // A client that does not trust the server's CA is refused, as on TCP.
    let other = TestCa::new("another CA");
    let refused = Channel::builder()
        .tls(ClientTlsConfig::new("localhost").ca_certificates(other.roots()))
        .handshake_timeout(Duration::from_secs(5))
        .connect_with(connector)
        .await;
    assert!(
        matches!(refused, Err(RpcError::Connect { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_server_is_told_it_may_not_use_tls() {
    let ca = TestCa::new("test CA");
    let addr = serve(Server::builder().add_service(shapes())).await;
    let refused = connect(
        addr,
        ClientTlsConfig::new("localhost").ca_certificates(ca.roots()),
    )
    .await;
    expect_refused(refused, "it may not use TLS");
}

/// Events as a server logs them: level and message.
#[derive(Clone, Default)]
struct Logged(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), message));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tls_clients_that_close_or_vanish_leave_no_line_in_the_servers_log() {
    use tracing_subscriber::layer::SubscriberExt;
    let logged = Logged::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
    let ca = TestCa::new("test CA");
    let addr = serve(
        Server::builder()
            .add_service(shapes())
            .tls(ServerTlsConfig::new(ca.server(&["localhost"]).identity())),
    )
    .await;
    let tls = || ClientTlsConfig::new("localhost").ca_certificates(ca.roots());

    // Closed: calls in flight are answered, later ones refused, and the
    // server sees close_notify.
    let client = connect(addr, tls()).await.unwrap();
    client.ping().await.unwrap();
    let channel = rpc_core::RpcClient::channel(&client).clone();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.echo_text("last".into()).await }
    });
    tokio::task::yield_now().await;
    channel.close().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), "last");
    assert!(channel.is_closed());
    assert!(matches!(
        client.ping().await,
        Err(RpcError::NotProcessed { .. })
    ));

    // Vanished: a client whose runtime stops sends no close_notify.
    let vanishing = std::thread::spawn({
        let tls = tls();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = connect(addr, tls).await.unwrap();
                client.ping().await.unwrap();
                // Not closed, not dropped: the runtime goes with it.
                std::mem::forget(client);
            });
            runtime.shutdown_background();
        }
    });
    // Joined off this thread, which serves the server.
    tokio::task::spawn_blocking(move || vanishing.join())
        .await
        .unwrap()
        .unwrap();
    // Both ends as the server saw them, logged at DEBUG only.
    let seen = |what: &str| {
        logged
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(level, line)| *level == tracing::Level::DEBUG && line.contains(what))
    };
    rpc_tests::eventually("the server has ended both connections", || {
        seen("connection closed") && seen("without ending it")
    })
    .await;
    let loud: Vec<_> = logged
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, _)| *level <= tracing::Level::INFO)
        .cloned()
        .collect();
    assert!(loud.is_empty(), "logged at INFO or above: {loud:?}");
}
