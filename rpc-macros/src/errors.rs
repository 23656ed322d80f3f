//! Collects every error of one expansion, so the user sees them all at once.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// Errors found so far, each pointing at its own tokens.
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    /// Records `message` against the span of `tokens`.
    pub(crate) fn push(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.add(syn::Error::new_spanned(tokens, message));
    }

    /// Records `message` against `span`.
    pub(crate) fn push_at(&mut self, span: Span, message: impl Display) {
        self.add(syn::Error::new(span, message));
    }

    /// Records an error that already has its span.
    pub(crate) fn add(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// `Ok` if nothing was recorded, otherwise every error combined.
    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.combined {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
