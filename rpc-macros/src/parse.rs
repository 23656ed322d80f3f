//! syn's trait -> the model. Records facts; judging them is validate's job.

use syn::{FnArg, ItemTrait, ReturnType, TraitItem};

use crate::errors::Errors;
use crate::method_args::MethodArgs;
use crate::model::{Arg, Method, Receiver, Service};

impl<'a> Service<'a> {
    /// Builds the model of `item`. Every trait has a model, however wrong,
    /// so that all its errors can be reported together; the methods'
    /// `#[rpc(...)]` arguments that do not parse are recorded in `errors`.
    pub(crate) fn from_syn(item: &'a ItemTrait, errors: &mut Errors) -> Service<'a> {
        let mut methods = Vec::new();
        let mut other_items = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(f) => methods.push(Method::from_syn(f, errors)),
                other => other_items.push(other),
            }
        }
        Service {
            original: item,
            methods,
            other_items,
        }
    }
}

impl<'a> Method<'a> {
    fn from_syn(f: &'a syn::TraitItemFn, errors: &mut Errors) -> Method<'a> {
        let mut inputs = f.sig.inputs.iter();
        let receiver = match f.sig.inputs.first() {
            Some(FnArg::Receiver(r)) => {
                inputs.next();
                if r.colon_token.is_some() {
                    Receiver::Typed(r)
                } else if r.reference.is_none() {
                    Receiver::Owned(r)
                } else if r.mutability.is_some() {
                    Receiver::Exclusive(r)
                } else {
                    Receiver::Shared
                }
            }
            _ => Receiver::Missing,
        };
        let args = inputs
            .filter_map(|input| match input {
                FnArg::Typed(pat_type) => Some(Arg {
                    pat: &pat_type.pat,
                    ident: match &*pat_type.pat {
                        syn::Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                            Some(&p.ident)
                        }
                        _ => None,
                    },
                    ty: &pat_type.ty,
                }),
                // A receiver after the first argument: rustc rejects it.
                FnArg::Receiver(_) => None,
            })
            .collect();
        let output = match &f.sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(&**ty),
        };
        let (answer, refusal) = match output.and_then(crate::model::refusal) {
            Some((answer, refusal)) => (Some(answer), Some(refusal)),
            None => (output, None),
        };
        Method {
            original: f,
            ident: &f.sig.ident,
            args_of_rpc: MethodArgs::parse(&f.attrs, errors),
            receiver,
            args,
            answer,
            refusal,
        }
    }
}
