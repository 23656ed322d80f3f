//! One struct per method holding its arguments as they travel, with
//! serde impls written out here: it encodes exactly as the tuple of the
//! arguments would (bincode writes a tuple's elements one after the
//! other), but a type that is not `Serialize` or `Deserialize` fails inside
//! these impls, at that type, instead of at every generic function the
//! tuple passes through (four errors at `#[rpc_service]` naming the
//! runtime's internals, before).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::Ident;
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::model::{Method, Service};
use crate::names::Names;

/// The name of `method`'s argument struct.
pub(crate) fn ident(names: &Names, method: &Method<'_>) -> Ident {
    names.generated("args", method)
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
    let visitor = names.generated("visitor", method);
    // A generic parameter the user's types cannot be named.
    let seq_access = Names::local("__RpcSeq");
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
    let impls = serde_impls(
        &name,
        &cfgs,
        private,
        quote! {
            let mut tuple = #private::Serializer::serialize_tuple(serializer, #len)?;
            #(#serialize)*
            #private::SerializeTuple::end(tuple)
        },
        quote!(#private::Deserializer::deserialize_tuple(deserializer, #len, #visitor)),
    );
    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #name(#(#types),*);


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

        #impls
    }
}

/// `name`'s `Serialize` and `Deserialize`, whose bodies are `serialize`
/// (of `self` into `serializer`) and `deserialize` (from `deserializer`).
pub(super) fn serde_impls(
    name: &Ident,
    cfgs: &[&syn::Attribute],
    private: &TokenStream,
    serialize: TokenStream,
    deserialize: TokenStream,
) -> TokenStream {
    let (ser, de) = (
        Names::local("__RpcSerializer"),
        Names::local("__RpcDeserializer"),
    );
    quote! {
        #(#cfgs)*
        impl #private::SerdeSerialize for #name {
            fn serialize<#ser: #private::Serializer>(
                &self,
                serializer: #ser,
            ) -> ::core::result::Result<#ser::Ok, #ser::Error> {
                #serialize
            }
        }

        #(#cfgs)*
        impl<'de> #private::SerdeDeserialize<'de> for #name {
            fn deserialize<#de: #private::Deserializer<'de>>(
                deserializer: #de,
            ) -> ::core::result::Result<Self, #de::Error> {
                #deserialize
            }
        }
    }
}
