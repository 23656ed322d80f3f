use rpc_core::rpc_service;

pub struct Opaque;

/// Encodes, but cannot be decoded.
#[derive(serde::Serialize)]
pub struct HalfWay;

#[rpc_service]
pub trait Vault {
    async fn store(&self, item: Opaque) -> bool;
    async fn send(&self, id: u32, item: HalfWay) -> bool;
}

fn main() {}
