use rpc_core::{Streaming, rpc_service};

#[rpc_service]
pub trait Feed {
    #[rpc(idempotent)]
    async fn ticks(&self, count: u32) -> Streaming<u32>;
    #[rpc(idempotent)]
    async fn upload(&self, chunks: Streaming<Vec<u8>>) -> u64;
    #[rpc(idempotent = true)]
    async fn valued(&self) -> u32;
    #[rpc(idempotent, idempotent)]
    async fn twice(&self) -> u32;
    #[rpc(idempotent)]
    async fn fine(&self) -> u32;
}

fn main() {}
