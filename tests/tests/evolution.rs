//! Rolling upgrades: a v1 client against a v2 server and the other way
//! round, for each change docs/EVOLUTION.md calls safe, and the
//! SCHEMA_MISMATCH status, naming the type and field, for each it does not.

use rpc_core::{Code, RpcError, Server};
use rpc_tests::evolving::{v1, v2};
use rpc_tests::serve;

async fn v1_server() -> std::net::SocketAddr {
    serve(Server::builder().add_service(v1::ProfilesServer::new(v1::Impl))).await
}

async fn v2_server() -> std::net::SocketAddr {
    serve(Server::builder().add_service(v2::ProfilesServer::new(v2::Impl))).await
}

/// The call failed with SCHEMA_MISMATCH; its message.
fn mismatch<T: std::fmt::Debug>(result: Result<T, RpcError>) -> String {
    match result {
        Err(RpcError::Status(status)) if status.code() == Code::SchemaMismatch => {
            status.message().to_owned()
        }
        other => panic!("expected SCHEMA_MISMATCH, got {other:?}"),
    }
}

#[tokio::test]
async fn old_clients_call_a_new_server() {
    let client = v1::ProfilesClient::connect(v2_server().await)
        .await
        .unwrap();
    // A field the server has and the client does not send: its default.
    let user = v1::User { name: "ann".into() };
    assert_eq!(client.register(user).await.unwrap(), "ann <none>");
    // A field the client does not know in the reply: skipped.
    let profile = client.lookup("ann".into()).await.unwrap();
    assert_eq!(
        profile,
        v1::Profile {
            name: "ann".into(),
            since: 2019
        }
    );
    // Inside a Vec and an Option, both ways.
    let items = vec![
        v1::Item { label: "a".into() },
        v1::Item { label: "b".into() },
    ];
    let extra = Some(v1::Item { label: "c".into() });
    let labels: Vec<_> = client
        .items(items, extra)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.label)
        .collect();
    assert_eq!(labels, ["a", "b", "c"]);
    // A field removed on the server: skipped there; defaulted here.
    let address = v1::Address {
        street: "High St".into(),
        zip: "12345".into(),
    };
    let back = client.address(address).await.unwrap();
    assert_eq!(back.street, "High St");
    assert_eq!(back.zip, "", "the server no longer sends it");
    // Fields in another order.
    let point = v1::Point {
        x: 1,
        y: -2,
        label: "p".into(),
    };
    assert_eq!(client.point(point.clone()).await.unwrap(), point);
    // An enum with a variant more on the server, not used.
    assert_eq!(
        client.paint(v1::Color::Green).await.unwrap(),
        v1::Color::Green
    );
    // An argument widened on the server.
    assert_eq!(client.widen(u32::MAX).await.unwrap(), u64::from(u32::MAX));
}

#[tokio::test]
async fn new_clients_call_an_old_server() {
    let client = v2::ProfilesClient::connect(v1_server().await)
        .await
        .unwrap();
    // A field the client sends and the server does not know: skipped.
    let user = v2::User {
        name: "bo".into(),
        email: Some("bo@example.com".into()),
    };
    assert_eq!(client.register(user).await.unwrap(), "bo");
    // A field the client has and the reply lacks: its default.
    let profile = client.lookup("bo".into()).await.unwrap();
    assert_eq!(profile.karma, 0);
    assert_eq!(profile.since, 2019);
    let items = vec![v2::Item {
        label: "a".into(),
        count: 5,
    }];
    let back = client.items(items, None).await.unwrap();
    assert_eq!(
        back,
        [v2::Item {
            label: "a".into(),
            count: 1
        }],
        "the server drops the count; the default comes back"
    );
    // The old server still reads a field the new client no longer has.
    let address = v2::Address {
        street: "Low St".into(),
    };
    assert_eq!(client.address(address.clone()).await.unwrap(), address);
    let point = v2::Point {
        label: "q".into(),
        y: 7,
        x: -7,
    };
    assert_eq!(client.point(point.clone()).await.unwrap(), point);
    assert_eq!(client.paint(v2::Color::Red).await.unwrap(), v2::Color::Red);
    // A reply widened on the client.
    assert_eq!(client.score().await.unwrap(), 1.5);
    // A method the old server does not have.
    match client.hello().await {
        Err(RpcError::Status(status)) => assert_eq!(status.code(), Code::UnknownMethod),
        other => panic!("expected UNKNOWN_METHOD, got {other:?}"),
    }
}

#[tokio::test]
async fn unsafe_changes_are_refused_naming_the_type_and_field() {
    let old_client = v1::ProfilesClient::connect(v2_server().await)
        .await
        .unwrap();
    let new_client = v2::ProfilesClient::connect(v1_server().await)
        .await
        .unwrap();

    let message = mismatch(old_client.tag(v1::Tag { value: "x".into() }).await);
    assert!(message.contains("`Tag.value`"), "{message}");
    assert!(
        message.contains("sent as a string, read as an i64"),
        "{message}"
    );

    let message = mismatch(old_client.order(v1::Order { id: 1 }).await);
    assert!(message.contains("`Order`"), "{message}");
    assert!(message.contains("`quantity`"), "{message}");
    assert!(message.contains("no default"), "{message}");

    // A variant the old server does not know.
    let message = mismatch(new_client.paint(v2::Color::Blue).await);
    assert!(message.contains("`Color`"), "{message}");
    assert!(message.contains("`Blue`"), "{message}");

    // Narrowing, either way: an argument, and a reply.
    let message = mismatch(new_client.widen(1).await);
    assert!(message.contains("argument 1"), "{message}");
    assert!(
        message.contains("sent as a u64, read as a u32"),
        "{message}"
    );
    let message = mismatch(old_client.score().await);
    assert!(
        message.contains("sent as an f64, read as an f32"),
        "{message}"
    );

    // The connection stays up through all of it.
    assert_eq!(
        old_client
            .register(v1::User { name: "c".into() })
            .await
            .unwrap(),
        "c <none>"
    );
    assert_eq!(new_client.score().await.unwrap(), 1.5);
}

#[tokio::test]
async fn u64_for_i64_is_refused_not_answered_with_garbage() {
    // Without schemas the server read `add(2, 3)` as two u64 written
    // where i64s belong and answered -1's bytes: varint 2 and 3 are the
    // zigzag of 1 and -2.
    let client = v1::ProfilesClient::connect(v2_server().await)
        .await
        .unwrap();
    let message = mismatch(client.add(2, 3).await);
    assert!(message.contains("argument 1"), "{message}");
    assert!(
        message.contains("sent as a u64, read as an i64"),
        "{message}"
    );
    let client = v2::ProfilesClient::connect(v1_server().await)
        .await
        .unwrap();
    let message = mismatch(client.add(2, 3).await);
    assert!(
        message.contains("sent as an i64, read as a u64"),
        "{message}"
    );
}

#[tokio::test]
async fn balanced_channels_resolve_per_endpoint() {
    // One old and one new server behind one channel: each connection
    // learns its own server's schema.
    let (old, new) = (v1_server().await, v2_server().await);
    let channel = rpc_core::Channel::balanced(rpc_core::discovery::Static::new([
        old.to_string(),
        new.to_string(),
    ]))
    .await
    .unwrap();
    let client = v2::ProfilesClient::new(channel);
    let mut karma = std::collections::BTreeSet::new();
    for _ in 0..40 {
        karma.insert(client.lookup("d".into()).await.unwrap().karma);
    }
    assert_eq!(
        karma,
        [0, 42].into(),
        "both servers answered, each read right"
    );
}

/// A claim that spells the server's own schema another way (as
/// `MethodSchema::parse` allows) is answered with the server's text, so
/// that the client can read the reply: not a mismatch on a call that ran.
#[tokio::test]
async fn another_spelling_of_the_servers_schema_is_answered_with_its_text() {
    let addr = v2_server().await;
    let channel = rpc_core::Channel::connect(addr).await.unwrap();
    let spaced = r#"{ "args": ["I64", "I64"], "returns": "I64", "types": {} }"#;
    assert_eq!(add_claiming(channel, spaced).await.unwrap(), 5);
}

/// `Profiles.add(2, 3)`, claiming the schema `text`.
async fn add_claiming(channel: rpc_core::Channel, text: &str) -> Result<i64, RpcError> {
    let schema = rpc_core::describe::MethodSchema::parse(text).unwrap();
    channel
        .call_seeded(
            "Profiles",
            "add",
            (2i64, 3i64),
            Some(&schema),
            std::marker::PhantomData::<i64>,
        )
        .await
}

#[tokio::test]
async fn a_connection_that_sends_schema_after_new_schema_is_refused_not_served() {
    // Each claim spells the server's schema another way, so each is a text
    // the server has not read: it reads about 1 MiB of them, then refuses
    // the calls (not run) rather than let one client keep a core busy.
    let addr = v2_server().await;
    let channel = rpc_core::Channel::connect(addr).await.unwrap();
    let add = |channel: rpc_core::Channel, spaces: usize| async move {
        let text = format!(
            r#"{{"args":["I64","I64"],"returns":"I64","types":{{}}}}{}"#,
            " ".repeat(spaces)
        );
        add_claiming(channel, &text).await
    };
    let (mut served, mut refused) = (0, 0);
    for i in 0..40 {
        match add(channel.clone(), 60_000 + i).await {
            Ok(sum) => {
                assert_eq!(sum, 5);
                served += 1;
            }
            Err(RpcError::Status(status)) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("schemas"), "{status:?}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(served >= 16, "the first MiB is read: {served} served");
    assert!(refused > 0, "{served} served, none refused");
    // The connection is still up.
    let plain: i64 = channel.call("Profiles", "add", (2i64, 3i64)).await.unwrap();
    assert_eq!(plain, 5);
    // Another connection has a budget of its own.
    let other = rpc_core::Channel::connect(addr).await.unwrap();
    assert_eq!(add(other, 60_100).await.unwrap(), 5);
}
