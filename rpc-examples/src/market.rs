//! The `Market` service: streams of all three shapes beside a unary
//! method, served by the `server` and `market` examples.

use futures::StreamExt;
use rpc_core::{Streaming, rpc_service};
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

/// The example market: made-up prices, the same every time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exchange;

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
