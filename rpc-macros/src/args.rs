//! The attribute's own arguments: `#[rpc_service]`,
//! `#[rpc_service(name = "Wire")]`,
//! `#[rpc_service(crate = "path::to::rpc_core")]`, or both.

use proc_macro2::TokenStream;
use syn::parse::Parser;

use crate::errors::Errors;

/// What the attribute was given.
#[derive(Default)]
pub(crate) struct Args {
    /// Where the runtime is, when not at `::rpc_core` (a re-export).
    pub(crate) krate: Option<syn::Path>,
    /// The service's name on the wire, when not the trait's.
    pub(crate) name: Option<syn::LitStr>,
}

/// The value of `key = "..."`; a value without quotes is an error that
/// says to quote it.
pub(crate) fn string(
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<syn::LitStr> {
    let value = meta.value()?;
    if value.peek(syn::LitStr) {
        return value.parse();
    }
    let unquoted: syn::Expr = value.parse()?;
    let written = quote::ToTokens::to_token_stream(&unquoted)
        .to_string()
        .replace(' ', "");
    let example = if written.is_empty() {
        example
    } else {
        &written
    };
    Err(syn::Error::new_spanned(
        &unquoted,
        format!("`{key}` takes a string; quote it: `{key} = \"{example}\"`"),
    ))
}

/// A wire name (`name = "..."` of a service or a method) is 1 to 255
/// bytes; `leave_out` and `default` say how to get the default instead.
pub(crate) fn check_wire_name(
    value: &syn::LitStr,
    what: &str,
    leave_out: &str,
    default: &str,
    errors: &mut Errors,
) {
    let name = value.value();
    if name.is_empty() {
        errors.push(
            value,
            format!("a {what} name cannot be empty; write one, or leave {leave_out} out to use {default}"),
        );
    } else if name.len() > 255 {
        errors.push(
            value,
            format!(
                "a {what} name is at most 255 bytes on the wire, this one {}; write a shorter one",
                name.len()
            ),
        );
    }
}

impl Args {
    /// Parses the arguments, reporting unknown and repeated keys.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                let value = string(&meta, "name", "Calculator")?;
                check_wire_name(&value, "service", "`name`", "the trait's", &mut errors);
                if args.name.replace(value).is_some() {
                    errors.push(&meta.path, "`name` is given twice; keep one");
                }
                Ok(())
            } else if meta.path.is_ident("crate") {
                let value = string(&meta, "crate", "my_crate::rpc_core")?;
                let path = value.parse::<syn::Path>().map_err(|_| {
                    syn::Error::new_spanned(
                        &value,
                        "`crate` takes a path in a string; write `crate = \"my_crate::rpc_core\"`",
                    )
                })?;
                if args.krate.replace(path).is_some() {
                    errors.push(&meta.path, "`crate` is given twice; keep one");
                }
                Ok(())
            } else {
                let name = quote::ToTokens::to_token_stream(&meta.path).to_string();
                Err(meta.error(format!(
                    "unknown argument `{name}`; `#[rpc_service]` accepts `name = \"WireName\"` and `crate = \"path::to::rpc_core\"`"
                )))
            }
        });
        parser.parse2(tokens)?;
        errors.finish()?;
        Ok(args)
    }
}
