//! This project, used as its README shows.

use std::net::SocketAddr;
use std::sync::OnceLock;

use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rpc_core::tls::{CertificateDer, ClientTlsConfig, Identity, PrivateKeyDer, ServerTlsConfig};
use rpc_core::{Channel, Server, ServerBuilder, Streaming, rpc_service};

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
    /// Streams `0..count`.
    async fn numbers(&self, count: u64) -> Streaming<u64>;
    /// Counts the bytes of a stream of chunks.
    async fn upload(&self, chunks: Streaming<Vec<u8>>) -> u64;
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
    async fn numbers(&self, count: u64) -> Streaming<u64> {
        Streaming::from_iter(0..count)
    }
    async fn upload(&self, mut chunks: Streaming<Vec<u8>>) -> u64 {
        let mut total = 0;
        while let Some(chunk) = chunks.next().await {
            total += chunk.expect("chunk").len() as u64;
        }
        total
    }
}

/// Serves the benchmark service with `builder`'s settings on 127.0.0.1.
async fn start(builder: ServerBuilder) -> SocketAddr {
    let server = builder
        .add_service(BenchServer::new(Imp))
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = server.local_addr();
    tokio::spawn(server.serve());
    addr
}

/// The toolkit.
pub struct Toolkit;

impl super::Implementation for Toolkit {
    const NAME: &'static str = "toolkit";
    type Client = BenchClient;

    async fn serve() -> SocketAddr {
        start(Server::builder()).await
    }

    async fn connect(addr: SocketAddr) -> BenchClient {
        BenchClient::connect(addr).await.expect("connect")
    }

    fn connect_blocking(addr: SocketAddr) -> Option<super::BlockingAdd> {
        let client = BenchBlockingClient::connect(addr).expect("connect");
        Some(Box::new(move |a, b| client.add(a, b).expect("add")))
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
    async fn numbers(&self, count: u64) -> u64 {
        let mut numbers = BenchClient::numbers(self, count).await.expect("numbers");
        let mut seen = 0;
        while let Some(n) = numbers.next().await {
            assert_eq!(n.expect("number"), seen, "numbers out of order");
            seen += 1;
        }
        seen
    }
    async fn upload(&self, chunk: std::sync::Arc<Vec<u8>>, chunks: usize) -> u64 {
        let stream = Streaming::from_iter((0..chunks).map(move |_| chunk.to_vec()));
        BenchClient::upload(self, stream).await.expect("upload")
    }
}

/// The toolkit through a balanced channel over one server: what the
/// balancer's path (the pick, the retry bookkeeping) costs a call, on the
/// same connections as `toolkit`.
pub struct ToolkitBalanced;

impl super::Implementation for ToolkitBalanced {
    const NAME: &'static str = "toolkit-balanced";
    type Client = BenchClient;

    async fn serve() -> SocketAddr {
        start(Server::builder()).await
    }

    async fn connect(addr: SocketAddr) -> BenchClient {
        let source = rpc_core::discovery::Static::new([addr.to_string()]);
        let channel = rpc_core::Channel::balanced(source).await.expect("connect");
        BenchClient::new(channel)
    }
}

/// The toolkit through a balanced channel over three servers on the
/// server's one thread (the same capacity as `toolkit`'s one server): the
/// balancer's cost together with three times the connections.
pub struct ToolkitCluster;

/// The three servers of [`ToolkitCluster`], started by its `serve`.
static CLUSTER: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

impl super::Implementation for ToolkitCluster {
    const NAME: &'static str = "toolkit-cluster";
    type Client = BenchClient;

    async fn serve() -> SocketAddr {
        let mut addrs = Vec::new();
        for _ in 0..3 {
            addrs.push(start(Server::builder()).await);
        }
        let _ = CLUSTER.set(addrs.iter().map(SocketAddr::to_string).collect());
        addrs[0]
    }

    async fn connect(_: SocketAddr) -> BenchClient {
        let addrs = CLUSTER.get().expect("serve ran first").clone();
        let source = rpc_core::discovery::Static::new(addrs);
        let channel = rpc_core::Channel::balanced(source).await.expect("connect");
        BenchClient::new(channel)
    }
}

/// The toolkit with one layer that does nothing
/// (`tower_layer::Identity`): what the layered call path
/// (`ServerBuilder::layer`) costs over the direct one.
pub struct ToolkitLayered;

impl super::Implementation for ToolkitLayered {
    const NAME: &'static str = "toolkit-layer";
    type Client = BenchClient;

    async fn serve() -> SocketAddr {
        start(Server::builder().layer(tower_layer::Identity::new())).await
    }

    async fn connect(addr: SocketAddr) -> BenchClient {
        BenchClient::connect(addr).await.expect("connect")
    }
}

/// The toolkit over TLS 1.3 (ring), with a certificate made at start-up:
/// what TLS costs on the same workloads.
pub struct ToolkitTls;

/// The CA certificate and the server's identity, made once per process.
fn pki() -> &'static (Vec<CertificateDer<'static>>, Identity) {
    static PKI: OnceLock<(Vec<CertificateDer<'static>>, Identity)> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let leaf = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let identity = Identity::new(
            vec![leaf.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).expect("PKCS#8 key"),
        );
        (vec![ca.der().clone()], identity)
    })
}

impl super::Implementation for ToolkitTls {
    const NAME: &'static str = "toolkit-tls";
    type Client = BenchClient;

    async fn serve() -> SocketAddr {
        start(Server::builder().tls(ServerTlsConfig::new(pki().1.clone()))).await
    }

    async fn connect(addr: SocketAddr) -> BenchClient {
        let tls = ClientTlsConfig::new("localhost").ca_certificates(pki().0.clone());
        let channel = Channel::builder()
            .tls(tls)
            .connect(addr)
            .await
            .expect("connect");
        BenchClient::new(channel)
    }
}
