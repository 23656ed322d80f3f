//! The `#[rpc_service]` attribute. Use it through `rpc_core`, which
//! re-exports it and documents what it generates.

mod args;
mod errors;
mod expand;
mod method_args;
mod model;
mod names;
mod parse;
mod streams;
mod validate;

use proc_macro::TokenStream;

/// Turns a trait into an RPC service with a typed client and server.
/// Documented on its re-export, `rpc_core::rpc_service`.
#[proc_macro_attribute]
pub fn rpc_service(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::rpc_service(args.into(), item.into()).into()
}
