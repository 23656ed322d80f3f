use rpc_core::rpc_service;

#[rpc_service]
pub trait Factory {
    #[rpc(name = "")]
    async fn empty(&self);
    #[rpc(name = "twin")]
    async fn first(&self);
    #[rpc(name = "twin")]
    async fn second(&self);
    #[rpc(named = "x")]
    async fn unknown(&self);
    #[rpc(name = twin)]
    async fn unquoted(&self);
}

fn main() {}
