//! A method's types as the resolver reads them: serde-reflection's
//! formats, owned and thread-safe (its `Format` holds an `Rc` for tracing),
//! and the canonical text they are fingerprinted by.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_reflection::{ContainerFormat, Format, Named, Registry, VariantFormat};

/// The shape of one value: serde's data model, as bincode writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Option(Box<Shape>),
    Seq(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
    Tuple(Vec<Shape>),
    Array(Box<Shape>, usize),
    /// A named type, found in the schema's [`Types`].
    Named(String),
}

/// A named type: a struct or an enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Container {
    UnitStruct,
    Newtype(Shape),
    TupleStruct(Vec<Shape>),
    Struct(Vec<(String, Shape)>),
    /// Variants by wire index: name and payload.
    Enum(BTreeMap<u32, (String, Variant)>),
}

/// What follows an enum's variant index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Variant {
    Unit,
    Newtype(Shape),
    Tuple(Vec<Shape>),
    Struct(Vec<(String, Shape)>),
}

/// The named types a schema refers to.
pub(crate) type Types = BTreeMap<String, Container>;

/// One unary method's types: its arguments (a tuple of them, as they
/// travel) and its return value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema {
    pub(crate) args: Shape,
    pub(crate) returns: Shape,
    pub(crate) types: Types,
}

/// The canonical text of a schema (docs/PROTOCOL.md §12): compact JSON,
/// `{"args":[F,...],"returns":F,"types":{"Name":C,...}}`, each `F` and `C`
/// serde-reflection's JSON of a format and a container, the types those
/// formats name (and the ones they name, and so on) in byte order of
/// their names. `None` when a format names a type the registry lacks.
pub(crate) fn canonical(args: &[Format], returns: &Format, registry: &Registry) -> Option<String> {
    let mut used = std::collections::BTreeSet::<&str>::new();
    let mut work: Vec<&Format> = args.iter().chain([returns]).collect();
    while let Some(format) = work.pop() {
        let mut named = Vec::new();
        names_in(format, &mut |name| named.push(name));
        for name in named {
            if used.insert(name) {
                container_formats(registry.get(name)?, &mut work);
            }
        }
    }
    let json = |value: &dyn erased::Json| value.json();
    let mut text = String::from("{\"args\":[");
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&json(arg)?);
    }
    let _ = write!(text, "],\"returns\":{},\"types\":{{", json(returns)?);
    for (i, name) in used.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let container = registry.get(*name)?;
        let _ = write!(
            text,
            "{}:{}",
            serde_json::to_string(name).ok()?,
            json(container)?
        );
    }
    text.push_str("}}");
    Some(text)
}

/// serde_json of either kind of format, behind one reference.
mod erased {
    pub(super) trait Json {
        fn json(&self) -> Option<String>;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Option<String> {
            serde_json::to_string(self).ok()
        }
    }
}

/// Calls `found` with each type name `format` refers to directly.
fn names_in<'a>(format: &'a Format, found: &mut impl FnMut(&'a str)) {
    match format {
        Format::TypeName(name) => found(name),
        Format::Option(inner) | Format::Seq(inner) => names_in(inner, found),
        Format::Map { key, value } => {
            names_in(key, found);
            names_in(value, found);
        }
        Format::Tuple(elements) => elements.iter().for_each(|e| names_in(e, found)),
        Format::TupleArray { content, .. } => names_in(content, found),
        _ => {}
    }
}

/// Checks that every type the formats name is described, and that no
/// newtype wraps itself with nothing between (no value is one): a peer's
/// schema that fails is refused as it is read, not when a value needs it.
fn check_names(args: &[Format], returns: &Format, registry: &Registry) -> Result<(), String> {
    let mut work: Vec<&Format> = args.iter().chain([returns]).collect();
    for container in registry.values() {
        container_formats(container, &mut work);
    }
    let mut missing = None;
    for format in work {
        names_in(format, &mut |name| {
            if missing.is_none() && !registry.contains_key(name) {
                missing = Some(name);
            }
        });
    }
    if let Some(name) = missing {
        return Err(format!("it names a type `{name}` it does not describe"));
    }
    // Each newtype chain is walked once: names on a chain already walked
    // are done, so a hostile schema of many types costs linear time.
    let mut done = std::collections::BTreeSet::<&str>::new();
    for start in registry.keys() {
        let mut chain = std::collections::BTreeSet::new();
        let mut name = start.as_str();
        while !done.contains(name) {
            if !chain.insert(name) {
                return Err(format!("its newtype `{name}` wraps itself"));
            }
            match registry.get(name) {
                Some(ContainerFormat::NewTypeStruct(inner)) => match inner.as_ref() {
                    Format::TypeName(next) => name = next,
                    _ => break,
                },
                _ => break,
            }
        }
        done.extend(chain);
    }
    Ok(())
}

/// Pushes every format directly inside `container`.
fn container_formats<'a>(container: &'a ContainerFormat, work: &mut Vec<&'a Format>) {
    match container {
        ContainerFormat::UnitStruct => {}
        ContainerFormat::NewTypeStruct(inner) => work.push(inner),
        ContainerFormat::TupleStruct(elements) => work.extend(elements),
        ContainerFormat::Struct(fields) => work.extend(fields.iter().map(|f| &f.value)),
        ContainerFormat::Enum(variants) => {
            for variant in variants.values() {
                match &variant.value {
                    VariantFormat::NewType(inner) => work.push(inner),
                    VariantFormat::Tuple(elements) => work.extend(elements),
                    VariantFormat::Struct(fields) => work.extend(fields.iter().map(|f| &f.value)),
                    VariantFormat::Unit | VariantFormat::Variable(_) => {}
                }
            }
        }
    }
}

/// A canonical text as it is parsed: serde-reflection's own JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    args: Vec<Format>,
    returns: Format,
    types: BTreeMap<String, ContainerFormat>,
}

impl Schema {
    /// Reads a schema from its text (a peer's; any JSON of the canonical
    /// form's keys is read, in any order and spacing). The error says what
    /// is wrong.
    pub(crate) fn parse(text: &str) -> Result<Schema, String> {
        if text.len() > super::MAX_SCHEMA_TEXT {
            return Err(format!(
                "the schema is {} bytes, over the limit of {}",
                text.len(),
                super::MAX_SCHEMA_TEXT
            ));
        }
        let parsed: Text =
            serde_json::from_str(text).map_err(|e| format!("the schema is not valid: {e}"))?;
        Self::from_formats(&parsed.args, &parsed.returns, &parsed.types)
    }

    /// The schema of traced formats.
    pub(crate) fn from_formats(
        args: &[Format],
        returns: &Format,
        registry: &Registry,
    ) -> Result<Schema, String> {
        check_names(args, returns, registry)?;
        let types = registry
            .iter()
            .map(|(name, container)| Ok((name.clone(), Container::from_format(container)?)))
            .collect::<Result<Types, String>>()?;
        let schema = Schema {
            args: Shape::Tuple(shapes(args)?),
            returns: Shape::from_format(returns)?,
            types,
        };
        Ok(schema)
    }
}

impl Shape {
    fn from_format(format: &Format) -> Result<Shape, String> {
        let boxed = |f: &Format| Shape::from_format(f).map(Box::new);
        Ok(match format {
            Format::Variable(_) => return Err("a format is not fully known".to_owned()),
            Format::TypeName(name) => Shape::Named(name.clone()),
            Format::Unit => Shape::Unit,
            Format::Bool => Shape::Bool,
            Format::I8 => Shape::I8,
            Format::I16 => Shape::I16,
            Format::I32 => Shape::I32,
            Format::I64 => Shape::I64,
            Format::I128 => Shape::I128,
            Format::U8 => Shape::U8,
            Format::U16 => Shape::U16,
            Format::U32 => Shape::U32,
            Format::U64 => Shape::U64,
            Format::U128 => Shape::U128,
            Format::F32 => Shape::F32,
            Format::F64 => Shape::F64,
            Format::Char => Shape::Char,
            Format::Str => Shape::Str,
            Format::Bytes => Shape::Bytes,
            Format::Option(inner) => Shape::Option(boxed(inner)?),
            Format::Seq(inner) => Shape::Seq(boxed(inner)?),
            Format::Map { key, value } => Shape::Map(boxed(key)?, boxed(value)?),
            Format::Tuple(elements) => Shape::Tuple(shapes(elements)?),
            Format::TupleArray { content, size } => Shape::Array(boxed(content)?, *size),
        })
    }
}

fn shapes(formats: &[Format]) -> Result<Vec<Shape>, String> {
    formats.iter().map(Shape::from_format).collect()
}

fn fields(fields: &[Named<Format>]) -> Result<Vec<(String, Shape)>, String> {
    fields
        .iter()
        .map(|f| Ok((f.name.clone(), Shape::from_format(&f.value)?)))
        .collect()
}

impl Container {
    fn from_format(container: &ContainerFormat) -> Result<Container, String> {
        Ok(match container {
            ContainerFormat::UnitStruct => Container::UnitStruct,
            ContainerFormat::NewTypeStruct(inner) => Container::Newtype(Shape::from_format(inner)?),
            ContainerFormat::TupleStruct(elements) => Container::TupleStruct(shapes(elements)?),
            ContainerFormat::Struct(named) => Container::Struct(fields(named)?),
            ContainerFormat::Enum(variants) => Container::Enum(
                variants
                    .iter()
                    .map(|(&index, variant)| {
                        let payload = match &variant.value {
                            VariantFormat::Variable(_) => {
                                return Err("a variant is not fully known".to_owned());
                            }
                            VariantFormat::Unit => Variant::Unit,
                            VariantFormat::NewType(inner) => {
                                Variant::Newtype(Shape::from_format(inner)?)
                            }
                            VariantFormat::Tuple(elements) => Variant::Tuple(shapes(elements)?),
                            VariantFormat::Struct(named) => Variant::Struct(fields(named)?),
                        };
                        Ok((index, (variant.name.clone(), payload)))
                    })
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}
