//! tarpc 0.38 with its bincode serde transport over TCP, used as its docs
//! show: default server channel and client config.

use std::net::SocketAddr;

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

#[tarpc::service]
pub trait Bench {
    async fn add(a: i32, b: i32) -> i32;
    async fn echo(data: Vec<u8>) -> Vec<u8>;
    async fn get_obj() -> String;
    async fn send_obj(data: String);
}

#[derive(Clone)]
struct Imp;

impl Bench for Imp {
    async fn add(self, _: context::Context, a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }
    async fn echo(self, _: context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn get_obj(self, _: context::Context) -> String {
        super::OBJ.to_owned()
    }
    async fn send_obj(self, _: context::Context, _data: String) {}
}

/// tarpc.
pub struct Tarpc;

impl super::Implementation for Tarpc {
    const NAME: &'static str = "tarpc";
    const STREAMS: bool = false;
    type Client = BenchClient;

    async fn serve() -> SocketAddr {
        let incoming = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default)
            .await
            .expect("bind");
        let addr = incoming.local_addr();
        tokio::spawn(async move {
            incoming
                .filter_map(|r| futures::future::ready(r.ok()))
                .for_each(|transport| async move {
                    let channel = BaseChannel::with_defaults(transport);
                    tokio::spawn(
                        channel
                            .execute(Imp.serve())
                            .for_each(|response| async move {
                                tokio::spawn(response);
                            }),
                    );
                })
                .await;
        });
        addr
    }

    async fn connect(addr: SocketAddr) -> BenchClient {
        let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default)
            .await
            .expect("connect");
        BenchClient::new(client::Config::default(), transport).spawn()
    }
}

impl super::Client for BenchClient {
    async fn add(&self, a: i32, b: i32) -> i32 {
        BenchClient::add(self, context::current(), a, b)
            .await
            .expect("add")
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        BenchClient::echo(self, context::current(), data)
            .await
            .expect("echo")
    }
    async fn get_obj(&self) -> String {
        BenchClient::get_obj(self, context::current())
            .await
            .expect("get_obj")
    }
    async fn send_obj(&self, data: String) {
        BenchClient::send_obj(self, context::current(), data)
            .await
            .expect("send_obj")
    }
    // Never called: `STREAMS` is false.
    async fn numbers(&self, _count: u64) -> u64 {
        0
    }
    async fn upload(&self, _chunk: std::sync::Arc<Vec<u8>>, _chunks: usize) -> u64 {
        0
    }
}
