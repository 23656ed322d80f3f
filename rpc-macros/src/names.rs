//! Every name the expansion invents: generated types, wire names, locals
//! and the paths into the runtime.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{Ident, LitStr};

use crate::args::Args;
use crate::model::{Method, Service};

/// Inherent methods of the generated client that a trait method would clash with.
pub(crate) const RESERVED_CLIENT_METHODS: &[&str] = &["new", "connect"];

/// The names one service expands to.
pub(crate) struct Names {
    /// The runtime crate: `::rpc_core` or the `crate = "..."` argument.
    pub(crate) root: TokenStream,
    /// The runtime's hidden module for generated code.
    pub(crate) private: TokenStream,
    /// The trait's name.
    pub(crate) service: Ident,
    /// `<Trait>Client`.
    pub(crate) client: Ident,
    /// `<Trait>BlockingClient`.
    pub(crate) blocking: Ident,
    /// `<Trait>Server`.
    pub(crate) server: Ident,
    /// The service's name on the wire: the trait's, or `name = "..."`.
    pub(crate) wire_service: LitStr,
}

impl Names {
    pub(crate) fn new(service: &Service<'_>, args: &Args) -> Names {
        let root = match &args.krate {
            Some(path) => quote!(#path),
            None => quote!(::rpc_core),
        };
        let private = quote!(#root::__private);
        let ident = &service.original.ident;
        let bare = ident.unraw();
        Names {
            root,
            private,
            service: ident.clone(),
            client: format_ident!("{}Client", bare, span = ident.span()),
            blocking: format_ident!("{}BlockingClient", bare, span = ident.span()),
            server: format_ident!("{}Server", bare, span = ident.span()),
            wire_service: match &args.name {
                Some(name) => name.clone(),
                None => LitStr::new(&bare.to_string(), ident.span()),
            },
        }
    }

    /// A method's name on the wire: `#[rpc(name = "...")]`, or its
    /// identifier without any `r#`.
    pub(crate) fn wire_method(method: &Method<'_>) -> LitStr {
        match &method.args_of_rpc.name {
            Some(name) => name.clone(),
            None => LitStr::new(&method.ident.unraw().to_string(), method.ident.span()),
        }
    }

    /// A per-method item of the generated code: `__rpc_{what}_` then the
    /// trait's name with its length, then the method's, so that no other
    /// trait and method of the module make the same name (`Foo`'s
    /// `bar_baz` and `Foo_bar`'s `baz`), and `what` before them, so that no
    /// method's name makes another item's (`m_visitor` and `m`'s visitor).
    pub(crate) fn generated(&self, what: &str, method: &Method<'_>) -> Ident {
        let service = self.service.unraw().to_string();
        format_ident!(
            "__rpc_{what}_{}_{}_{}",
            service.len(),
            service,
            method.ident.unraw()
        )
    }

    /// A local of the generated code that user tokens can neither see nor
    /// shadow, whatever the user's arguments are called.
    pub(crate) fn local(name: &str) -> Ident {
        Ident::new(name, Span::mixed_site())
    }
}
