//! What a service trait says, borrowed from syn and not yet judged.

use syn::{Attribute, Ident, ItemTrait, Pat, TraitItem, TraitItemFn, Type};

/// The annotated trait.
pub(crate) struct Service<'a> {
    pub(crate) original: &'a ItemTrait,
    pub(crate) methods: Vec<Method<'a>>,
    /// Items other than methods: associated types, consts, macros.
    pub(crate) other_items: Vec<&'a TraitItem>,
}

/// One method of the trait.
pub(crate) struct Method<'a> {
    pub(crate) original: &'a TraitItemFn,
    pub(crate) ident: &'a Ident,
    /// What its `#[rpc(...)]` attributes say.
    pub(crate) args_of_rpc: crate::method_args::MethodArgs,
    pub(crate) receiver: Receiver<'a>,
    pub(crate) args: Vec<Arg<'a>>,
    /// What the caller receives: the return type, or `T` of a
    /// `Result<T, Rejection>`; `None` for a method that returns `()`
    /// implicitly.
    pub(crate) answer: Option<&'a Type>,
    /// The `Rejection` of a `Result<T, Rejection>` return type: the
    /// handler may refuse the call with a status of its own.
    pub(crate) refusal: Option<&'a Type>,
}

/// How a method takes `self`.
pub(crate) enum Receiver<'a> {
    /// `&self`, the one that is accepted.
    Shared,
    /// `&mut self`.
    Exclusive(&'a syn::Receiver),
    /// `self` or `mut self`.
    Owned(&'a syn::Receiver),
    /// `self: Type`.
    Typed(&'a syn::Receiver),
    /// An associated function with no `self`.
    Missing,
}

/// One argument after the receiver.
pub(crate) struct Arg<'a> {
    pub(crate) pat: &'a Pat,
    /// The name, when the pattern is a plain identifier.
    pub(crate) ident: Option<&'a Ident>,
    pub(crate) ty: &'a Type,
}

impl Arg<'_> {
    /// Whether the argument is a `Streaming<T>`, sent item by item after
    /// the others.
    pub(crate) fn is_stream(&self) -> bool {
        crate::streams::item_of(self.ty).is_some()
    }

    /// Whether the argument is a `Vec<u8>`, which travels as bytes.
    pub(crate) fn is_bytes(&self) -> bool {
        is_byte_vec(self.ty)
    }
}

/// `Vec<u8>`, `std::vec::Vec<u8>` or `alloc::vec::Vec<u8>`: types whose
/// values the generated code hands to serde as bytes, in one copy, rather
/// than element by element. The encoding on the wire is the same.
pub(crate) fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<_> = path.path.segments.iter().collect();
    let Some((last, prefix)) = segments.split_last() else {
        return false;
    };
    let prefix: Vec<String> = prefix.iter().map(|s| s.ident.to_string()).collect();
    let std_prefix = matches!(
        prefix.iter().map(String::as_str).collect::<Vec<_>>()[..],
        [] | ["std", "vec"] | ["alloc", "vec"]
    );
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    std_prefix
        && last.ident == "Vec"
        && args.args.len() == 1
        && matches!(&args.args[0], syn::GenericArgument::Type(Type::Path(p)) if p.path.is_ident("u8"))
}

/// `(T, Rejection)` of a type written `Result<T, Rejection>`: a path
/// ending in `Result` whose error is a path ending in a plain `Rejection`.
/// By name alone, so the generated code checks that it is rpc_core's.
pub(crate) fn refusal(ty: &Type) -> Option<(&Type, &Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if path.qself.is_some() || last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let [
        syn::GenericArgument::Type(answer),
        syn::GenericArgument::Type(error),
    ] = &args.args.iter().collect::<Vec<_>>()[..]
    else {
        return None;
    };
    let Type::Path(error_path) = error else {
        return None;
    };
    let error_last = error_path.path.segments.last()?;
    let plain = error_path.qself.is_none() && error_last.arguments.is_none();
    (plain && error_last.ident == "Rejection").then_some((answer, error))
}

impl Method<'_> {
    /// The method's `#[doc]` and `#[cfg]` attributes, which the client and
    /// server copies carry.
    pub(crate) fn docs_and_cfgs(&self) -> impl Iterator<Item = &Attribute> {
        self.original
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc") || a.path().is_ident("cfg"))
    }

    /// The method's `#[cfg]` attributes alone.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &Attribute> {
        self.original
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"))
    }

    /// Whether the method returns a top-level `Vec<u8>`.
    pub(crate) fn returns_bytes(&self) -> bool {
        self.answer.is_some_and(is_byte_vec)
    }

    /// Whether the method has a doc comment.
    pub(crate) fn has_docs(&self) -> bool {
        self.original.attrs.iter().any(|a| a.path().is_ident("doc"))
    }

    /// The stream argument's name and item type, if the method takes one.
    pub(crate) fn stream_arg(&self) -> Option<(&Ident, &Type)> {
        self.args
            .iter()
            .find_map(|arg| Some((arg.ident?, crate::streams::item_of(arg.ty)?)))
    }

    /// The arguments' names (validation has made sure every one has one).
    pub(crate) fn arg_idents(&self) -> impl Iterator<Item = &Ident> {
        self.args.iter().filter_map(|arg| arg.ident)
    }
}
