//! A node of the cluster tests, in a process of its own: serves `Node` on
//! 127.0.0.1:0, prints `listening ADDR`, and shuts down gracefully when its
//! stdin closes.
//!
//! `cluster-node NAME [--delay-ms N] [--etcd URL --prefix PREFIX --ttl SECS]`:
//! with `--etcd` (feature `etcd`) it registers under PREFIX, withdrawing
//! the registration before it drains.

use std::io::Write;
use std::time::Duration;

use rpc_core::Server;
use rpc_tests::cluster::{NodeImpl, NodeServer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().cloned().unwrap_or_else(|| "node".to_owned());
    let flag = |key: &str| {
        args.iter()
            .position(|a| a == key)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let delay = Duration::from_millis(flag("--delay-ms").map_or(Ok(0), |d| d.parse())?);
    let server = Server::builder()
        .add_service(NodeServer::new(NodeImpl::new(name, delay)))
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    // The signal: stdin closing (the test drops its end, or exits).
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut stdin, &mut sink).await;
    };
    let signal = shutdown_signal(
        &flag("--etcd"),
        &flag("--prefix"),
        &flag("--ttl"),
        addr,
        stdin_closed,
    )
    .await?;
    println!("listening {addr}");
    std::io::stdout().flush()?;
    server.serve_with_shutdown(signal).await?;
    Ok(())
}

/// What the server waits for before it drains.
type Signal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// `signal`, or with `--etcd` a registration withdrawn once `signal`
/// fires and before the drain.
#[cfg(feature = "etcd")]
async fn shutdown_signal(
    etcd: &Option<String>,
    prefix: &Option<String>,
    ttl: &Option<String>,
    addr: std::net::SocketAddr,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Signal, Box<dyn std::error::Error>> {
    let Some(etcd) = etcd else {
        return Ok(Box::pin(signal));
    };
    let prefix = prefix.as_deref().unwrap_or("services/Node");
    let ttl = Duration::from_secs(ttl.as_deref().map_or(Ok(2), str::parse)?);
    let registration = rpc_core::discovery::Etcd::registration(prefix, addr)
        .ttl(ttl)
        .register(&[etcd.as_str()])
        .await?;
    Ok(Box::pin(registration.withdraw_after(signal)))
}

#[cfg(not(feature = "etcd"))]
async fn shutdown_signal(
    etcd: &Option<String>,
    _: &Option<String>,
    _: &Option<String>,
    _: std::net::SocketAddr,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Signal, Box<dyn std::error::Error>> {
    match etcd {
        Some(_) => Err("built without feature `etcd`: --etcd is not available".into()),
        None => Ok(Box::pin(signal)),
    }
}
