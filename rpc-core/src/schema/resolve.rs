//! Reading a value written with another schema, Avro's way: the bytes are
//! walked by the writer's [`Shape`] while the reader's own `Deserialize`
//! asks for what it wants, by name. A struct reaches the reader as a map of
//! the writer's fields (ones the reader lacks are skipped; serde's derive
//! fills the reader's missing ones from `#[serde(default)]`), an enum's
//! variant by its name, an integer or float widened if no value can be
//! lost. Anything else is a mismatch, recorded in the [`Ctx`] with the type
//! and field it happened at, so that the call fails with that status and
//! never with a value read under the wrong schema.
//!
//! Nothing is decoded into an intermediate tree: each byte is read once,
//! by bincode, into the reader's own value.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, IntoDeserializer, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};

use super::shape::{Container, Shape, Types, Variant};

/// Levels of nesting a resolved value may have: the writer's shape comes
/// from the peer, and a recursive type could otherwise take the stack.
const MAX_DEPTH: usize = 128;

/// What one resolution knows beside the bytes: the writer's named types,
/// the elements it may still read, and the mismatch that failed it.
pub(crate) struct Ctx<'a> {
    types: &'a Types,
    depth: Cell<usize>,
    /// Elements of sequences and maps left: a sequence of units takes no
    /// bytes, so its length alone could keep a reader busy for ever.
    budget: Cell<usize>,
    mismatch: RefCell<Option<Mismatch>>,
    /// Whether the value is a call's arguments, whose places are named
    /// in a mismatch.
    args: bool,
}

/// Why a value could not be read with the reader's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    message: String,
    /// The reader's own `Deserialize` refused the value: the message is
    /// the codec's error's.
    refused: bool,
    ty: Option<String>,
    field: Option<String>,
}

impl Mismatch {
    /// The mismatch, its words taken from `reason` (the codec's error)
    /// where the reader's type refused the value itself.
    pub(crate) fn explained(mut self, reason: &str) -> Mismatch {
        if self.refused {
            let missing = reason
                .split_once("missing field `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(field, _)| field);
            self.message = match missing {
                Some(field) => format!(
                    "the field `{field}` was not sent and has no default (#[serde(default)])"
                ),
                None => reason.to_owned(),
            };
        }
        self
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.ty, &self.field) {
            (Some(ty), Some(field)) => write!(f, "`{ty}.{field}`: {}", self.message),
            (Some(ty), None) => write!(f, "`{ty}`: {}", self.message),
            (None, Some(place)) => write!(f, "{place}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl<'a> Ctx<'a> {
    /// A resolution of a body of `body_len` bytes against `types`; `args`
    /// if the body holds a call's arguments.
    pub(crate) fn new(types: &'a Types, body_len: usize, args: bool) -> Self {
        Ctx {
            args,
            types,
            depth: Cell::new(0),
            budget: Cell::new(body_len.saturating_mul(8).saturating_add(1024)),
            mismatch: RefCell::new(None),
        }
    }

    /// The mismatch that failed the resolution, if one did.
    pub(crate) fn mismatch(&self) -> Option<Mismatch> {
        self.mismatch.borrow().clone()
    }

    fn fail<E: de::Error>(&self, message: String) -> E {
        let mut mismatch = self.mismatch.borrow_mut();
        if mismatch.is_none() {
            *mismatch = Some(Mismatch {
                message: message.clone(),
                refused: false,
                ty: None,
                field: None,
            });
        }
        E::custom(message)
    }

    /// Names the type (and the field, if not yet named) that the mismatch
    /// under way happened in; the innermost names count.
    fn within(&self, ty: Option<&str>, field: Option<&str>) {
        if let Some(mismatch) = self.mismatch.borrow_mut().as_mut()
            && mismatch.ty.is_none()
        {
            if let Some(field) = field.filter(|_| mismatch.field.is_none()) {
                mismatch.field = Some(field.to_owned());
            }
            if let Some(ty) = ty {
                mismatch.ty = Some(ty.to_owned());
            }
        }
    }

    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "the value holds more elements than its bytes can encode",
            )),
        }
    }

    fn enter<E: de::Error>(&self) -> Result<Depth<'_>, E> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(E::custom(format!(
                "the value is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        self.depth.set(depth);
        Ok(Depth(&self.depth))
    }

    fn container<E: de::Error>(&self, name: &str) -> Result<&'a Container, E> {
        self.types.get(name).ok_or_else(|| {
            E::custom(format!(
                "the sender's schema names a type `{name}` it does not describe"
            ))
        })
    }
}

/// One level of nesting, given back when dropped.
struct Depth<'c>(&'c Cell<usize>);

impl Drop for Depth<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The reader's `seed` for a value the writer wrote in `shape`, handed to
/// bincode wherever a value of that shape comes next.
pub(crate) struct Bridge<'c, 'a, S> {
    pub(crate) seed: S,
    pub(crate) shape: &'a Shape,
    pub(crate) ctx: &'c Ctx<'a>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Bridge<'_, '_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Resolver {
            d,
            shape: self.shape,
            ctx: self.ctx,
        })
    }
}

/// A bincode deserializer seen through the writer's shape.
struct Resolver<'c, 'a, D> {
    d: D,
    shape: &'a Shape,
    ctx: &'c Ctx<'a>,
}

/// What the writer sent, in words, for a mismatch's message.
fn sent(shape: &Shape, types: &Types) -> String {
    match shape {
        Shape::Unit => "()".to_owned(),
        Shape::Bool => "a bool".to_owned(),
        Shape::I8 => "an i8".to_owned(),
        Shape::I16 => "an i16".to_owned(),
        Shape::I32 => "an i32".to_owned(),
        Shape::I64 => "an i64".to_owned(),
        Shape::I128 => "an i128".to_owned(),
        Shape::U8 => "a u8".to_owned(),
        Shape::U16 => "a u16".to_owned(),
        Shape::U32 => "a u32".to_owned(),
        Shape::U64 => "a u64".to_owned(),
        Shape::U128 => "a u128".to_owned(),
        Shape::F32 => "an f32".to_owned(),
        Shape::F64 => "an f64".to_owned(),
        Shape::Char => "a char".to_owned(),
        Shape::Str => "a string".to_owned(),
        Shape::Bytes => "bytes".to_owned(),
        Shape::Option(_) => "an option".to_owned(),
        Shape::Seq(_) => "a sequence".to_owned(),
        Shape::Map(..) => "a map".to_owned(),
        Shape::Tuple(elements) => format!("a tuple of {}", elements.len()),
        Shape::Array(_, size) => format!("an array of {size}"),
        Shape::Named(name) => match types.get(name) {
            Some(Container::Enum(_)) => format!("the enum `{name}`"),
            _ => format!("the struct `{name}`"),
        },
    }
}

/// The integer and float kinds, for widening.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Number {
    Signed(u32),
    Unsigned(u32),
    Float(u32),
}

fn number(shape: &Shape) -> Option<Number> {
    Some(match shape {
        Shape::I8 => Number::Signed(8),
        Shape::I16 => Number::Signed(16),
        Shape::I32 => Number::Signed(32),
        Shape::I64 => Number::Signed(64),
        Shape::I128 => Number::Signed(128),
        Shape::U8 => Number::Unsigned(8),
        Shape::U16 => Number::Unsigned(16),
        Shape::U32 => Number::Unsigned(32),
        Shape::U64 => Number::Unsigned(64),
        Shape::U128 => Number::Unsigned(128),
        Shape::F32 => Number::Float(32),
        Shape::F64 => Number::Float(64),
        _ => return None,
    })
}

/// Whether every value of `from` is a value of `to`.
fn widens(from: Number, to: Number) -> bool {
    match (from, to) {
        (Number::Signed(a), Number::Signed(b))
        | (Number::Unsigned(a), Number::Unsigned(b))
        | (Number::Float(a), Number::Float(b)) => a <= b,
        (Number::Unsigned(a), Number::Signed(b)) => a < b,
        _ => false,
    }
}

/// Reads the writer's number and hands it to `visitor` as the reader's
/// kind `to` (named `what`), if that loses nothing.
macro_rules! number_method {
    ($($method:ident => $to:expr, $what:literal;)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.number(visitor, $to, $what)
        })*
    };
}

impl<'de, 'c, 'a, D: Deserializer<'de>> Resolver<'c, 'a, D> {
    fn at(d: D, shape: &'a Shape, ctx: &'c Ctx<'a>) -> Self {
        Resolver { d, shape, ctx }
    }

    fn mismatch(&self, read_as: &str) -> D::Error {
        self.ctx.fail(format!(
            "sent as {}, read as {read_as}",
            sent(self.shape, self.ctx.types)
        ))
    }

    /// The writer's newtype struct read as what it wraps, if the reader
    /// asks for anything but a newtype: the bytes are the same.
    fn unwrapped(self) -> Result<Self, D::Error> {
        let mut this = self;
        // A hostile schema may make newtypes wrap each other in a circle.
        for _ in 0..MAX_DEPTH {
            let Shape::Named(name) = this.shape else {
                return Ok(this);
            };
            match this.ctx.container::<D::Error>(name)? {
                Container::Newtype(inner) => this.shape = inner,
                _ => return Ok(this),
            }
        }
        Err(de::Error::custom(format!(
            "the sender's schema nests newtypes more than {MAX_DEPTH} deep"
        )))
    }

    fn number<V: Visitor<'de>>(
        self,
        visitor: V,
        to: Number,
        what: &str,
    ) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match number(this.shape) {
            Some(from) if widens(from, to) => {}
            _ => return Err(this.mismatch(what)),
        }
        // The writer's own kind is read; the visitor of the reader's
        // accepts any narrower number of the same family (serde's
        // primitive visitors do).
        let d = this.d;
        match this.shape {
            Shape::I8 => d.deserialize_i8(visitor),
            Shape::I16 => d.deserialize_i16(visitor),
            Shape::I32 => d.deserialize_i32(visitor),
            Shape::I64 => d.deserialize_i64(visitor),
            Shape::I128 => d.deserialize_i128(visitor),
            Shape::U8 => d.deserialize_u8(visitor),
            Shape::U16 => d.deserialize_u16(visitor),
            Shape::U32 => d.deserialize_u32(visitor),
            Shape::U64 => d.deserialize_u64(visitor),
            Shape::U128 => d.deserialize_u128(visitor),
            Shape::F32 => d.deserialize_f32(WidenF32(visitor)),
            _ => d.deserialize_f64(visitor),
        }
    }

    fn tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        let elements: Elements<'a> = match this.shape {
            Shape::Tuple(elements) => Elements::Each(elements),
            Shape::Array(content, size) => Elements::Same(content, *size),
            Shape::Named(name) => match this.ctx.container::<D::Error>(name)? {
                Container::TupleStruct(elements) => Elements::Each(elements),
                _ => return Err(this.mismatch(&format!("a tuple of {len}"))),
            },
            _ => return Err(this.mismatch(&format!("a tuple of {len}"))),
        };
        if elements.len() != len {
            return Err(this.mismatch(&format!("a tuple of {len}")));
        }
        let _depth = this.ctx.enter::<D::Error>()?;
        this.d.deserialize_tuple(
            len,
            TupleBridge {
                visitor,
                elements,
                ctx: this.ctx,
            },
        )
    }

    /// A writer's struct, to a reader that wants a struct (its `fields`)
    /// or, with `fields` `None`, a map of every field.
    fn fields<V: Visitor<'de>>(
        self,
        name: &str,
        fields: Option<&'static [&'static str]>,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        let written = match this.shape {
            Shape::Named(written) => match this.ctx.container::<D::Error>(written)? {
                Container::Struct(written) => written,
                _ => return Err(this.mismatch(&format!("the struct `{name}`"))),
            },
            _ => return Err(this.mismatch(&format!("the struct `{name}`"))),
        };
        let _depth = this.ctx.enter::<D::Error>()?;
        this.d.deserialize_tuple(
            written.len(),
            StructBridge {
                visitor,
                written,
                wanted: fields,
                ctx: this.ctx,
                ty: name,
            },
        )
    }
}

/// The elements a tuple's writer wrote.
#[derive(Clone, Copy)]
enum Elements<'a> {
    Each(&'a [Shape]),
    Same(&'a Shape, usize),
    Fields(&'a [(String, Shape)]),
}

impl<'a> Elements<'a> {
    fn len(&self) -> usize {
        match self {
            Elements::Each(shapes) => shapes.len(),
            Elements::Same(_, size) => *size,
            Elements::Fields(fields) => fields.len(),
        }
    }

    fn get(&self, i: usize) -> Option<&'a Shape> {
        match *self {
            Elements::Each(shapes) => shapes.get(i),
            Elements::Same(shape, size) => (i < size).then_some(shape),
            Elements::Fields(fields) => fields.get(i).map(|(_, shape)| shape),
        }
    }
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Resolver<'_, '_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        match self.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Bool => self.deserialize_bool(visitor),
            Shape::I8 => self.deserialize_i8(visitor),
            Shape::I16 => self.deserialize_i16(visitor),
            Shape::I32 => self.deserialize_i32(visitor),
            Shape::I64 => self.deserialize_i64(visitor),
            Shape::I128 => self.deserialize_i128(visitor),
            Shape::U8 => self.deserialize_u8(visitor),
            Shape::U16 => self.deserialize_u16(visitor),
            Shape::U32 => self.deserialize_u32(visitor),
            Shape::U64 => self.deserialize_u64(visitor),
            Shape::U128 => self.deserialize_u128(visitor),
            Shape::F32 => self.deserialize_f32(visitor),
            Shape::F64 => self.deserialize_f64(visitor),
            Shape::Char => self.deserialize_char(visitor),
            Shape::Str => self.deserialize_string(visitor),
            Shape::Bytes => self.deserialize_byte_buf(visitor),
            Shape::Option(_) => self.deserialize_option(visitor),
            Shape::Seq(_) => self.deserialize_seq(visitor),
            Shape::Map(..) => self.deserialize_map(visitor),
            Shape::Tuple(elements) => {
                let len = elements.len();
                self.deserialize_tuple(len, visitor)
            }
            Shape::Array(_, size) => {
                let len = *size;
                self.deserialize_tuple(len, visitor)
            }
            Shape::Named(name) => match self.ctx.container::<D::Error>(name)? {
                Container::UnitStruct => visitor.visit_unit(),
                Container::Newtype(_) => self.unwrapped()?.deserialize_any(visitor),
                Container::TupleStruct(elements) => {
                    let len = elements.len();
                    self.deserialize_tuple(len, visitor)
                }
                Container::Struct(_) => self.fields(name, None, visitor),
                Container::Enum(_) => self.deserialize_enum("", &[], visitor),
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Bool => this.d.deserialize_bool(visitor),
            _ => Err(this.mismatch("a bool")),
        }
    }

    number_method! {
        deserialize_i8 => Number::Signed(8), "an i8";
        deserialize_i16 => Number::Signed(16), "an i16";
        deserialize_i32 => Number::Signed(32), "an i32";
        deserialize_i64 => Number::Signed(64), "an i64";
        deserialize_i128 => Number::Signed(128), "an i128";
        deserialize_u8 => Number::Unsigned(8), "a u8";
        deserialize_u16 => Number::Unsigned(16), "a u16";
        deserialize_u32 => Number::Unsigned(32), "a u32";
        deserialize_u64 => Number::Unsigned(64), "a u64";
        deserialize_u128 => Number::Unsigned(128), "a u128";
        deserialize_f32 => Number::Float(32), "an f32";
        deserialize_f64 => Number::Float(64), "an f64";
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Char => this.d.deserialize_char(visitor),
            _ => Err(this.mismatch("a char")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Str => this.d.deserialize_str(visitor),
            _ => Err(this.mismatch("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Str => this.d.deserialize_string(visitor),
            _ => Err(this.mismatch("a string")),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Bytes => this.d.deserialize_bytes(visitor),
            // The same bytes on the wire (docs/PROTOCOL.md §6).
            Shape::Seq(item) if **item == Shape::U8 => this.d.deserialize_bytes(visitor),
            _ => Err(this.mismatch("bytes")),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Option(inner) => {
                let _depth = this.ctx.enter::<D::Error>()?;
                this.d.deserialize_option(OptionBridge {
                    visitor,
                    inner,
                    ctx: this.ctx,
                })
            }
            _ => Err(this.mismatch("an option")),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Named(name)
                if matches!(this.ctx.container::<D::Error>(name)?, Container::UnitStruct) =>
            {
                visitor.visit_unit()
            }
            _ => Err(this.mismatch("()")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let inner = match self.shape {
            Shape::Named(name) => match self.ctx.container::<D::Error>(name)? {
                Container::Newtype(inner) => inner,
                _ => self.shape,
            },
            _ => self.shape,
        };
        // A newtype's bytes are its field's, whichever side wraps it.
        visitor.visit_newtype_struct(Resolver::at(self.d, inner, self.ctx))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Seq(item) => {
                let _depth = this.ctx.enter::<D::Error>()?;
                this.d.deserialize_seq(SeqBridge {
                    visitor,
                    item,
                    ctx: this.ctx,
                })
            }
            _ => Err(this.mismatch("a sequence")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        match this.shape {
            Shape::Map(key, value) => {
                let _depth = this.ctx.enter::<D::Error>()?;
                this.d.deserialize_map(MapBridge {
                    visitor,
                    key,
                    value,
                    ctx: this.ctx,
                })
            }
            Shape::Named(name)
                if matches!(this.ctx.container::<D::Error>(name)?, Container::Struct(_)) =>
            {
                this.fields(name, None, visitor)
            }
            _ => Err(this.mismatch("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.fields(name, Some(fields), visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let this = self.unwrapped()?;
        let written = match this.shape {
            Shape::Named(written) => match this.ctx.container::<D::Error>(written)? {
                Container::Enum(written) => written,
                _ => return Err(this.mismatch(&format!("the enum `{name}`"))),
            },
            _ => return Err(this.mismatch(&format!("the enum `{name}`"))),
        };
        let _depth = this.ctx.enter::<D::Error>()?;
        let read = this.d.deserialize_enum(
            "",
            &[],
            EnumBridge {
                visitor,
                written,
                // Empty from `deserialize_any`: any name goes.
                known: variants,
                ctx: this.ctx,
            },
        );
        if read.is_err() {
            this.ctx.within(Some(name).filter(|n| !n.is_empty()), None);
        }
        read
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        Skip {
            shape: self.shape,
            ctx: self.ctx,
        }
        .deserialize(self.d)?;
        visitor.visit_unit()
    }
}

/// An `f32` handed to a reader of `f64`s as one.
struct WidenF32<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for WidenF32<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<V::Value, E> {
        self.0.visit_f64(f64::from(v))
    }
}

struct OptionBridge<'c, 'a, V> {
    visitor: V,
    inner: &'a Shape,
    ctx: &'c Ctx<'a>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for OptionBridge<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.visitor
            .visit_some(Resolver::at(d, self.inner, self.ctx))
    }
}

struct SeqBridge<'c, 'a, V> {
    visitor: V,
    item: &'a Shape,
    ctx: &'c Ctx<'a>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SeqBridge<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(Items {
            seq,
            item: self.item,
            ctx: self.ctx,
        })
    }
}

/// A writer's sequence, element by element.
struct Items<'c, 'a, A> {
    seq: A,
    item: &'a Shape,
    ctx: &'c Ctx<'a>,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Items<'_, '_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.ctx.spend::<A::Error>()?;
        self.seq.next_element_seed(Bridge {
            seed,
            shape: self.item,
            ctx: self.ctx,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        // The claim is the peer's; the reader's `Vec` preallocates from it.
        self.seq.size_hint().map(|n| n.min(4096))
    }
}

struct TupleBridge<'c, 'a, V> {
    visitor: V,
    elements: Elements<'a>,
    ctx: &'c Ctx<'a>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for TupleBridge<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_seq(Elements_ {
            seq,
            elements: self.elements,
            next: 0,
            ctx: self.ctx,
        })
    }
}

/// A writer's tuple, element by element, each in its own shape.
#[allow(non_camel_case_types)]
struct Elements_<'c, 'a, A> {
    seq: A,
    elements: Elements<'a>,
    next: usize,
    ctx: &'c Ctx<'a>,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Elements_<'_, '_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let Some(shape) = self.elements.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        self.ctx.spend::<A::Error>()?;
        let read = self.seq.next_element_seed(Bridge {
            seed,
            shape,
            ctx: self.ctx,
        });
        if read.is_err() && self.ctx.args && self.ctx.depth.get() == 1 {
            self.ctx
                .within(None, Some(&format!("argument {}", self.next)));
        }
        read
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.elements.len() - self.next)
    }
}

struct MapBridge<'c, 'a, V> {
    visitor: V,
    key: &'a Shape,
    value: &'a Shape,
    ctx: &'c Ctx<'a>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for MapBridge<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(Entries {
            map,
            key: self.key,
            value: self.value,
            ctx: self.ctx,
        })
    }
}

/// A writer's map, entry by entry.
struct Entries<'c, 'a, A> {
    map: A,
    key: &'a Shape,
    value: &'a Shape,
    ctx: &'c Ctx<'a>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Entries<'_, '_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.ctx.spend::<A::Error>()?;
        self.map.next_key_seed(Bridge {
            seed,
            shape: self.key,
            ctx: self.ctx,
        })
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(Bridge {
            seed,
            shape: self.value,
            ctx: self.ctx,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint().map(|n| n.min(4096))
    }
}

struct StructBridge<'c, 'a, 'n, V> {
    visitor: V,
    written: &'a [(String, Shape)],
    wanted: Option<&'static [&'static str]>,
    ctx: &'c Ctx<'a>,
    ty: &'n str,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for StructBridge<'_, '_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let failed = Cell::new(false);
        let read = self.visitor.visit_map(Fields {
            seq,
            written: self.written,
            wanted: self.wanted,
            next: 0,
            ctx: self.ctx,
            failed: &failed,
        });
        let read = match read {
            // The reader refused what it was given without a byte or a
            // shape being wrong: a field it needs was not sent (serde's
            // "missing field"), or its own checks failed.
            Err(e) if !failed.get() && self.ctx.mismatch.borrow().is_none() => {
                // Its words are in the codec's error, read where the
                // codec's type is known (`Mismatch::refused`).
                let refusal = self.ctx.fail::<A::Error>(String::new());
                if let Some(mismatch) = self.ctx.mismatch.borrow_mut().as_mut() {
                    mismatch.refused = true;
                }
                drop(refusal);
                Err(e)
            }
            read => read,
        };
        if read.is_err() {
            self.ctx.within(Some(self.ty), None);
        }
        read
    }
}

/// A writer's struct as a map from field names: the fields the reader
/// does not know are read past.
struct Fields<'c, 'a, 'f, A> {
    seq: A,
    written: &'a [(String, Shape)],
    wanted: Option<&'static [&'static str]>,
    next: usize,
    ctx: &'c Ctx<'a>,
    failed: &'f Cell<bool>,
}

impl<'de, A: SeqAccess<'de>> MapAccess<'de> for Fields<'_, '_, '_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some((name, shape)) = self.written.get(self.next) {
            if self
                .wanted
                .is_none_or(|wanted| wanted.contains(&name.as_str()))
            {
                let key: de::value::StrDeserializer<'_, A::Error> =
                    name.as_str().into_deserializer();
                return seed.deserialize(key).map(Some);
            }
            self.next += 1;
            let skipped = self.seq.next_element_seed(Skip {
                shape,
                ctx: self.ctx,
            });
            if skipped.is_err() {
                self.failed.set(true);
            }
            skipped?;
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let Some((name, shape)) = self.written.get(self.next) else {
            return Err(de::Error::custom(
                "a struct's value was asked for past its fields",
            ));
        };
        self.next += 1;
        let read = self.seq.next_element_seed(Bridge {
            seed,
            shape,
            ctx: self.ctx,
        });
        match read {
            Ok(Some(value)) => Ok(value),
            Ok(None) => {
                self.failed.set(true);
                Err(de::Error::invalid_length(
                    self.next - 1,
                    &"the struct's fields",
                ))
            }
            Err(e) => {
                self.failed.set(true);
                self.ctx.within(None, Some(name));
                Err(e)
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.written.len() - self.next)
    }
}

struct EnumBridge<'c, 'a, V> {
    visitor: V,
    written: &'a std::collections::BTreeMap<u32, (String, Variant)>,
    known: &'static [&'static str],
    ctx: &'c Ctx<'a>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for EnumBridge<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let (index, access) = data.variant_seed(std::marker::PhantomData::<u32>)?;
        let Some((name, payload)) = self.written.get(&index) else {
            return Err(de::Error::custom(format!(
                "variant index {index} is not in the sender's schema"
            )));
        };
        if !self.known.is_empty() && !self.known.contains(&name.as_str()) {
            return Err(self.ctx.fail(format!(
                "the variant `{name}` was sent, and this side has no such variant"
            )));
        }
        self.visitor.visit_enum(Chosen {
            access,
            name,
            payload,
            ctx: self.ctx,
        })
    }
}

/// The writer's variant, offered by name.
struct Chosen<'c, 'a, A> {
    access: A,
    name: &'a str,
    payload: &'a Variant,
    ctx: &'c Ctx<'a>,
}

impl<'de, 'c, 'a, A: VariantAccess<'de>> EnumAccess<'de> for Chosen<'c, 'a, A> {
    type Error = A::Error;
    type Variant = Payload<'c, 'a, A>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let name: de::value::StrDeserializer<'_, A::Error> = self.name.into_deserializer();
        let chosen = seed.deserialize(name)?;
        Ok((
            chosen,
            Payload {
                access: self.access,
                name: self.name,
                payload: self.payload,
                ctx: self.ctx,
            },
        ))
    }
}

struct Payload<'c, 'a, A> {
    access: A,
    name: &'a str,
    payload: &'a Variant,
    ctx: &'c Ctx<'a>,
}

impl<'de, A: VariantAccess<'de>> Payload<'_, '_, A> {
    fn mismatch(&self, read_as: &str) -> A::Error {
        let sent = match self.payload {
            Variant::Unit => "no value".to_owned(),
            Variant::Newtype(shape) => sent(shape, self.ctx.types),
            Variant::Tuple(elements) => format!("a tuple of {}", elements.len()),
            Variant::Struct(_) => "fields".to_owned(),
        };
        self.ctx.fail(format!(
            "the variant `{}` was sent with {sent}, and is read with {read_as}",
            self.name
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Payload<'_, '_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        match self.payload {
            Variant::Unit => self.access.unit_variant(),
            _ => Err(self.mismatch("no value")),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        match self.payload {
            Variant::Newtype(shape) => self.access.newtype_variant_seed(Bridge {
                seed,
                shape,
                ctx: self.ctx,
            }),
            _ => Err(self.mismatch("one value")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        match self.payload {
            Variant::Tuple(elements) if elements.len() == len => self.access.tuple_variant(
                len,
                TupleBridge {
                    visitor,
                    elements: Elements::Each(elements),
                    ctx: self.ctx,
                },
            ),
            _ => Err(self.mismatch(&format!("a tuple of {len}"))),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        match self.payload {
            Variant::Struct(written) => self.access.tuple_variant(
                written.len(),
                StructBridge {
                    visitor,
                    written,
                    wanted: Some(fields),
                    ctx: self.ctx,
                    ty: self.name,
                },
            ),
            _ => Err(self.mismatch("fields")),
        }
    }
}

/// Reads past one value of `shape`.
struct Skip<'c, 'a> {
    shape: &'a Shape,
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for Skip<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let ignored = IgnoredAny;
        let _depth = self.ctx.enter::<D::Error>()?;
        let elements = |elements| SkipElements {
            elements,
            ctx: self.ctx,
        };
        match self.shape {
            Shape::Unit => {}
            Shape::Bool => drop(d.deserialize_bool(ignored)?),
            Shape::I8 => drop(d.deserialize_i8(ignored)?),
            Shape::I16 => drop(d.deserialize_i16(ignored)?),
            Shape::I32 => drop(d.deserialize_i32(ignored)?),
            Shape::I64 => drop(d.deserialize_i64(ignored)?),
            Shape::I128 => drop(d.deserialize_i128(ignored)?),
            Shape::U8 => drop(d.deserialize_u8(ignored)?),
            Shape::U16 => drop(d.deserialize_u16(ignored)?),
            Shape::U32 => drop(d.deserialize_u32(ignored)?),
            Shape::U64 => drop(d.deserialize_u64(ignored)?),
            Shape::U128 => drop(d.deserialize_u128(ignored)?),
            Shape::F32 => drop(d.deserialize_f32(ignored)?),
            Shape::F64 => drop(d.deserialize_f64(ignored)?),
            Shape::Char => drop(d.deserialize_char(ignored)?),
            Shape::Str => drop(d.deserialize_str(ignored)?),
            Shape::Bytes => drop(d.deserialize_bytes(ignored)?),
            Shape::Option(inner) => d.deserialize_option(SkipOption(Skip {
                shape: inner,
                ctx: self.ctx,
            }))?,
            Shape::Seq(item) => d.deserialize_seq(SkipSeq {
                item,
                value: None,
                ctx: self.ctx,
            })?,
            Shape::Map(key, value) => d.deserialize_map(SkipSeq {
                item: key,
                value: Some(value),
                ctx: self.ctx,
            })?,
            Shape::Tuple(shapes) => {
                d.deserialize_tuple(shapes.len(), elements(Elements::Each(shapes)))?;
            }
            Shape::Array(content, size) => {
                d.deserialize_tuple(*size, elements(Elements::Same(content, *size)))?;
            }
            Shape::Named(name) => match self.ctx.container::<D::Error>(name)? {
                Container::UnitStruct => {}
                Container::Newtype(inner) => Skip {
                    shape: inner,
                    ctx: self.ctx,
                }
                .deserialize(d)?,
                Container::TupleStruct(shapes) => {
                    d.deserialize_tuple(shapes.len(), elements(Elements::Each(shapes)))?;
                }
                Container::Struct(fields) => {
                    d.deserialize_tuple(fields.len(), elements(Elements::Fields(fields)))?;
                }
                Container::Enum(variants) => d.deserialize_enum(
                    "",
                    &[],
                    SkipEnum {
                        variants,
                        ctx: self.ctx,
                    },
                )?,
            },
        }
        Ok(())
    }
}

struct SkipOption<'c, 'a>(Skip<'c, 'a>);

impl<'de> Visitor<'de> for SkipOption<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an option")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

/// Reads past a sequence, or with `value`, a map.
struct SkipSeq<'c, 'a> {
    item: &'a Shape,
    value: Option<&'a Shape>,
    ctx: &'c Ctx<'a>,
}

impl<'de> Visitor<'de> for SkipSeq<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.ctx.spend::<A::Error>()?;
            let skip = Skip {
                shape: self.item,
                ctx: self.ctx,
            };
            if seq.next_element_seed(skip)?.is_none() {
                return Ok(());
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let value = self.value.unwrap_or(self.item);
        loop {
            self.ctx.spend::<A::Error>()?;
            let skip = Skip {
                shape: self.item,
                ctx: self.ctx,
            };
            if map.next_key_seed(skip)?.is_none() {
                return Ok(());
            }
            map.next_value_seed(Skip {
                shape: value,
                ctx: self.ctx,
            })?;
        }
    }
}

struct SkipElements<'c, 'a> {
    elements: Elements<'a>,
    ctx: &'c Ctx<'a>,
}

impl<'de> Visitor<'de> for SkipElements<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} values", self.elements.len())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for i in 0..self.elements.len() {
            // Spent here too: elements of no bytes (units) would otherwise
            // let a schema of a huge array, or of tuples in tuples, keep a
            // thread skipping without reading anything.
            self.ctx.spend::<A::Error>()?;
            let Some(shape) = self.elements.get(i) else {
                break;
            };
            let skip = Skip {
                shape,
                ctx: self.ctx,
            };
            if seq.next_element_seed(skip)?.is_none() {
                return Err(de::Error::invalid_length(i, &self));
            }
        }
        Ok(())
    }
}

struct SkipEnum<'c, 'a> {
    variants: &'a std::collections::BTreeMap<u32, (String, Variant)>,
    ctx: &'c Ctx<'a>,
}

impl<'de> Visitor<'de> for SkipEnum<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an enum")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (index, access) = data.variant_seed(std::marker::PhantomData::<u32>)?;
        let Some((_, payload)) = self.variants.get(&index) else {
            return Err(de::Error::custom(format!(
                "variant index {index} is not in the sender's schema"
            )));
        };
        let elements = |elements| SkipElements {
            elements,
            ctx: self.ctx,
        };
        match payload {
            Variant::Unit => access.unit_variant(),
            Variant::Newtype(shape) => access.newtype_variant_seed(Skip {
                shape,
                ctx: self.ctx,
            }),
            Variant::Tuple(shapes) => {
                access.tuple_variant(shapes.len(), elements(Elements::Each(shapes)))
            }
            Variant::Struct(fields) => {
                access.tuple_variant(fields.len(), elements(Elements::Fields(fields)))
            }
        }
    }
}
