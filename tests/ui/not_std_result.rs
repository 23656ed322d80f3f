use rpc_core::rpc_service;

/// A type of the user's own that is named like std's.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum Result<A, B> {
    Yes(A),
    No(B),
}

#[rpc_service]
pub trait Odd {
    async fn get(&self) -> Result<u8, u16>;
}

fn main() {}
