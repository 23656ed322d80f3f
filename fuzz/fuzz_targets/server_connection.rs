#![no_main]
//! A real server on 127.0.0.1 fed arbitrary bytes after a valid handshake.
//! Each input gets its own connection; afterwards a well-behaved client must
//! still be answered.

#[path = "cap.rs"]
mod cap;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use rpc_core::{Server, rpc_service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

#[global_allocator]
static ALLOC: cap::Capped = cap::Capped;

#[rpc_service]
pub trait Target {
    async fn echo(&self, text: String, data: Vec<u8>) -> (String, Vec<u8>);
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Imp;

impl Target for Imp {
    async fn echo(&self, text: String, data: Vec<u8>) -> (String, Vec<u8>) {
        (text, data)
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
}

fn setup() -> &'static (Runtime, SocketAddr, TargetClient) {
    static SETUP: OnceLock<(Runtime, SocketAddr, TargetClient)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, client) = runtime.block_on(async {
            let server = Server::builder()
                .max_frame_length(64 * 1024)
                .frame_timeout(Duration::from_millis(50))
                .add_service(TargetServer::new(Imp))
                .bind("127.0.0.1:0")
                .await
                .unwrap();
            let addr = server.local_addr();
            tokio::spawn(server.serve());
            let client = TargetClient::connect(addr).await.unwrap();
            (addr, client)
        });
        (runtime, addr, client)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (runtime, addr, client) = setup();
    runtime.block_on(async {
        let mut stream = TcpStream::connect(*addr).await.unwrap();
        stream.write_all(&rpc_core::__fuzz::HELLO).await.unwrap();
        let mut hello = [0u8; 8];
        stream.read_exact(&mut hello).await.unwrap();
        let _ = stream.write_all(data).await;
        let _ = stream.shutdown().await;
        // Whatever the bytes were, the server answers or closes, and soon.
        let mut sink = Vec::new();
        let drained =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
        assert!(
            drained.is_ok(),
            "the server kept a finished connection open"
        );
        assert_eq!(
            client.add(2, 3).await.unwrap(),
            5,
            "the server stopped serving"
        );
    });
});
