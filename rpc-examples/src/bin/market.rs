//! Streams, all three shapes, server and client in one process: a feed of
//! ticks from the server, an upload to it, and an echo both ways, beside a
//! plain unary call. Prints what flows.

use futures::StreamExt;
use rpc_core::{RpcError, Server, Streaming, rpc_service};
use serde::{Deserialize, Serialize};

/// One price change of a symbol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// The symbol traded.
    pub symbol: String,
    /// Its place in the feed, from 0.
    pub seq: u32,
    /// The price.
    pub price: f64,
}

/// Why a market call failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MarketError {
    /// The market does not trade this symbol.
    UnknownSymbol(String),
}

/// A small market.
#[rpc_service]
pub trait Market {
    /// Server streaming: `count` ticks of `symbol`.
    async fn ticks(&self, symbol: String, count: u32) -> Streaming<Tick>;
    /// Server streaming that can fail before it starts.
    async fn history(&self, symbol: String) -> Result<Streaming<Tick>, MarketError>;
    /// Client streaming: the bytes of every chunk, counted.
    async fn upload(&self, name: String, chunks: Streaming<Vec<u8>>) -> u64;
    /// Bidirectional: every line back, upper-cased.
    async fn echo(&self, input: Streaming<String>) -> Streaming<String>;
    /// Unary, beside the streaming methods.
    async fn price(&self, symbol: String) -> f64;
}

struct Exchange;

fn tick(symbol: &str, seq: u32) -> Tick {
    Tick {
        symbol: symbol.to_owned(),
        seq,
        price: 100.0 + f64::from(seq) / 4.0,
    }
}

impl Market for Exchange {
    async fn ticks(&self, symbol: String, count: u32) -> Streaming<Tick> {
        Streaming::from_iter((0..count).map(move |seq| tick(&symbol, seq)))
    }

    async fn history(&self, symbol: String) -> Result<Streaming<Tick>, MarketError> {
        if symbol != "ACME" {
            return Err(MarketError::UnknownSymbol(symbol));
        }
        Ok(Streaming::from_iter(
            (0..3).map(move |seq| tick(&symbol, seq)),
        ))
    }

    async fn upload(&self, name: String, mut chunks: Streaming<Vec<u8>>) -> u64 {
        let mut total = 0;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => total += chunk.len() as u64,
                Err(e) => {
                    eprintln!("upload of {name} broke off: {e}");
                    break;
                }
            }
        }
        total
    }

    async fn echo(&self, mut input: Streaming<String>) -> Streaming<String> {
        // `send` waits while the client reads slowly: the channel holds 16.
        let (tx, out) = Streaming::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(line)) = input.next().await {
                if tx.send(line.to_uppercase()).await.is_err() {
                    break; // the client went away
                }
            }
        });
        out
    }

    async fn price(&self, symbol: String) -> f64 {
        tick(&symbol, 0).price
    }
}

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
