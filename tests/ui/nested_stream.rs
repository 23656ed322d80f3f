use rpc_core::{rpc_service, Streaming};

#[rpc_service]
pub trait Feeds {
    async fn maybe(&self, input: Option<Streaming<u32>>) -> u64;
    async fn pair(&self) -> (Streaming<u32>, u64);
    async fn many(&self) -> Result<Vec<Streaming<u32>>, String>;
}

fn main() {}
