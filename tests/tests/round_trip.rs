//! Every argument and return shape crosses the wire and comes back intact.

use std::collections::HashMap;

use rpc_core::Server;
use rpc_tests::{LookupError, Record, Shape, ShapesClient, ShapesImpl, ShapesServer, serve};

async fn client() -> ShapesClient {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    ShapesClient::connect(addr).await.expect("connect")
}

#[tokio::test]
async fn unit_and_zero_arguments() {
    let client = client().await;
    client
        .ping()
        .await
        .expect("a call of no arguments returning ()");
}

#[tokio::test]
async fn unit_is_an_empty_body_on_the_wire() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let mut stream = rpc_tests::raw_connect(addr).await;
    // No arguments: the empty tuple encodes to nothing.
    let request = rpc_tests::request_frame(3, "Shapes", "ping", &[]);
    tokio::io::AsyncWriteExt::write_all(&mut stream, &request)
        .await
        .unwrap();
    assert_eq!(rpc_tests::read_response(&mut stream).await, (3, 0, vec![]));
}

#[tokio::test]
async fn six_arguments() {
    let client = client().await;
    let out = client
        .six(255, -32768, u32::MAX, i64::MIN, true, '✓')
        .await
        .unwrap();
    assert_eq!(out, (255, -32768, u32::MAX, i64::MIN, true, '✓'));
}

#[tokio::test]
async fn structs_and_enums() {
    let client = client().await;
    for shape in [Shape::Point, Shape::Circle(1.5), Shape::Rect { w: 3, h: 4 }] {
        let record = Record {
            id: u64::MAX,
            name: "Zoë — 日本語 — emoji 🦀".to_owned(),
            tags: Some(vec!["a".to_owned(), String::new()]),
            shape,
        };
        assert_eq!(client.record(record.clone()).await.unwrap(), record);
    }
    let bare = Record {
        id: 0,
        name: String::new(),
        tags: None,
        shape: Shape::Point,
    };
    assert_eq!(client.record(bare.clone()).await.unwrap(), bare);
}

#[tokio::test]
async fn options_maps_and_tuples() {
    let client = client().await;
    assert_eq!(
        client.option(Some("héllo".to_owned())).await.unwrap(),
        Some(5)
    );
    assert_eq!(client.option(None).await.unwrap(), None);

    let map = HashMap::from([
        ("zeta".to_owned(), vec![1, 2]),
        ("alpha".to_owned(), vec![]),
        ("mu".to_owned(), vec![-3]),
    ]);
    assert_eq!(client.keys(map).await.unwrap(), ["alpha", "mu", "zeta"]);

    assert_eq!(
        client.swap(("ünïcode".to_owned(), 9)).await.unwrap(),
        (9, "ünïcode".to_owned())
    );
}

#[tokio::test]
async fn results_as_values() {
    let client = client().await;
    assert_eq!(client.lookup("one".to_owned()).await.unwrap(), Ok(1));
    assert_eq!(
        client.lookup("two".to_owned()).await.unwrap(),
        Err(LookupError::Missing("two".to_owned()))
    );
}

#[tokio::test]
async fn non_ascii_text() {
    let client = client().await;
    let text = "Grüße, мир, 世界, مرحبا, 🦀🚀, \u{0}\u{FFFF}".repeat(100);
    assert_eq!(client.echo_text(text.clone()).await.unwrap(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_payload() {
    let client = client().await;
    let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let back = client.echo(data.clone()).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "payload came back changed");
}

/// A `Result` of the user's own, named by a path: a value like any other.
mod odd {
    /// Named like std's, and not it.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub(crate) enum Result<A, B> {
        Yes(A),
        No(B),
    }

    /// Answers with one.
    #[rpc_core::rpc_service]
    pub(crate) trait Odd {
        async fn pick(&self, yes: bool) -> self::Result<u8, u16>;
        /// std's, by its full path: still a typed error.
        async fn check(&self, ok: bool) -> std::result::Result<u8, String>;
        /// Named like the generated items of `pick`.
        async fn pick_visitor(&self) -> u8;
    }

    pub(crate) struct Impl;

    impl Odd for Impl {
        async fn pick(&self, yes: bool) -> self::Result<u8, u16> {
            if yes { Result::Yes(1) } else { Result::No(2) }
        }
        async fn check(&self, ok: bool) -> std::result::Result<u8, String> {
            if ok { Ok(3) } else { Err("no".into()) }
        }
        async fn pick_visitor(&self) -> u8 {
            4
        }
    }
}

#[tokio::test]
async fn an_answer_named_result_by_a_path_of_its_own_is_a_value() {
    let addr = serve(Server::builder().add_service(odd::OddServer::new(odd::Impl))).await;
    let client = odd::OddClient::connect(addr).await.unwrap();
    assert_eq!(client.pick(true).await.unwrap(), odd::Result::Yes(1));
    assert_eq!(client.pick(false).await.unwrap(), odd::Result::No(2));
    assert_eq!(client.check(true).await.unwrap(), Ok(3));
    assert_eq!(client.check(false).await.unwrap(), Err("no".to_owned()));
    assert_eq!(client.pick_visitor().await.unwrap(), 4);
}
