//! The server of the two-terminal pair: serves `Calculator`,
//! `SeedObjects` and `Market` on `--addr` (default 127.0.0.1:7878) until
//! Ctrl-C, then shuts down gracefully: calls already read are finished and
//! answered.

use rpc_core::Server;
use rpc_examples::market::{Exchange, MarketServer};
use rpc_examples::{Calc, CalculatorServer, SeedObjectsServer, Seeds};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rpc_examples::init_logging();
    let addr = rpc_examples::addr_arg("127.0.0.1:7878")?;
    let server = Server::builder()
        .add_service(CalculatorServer::new(Calc::default()))
        .add_service(SeedObjectsServer::new(Seeds::default()))
        .add_service(MarketServer::new(Exchange))
        .bind(addr.as_str())
        .await?;
    println!(
        "serving Calculator, SeedObjects and Market on {}",
        server.local_addr()
    );
    println!(
        "in another terminal: cargo run -p rpc-examples --bin client -- --addr {}",
        server.local_addr()
    );
    server
        .serve_with_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            println!("shutting down");
        })
        .await?;
    println!("stopped");
    Ok(())
}
