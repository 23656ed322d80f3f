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
    let registered = register(&flag("--etcd"), &flag("--prefix"), &flag("--ttl"), addr).await?;
    println!("listening {addr}");
    std::io::stdout().flush()?;
    match registered {
        Some(registration) => {
            server
                .serve_with_shutdown(registration.withdraw_after(stdin_closed))
                .await?
        }
        None => server.serve_with_shutdown(stdin_closed).await?,
    }
    Ok(())
}

#[cfg(feature = "etcd")]
async fn register(
    etcd: &Option<String>,
    prefix: &Option<String>,
    ttl: &Option<String>,
    addr: std::net::SocketAddr,
) -> Result<Option<rpc_core::discovery::Registration>, Box<dyn std::error::Error>> {
    let Some(etcd) = etcd else { return Ok(None) };
    let prefix = prefix.as_deref().unwrap_or("services/Node");
    let ttl = Duration::from_secs(ttl.as_deref().map_or(Ok(2), str::parse)?);
    let registration = rpc_core::discovery::Etcd::registration(prefix, addr.to_string())
        .ttl(ttl)
        .register(&[etcd.as_str()])
        .await?;
    Ok(Some(registration))
}

#[cfg(not(feature = "etcd"))]
async fn register(
    etcd: &Option<String>,
    _: &Option<String>,
    _: &Option<String>,
    _: std::net::SocketAddr,
) -> Result<Option<NoRegistration>, Box<dyn std::error::Error>> {
    match etcd {
        Some(_) => Err("built without feature `etcd`: --etcd is not available".into()),
        None => Ok(None),
    }
}

/// Stands in for a registration where etcd is not built in.
#[cfg(not(feature = "etcd"))]
enum NoRegistration {}

#[cfg(not(feature = "etcd"))]
impl NoRegistration {
    fn withdraw_after(self, _: impl std::future::Future<Output = ()>) -> std::future::Ready<()> {
        match self {}
    }
}
