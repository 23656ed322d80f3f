//! One struct per unary method holding its answer as it travels, and one
//! for the error of a `Result<T, E>` answer, which the description traces
//! alone. Their serde impls hand the value straight through (the bytes and
//! the traced format are the answer's own), through the same function as
//! the arguments' (see args.rs): a type that is not `Serialize` or
//! `Deserialize` is then one error, at that type, instead of one at every
//! generic function of the runtime the answer passes through (five, some
//! at `#[rpc_service]`, before).

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Ident;
use syn::spanned::Spanned;

use crate::model::{Method, Service, is_byte_vec};
use crate::names::Names;
use crate::streams::{self, Returns};

/// The name of `method`'s answer struct.
fn ident(names: &Names, method: &Method<'_>) -> Ident {
    names.generated("answer", method)
}

/// The names of the structs of the value and the error of `method`'s
/// `Result<T, E>` answer.
fn result_idents(names: &Names, method: &Method<'_>) -> (Ident, Ident) {
    (names.generated("ok", method), error_ident(names, method))
}

/// The name of the struct of the error of `method`'s `Result<T, E>` answer.
pub(crate) fn error_ident(names: &Names, method: &Method<'_>) -> Ident {
    names.generated("error", method)
}

/// Whether `method` answers once (it returns no stream), and so has an
/// answer struct.
pub(crate) fn is_unary(method: &Method<'_>) -> bool {
    matches!(streams::returns(method.answer), Returns::Value)
}

/// Whether `method`'s answer travels as a `Result` of two structs: it is
/// written `Result<T, E>`, `std::result::Result<T, E>` or
/// `core::result::Result<T, E>` (a `Result` by another path is a value of
/// its own; one of these names that is not std's is one error, at it).
pub(crate) fn splits(method: &Method<'_>) -> bool {
    result_of(method).is_some()
}

fn result_of<'a>(method: &Method<'a>) -> Option<(&'a syn::Type, &'a syn::Type)> {
    let ty = method.answer?;
    let syn::Type::Path(path) = ty else {
        return None;
    };
    let names: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    let std = match &names[..] {
        [only] => only == "Result",
        [root, module, last] => {
            (root == "std" || root == "core") && module == "result" && last == "Result"
        }
        _ => false,
    };
    if path.qself.is_some() || !std || !is_unary(method) {
        return None;
    }
    match streams::last_args(ty, "Result")?[..] {
        [value, error] => Some((value, error)),
        _ => None,
    }
}

/// What a unary answer travels as: its struct, or for `Result<T, E>` a
/// `Result` of the structs of `T` and `E`, so that each is checked at its
/// own type (and serde's impl for `Result` writes and traces it as
/// before).
pub(crate) fn wire_type(names: &Names, method: &Method<'_>) -> TokenStream {
    if result_of(method).is_some() {
        let (ok, error) = result_idents(names, method);
        quote!(::core::result::Result<#ok, #error>)
    } else {
        let answer = ident(names, method);
        quote!(#answer)
    }
}

/// The handler's `value` as it travels (`Vec<u8>` already as bytes).
pub(crate) fn wrap(names: &Names, method: &Method<'_>, value: TokenStream) -> TokenStream {
    if let Some((t, e)) = result_of(method) {
        let private = &names.private;
        let (ok, error) = result_idents(names, method);
        let answer = method.answer;
        let split = quote_spanned! {answer.span()=>
            #private::result::<#answer, #t, #e, _>(#private::Split(#value))
        };
        quote!(::core::result::Result::map_err(::core::result::Result::map(#split, #ok), #error))
    } else {
        let answer = ident(names, method);
        quote!(#answer(#value))
    }
}

/// A closure from what travels to the caller's answer.
pub(crate) fn unwrap(names: &Names, method: &Method<'_>) -> TokenStream {
    if let Some((t, e)) = result_of(method) {
        let private = &names.private;
        let answer = method.answer;
        let joined = quote!(#private::Join(::core::result::Result::map_err(
            ::core::result::Result::map(__answer, |__ok| __ok.0),
            |__error| __error.0,
        )));
        let join = quote_spanned! {answer.span()=>
            #private::result::<#answer, #t, #e, _>(#joined)
        };
        quote!(|__answer| #join)
    } else if method.returns_bytes() {
        quote!(|__answer| __answer.0.0)
    } else {
        quote!(|__answer| __answer.0)
    }
}

pub(crate) fn emit(service: &Service<'_>, names: &Names) -> TokenStream {
    let private = &names.private;
    service
        .methods
        .iter()
        .filter(|method| is_unary(method))
        .map(|method| {
            let cfgs: Vec<_> = method.cfgs().collect();
            if let Some((value, error)) = result_of(method) {
                let (ok_name, error_name) = result_idents(names, method);
                let ok = carrier(&ok_name, &quote!(#value), value.span(), &cfgs, private);
                let error = carrier(&error_name, &quote!(#error), error.span(), &cfgs, private);
                return quote!(#ok #error);
            }
            // What travels: `()` for no answer, bytes for `Vec<u8>`.
            let (ty, span) = match method.answer {
                Some(ty) if is_byte_vec(ty) => (quote!(#private::ByteBuf), ty.span()),
                Some(ty) => (quote!(#ty), ty.span()),
                None => (quote!(()), Span::call_site()),
            };
            carrier(&ident(names, method), &ty, span, &cfgs, private)
        })
        .collect()
}

/// A struct `name` holding a `ty`, serialized as the `ty` itself.
fn carrier(
    name: &Ident,
    ty: &TokenStream,
    span: Span,
    cfgs: &[&syn::Attribute],
    private: &TokenStream,
) -> TokenStream {
    let serialize = quote_spanned! {span=>
        #private::arg::<#ty, _>(#private::Whole(serializer, &self.0))
    };
    let deserialize = quote_spanned! {span=>
        #private::arg::<#ty, _>(#private::Read::new(deserializer))
    };
    let impls = super::args::serde_impls(
        name,
        cfgs,
        private,
        serialize,
        quote!(::core::result::Result::map(#deserialize, #name)),
    );
    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #name(#ty);

        #impls
    }
}
