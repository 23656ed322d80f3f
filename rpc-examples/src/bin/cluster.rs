//! Three servers and a balanced client in one process: how calls spread,
//! and what happens when a server dies and when one shuts down gently.
//!
//! `cargo run -p rpc-examples --bin cluster` uses a static list of the
//! three; `cargo run -p rpc-examples --features etcd --bin cluster --
//! --etcd http://127.0.0.1:2379` has the servers register in etcd and the
//! client discover them there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rpc_core::discovery::Static;
use rpc_core::{Channel, RpcError, Server, rpc_service};

/// A node of the cluster.
#[rpc_service]
pub trait Node {
    /// Which node answered. Harmless to run twice, so a balanced channel
    /// may send it to another node when the one it went to died.
    #[rpc(idempotent)]
    async fn name(&self) -> String;
}

struct Named(String);

impl Node for Named {
    async fn name(&self) -> String {
        self.0.clone()
    }
}

/// A server on a runtime of its own, so that it can die as a process
/// does: every task and socket at once.
struct Running {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Running {
    fn start(name: &str, etcd: Option<&str>) -> Result<Running, Box<dyn std::error::Error>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let server = runtime.block_on(
            Server::builder()
                .add_service(NodeServer::new(Named(name.to_owned())))
                .bind("127.0.0.1:0"),
        )?;
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let signal = async {
            let _ = stopped.await;
        };
        let (finished, done) = std::sync::mpsc::channel();
        let serving = registered(&runtime, etcd, addr, signal)?;
        runtime.spawn(async move {
            if let Err(e) = server.serve_with_shutdown(serving).await {
                eprintln!("{addr}: {e}");
            }
            let _ = finished.send(());
        });
        Ok(Running {
            addr,
            runtime: Some(runtime),
            stop: Some(stop),
            done: Some(done),
        })
    }

    /// Dies at once, as a crashed process: its connections just close.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Shuts down gracefully (leaving etcd first, if registered there),
    /// and waits until it has.
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.recv();
        }
    }
}

/// What a server waits for before it drains.
type Signal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The shutdown signal the server gets: with etcd, the registration is
/// withdrawn once `signal` fires and before the drain.
#[cfg(feature = "etcd")]
fn registered(
    runtime: &tokio::runtime::Runtime,
    etcd: Option<&str>,
    addr: SocketAddr,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Signal, Box<dyn std::error::Error>> {
    let Some(etcd) = etcd else {
        return Ok(Box::pin(signal));
    };
    let registration = runtime.block_on(rpc_core::discovery::Etcd::register(
        &[etcd],
        "services/Node",
        addr,
    ))?;
    Ok(Box::pin(registration.withdraw_after(signal)))
}

#[cfg(not(feature = "etcd"))]
fn registered(
    _: &tokio::runtime::Runtime,
    etcd: Option<&str>,
    _: SocketAddr,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Signal, Box<dyn std::error::Error>> {
    match etcd {
        Some(_) => Err("--etcd needs the `etcd` feature: \
                        cargo run -p rpc-examples --features etcd --bin cluster -- --etcd URL"
            .into()),
        None => Ok(Box::pin(signal)),
    }
}

/// Makes `calls` calls from 10 tasks; how many each node answered, and
/// how many failed.
async fn spread(client: &NodeClient, calls: usize) -> (BTreeMap<String, usize>, usize) {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..calls / 10 {
                    answers.push(client.name().await);
                }
                answers
            })
        })
        .collect();
    let (mut counts, mut failed) = (BTreeMap::new(), 0);
    for task in tasks {
        for answer in task.await.expect("a task") {
            match answer {
                Ok(name) => *counts.entry(name).or_insert(0) += 1,
                Err(e) => {
                    failed += 1;
                    eprintln!("  failed: {e}");
                }
            }
        }
    }
    (counts, failed)
}

fn show(what: &str, (counts, failed): (BTreeMap<String, usize>, usize)) {
    let counts: Vec<String> = counts.iter().map(|(n, c)| format!("{n}: {c}")).collect();
    println!("{what}: {}, failed: {failed}", counts.join(", "));
}

async fn channel(etcd: Option<&str>, nodes: &[Running]) -> Result<Channel, RpcError> {
    match etcd {
        #[cfg(feature = "etcd")]
        Some(etcd) => {
            let source = rpc_core::discovery::Etcd::discover(&[etcd], "services/Node").await?;
            Channel::balanced(source).await
        }
        _ => Channel::balanced(Static::new(nodes.iter().map(|n| n.addr.to_string()))).await,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let etcd = args
        .iter()
        .position(|a| a == "--etcd")
        .map(|i| args.get(i + 1).cloned().ok_or("--etcd needs a URL"))
        .transpose()?;
    let etcd = etcd.as_deref();
    let mut nodes = ["alpha", "beta", "gamma"]
        .iter()
        .map(|name| Running::start(name, etcd))
        .collect::<Result<Vec<_>, _>>()?;
    for (node, name) in nodes.iter().zip(["alpha", "beta", "gamma"]) {
        println!("{name} serves on {}", node.addr);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = channel(etcd, &nodes).await?;
        let client = NodeClient::new(channel.with_timeout(Duration::from_secs(5)));
        show("300 calls over three nodes", spread(&client, 300).await);

        nodes[2].kill();
        println!("gamma was killed");
        show("300 calls after it died", spread(&client, 300).await);

        nodes[1].shut_down();
        println!("beta shut down gracefully");
        show("300 calls after that", spread(&client, 300).await);
        for endpoint in channel.endpoints() {
            let state = if endpoint.connected {
                "connected"
            } else {
                "down"
            };
            println!("  {}: {state}", endpoint.address);
        }
        channel.close().await;
        Ok::<_, RpcError>(())
    })?;
    nodes[0].shut_down();
    Ok(())
}
