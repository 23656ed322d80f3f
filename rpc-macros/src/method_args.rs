//! A method's own arguments: `#[rpc(name = "wire_name")]` on a trait method.

use syn::Attribute;

use crate::errors::Errors;

/// What a method's `#[rpc(...)]` attributes say.
#[derive(Default)]
pub(crate) struct MethodArgs {
    /// The method's name on the wire, when not its identifier.
    pub(crate) name: Option<syn::LitStr>,
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
                if !meta.path.is_ident("name") {
                    let key = quote::ToTokens::to_token_stream(&meta.path).to_string();
                    return Err(meta.error(format!(
                        "unknown argument `{key}`; `#[rpc]` accepts `name = \"wire_name\"`"
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
