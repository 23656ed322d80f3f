use rpc_core::{rpc_service, Streaming};

#[rpc_service]
pub trait Sync2 {
    async fn merge(&self, left: Streaming<u32>, right: Streaming<u32>) -> u64;
}

fn main() {}
