//! The attribute's own arguments: `#[rpc_service]` or
//! `#[rpc_service(crate = "path::to::rpc_core")]`.

use proc_macro2::TokenStream;
use syn::parse::Parser;

use crate::errors::Errors;

/// What the attribute was given.
#[derive(Default)]
pub(crate) struct Args {
    /// Where the runtime is, when not at `::rpc_core` (a re-export).
    pub(crate) krate: Option<syn::Path>,
}

impl Args {
    /// Parses the arguments, reporting unknown and repeated keys.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                let value: syn::LitStr = meta.value()?.parse()?;
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
                    "unknown argument `{name}`; `#[rpc_service]` accepts only `crate = \"path::to::rpc_core\"`"
                )))
            }
        });
        parser.parse2(tokens)?;
        errors.finish()?;
        Ok(args)
    }
}
