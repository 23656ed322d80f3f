//! A serde adapter that refuses values nested deeper than a limit.
//!
//! Decoding a recursive type (a tree, a linked list, a JSON-like value)
//! recurses once per level, and bincode sets no limit: a 1 MiB body of
//! "one more level" bytes would overflow the stack and abort the whole
//! process, which no `Result` can catch. Dropping such a value would
//! recurse just as deep. So every decode goes through [`DepthLimited`],
//! which counts levels of compound values (sequences, maps, tuples,
//! structs, enums, options, newtypes) and fails past the limit.
//!
//! The adapter wraps the deserializer and, at each compound value, the
//! visitor, whose access types (`SeqAccess`, `MapAccess`, `EnumAccess`,
//! `VariantAccess`) then hand the nested deserializers out wrapped again
//! with one level less.
//!
//! It also caps the length hints of sequences and maps at the body's size.
//! serde preallocates up to 1 MiB on a hint, so a 9-byte body claiming
//! 2^40 `u64`s made the server allocate 1 MiB before failing; every element
//! takes at least a byte on the wire (but zero-sized ones, which need no
//! room), so no honest hint is cut.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// Deepest nesting a decoded value may have, counting each sequence, map,
/// tuple, struct, enum variant, option and newtype as one level (the
/// arguments' tuple included). serde_json's default is 128 too.
pub(crate) const MAX_DEPTH: usize = 128;

/// Deserializes a `T` through the depth limit, from a body of `body_len`
/// bytes.
pub(crate) struct DepthLimited<T> {
    body_len: usize,
    value: PhantomData<T>,
}

impl<T> DepthLimited<T> {
    pub(crate) fn new(body_len: usize) -> Self {
        DepthLimited {
            body_len,
            value: PhantomData,
        }
    }
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for DepthLimited<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        T::deserialize(Limited {
            inner: deserializer,
            left: MAX_DEPTH,
            most_items: self.body_len,
        })
    }
}

/// [`DepthLimited`] for a seed: a value whose type is known only at run
/// time (a format a server described), which a hostile description can
/// make recurse without end.
pub(crate) struct SeedLimited<S> {
    pub(crate) seed: S,
    pub(crate) body_len: usize,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for SeedLimited<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Limited {
            inner: deserializer,
            left: MAX_DEPTH,
            most_items: self.body_len,
        })
    }
}

/// A deserializer, visitor, access or seed with `left` levels to go.
struct Limited<T> {
    inner: T,
    left: usize,
    /// The most items any sequence or map in the body can hold.
    most_items: usize,
}

impl<T> Limited<T> {
    /// The same limit, one level deeper, around `inner`.
    fn deeper<E: de::Error, U>(&self, inner: U) -> Result<Limited<U>, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Limited {
                inner,
                left,
                most_items: self.most_items,
            }),
            None => Err(E::custom(format_args!(
                "the value is nested more than {MAX_DEPTH} levels deep"
            ))),
        }
    }

    /// The same limit around `inner`: for what the level already counted.
    fn same<U>(&self, inner: U) -> Limited<U> {
        Limited {
            inner,
            left: self.left,
            most_items: self.most_items,
        }
    }
}

/// Scalars cannot nest: forwarded as they are.
macro_rules! forward_scalars {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = D::Error;

    forward_scalars! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_option(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_seq(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.deserialize_ignored_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// Forwards scalar visits unchanged.
macro_rules! forward_visits {
    ($($method:ident: $ty:ty)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Limited<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visits! {
        visit_bool: bool visit_i8: i8 visit_i16: i16 visit_i32: i32 visit_i64: i64
        visit_i128: i128 visit_u8: u8 visit_u16: u16 visit_u32: u32 visit_u64: u64
        visit_u128: u128 visit_f32: f32 visit_f64: f64 visit_char: char
        visit_str: &str visit_borrowed_str: &'de str visit_string: String
        visit_bytes: &[u8] visit_borrowed_bytes: &'de [u8] visit_byte_buf: Vec<u8>
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let deserializer = self.same(deserializer);
        self.inner.visit_some(deserializer)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        let deserializer = self.same(deserializer);
        self.inner.visit_newtype_struct(deserializer)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.same(seq);
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.same(map);
        self.inner.visit_map(map)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.same(data);
        self.inner.visit_enum(data)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Limited<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        let deserializer = self.same(deserializer);
        self.inner.deserialize(deserializer)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.same(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(self.most_items))
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.same(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        let seed = self.same(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint().map(|n| n.min(self.most_items))
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Limited<A> {
    type Error = A::Error;
    type Variant = Limited<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), A::Error> {
        let (left, most_items) = (self.left, self.most_items);
        let (value, variant) = self.inner.variant_seed(seed)?;
        let variant = Limited {
            inner: variant,
            left,
            most_items,
        };
        Ok((value, variant))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Limited<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.same(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.deeper(visitor)?;
        self.inner.struct_variant(fields, visitor)
    }
}
