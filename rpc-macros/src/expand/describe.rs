//! The generated server's `Service::description`: the methods' names, doc
//! comments, argument names and types as written, and a function per
//! method that traces their serde formats, for the server's introspection.
//! Built only when asked; calls pay nothing for it.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote};
use syn::ext::IdentExt;
use syn::{Attribute, Ident, Type};

use crate::model::{Method, Service, is_byte_vec};
use crate::names::Names;
use crate::streams::{self, Returns};

/// The function that describes the service, and the `static` of its
/// schemas that the client claims (docs/EVOLUTION.md), beside the trait.
pub(crate) fn emit(service: &Service<'_>, names: &Names) -> TokenStream {
    let private = &names.private;
    let doc = doc_text(&service.original.attrs);
    let methods = service
        .methods
        .iter()
        .map(|m| emit_method(m, names, private));
    let describe = function(names);
    let schemas = schemas(names);
    quote! {
        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #describe() -> #private::Description {
            #private::Description {
                doc: #doc,
                methods: ::std::vec![#(#methods),*],
            }
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #schemas: #private::Local = #private::Local::new(#describe);
    }
}

/// The name of the function that describes the service. The trait's name
/// goes in with its length, as in the argument structs' names.
pub(crate) fn function(names: &Names) -> Ident {
    let service = names.service.unraw().to_string();
    format_ident!("__rpc_describe_{}_{}", service.len(), service)
}

/// The name of the `static` of the service's schemas.
pub(crate) fn schemas(names: &Names) -> Ident {
    let service = names.service.unraw().to_string();
    format_ident!("__rpc_schemas_{}_{}", service.len(), service)
}

fn emit_method(method: &Method<'_>, names: &Names, private: &TokenStream) -> TokenStream {
    let name = Names::wire_method(method);
    let cfgs = method.cfgs();
    let doc = doc_text(&method.original.attrs);
    let plain: Vec<_> = method.args.iter().filter(|a| !a.is_stream()).collect();
    let arg_names = plain
        .iter()
        .map(|a| a.ident.map(|i| i.unraw().to_string()).unwrap_or_default());
    let arg_texts = plain.iter().map(|a| text(a.ty));
    // Traced as the method's argument struct, whose serde impls hold any
    // error about a type (see args.rs): traced type by type, a type that
    // is not `Deserialize` was one more error.
    let args_struct = super::args::ident(names, method);
    let (stream_arg, stream_format) = match method
        .args
        .iter()
        .enumerate()
        .find_map(|(position, a)| Some((a.ident?, streams::item_of(a.ty)?, position)))
    {
        Some((ident, item, position)) => {
            let (ident, item_text, item_wire) =
                (ident.unraw().to_string(), text(item), wire(item, private));
            (
                quote!(::core::option::Option::Some((#ident, #item_text, #position))),
                quote!(::core::option::Option::Some(tracer.trace_type::<#item_wire>(samples)?.0)),
            )
        }
        None => (
            quote!(::core::option::Option::None),
            quote!(::core::option::Option::None),
        ),
    };
    let returns_text = method.answer.map_or_else(|| "()".to_owned(), text);
    let (returns_stream, returns, returns_error) = match streams::returns(method.answer) {
        Returns::Value => (false, super::answer::wire_type(names, method), None),
        Returns::Stream(item) => (true, wire(item, private), None),
        Returns::StreamOrError(item, error) => {
            (true, wire(item, private), Some(wire(error, private)))
        }
    };
    // The error of a `Result<T, E>` answer is traced first, alone: met only
    // inside `Result`'s second variant, an enum `E` is seen once and keeps
    // the provisional variant index serde-reflection gave it.
    // Where a unary answer's error travels in a struct, it is traced in it
    // (see answer.rs).
    let error_first = method
        .answer
        .and_then(|ty| streams::last_args(ty, "Result"))
        .and_then(|args| match args[..] {
            [_, _] if super::answer::splits(method) => {
                let error = super::answer::error_ident(names, method);
                Some(quote!(#error))
            }
            [_, error] => Some(wire(error, private)),
            _ => None,
        })
        .map(|error| quote!(tracer.trace_type::<#error>(samples)?;));
    let returns_error = match returns_error {
        Some(error) => {
            quote!(::core::option::Option::Some(tracer.trace_type::<#error>(samples)?.0))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #(#cfgs)*
        #private::MethodDescription {
            name: #name,
            doc: #doc,
            args: ::std::vec![#((#arg_names, #arg_texts)),*],
            stream_arg: #stream_arg,
            returns: #returns_text,
            returns_stream: #returns_stream,
            trace: |tracer, samples| {
                #error_first
                ::core::result::Result::Ok(#private::MethodFormats {
                    args: #private::elements(tracer.trace_type::<#args_struct>(samples)?.0),
                    stream_arg: #stream_format,
                    returns: tracer.trace_type::<#returns>(samples)?.0,
                    returns_error: #returns_error,
                })
            },
        }
    }
}

/// A type as it travels: `Vec<u8>` as bytes.
fn wire(ty: &Type, private: &TokenStream) -> TokenStream {
    if is_byte_vec(ty) {
        quote!(#private::ByteBuf)
    } else {
        quote!(#ty)
    }
}

/// A type as written, without the spaces tokens print with.
fn text(ty: &Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" ,", ","),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        (" ;", ";"),
    ] {
        text = text.replace(from, to);
    }
    text
}

/// The doc comment, its lines joined, each trimmed of the one space
/// `///` leaves.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').unwrap_or(&line).to_owned())
        .collect();
    lines.join("\n").trim().to_owned()
}
