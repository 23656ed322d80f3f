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
    pub(crate) receiver: Receiver<'a>,
    pub(crate) args: Vec<Arg<'a>>,
    /// `None` for a method that returns `()` implicitly.
    pub(crate) output: Option<&'a Type>,
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
    pub(crate) ty: &'a Type,
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

    /// Whether the method has a doc comment.
    pub(crate) fn has_docs(&self) -> bool {
        self.original.attrs.iter().any(|a| a.path().is_ident("doc"))
    }

    /// The argument's name, for arguments that are a plain identifier.
    pub(crate) fn arg_idents(&self) -> impl Iterator<Item = &Ident> {
        self.args.iter().filter_map(|arg| match arg.pat {
            Pat::Ident(p) => Some(&p.ident),
            _ => None,
        })
    }
}
