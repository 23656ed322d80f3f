//! Maps whose keys are not strings, and integers wider than JSON's.
//!
//! A JSON object's keys are strings, and serde-reflection's converter sends
//! them as strings, which fails for a map keyed by `u32`. bincode writes a
//! map exactly as a sequence of (key, value) pairs, so such a map is sent
//! as that sequence: its format (and every format in the registry) is
//! rewritten here, and its value by `values::reshape`. Integers beyond 64
//! bits travel in JSON as strings of digits, which the converter reads.

use serde_json::Value;
use serde_reflection::{ContainerFormat, Format, Named, Registry, VariantFormat};

/// Whether a map with keys of `key` can be a JSON object as it is: keys
/// that are strings, or newtypes of them.
pub(crate) fn string_keys(key: &Format, registry: &Registry) -> bool {
    match key {
        Format::Str => true,
        Format::TypeName(name) => matches!(
            registry.get(name),
            Some(ContainerFormat::NewTypeStruct(inner)) if string_keys(inner, registry)
        ),
        _ => false,
    }
}

/// An object's key as the value it stands for: JSON (`"1"` is 1, `"true"`
/// is true) or else the text itself.
pub(crate) fn key(text: &str) -> Value {
    word(text)
}

/// A word of the command line or a line of input: JSON, or else a
/// string. An integer too wide for a JSON number stays the string of its
/// digits, which is how 128-bit integers travel.
pub(crate) fn word(text: &str) -> Value {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<i64>().is_err()
        && text.parse::<u64>().is_err()
    {
        return Value::String(text.to_owned());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `format` as it is sent: maps without string keys as sequences of pairs.
pub(crate) fn format(format: &Format, registry: &Registry) -> Format {
    let again = |f: &Format| self::format(f, registry);
    match format {
        Format::Map { key, value } if !string_keys(key, registry) => {
            Format::Seq(Box::new(Format::Tuple(vec![again(key), again(value)])))
        }
        Format::Map { key, value } => Format::Map {
            key: Box::new(again(key)),
            value: Box::new(again(value)),
        },
        Format::Option(inner) => Format::Option(Box::new(again(inner))),
        Format::Seq(inner) => Format::Seq(Box::new(again(inner))),
        Format::Tuple(formats) => Format::Tuple(formats.iter().map(again).collect()),
        Format::TupleArray { content, size } => Format::TupleArray {
            content: Box::new(again(content)),
            size: *size,
        },
        other => other.clone(),
    }
}

/// Every container of `registry` as it is sent.
pub(crate) fn registry(registry: &Registry) -> Registry {
    let fields = |fields: &[Named<Format>]| -> Vec<Named<Format>> {
        fields
            .iter()
            .map(|f| Named {
                name: f.name.clone(),
                value: format(&f.value, registry),
            })
            .collect()
    };
    registry
        .iter()
        .map(|(name, container)| {
            let sent = match container {
                ContainerFormat::UnitStruct => ContainerFormat::UnitStruct,
                ContainerFormat::NewTypeStruct(f) => {
                    ContainerFormat::NewTypeStruct(Box::new(format(f, registry)))
                }
                ContainerFormat::TupleStruct(fs) => {
                    ContainerFormat::TupleStruct(fs.iter().map(|f| format(f, registry)).collect())
                }
                ContainerFormat::Struct(fs) => ContainerFormat::Struct(fields(fs)),
                ContainerFormat::Enum(variants) => ContainerFormat::Enum(
                    variants
                        .iter()
                        .map(|(index, v)| {
                            let value = match &v.value {
                                VariantFormat::NewType(f) => {
                                    VariantFormat::NewType(Box::new(format(f, registry)))
                                }
                                VariantFormat::Tuple(fs) => VariantFormat::Tuple(
                                    fs.iter().map(|f| format(f, registry)).collect(),
                                ),
                                VariantFormat::Struct(fs) => VariantFormat::Struct(fields(fs)),
                                other => other.clone(),
                            };
                            (
                                *index,
                                Named {
                                    name: v.name.clone(),
                                    value,
                                },
                            )
                        })
                        .collect(),
                ),
            };
            (name.clone(), sent)
        })
        .collect()
}
