//! This project, used as its README shows.

use std::net::SocketAddr;

use rpc_core::{Server, rpc_service};

/// The benchmark service.
#[rpc_service]
pub trait Bench {
    /// Adds.
    async fn add(&self, a: i32, b: i32) -> i32;
    /// Echoes.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// Returns the object.
    async fn get_obj(&self) -> String;
    /// Receives an object.
    async fn send_obj(&self, data: String);
}

struct Imp;

impl Bench for Imp {
    async fn add(&self, a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn get_obj(&self) -> String {
        super::OBJ.to_owned()
    }
    async fn send_obj(&self, _data: String) {}
}

/// The toolkit.
pub struct Toolkit;

impl super::Implementation for Toolkit {
    const NAME: &'static str = "toolkit";
    type Client = BenchClient;

    async fn serve() -> SocketAddr {
        let server = Server::builder()
            .add_service(BenchServer::new(Imp))
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = server.local_addr();
        tokio::spawn(server.serve());
        addr
    }

    async fn connect(addr: SocketAddr) -> BenchClient {
        BenchClient::connect(addr).await.expect("connect")
    }
}

impl super::Client for BenchClient {
    async fn add(&self, a: i32, b: i32) -> i32 {
        BenchClient::add(self, a, b).await.expect("add")
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        BenchClient::echo(self, data).await.expect("echo")
    }
    async fn get_obj(&self) -> String {
        BenchClient::get_obj(self).await.expect("get_obj")
    }
    async fn send_obj(&self, data: String) {
        BenchClient::send_obj(self, data).await.expect("send_obj")
    }
}
