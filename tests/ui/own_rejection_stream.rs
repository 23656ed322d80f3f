use rpc_core::{rpc_service, Streaming};

/// The user's own type, which happens to share rpc_core's refusal's name.
pub struct Rejection;

#[rpc_service]
pub trait Gate {
    async fn watch(&self) -> Result<Streaming<u32>, Rejection>;
}

fn main() {}
