//! One struct per method holding its arguments as they travel, with
//! serde impls written out here: it encodes exactly as the tuple of the
//! arguments would (bincode writes a tuple's elements one after the
//! other), but a type that is not `Serialize` or `Deserialize` fails inside
//! these impls, at that type, instead of at every generic function the
//! tuple passes through (four errors at `#[rpc_service]` naming the
//! runtime's internals, before).

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::model::{Method, Service};
use crate::names::Names;

/// The name of `method`'s argument struct. The trait's name goes in with
/// its length, so that no other trait and method of the module make the
/// same name (`Foo`'s `bar_baz` and `Foo_bar`'s `baz`).
pub(crate) fn ident(names: &Names, method: &Method<'_>) -> Ident {
    let service = names.service.unraw().to_string();
    format_ident!(
        "__rpc_args_{}_{}_{}",
        service.len(),
        service,
        method.ident.unraw()
    )
}

/// `method`'s argument struct's visitor, beside it: named with a prefix
/// of its own, as a suffix would name the arguments of a method called
/// `m_visitor` the same as `m`'s visitor.
fn visitor(names: &Names, method: &Method<'_>) -> Ident {
    let service = names.service.unraw().to_string();
    format_ident!(
        "__rpc_visitor_{}_{}_{}",
        service.len(),
        service,
        method.ident.unraw()
    )
}

/// The types of the fields: the arguments besides a stream, `Vec<u8>` as
/// bytes.
pub(crate) fn field_types(method: &Method<'_>, private: &TokenStream) -> Vec<TokenStream> {
    method
        .args
        .iter()
        .filter(|arg| !arg.is_stream())
        .map(|arg| {
            if arg.is_bytes() {
                quote!(#private::ByteBuf)
            } else {
                let ty = arg.ty;
                quote!(#ty)
            }
        })
        .collect()
}

pub(crate) fn emit(service: &Service<'_>, names: &Names) -> TokenStream {
    service
        .methods
        .iter()
        .map(|method| emit_one(method, names))
        .collect()
}

fn emit_one(method: &Method<'_>, names: &Names) -> TokenStream {
    let private = &names.private;
    let name = ident(names, method);
    let visitor = visitor(names, method);
    // Generic parameters and locals the user's types cannot be named.
    let (ser, de, seq_access) = (
        Names::local("__RpcSerializer"),
        Names::local("__RpcDeserializer"),
        Names::local("__RpcSeq"),
    );
    let cfgs: Vec<_> = method.cfgs().collect();
    let types = field_types(method, private);
    // The user's types, for spans: an error about one points at it.
    let spans: Vec<_> = method
        .args
        .iter()
        .filter(|arg| !arg.is_stream())
        .map(|arg| arg.ty.span())
        .collect();
    let len = types.len();
    let serialize = types.iter().zip(&spans).enumerate().map(|(i, (ty, span))| {
        let i = syn::Index {
            index: i as u32,
            span: *span,
        };
        quote_spanned! {*span=>
            #private::arg::<#ty, _>(#private::Put(&mut tuple, &self.#i))?;
        }
    });
    let deserialize = types.iter().zip(&spans).enumerate().map(|(i, (ty, span))| {
        quote_spanned! {*span=>
            match #private::arg::<#ty, _>(#private::Take::new(&mut seq))? {
                ::core::option::Option::Some(value) => value,
                ::core::option::Option::None => {
                    return ::core::result::Result::Err(
                        <#seq_access::Error as #private::DeError>::invalid_length(#i, &self),
                    );
                }
            }
        }
    });
    let expecting = format!("the {len} arguments of {}", method.ident.unraw());
    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #name(#(#types),*);

        #(#cfgs)*
        impl #private::SerdeSerialize for #name {
            fn serialize<#ser: #private::Serializer>(
                &self,
                serializer: #ser,
            ) -> ::core::result::Result<#ser::Ok, #ser::Error> {
                let mut tuple = #private::Serializer::serialize_tuple(serializer, #len)?;
                #(#serialize)*
                #private::SerializeTuple::end(tuple)
            }
        }

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #visitor;

        #(#cfgs)*
        impl<'de> #private::Visitor<'de> for #visitor {
            type Value = #name;
            fn expecting(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(#expecting)
            }
            #[allow(unused_mut)]
            fn visit_seq<#seq_access: #private::SeqAccess<'de>>(
                self,
                mut seq: #seq_access,
            ) -> ::core::result::Result<#name, #seq_access::Error> {
                ::core::result::Result::Ok(#name(#(#deserialize),*))
            }
        }

        #(#cfgs)*
        impl<'de> #private::SerdeDeserialize<'de> for #name {
            fn deserialize<#de: #private::Deserializer<'de>>(
                deserializer: #de,
            ) -> ::core::result::Result<Self, #de::Error> {
                #private::Deserializer::deserialize_tuple(deserializer, #len, #visitor)
            }
        }
    }
}
