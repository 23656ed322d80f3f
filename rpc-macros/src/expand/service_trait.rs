//! The trait again, each `async fn` turned into a method returning a `Send`
//! future, so that handlers can run on a multi-threaded runtime while
//! implementors still write plain `async fn`.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::{ReturnType, TraitItem, parse_quote_spanned};

use crate::model::Service;
use crate::names::Names;

pub(crate) fn emit(service: &Service<'_>, _names: &Names) -> TokenStream {
    let mut item = service.original.clone();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            // `#[rpc(...)]` is the macro's, not an attribute rustc knows.
            f.attrs.retain(|attr| !crate::method_args::is_rpc(attr));
            let span = f.sig.ident.span();
            let output = match &f.sig.output {
                ReturnType::Default => quote!(()),
                ReturnType::Type(_, ty) => ty.to_token_stream(),
            };
            f.sig.asyncness = None;
            f.sig.output = parse_quote_spanned! {span=>
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
            };
        }
    }
    item.into_token_stream()
}
