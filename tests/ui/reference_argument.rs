use rpc_core::rpc_service;

#[rpc_service]
pub trait Greeter {
    async fn greet(&self, name: &str) -> String;
}

fn main() {}
