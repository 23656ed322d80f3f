use rpc_core::rpc_service;

#[rpc_service]
pub trait Feed {
    async fn ticks(&self) -> impl futures::Stream<Item = u32>;
}

fn main() {}
