//! Running out of file descriptors: the accept loop backs off and keeps
//! going, established connections keep working, and new ones are served
//! once descriptors are free again.
//!
//! One test in a binary of its own: it lowers the process's descriptor
//! limit, which would starve any test running beside it.

use std::time::Duration;

use rlimit::Resource;
use rpc_core::Server;
use rpc_tests::{ShapesClient, ShapesImpl, ShapesServer, serve};
use tokio::net::TcpStream;

/// `EMFILE` on Linux: the process has no descriptor left.
const EMFILE: i32 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_running_out_of_descriptors() {
    let addr = serve(Server::builder().add_service(ShapesServer::new(ShapesImpl))).await;
    let established = ShapesClient::connect(addr).await.unwrap();

    let (soft, hard) = Resource::NOFILE.get().unwrap();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    Resource::NOFILE.set(open + 32, hard).unwrap();
    // Connect until the process has no descriptor left. Client and server
    // share the process, so the server's accepts fail with EMFILE too,
    // with connections waiting in its backlog.
    let mut hogs = Vec::new();
    let exhausted = loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => hogs.push(stream),
            Err(e) => break e,
        }
        assert!(hogs.len() < 1000, "the lowered limit did not take");
    };
    assert_eq!(exhausted.raw_os_error(), Some(EMFILE), "{exhausted}");
    // Out of descriptors, the server still serves what it has open.
    assert_eq!(
        established.echo_text("meanwhile".to_owned()).await.unwrap(),
        "meanwhile"
    );

    drop(hogs);
    Resource::NOFILE.set(soft, hard).unwrap();
    let fresh = tokio::time::timeout(Duration::from_secs(10), async {
        let client = ShapesClient::connect(addr).await.unwrap();
        client.echo_text("after".to_owned()).await.unwrap()
    })
    .await
    .expect("the server accepts again once descriptors are free");
    assert_eq!(fresh, "after");
}
