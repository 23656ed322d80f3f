//! parse -> validate -> emit, and what to emit when a step fails.

mod answer;
mod args;
mod blocking;
mod client;
mod describe;
mod server;
mod service_trait;

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::Item;

use crate::args::Args;
use crate::errors::Errors;
use crate::model::Service;
use crate::names::Names;
use crate::validate;

/// The whole expansion of `#[rpc_service(args)] item`.
pub(crate) fn rpc_service(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = Args::parse(args).unwrap_or_else(|e| {
        errors.add(e);
        Args::default()
    });
    let parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.add(e);
            return with_errors(item, errors);
        }
    };
    let Item::Trait(trait_item) = &parsed else {
        errors.push(item_head(&parsed), not_a_trait(&parsed));
        return with_errors(item, errors);
    };
    let service = Service::from_syn(trait_item, &mut errors);
    validate::check(&service, &mut errors);
    if let Err(e) = errors.finish() {
        let errors = e.to_compile_error();
        // The trait without the `#[rpc]`s, which rustc would report as
        // unknown attributes on top of the real errors.
        let mut item = trait_item.clone();
        for trait_item in &mut item.items {
            if let syn::TraitItem::Fn(f) = trait_item {
                f.attrs.retain(|attr| !crate::method_args::is_rpc(attr));
            }
        }
        return quote!(#item #errors);
    }
    let names = Names::new(&service, &args);
    let service_trait = service_trait::emit(&service, &names);
    let client = client::emit(&service, &names);
    let args = args::emit(&service, &names);
    let answers = answer::emit(&service, &names);
    let blocking = blocking::emit(&service, &names);
    let server = server::emit(&service, &names);
    let describe = describe::emit(&service, &names);
    quote! {
        #service_trait
        #describe
        #args
        #answers
        #client
        #blocking
        #server
    }
}

/// The user's item unchanged plus the errors, so that code using the trait
/// reports no errors of its own on top of the real ones.
fn with_errors(item: TokenStream, errors: Errors) -> TokenStream {
    let errors = errors.finish().err().map(|e| e.to_compile_error());
    quote!(#item #errors)
}

/// The keyword and name that say what the item is: the smallest tokens to
/// point at.
fn item_head(item: &Item) -> TokenStream {
    let mut head = TokenStream::new();
    match item {
        Item::Struct(s) => {
            s.struct_token.to_tokens(&mut head);
            s.ident.to_tokens(&mut head);
        }
        Item::Enum(e) => {
            e.enum_token.to_tokens(&mut head);
            e.ident.to_tokens(&mut head);
        }
        Item::Fn(f) => {
            f.sig.fn_token.to_tokens(&mut head);
            f.sig.ident.to_tokens(&mut head);
        }
        Item::Impl(i) => {
            i.impl_token.to_tokens(&mut head);
            i.self_ty.to_tokens(&mut head);
        }
        Item::Mod(m) => {
            m.mod_token.to_tokens(&mut head);
            m.ident.to_tokens(&mut head);
        }
        other => other.to_tokens(&mut head),
    }
    head
}

fn not_a_trait(item: &Item) -> String {
    let what = match item {
        Item::Struct(_) => "a struct",
        Item::Enum(_) => "an enum",
        Item::Fn(_) => "a function",
        Item::Impl(_) => "an impl block",
        Item::Mod(_) => "a module",
        _ => "this item",
    };
    format!(
        "`#[rpc_service]` goes on a trait, not on {what}; write `pub trait Name {{ async fn method(&self, ...) -> T; }}`"
    )
}
