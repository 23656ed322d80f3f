use rpc_core::rpc_service;

#[rpc_service]
pub trait Store<T> {
    async fn len(&self) -> u64;
}

fn main() {}
