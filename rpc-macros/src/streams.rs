//! Which arguments and return types are streams: `Streaming<T>` as an
//! argument, `Streaming<T>` or `Result<Streaming<T>, E>` as a return type.

use syn::{GenericArgument, PathArguments, Type};

/// `T` of a type written `Streaming<T>` (any path ending so).
pub(crate) fn item_of(ty: &Type) -> Option<&Type> {
    let [arg] = last_args(ty, "Streaming")?[..] else {
        return None;
    };
    Some(arg)
}

/// What a method returns, as the generated code treats it.
pub(crate) enum Returns<'a> {
    /// One value.
    Value,
    /// `Streaming<T>`: items of `T`.
    Stream(&'a Type),
    /// `Result<Streaming<T>, E>`: items of `T`, or an error `E` first.
    StreamOrError(&'a Type, &'a Type),
}

/// The shape of a return type.
pub(crate) fn returns(ty: Option<&Type>) -> Returns<'_> {
    let Some(ty) = ty else { return Returns::Value };
    if let Some(item) = item_of(ty) {
        return Returns::Stream(item);
    }
    if let Some([ok, err]) = last_args(ty, "Result").as_deref()
        && let Some(item) = item_of(ok)
    {
        return Returns::StreamOrError(item, err);
    }
    Returns::Value
}

/// The first `Streaming<..>` inside `ty` (itself included), for errors.
pub(crate) fn find(ty: &Type) -> Option<&Type> {
    if item_of(ty).is_some() {
        return Some(ty);
    }
    match ty {
        Type::Path(path) => path.path.segments.iter().find_map(|segment| {
            let PathArguments::AngleBracketed(args) = &segment.arguments else {
                return None;
            };
            args.args.iter().find_map(|arg| match arg {
                GenericArgument::Type(ty) => find(ty),
                _ => None,
            })
        }),
        Type::Tuple(tuple) => tuple.elems.iter().find_map(find),
        Type::Array(array) => find(&array.elem),
        Type::Slice(slice) => find(&slice.elem),
        Type::Paren(paren) => find(&paren.elem),
        Type::Group(group) => find(&group.elem),
        Type::Reference(reference) => find(&reference.elem),
        _ => None,
    }
}

/// The type arguments of `ty` if its path ends in `name<...>`.
pub(crate) fn last_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args
        .iter()
        .map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect()
}
