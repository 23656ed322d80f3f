//! Server and client in one process: starts a calculator server on a free
//! port, then calls it and prints every call and result.

use rpc_core::{RpcError, Server};
use rpc_examples::{Calc, CalculatorClient, CalculatorServer};

#[tokio::main]
async fn main() -> Result<(), RpcError> {
    rpc_examples::init_logging();
    let server = Server::builder()
        .add_service(CalculatorServer::new(Calc::default()))
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    println!("calculator server listening on {addr}");
    tokio::spawn(server.serve());

    let client = CalculatorClient::connect(addr).await?;
    println!("add(2, 3)     = {}", client.add(2, 3).await?);
    println!("add(40, 2)    = {}", client.add(40, 2).await?);
    println!("div(84, 2)    = {:?}", client.div(84, 2).await?);
    println!("div(1, 0)     = {:?}", client.div(1, 0).await?);
    println!("total()       = {}", client.total().await?);
    client.reset().await?;
    println!("reset()       = ()");
    println!("total()       = {}", client.total().await?);

    // Many calls in flight at once on the one connection.
    let calls = (0..10).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.add(i, i).await })
    });
    let mut sums = Vec::new();
    for call in calls {
        sums.push(call.await.expect("call task")?);
    }
    println!("10 concurrent add(i, i) = {sums:?}");
    Ok(())
}
