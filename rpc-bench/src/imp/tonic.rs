//! tonic 0.14 unary gRPC with prost messages written by hand; the stubs
//! come from tonic-build's manual generator (build.rs).

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/bench.Bench.rs"));
}

use generated::bench_client::BenchClient;
use generated::bench_server::{Bench, BenchServer};

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddRequest {
    #[prost(int32, tag = "1")]
    pub a: i32,
    #[prost(int32, tag = "2")]
    pub b: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AddReply {
    #[prost(int32, tag = "1")]
    pub sum: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Count {
    #[prost(uint64, tag = "1")]
    pub count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    #[prost(uint64, tag = "1")]
    pub n: u64,
}

struct Imp;

#[tonic::async_trait]
impl Bench for Imp {
    async fn add(&self, request: Request<AddRequest>) -> Result<Response<AddReply>, Status> {
        let AddRequest { a, b } = request.into_inner();
        Ok(Response::new(AddReply {
            sum: a.wrapping_add(b),
        }))
    }
    async fn echo(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(request.into_inner()))
    }
    async fn get_obj(&self, _: Request<Empty>) -> Result<Response<Text>, Status> {
        Ok(Response::new(Text {
            text: super::OBJ.to_owned(),
        }))
    }
    async fn send_obj(&self, _: Request<Text>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    type NumbersStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<Number, Status>> + Send + 'static>>;

    async fn numbers(
        &self,
        request: Request<Count>,
    ) -> Result<Response<Self::NumbersStream>, Status> {
        let count = request.into_inner().count;
        Ok(Response::new(Box::pin(futures::stream::iter(
            (0..count).map(|n| Ok(Number { n })),
        ))))
    }

    async fn upload(
        &self,
        request: Request<tonic::Streaming<Blob>>,
    ) -> Result<Response<Count>, Status> {
        let mut chunks = request.into_inner();
        let mut count = 0;
        while let Some(chunk) = chunks.message().await? {
            count += chunk.data.len() as u64;
        }
        Ok(Response::new(Count { count }))
    }
}

/// tonic.
pub struct Tonic;

/// tonic's client: cheap to clone, one HTTP/2 connection.
#[derive(Clone)]
pub struct Client(BenchClient<tonic::transport::Channel>);

impl super::Implementation for Tonic {
    const NAME: &'static str = "tonic";
    type Client = Client;

    async fn serve() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(BenchServer::new(Imp))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        addr
    }

    async fn connect(addr: SocketAddr) -> Client {
        Client(
            BenchClient::connect(format!("http://{addr}"))
                .await
                .expect("connect"),
        )
    }
}

impl super::Client for Client {
    async fn add(&self, a: i32, b: i32) -> i32 {
        let mut c = self.0.clone();
        c.add(AddRequest { a, b })
            .await
            .expect("add")
            .into_inner()
            .sum
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        let mut c = self.0.clone();
        c.echo(Blob { data }).await.expect("echo").into_inner().data
    }
    async fn get_obj(&self) -> String {
        let mut c = self.0.clone();
        c.get_obj(Empty {})
            .await
            .expect("get_obj")
            .into_inner()
            .text
    }
    async fn send_obj(&self, text: String) {
        let mut c = self.0.clone();
        c.send_obj(Text { text }).await.expect("send_obj");
    }
    async fn numbers(&self, count: u64) -> u64 {
        let mut c = self.0.clone();
        let mut numbers = c
            .numbers(Count { count })
            .await
            .expect("numbers")
            .into_inner();
        let mut seen = 0;
        while let Some(number) = numbers.message().await.expect("number") {
            assert_eq!(number.n, seen, "numbers out of order");
            seen += 1;
        }
        seen
    }
    async fn upload(&self, chunk: std::sync::Arc<Vec<u8>>, chunks: usize) -> u64 {
        let mut c = self.0.clone();
        let blobs = futures::stream::iter((0..chunks).map(move |_| Blob {
            data: chunk.to_vec(),
        }));
        c.upload(blobs).await.expect("upload").into_inner().count
    }
}
