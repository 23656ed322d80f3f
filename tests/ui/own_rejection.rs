use rpc_core::rpc_service;
use serde::{Deserialize, Serialize};

/// The user's own type, which happens to share rpc_core's refusal's name.
#[derive(Serialize, Deserialize)]
pub struct Rejection;

#[rpc_service]
pub trait Gate {
    async fn open(&self) -> Result<u32, Rejection>;
}

fn main() {}
