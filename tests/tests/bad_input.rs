//! Hostile or broken bytes close that one connection; the server and its
//! other connections carry on.

use rpc_core::Server;
use rpc_tests::{
    HELLO, ShapesClient, ShapesImpl, ShapesServer, raw_connect, read_response, read_until_closed,
    request_frame, request_frame_with_extensions, serve,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn server() -> (std::net::SocketAddr, ShapesClient) {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let bystander = ShapesClient::connect(addr).await.unwrap();
    (addr, bystander)
}

async fn still_serving(addr: std::net::SocketAddr, bystander: &ShapesClient) {
    assert_eq!(bystander.echo_text("ok".to_owned()).await.unwrap(), "ok");
    let fresh = ShapesClient::connect(addr).await.unwrap();
    assert_eq!(fresh.echo_text("ok".to_owned()).await.unwrap(), "ok");
}

#[tokio::test]
async fn an_oversize_length_prefix_closes_the_connection() {
    let (addr, bystander) = server().await;
    let mut stream = raw_connect(addr).await;
    // Claims a 4 GiB frame; the server must refuse before reserving it.
    stream.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    stream.write_all(&[0; 16]).await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    still_serving(addr, &bystander).await;
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_closes_the_connection() {
    let (addr, bystander) = server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    still_serving(addr, &bystander).await;
}

#[tokio::test]
async fn an_http_request_closes_the_connection() {
    let (addr, bystander) = server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    still_serving(addr, &bystander).await;
}

#[tokio::test]
async fn a_wrong_protocol_version_closes_the_connection() {
    let (addr, bystander) = server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut hello = HELLO;
    hello[4] = 99;
    stream.write_all(&hello).await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    still_serving(addr, &bystander).await;
}

#[tokio::test]
async fn a_truncated_handshake_closes_the_connection() {
    let (addr, bystander) = server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&HELLO[..3]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    still_serving(addr, &bystander).await;
}

#[tokio::test]
async fn garbage_frames_close_the_connection() {
    let (addr, bystander) = server().await;
    let frames: [&[u8]; 4] = [
        // Empty frame.
        &[0, 0, 0, 0],
        // Unknown message kind.
        &[10, 0, 0, 0, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        // A request whose names run past the end of the frame.
        &[12, 0, 0, 0, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 200, b'x'],
        // A response sent to the server.
        &[11, 0, 0, 0, 0x02, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for frame in frames {
        let mut stream = raw_connect(addr).await;
        stream.write_all(frame).await.unwrap();
        assert!(read_until_closed(&mut stream).await.is_empty(), "{frame:?}");
    }
    still_serving(addr, &bystander).await;
}

#[tokio::test]
async fn a_truncated_frame_then_eof_closes_the_connection() {
    let (addr, bystander) = server().await;
    let mut stream = raw_connect(addr).await;
    stream.write_all(&[100, 0, 0, 0, 0x01, 0, 1]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    still_serving(addr, &bystander).await;
}

#[tokio::test]
async fn a_huge_length_inside_a_valid_frame_is_a_bad_request_not_an_allocation() {
    let (addr, bystander) = server().await;
    let mut stream = raw_connect(addr).await;
    // Request id 5 for Shapes.echo_text whose String claims 2^40 bytes.
    let mut claim = vec![253];
    claim.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let frame = request_frame(5, "Shapes", "echo_text", &claim);
    stream.write_all(&frame).await.unwrap();
    stream.shutdown().await.unwrap();
    let reply = read_until_closed(&mut stream).await;
    // One response frame: prefix, kind 2, flags, id 5, status 3 (bad request).
    assert!(reply.len() > 15, "{reply:?}");
    assert_eq!(&reply[4..6], &[0x02, 0]);
    assert_eq!(&reply[6..14], &5u64.to_le_bytes());
    assert_eq!(reply[14], 3);
    still_serving(addr, &bystander).await;
}

/// A recursive argument type, as applications may well have.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub enum Tree {
    /// The end.
    Leaf,
    /// One more level.
    Node(Box<Tree>),
}

/// Measures trees.
#[rpc_core::rpc_service]
pub trait Trees {
    /// How deep `tree` goes.
    async fn depth(&self, tree: Tree) -> u32;
}

struct TreesImpl;

impl Trees for TreesImpl {
    async fn depth(&self, tree: Tree) -> u32 {
        let mut depth = 0;
        let mut at = &tree;
        while let Tree::Node(next) = at {
            depth += 1;
            at = next;
        }
        depth
    }
}

#[tokio::test]
async fn deep_nesting_is_a_bad_request_not_a_stack_overflow() {
    let addr = serve(
        Server::builder()
            .add_service(TreesServer::new(TreesImpl))
            .add_service(ShapesServer::new(ShapesImpl)),
    )
    .await;
    let bystander = ShapesClient::connect(addr).await.unwrap();
    let mut stream = raw_connect(addr).await;
    // A million levels of `Node` in a 1 MiB body: bincode alone recurses
    // once per level and overflows the stack, aborting the process.
    let bomb = vec![1u8; 1 << 20];
    stream
        .write_all(&request_frame(9, "Trees", "depth", &bomb))
        .await
        .unwrap();
    let (id, status, message) = read_response(&mut stream).await;
    let message = String::from_utf8_lossy(&message).into_owned();
    assert_eq!((id, status), (9, 3), "{message}");
    assert!(message.contains("nested more than 128 levels"), "{message}");
    // Honest trees still pass, up to the limit.
    let trees = TreesClient::connect(addr).await.unwrap();
    let deep = (0..100).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)));
    assert_eq!(trees.depth(deep).await.unwrap(), 100);
    still_serving(addr, &bystander).await;
}

/// A request frame whose extension block holds one metadata entry with
/// `entry` as its value (docs/PROTOCOL.md §5).
fn request_with_metadata_entry(entry: &[u8]) -> Vec<u8> {
    request_frame_with_extensions(1, "Shapes", "ping", &[(0x0002, entry)], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_close_only_their_connection_while_100_clients_carry_on() {
    let (control, mut started) = rpc_tests::ControlImpl::new();
    let addr = serve(
        Server::builder()
            .add_service(ShapesServer::new(ShapesImpl))
            .add_service(rpc_tests::ControlServer::from_arc(control.clone())),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(ShapesClient::connect(addr).await.unwrap());
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let mut calls = 0u32;
                // At least 10 calls each, and on until the bad streams are done.
                while calls < 10 || !*stopped.borrow_and_update() {
                    let text = format!("{i}/{calls}");
                    assert_eq!(client.echo_text(text.clone()).await.unwrap(), text);
                    calls += 1;
                }
                calls
            })
        })
        .collect();

    let malformed: Vec<Vec<u8>> = vec![
        // A zero-length frame.
        vec![0, 0, 0, 0],
        // An unknown message kind.
        vec![10, 0, 0, 0, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        // A metadata entry whose lengths do not add up.
        request_with_metadata_entry(&[1, 0, b'k', 9, 0, 0, 0, b'v']),
        // A metadata entry with an empty key.
        request_with_metadata_entry(&[0, 0, 0, 0, 0, 0]),
    ];
    for frame in &malformed {
        let mut stream = raw_connect(addr).await;
        stream.write_all(frame).await.unwrap();
        assert!(read_until_closed(&mut stream).await.is_empty(), "{frame:?}");
    }
    // A truncated frame, then end of stream.
    let mut stream = raw_connect(addr).await;
    stream.write_all(&[100, 0, 0, 0, 0x01, 0, 1]).await.unwrap();
    stream.shutdown().await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());
    // A duplicate id among running calls.
    let mut stream = raw_connect(addr).await;
    stream
        .write_all(&request_frame(3, "Control", "gated", &[3]))
        .await
        .unwrap();
    assert_eq!(started.recv().await, Some(3));
    stream
        .write_all(&request_frame(3, "Control", "gated", &[4]))
        .await
        .unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());

    stop.send_replace(true);
    for worker in workers {
        assert!(worker.await.expect("no client saw an error") >= 10);
    }
}
