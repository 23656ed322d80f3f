use rpc_core::rpc_service;

#[rpc_service]
pub trait Store {
    async fn put<T>(&self, value: T) -> bool;
}

fn main() {}
