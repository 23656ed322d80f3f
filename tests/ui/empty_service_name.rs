use rpc_core::rpc_service;

#[rpc_service(name = "")]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
