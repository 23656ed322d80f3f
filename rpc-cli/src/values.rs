//! Command-line JSON values to a method's arguments and back, by the
//! formats the server described: checked first, so that a value of the
//! wrong kind is an error that names the argument and what it expected.

use serde_json::Value;
use serde_reflection::json_converter::{
    DeserializationContext, EmptyEnvironment, SerializationContext,
};
use serde_reflection::{ContainerFormat, Format, Registry, VariantFormat};

use crate::description::Method;
pub(crate) use crate::omit::Fields;

/// The arguments as one JSON array in the method's order: `words` are
/// JSON values, or strings where they are not JSON; one JSON object whose
/// keys are the argument names gives them by name.
pub(crate) fn arguments(method: &Method, words: &[String]) -> Result<Vec<Value>, String> {
    let names: Vec<&str> = method.args.iter().map(|a| a.name.as_str()).collect();
    let values: Vec<Value> = words.iter().map(|w| crate::wire::word(w)).collect();
    if let [Value::Object(by_name)] = &values[..] {
        let keys: Vec<&str> = by_name.keys().map(String::as_str).collect();
        let mut sorted_names = names.clone();
        sorted_names.sort_unstable();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort_unstable();
        if sorted_keys == sorted_names && names.len() != 1 || (names.len() == 1 && keys == names) {
            return Ok(names.iter().map(|n| by_name[*n].clone()).collect());
        }
    }
    if values.len() != names.len() {
        return Err(format!(
            "{} takes {} argument{} ({}), {} given",
            method.name,
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            names.join(", "),
            values.len()
        ));
    }
    Ok(values)
}

/// Levels of format a value is checked through: a described type that
/// holds itself with nothing between (`struct T(T)`) would otherwise
/// recurse until the stack overflows.
const MAX_DEPTH: usize = 128;

/// Checks `value` against `format`, saying what is wrong and where.
pub(crate) fn check(value: &Value, format: &Format, registry: &Registry) -> Result<(), String> {
    checked(value, format, registry, MAX_DEPTH, None)
}

/// As [`check`], but a field of a described struct that `value` leaves
/// out is noted in `fields` rather than an error: the call claims a schema
/// without it, and the server fills in its default (docs/EVOLUTION.md).
pub(crate) fn check_leaving_out(
    value: &Value,
    format: &Format,
    registry: &Registry,
    fields: &Fields,
) -> Result<(), String> {
    checked(value, format, registry, MAX_DEPTH, Some(fields))
}

fn checked(
    value: &Value,
    format: &Format,
    registry: &Registry,
    depth: usize,
    fields: Option<&Fields>,
) -> Result<(), String> {
    let Some(depth) = depth.checked_sub(1) else {
        return Err(format!(
            "nested more than {MAX_DEPTH} levels deep (the server describes a type that holds itself?)"
        ));
    };
    let check = |value: &Value, format: &Format, registry: &Registry| {
        checked(value, format, registry, depth, fields)
    };
    let expected = |what: &str| Err(format!("expected {what}, found {}", found(value)));
    match format {
        Format::Unit => match value {
            Value::Null => Ok(()),
            _ => expected("null (unit)"),
        },
        Format::Bool => match value {
            Value::Bool(_) => Ok(()),
            _ => expected("bool"),
        },
        Format::I8 | Format::I16 | Format::I32 | Format::I64 | Format::I128 => {
            integer(value, format, true)
        }
        Format::U8 | Format::U16 | Format::U32 | Format::U64 | Format::U128 => {
            integer(value, format, false)
        }
        Format::F32 | Format::F64 => match value {
            Value::Number(_) => Ok(()),
            _ => expected("a number"),
        },
        Format::Char => match value {
            Value::String(s) if s.chars().count() == 1 => Ok(()),
            _ => expected("one character"),
        },
        Format::Str => match value {
            Value::String(_) => Ok(()),
            _ => expected("string"),
        },
        Format::Bytes => match value {
            Value::Array(items) if items.iter().all(|i| i.as_u64().is_some_and(|b| b <= 255)) => {
                Ok(())
            }
            Value::String(text) if base64(text).is_some() => Ok(()),
            _ => expected("bytes, as an array of numbers 0 to 255 or a base64 string"),
        },
        Format::Option(inner) => match value {
            Value::Null => Ok(()),
            other => check(other, inner, registry),
        },
        Format::Seq(inner) => match value {
            Value::Array(items) => each(items, |_| inner, registry, depth, fields),
            _ => expected("an array"),
        },
        Format::Map { key, value: inner } if crate::wire::string_keys(key, registry) => match value
        {
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                check(v, inner, registry).map_err(|e| format!("at `{k}`: {e}"))
            }),
            _ => expected("an object"),
        },
        // Keys that are not strings: an object whose keys are their JSON
        // (`{"1": "a"}`), or an array of [key, value] pairs.
        Format::Map { key, value: inner } => match value {
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                check(&crate::wire::key(k), key, registry)
                    .and_then(|()| check(v, inner, registry))
                    .map_err(|e| format!("at `{k}`: {e}"))
            }),
            Value::Array(pairs) => {
                let pair = Format::Tuple(vec![(**key).clone(), (**inner).clone()]);
                each(pairs, |_| &pair, registry, depth, fields)
            }
            _ => expected("an object or an array of [key, value] pairs"),
        },
        Format::Tuple(formats) => match value {
            Value::Array(items) if items.len() == formats.len() => {
                each(items, |i| &formats[i], registry, depth, fields)
            }
            _ => expected(&format!("an array of {}", formats.len())),
        },
        Format::TupleArray { content, size } => match value {
            Value::Array(items) if items.len() == *size => {
                each(items, |_| content, registry, depth, fields)
            }
            _ => expected(&format!("an array of {size}")),
        },
        Format::TypeName(name) => match registry.get(name) {
            Some(container) => {
                container_check(value, name, container, registry, depth, fields, true)
            }
            None => Err(format!("the server did not describe type `{name}`")),
        },
        Format::Variable(_) => Ok(()),
    }
}

/// `named`: whether `name` is the type's own, a registry entry (a struct
/// variant's fields cannot be left out: a schema names no such type).
fn container_check(
    value: &Value,
    name: &str,
    container: &ContainerFormat,
    registry: &Registry,
    depth: usize,
    fields: Option<&Fields>,
    named: bool,
) -> Result<(), String> {
    let check = |value: &Value, format: &Format, registry: &Registry| {
        checked(value, format, registry, depth, fields)
    };
    let noted = fields.filter(|_| named);
    match container {
        ContainerFormat::UnitStruct => Ok(()),
        ContainerFormat::NewTypeStruct(inner) => check(value, inner, registry),
        ContainerFormat::TupleStruct(formats) => {
            check(value, &Format::Tuple(formats.clone()), registry)
        }
        ContainerFormat::Struct(described) => match value {
            Value::Object(map) => {
                described
                    .iter()
                    .try_for_each(|field| match (map.get(&field.name), noted) {
                        (Some(v), _) => {
                            if let Some(noted) = noted {
                                noted.given(name, &field.name);
                            }
                            check(v, &field.value, registry)
                                .map_err(|e| format!("field `{}`: {e}", field.name))
                        }
                        (None, Some(noted)) => {
                            noted.omitted(name, &field.name);
                            Ok(())
                        }
                        (None, None) => Err(format!("{name} needs field `{}`", field.name)),
                    })
            }
            _ => Err(format!(
                "expected {name} (an object), found {}",
                found(value)
            )),
        },
        ContainerFormat::Enum(variants) => {
            let (variant, inner) = match value {
                Value::String(v) => (v.as_str(), None),
                Value::Object(map) if map.len() == 1 => {
                    let (k, v) = map.iter().next().expect("one entry");
                    (k.as_str(), Some(v))
                }
                _ => {
                    return Err(format!(
                        "expected {name} (\"Variant\" or {{\"Variant\": value}}), found {}",
                        found(value)
                    ));
                }
            };
            let Some(found_variant) = variants.values().find(|v| v.name == variant) else {
                let known: Vec<_> = variants.values().map(|v| v.name.as_str()).collect();
                return Err(format!(
                    "{name} has no variant `{variant}` (it has {})",
                    known.join(", ")
                ));
            };
            match (&found_variant.value, inner) {
                (VariantFormat::Unit, None) => Ok(()),
                (VariantFormat::NewType(f), Some(v)) => check(v, f, registry),
                (VariantFormat::Tuple(fs), Some(v)) => {
                    check(v, &Format::Tuple(fs.clone()), registry)
                }
                (VariantFormat::Struct(described), Some(v)) => container_check(
                    v,
                    variant,
                    &ContainerFormat::Struct(described.clone()),
                    registry,
                    depth,
                    fields,
                    false,
                ),
                (VariantFormat::Unit, Some(_)) => Err(format!(
                    "{name}::{variant} takes no value: write \"{variant}\""
                )),
                (_, None) => Err(format!(
                    "{name}::{variant} takes a value: write {{\"{variant}\": ...}}"
                )),
                (VariantFormat::Variable(_), _) => Ok(()),
            }
        }
    }
}

fn each<'a>(
    items: &[Value],
    format: impl Fn(usize) -> &'a Format,
    registry: &Registry,
    depth: usize,
    fields: Option<&Fields>,
) -> Result<(), String> {
    items.iter().enumerate().try_for_each(|(i, item)| {
        checked(item, format(i), registry, depth, fields).map_err(|e| format!("at [{i}]: {e}"))
    })
}

fn integer(value: &Value, format: &Format, signed: bool) -> Result<(), String> {
    let width = format!("{format:?}").to_lowercase();
    let fits = match value {
        // Wider than a JSON number: the string of its digits.
        Value::String(s) if *format == Format::I128 => s.parse::<i128>().is_ok(),
        Value::String(s) if *format == Format::U128 => s.parse::<u128>().is_ok(),
        Value::Number(n) if signed => n.as_i64().is_some_and(|v| match format {
            Format::I8 => i8::try_from(v).is_ok(),
            Format::I16 => i16::try_from(v).is_ok(),
            Format::I32 => i32::try_from(v).is_ok(),
            _ => true,
        }),
        Value::Number(n) => n.as_u64().is_some_and(|v| match format {
            Format::U8 => u8::try_from(v).is_ok(),
            Format::U16 => u16::try_from(v).is_ok(),
            Format::U32 => u32::try_from(v).is_ok(),
            _ => true,
        }),
        _ => false,
    };
    if fits {
        Ok(())
    } else if matches!(format, Format::I128 | Format::U128) {
        Err(format!(
            "expected {width} (a number, or a string of digits beyond 64 bits), found {}",
            found(value)
        ))
    } else {
        Err(format!("expected {width}, found {}", found(value)))
    }
}

/// How a JSON value reads in an error.
fn found(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", Value::String(s.clone())),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The arguments, as what the call sends: their format and the registry
/// rewritten once for the wire (see `wire`).
pub(crate) struct Encoded {
    values: Value,
    format: Format,
    registry: Registry,
}

impl Encoded {
    pub(crate) fn new(values: Value, format: &Format, registry: &Registry) -> Self {
        Encoded {
            values,
            format: crate::wire::format(format, registry),
            registry: crate::wire::registry(registry),
        }
    }
}

impl serde::Serialize for Encoded {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_as(&self.values, &self.format, &self.registry, serializer)
    }
}

/// Serializes `value` as `format`, which with `registry` is already in its
/// wire form.
pub(crate) fn serialize_as<S: serde::Serializer>(
    value: &Value,
    format: &Format,
    registry: &Registry,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let context = SerializationContext {
        value,
        format,
        registry,
        environment: &EmptyEnvironment,
    };
    serde::Serialize::serialize(&context, serializer)
}

/// What decodes a reply of `format` into JSON.
pub(crate) fn reply<'a>(
    format: Format,
    registry: &'a Registry,
) -> DeserializationContext<'a, EmptyEnvironment> {
    DeserializationContext {
        format,
        registry,
        environment: &EmptyEnvironment,
    }
}

/// Which way [`reshape`] rewrites.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Way {
    /// `"Variant"` -> `{"Variant": null}`, as the converter reads a unit variant.
    In,
    /// `{"Variant": null}` -> `"Variant"`, as serde_json writes one.
    Out,
}

/// Rewrites `value` (of `format`) between the shapes people write and
/// read and the converter's: unit variants (`"Variant"` against
/// `{"Variant": null}`), and, on the way in, bytes given as base64.
pub(crate) fn reshape(value: &mut Value, format: &Format, registry: &Registry, way: Way) {
    if let (Format::Bytes, Value::String(text), Way::In) = (format, &*value, way) {
        if let Some(bytes) = base64(text) {
            *value = bytes.into_iter().map(Value::from).collect();
        }
        return;
    }
    match (format, value) {
        (Format::Map { key, value: inner }, value)
            if way == Way::In && !crate::wire::string_keys(key, registry) =>
        {
            let pairs: Vec<Value> = match std::mem::take(value) {
                Value::Object(map) => map
                    .into_iter()
                    .map(|(k, v)| Value::Array(vec![crate::wire::key(&k), v]))
                    .collect(),
                Value::Array(pairs) => pairs,
                other => {
                    *value = other;
                    return;
                }
            };
            let pair = Format::Tuple(vec![(**key).clone(), (**inner).clone()]);
            let mut pairs = Value::Array(pairs);
            reshape(&mut pairs, &Format::Seq(Box::new(pair)), registry, way);
            *value = pairs;
        }
        (Format::Option(inner), value) if !value.is_null() => reshape(value, inner, registry, way),
        (Format::Seq(inner) | Format::TupleArray { content: inner, .. }, Value::Array(items)) => {
            items
                .iter_mut()
                .for_each(|item| reshape(item, inner, registry, way));
        }
        (Format::Map { value: inner, .. }, Value::Object(map)) => {
            map.values_mut()
                .for_each(|v| reshape(v, inner, registry, way));
        }
        (Format::Tuple(formats), Value::Array(items)) => {
            for (item, f) in items.iter_mut().zip(formats) {
                reshape(item, f, registry, way);
            }
        }
        (Format::TypeName(name), value) => match registry.get(name) {
            Some(ContainerFormat::NewTypeStruct(inner)) => reshape(value, inner, registry, way),
            Some(ContainerFormat::TupleStruct(formats)) => {
                reshape(value, &Format::Tuple(formats.clone()), registry, way)
            }
            Some(ContainerFormat::Struct(fields)) => {
                if let Value::Object(map) = value {
                    for field in fields {
                        if let Some(v) = map.get_mut(&field.name) {
                            reshape(v, &field.value, registry, way);
                        }
                    }
                }
            }
            Some(ContainerFormat::Enum(variants)) => {
                let unit = |name: &str| {
                    variants
                        .values()
                        .any(|v| v.name == name && matches!(v.value, VariantFormat::Unit))
                };
                match value {
                    Value::String(name) if way == Way::In && unit(name) => {
                        *value = serde_json::json!({ name.clone(): null });
                    }
                    Value::Object(map) if map.len() == 1 => {
                        let (name, inner) = map.iter_mut().next().expect("one entry");
                        if way == Way::Out && inner.is_null() && unit(name) {
                            *value = Value::String(name.clone());
                            return;
                        }
                        let payload = variants
                            .values()
                            .find(|v| &v.name == name)
                            .map(|v| v.value.clone());
                        match payload {
                            Some(VariantFormat::NewType(f)) => reshape(inner, &f, registry, way),
                            Some(VariantFormat::Tuple(fs)) => {
                                reshape(inner, &Format::Tuple(fs), registry, way)
                            }
                            Some(VariantFormat::Struct(fields)) => {
                                if let Value::Object(map) = inner {
                                    for field in fields {
                                        if let Some(v) = map.get_mut(&field.name) {
                                            reshape(v, &field.value, registry, way);
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Standard base64 (padding optional), as `rpc` takes bytes.
fn base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(text).ok()
}
