use rpc_core::rpc_service;

#[rpc_service]
pub trait Factory {
    async fn connect(&self) -> bool;
}

fn main() {}
