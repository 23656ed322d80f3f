//! Streams, all three shapes, server and client in one process: a feed of
//! ticks from the server, an upload to it, and an echo both ways, beside a
//! plain unary call. Prints what flows.

use futures::StreamExt;
use rpc_core::{RpcError, Server, Streaming};
use rpc_examples::market::{Exchange, MarketClient, MarketServer};

#[tokio::main]
async fn main() -> Result<(), RpcError> {
    rpc_examples::init_logging();
    let server = Server::builder()
        .add_service(MarketServer::new(Exchange))
        .bind("127.0.0.1:0")
        .await?;
    let addr = server.local_addr();
    println!("market server listening on {addr}");
    tokio::spawn(server.serve());
    let client = MarketClient::connect(addr).await?;

    println!("price(ACME) = {}", client.price("ACME".into()).await?);

    let mut ticks = client.ticks("ACME".into(), 5).await?;
    while let Some(tick) = ticks.next().await {
        let tick = tick?;
        println!("tick {} {} at {}", tick.symbol, tick.seq, tick.price);
    }

    match client.history("NOPE".into()).await? {
        Ok(_) => println!("history(NOPE): a stream?"),
        Err(e) => println!("history(NOPE) = Err({e:?})"),
    }
    if let Ok(history) = client.history("ACME".into()).await? {
        let seqs: Vec<u32> = history
            .filter_map(|t| async move { t.ok().map(|t| t.seq) })
            .collect()
            .await;
        println!("history(ACME) = ticks {seqs:?}");
    }

    // 16 MiB in 64 KiB chunks, sent as fast as the server grants credit.
    let chunks = (0..256).map(|i| vec![i as u8; 64 * 1024]);
    let total = client
        .upload("data.bin".into(), Streaming::from_iter(chunks))
        .await?;
    println!("upload(data.bin) = {total} bytes");

    let lines = ["hello", "streaming", "world"].map(String::from);
    let mut echoed = client.echo(Streaming::from_iter(lines)).await?;
    while let Some(line) = echoed.next().await {
        println!("echo: {}", line?);
    }
    Ok(())
}
