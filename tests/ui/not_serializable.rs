use rpc_core::rpc_service;

pub struct Opaque;

#[rpc_service]
pub trait Vault {
    async fn store(&self, item: Opaque) -> bool;
}

fn main() {}
