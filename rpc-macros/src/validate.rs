//! The rules a service trait must follow, one function each. Every message
//! says what to write instead.

use quote::ToTokens;
use syn::{Pat, Type};

use crate::errors::Errors;
use crate::model::{Method, Receiver, Service};
use crate::names::{Names, RESERVED_CLIENT_METHODS};
use crate::streams;

/// Checks every rule, recording each violation.
pub(crate) fn check(service: &Service<'_>, errors: &mut Errors) {
    check_trait(service, errors);
    check_items(service, errors);
    for method in &service.methods {
        check_signature(method, errors);
        check_async(method, errors);
        check_receiver(method, errors);
        check_generics(method, errors);
        check_arg_patterns(method, errors);
        check_types(method, errors);
        check_arity(method, errors);
        check_streams(method, errors);
        check_idempotent(method, errors);
        check_default_body(method, errors);
    }
    check_names(service, errors);
}

fn check_trait(service: &Service<'_>, errors: &mut Errors) {
    let item = service.original;
    if let Some(unsafety) = &item.unsafety {
        errors.push(
            unsafety,
            "an rpc service trait cannot be `unsafe`; remove `unsafe`",
        );
    }
    if let Some(auto) = &item.auto_token {
        errors.push(
            auto,
            "an rpc service trait cannot be an `auto` trait; remove `auto`",
        );
    }
    if !item.generics.params.is_empty() {
        errors.push(
            &item.generics,
            "rpc service traits cannot have generic parameters; name concrete types in the methods",
        );
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.push(
            where_clause,
            "rpc service traits cannot have a `where` clause; remove it",
        );
    }
}

fn check_items(service: &Service<'_>, errors: &mut Errors) {
    for item in &service.other_items {
        let what = match item {
            syn::TraitItem::Type(_) => "associated types",
            syn::TraitItem::Const(_) => "associated consts",
            syn::TraitItem::Macro(_) => "macro invocations",
            _ => "items other than methods",
        };
        errors.push(
            item,
            format!(
                "rpc service traits cannot have {what}; an rpc trait holds only `async fn` methods"
            ),
        );
    }
}

fn check_signature(method: &Method<'_>, errors: &mut Errors) {
    let sig = &method.original.sig;
    if let Some(constness) = &sig.constness {
        errors.push(constness, "rpc methods cannot be `const`; remove `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(unsafety, "rpc methods cannot be `unsafe`; remove `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi, "rpc methods cannot have an `extern` ABI; remove it");
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic, "rpc methods cannot be variadic; remove `...`");
    }
}

fn check_async(method: &Method<'_>, errors: &mut Errors) {
    let sig = &method.original.sig;
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            format!(
                "rpc methods must be `async`; write `async fn {}(&self, ...)`",
                method.ident
            ),
        );
    }
}

fn check_receiver(method: &Method<'_>, errors: &mut Errors) {
    let fix = format!("write `async fn {}(&self, ...)`", method.ident);
    match &method.receiver {
        Receiver::Shared => {}
        Receiver::Exclusive(r) => errors.push(
            r,
            format!("rpc methods take `&self`, not `&mut self`: calls run concurrently, so keep state behind a lock or atomic; {fix}"),
        ),
        Receiver::Owned(r) => errors.push(
            r,
            format!("rpc methods take `&self`, not `self`: the server keeps the service for the next call; {fix}"),
        ),
        Receiver::Typed(r) => errors.push(
            r,
            format!("rpc methods take plain `&self`, not a typed receiver; {fix}"),
        ),
        Receiver::Missing => errors.push(
            &method.original.sig.ident,
            format!("rpc methods take `&self` as their first argument; {fix}"),
        ),
    }
}

fn check_generics(method: &Method<'_>, errors: &mut Errors) {
    let generics = &method.original.sig.generics;
    if !generics.params.is_empty() {
        errors.push(
            generics,
            "rpc methods cannot be generic: the wire needs one concrete type per argument; name concrete types",
        );
    }
    if let Some(where_clause) = &generics.where_clause {
        errors.push(
            where_clause,
            "rpc methods cannot have a `where` clause; remove it",
        );
    }
}

fn check_arg_patterns(method: &Method<'_>, errors: &mut Errors) {
    for arg in &method.args {
        let plain = matches!(
            arg.pat,
            Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none()
        );
        if !plain {
            errors.push(
                arg.pat,
                format!(
                    "rpc arguments must be plain names, such as `arg: {}`; destructure inside the implementation",
                    arg.ty.to_token_stream()
                ),
            );
        }
    }
}

fn check_types(method: &Method<'_>, errors: &mut Errors) {
    for arg in &method.args {
        check_wire_type(arg.ty, "argument", errors);
    }
    if let Some(answer) = method.answer {
        check_wire_type(answer, "return type", errors);
    }
}

/// The arguments travel as one serde tuple, and serde has tuples of at most
/// 16: past that the user saw four trait errors at `#[rpc_service]`.
fn check_arity(method: &Method<'_>, errors: &mut Errors) {
    const MAX_ARGS: usize = 16;
    let mut values = method
        .args
        .iter()
        .filter(|arg| crate::streams::item_of(arg.ty).is_none());
    if let Some(extra) = values.nth(MAX_ARGS) {
        errors.push(
            extra.pat,
            format!(
                "an rpc method takes at most {MAX_ARGS} arguments besides a stream (they travel as one tuple); \
                 group some of them into a struct that derives `Serialize` and `Deserialize`"
            ),
        );
    }
}

/// Rejects types that cannot be sent or received by value.
fn check_wire_type(ty: &Type, what: &str, errors: &mut Errors) {
    match ty {
        Type::Reference(r) => errors.push(
            ty,
            format!(
                "an rpc {what} travels by value and cannot be a reference; write an owned type such as `{}`",
                owned_suggestion(&r.elem)
            ),
        ),
        Type::ImplTrait(bounds) if names_stream(bounds) => errors.push(
            ty,
            format!(
                "an rpc {what} cannot be `impl Stream`; write `rpc_core::Streaming<T>` and make it \
                 with `Streaming::from_stream(stream)`"
            ),
        ),
        Type::ImplTrait(_) => errors.push(
            ty,
            format!("an rpc {what} needs one concrete type, not `impl Trait`; name the type"),
        ),
        Type::Paren(p) => check_wire_type(&p.elem, what, errors),
        Type::Group(g) => check_wire_type(&g.elem, what, errors),
        _ => {}
    }
}

/// Whether `impl ...` names a `Stream` trait among its bounds.
fn names_stream(bounds: &syn::TypeImplTrait) -> bool {
    bounds.bounds.iter().any(|bound| match bound {
        syn::TypeParamBound::Trait(t) => t
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Stream"),
        _ => false,
    })
}

fn owned_suggestion(borrowed: &Type) -> String {
    match borrowed {
        Type::Path(p) if p.path.is_ident("str") => "String".to_owned(),
        Type::Slice(s) => format!("Vec<{}>", s.elem.to_token_stream()),
        other => other.to_token_stream().to_string(),
    }
}

/// At most one argument is a `Streaming<T>`, and the return type is
/// `Streaming<T>` or `Result<Streaming<T>, E>` if it holds one at all.
fn check_streams(method: &Method<'_>, errors: &mut Errors) {
    const RULE: &str = "a method takes at most one `Streaming<T>` argument, as the argument's \
        whole type, and returns `Streaming<T>`, `Result<Streaming<T>, E>` or a value without streams";
    let mut taken = false;
    for arg in &method.args {
        if streams::item_of(arg.ty).is_some() {
            if taken {
                errors.push(
                    arg.ty,
                    format!("a second stream argument; {RULE}: send one stream of a struct or enum instead"),
                );
            }
            taken = true;
        } else if let Some(inner) = streams::find(arg.ty) {
            errors.push(inner, format!("a stream inside an argument's type; {RULE}"));
        }
    }
    let Some(output) = method.answer else { return };
    let inner = match streams::returns(Some(output)) {
        streams::Returns::Value => streams::find(output),
        streams::Returns::Stream(item) => streams::find(item),
        streams::Returns::StreamOrError(item, error) => {
            streams::find(item).or_else(|| streams::find(error))
        }
    };
    if let Some(inner) = inner {
        errors.push(inner, format!("a stream inside the return type; {RULE}"));
    }
}

/// `#[rpc(idempotent)]` lets a call be sent twice; a stream is never
/// sent twice, so only a unary method may say it.
fn check_idempotent(method: &Method<'_>, errors: &mut Errors) {
    let Some(idempotent) = &method.args_of_rpc.idempotent else {
        return;
    };
    let streams_in = method.args.iter().any(|arg| arg.is_stream());
    let streams_out = !matches!(streams::returns(method.answer), streams::Returns::Value);
    if streams_in || streams_out {
        errors.push(
            idempotent,
            "`#[rpc(idempotent)]` is for methods without streams: a stream call is never sent twice; \
             remove `idempotent`",
        );
    }
}

fn check_default_body(method: &Method<'_>, errors: &mut Errors) {
    if let Some(body) = &method.original.default {
        errors.push_at(
            body.brace_token.span.join(),
            "rpc methods cannot have a default body; end the declaration with `;` and put the body in the `impl`",
        );
    }
}

fn check_names(service: &Service<'_>, errors: &mut Errors) {
    let trait_ident = &service.original.ident;
    if trait_ident.to_string().len() > u8::MAX as usize {
        errors.push(
            trait_ident,
            "rpc service names are at most 255 bytes long; shorten it",
        );
    }
    let mut wire_names = std::collections::HashMap::new();
    for method in &service.methods {
        let name = method.ident.to_string();
        if RESERVED_CLIENT_METHODS.contains(&name.as_str()) {
            errors.push(
                method.ident,
                format!(
                    "`{name}` is taken by the generated client's constructor `{trait_ident}Client::{name}`; \
                     rename the method, and keep `{name}` as its name on the wire with `#[rpc(name = \"{name}\")]`"
                ),
            );
        }
        let wire = Names::wire_method(method);
        // A `#[rpc(name)]` was judged where it was parsed.
        if method.args_of_rpc.name.is_none() && name.len() > u8::MAX as usize {
            errors.push(
                method.ident,
                "rpc method names are at most 255 bytes long; shorten it, or give a shorter one with `#[rpc(name = \"...\")]`",
            );
        }
        if let Some(first) = wire_names.insert(wire.value(), method.ident) {
            errors.push(
                &wire,
                format!(
                    "`{first}` is already called `{}` on the wire; give one of them another name with `#[rpc(name = \"...\")]`",
                    wire.value()
                ),
            );
        }
    }
}
