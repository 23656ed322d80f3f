use rpc_core::{Rejection, rpc_service};

pub struct Opaque;

#[derive(Debug)]
pub struct Oops;

#[rpc_service]
pub trait Vault {
    async fn fetch(&self) -> Opaque;
    async fn maybe(&self) -> Result<u8, Oops>;
    async fn guarded(&self) -> Result<Opaque, Rejection>;
}

fn main() {}
