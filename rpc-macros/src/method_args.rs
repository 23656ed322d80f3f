//! A method's own arguments: `#[rpc(name = "wire_name")]` and
//! `#[rpc(idempotent)]` on a trait method.

use syn::Attribute;

use crate::errors::Errors;

/// What a method's `#[rpc(...)]` attributes say.
#[derive(Default)]
pub(crate) struct MethodArgs {
    /// The method's name on the wire, when not its identifier.
    pub(crate) name: Option<syn::LitStr>,
    /// `idempotent`, where it was written: the method may run twice
    /// without harm, so a balanced channel may send it again.
    pub(crate) idempotent: Option<syn::Path>,
}

/// Whether `attr` is one of ours, which the trait the macro emits drops.
pub(crate) fn is_rpc(attr: &Attribute) -> bool {
    attr.path().is_ident("rpc")
}

impl MethodArgs {
    /// Reads every `#[rpc(...)]` of a method, recording what is wrong.
    pub(crate) fn parse(attrs: &[Attribute], errors: &mut Errors) -> MethodArgs {
        let mut args = MethodArgs::default();
        for attr in attrs.iter().filter(|a| is_rpc(a)) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("idempotent") {
                    if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                        return Err(meta.error(
                            "`idempotent` takes no value; write `#[rpc(idempotent)]`",
                        ));
                    }
                    if args.idempotent.replace(meta.path.clone()).is_some() {
                        errors.push(&meta.path, "`idempotent` is given twice; keep one");
                    }
                    return Ok(());
                }
                if !meta.path.is_ident("name") {
                    let key = quote::ToTokens::to_token_stream(&meta.path).to_string();
                    return Err(meta.error(format!(
                        "unknown argument `{key}`; `#[rpc]` accepts `name = \"wire_name\"` and `idempotent`"
                    )));
                }
                let name = crate::args::string(&meta, "name", "wire_name")?;
                crate::args::check_wire_name(
                    &name,
                    "method",
                    "`#[rpc(name)]`",
                    "the method's",
                    errors,
                );
                if args.name.replace(name).is_some() {
                    errors.push(&meta.path, "`name` is given twice; keep one");
                }
                Ok(())
            });
            if let Err(e) = parsed {
                errors.add(e);
            }
        }
        args
    }
}
