use rpc_core::rpc_service;

#[rpc_service]
pub trait Calculator {
    async fn add(&mut self, a: i64, b: i64) -> i64;
}

fn main() {}
