//! The one seam between the toolkit and its serialization format.
//!
//! Values travel as bincode 2 in its `standard` configuration (little-endian,
//! variable-length integers) through serde. Nothing else in the crate names
//! bincode, so another format can replace it here alone.

use bincode::config::{self, Config};
use bincode::enc::write::Writer;
use bincode::error::{DecodeError, EncodeError};
use bytes::{BufMut, BytesMut};
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::depth::DepthLimited;
use crate::error::CodecError;

/// The rungs of the decode allocation limit, 4x apart.
///
/// bincode allocates an owned string or byte buffer at the length its prefix
/// claims, before reading the bytes; only its compile-time `with_limit` stops
/// a 12-byte message from asking for a terabyte. The limit counts memory, not
/// wire bytes: a string claims its length, but every integer claims its size
/// in memory too (8 bytes for a `u64` or a length whose varint took one byte,
/// 16 for a `u128`), so an honest body claims up to [`CLAIM_RATIO`] times its
/// size (a `Vec<u64>` of small numbers, 8x, failed to decode when the limit
/// was the body's size). The smallest rung at or above that admits every
/// honest message and caps a hostile one below 4x as much.
const RUNGS: [usize; 9] = [
    1 << 16,
    1 << 18,
    1 << 20,
    1 << 22,
    1 << 24,
    1 << 26,
    1 << 28,
    1 << 30,
    u32::MAX as usize,
];

/// The most memory bincode counts per byte of an honest body (a `u128`
/// whose varint is one byte).
const CLAIM_RATIO: usize = 16;

/// Appends `value` to `buf`, failing once more than `limit` bytes would be
/// written rather than after encoding all of an oversized value. On
/// failure `buf` is as it was: what the value had written is taken off
/// again (a stream frame once went out with a length prefix and no bytes
/// after its last item).
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<(), EncodeFailure> {
    let start = buf.len();
    let mut writer = BoundedWriter {
        buf,
        remaining: limit,
        overflowed: false,
    };
    let encoded = bincode::serde::encode_into_writer(value, &mut writer, config::standard());
    let overflowed = writer.overflowed;
    match encoded {
        Ok(()) => Ok(()),
        Err(e) => {
            buf.truncate(start);
            if overflowed {
                Err(EncodeFailure::TooLarge)
            } else {
                Err(EncodeFailure::Codec(CodecError::new(
                    crate::reason::encode(&e),
                )))
            }
        }
    }
}

/// Why [`encode`] failed.
#[derive(Debug)]
pub(crate) enum EncodeFailure {
    /// The value needs more bytes than the limit allows.
    TooLarge,
    /// The value could not be represented (e.g. a map of unknown length).
    Codec(CodecError),
}

/// Decodes a whole `body` into `T`, borrowing from it where `T` allows.
/// Trailing bytes are an error: a body is exactly one value. So is a value
/// nested deeper than [`MAX_DEPTH`](crate::depth::MAX_DEPTH) levels.
pub(crate) fn decode<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, CodecError> {
    let len = body.len();
    match decode_seed(DepthLimited::<T>::new(len), body) {
        Ok((value, read)) if read == len => Ok(value),
        Ok((_, read)) => Err(CodecError::new(format!(
            "{} trailing bytes after the value",
            len - read
        ))),
        Err(e) => Err(e),
    }
}

/// Decodes one value with `seed`, which must take all of `body`: a value
/// whose type is known only at run time (the `rpc` command line's, from a
/// server's description).
pub(crate) fn decode_with<'de, S: DeserializeSeed<'de>>(
    seed: S,
    body: &'de [u8],
) -> Result<S::Value, CodecError> {
    let len = body.len();
    let seed = crate::depth::SeedLimited {
        seed,
        body_len: len,
    };
    match decode_seed(seed, body) {
        Ok((value, read)) if read == len => Ok(value),
        Ok((_, read)) => Err(CodecError::new(format!(
            "{} trailing bytes after the value",
            len - read
        ))),
        Err(e) => Err(e),
    }
}

/// Decodes `count` values that follow each other at the front of `bytes`
/// (the items of a stream frame), handing each to `take` as it is decoded;
/// returns the bytes they took. One decoder for the whole run: per value,
/// setting one up cost more than decoding a small one. A value that does
/// not decode fails the run after those before it were handed over.
pub(crate) fn decode_run<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    count: usize,
    take: impl FnMut(T),
) -> Result<usize, CodecError> {
    let run = Run {
        count,
        body_len: bytes.len(),
        take,
        value: PhantomData,
    };
    decode_seed(run, bytes).map(|((), read)| read)
}

/// Decodes through `seed` from the front of `bytes`, under the allocation
/// limit of the smallest rung that holds them.
fn decode_seed<'de, S: DeserializeSeed<'de>>(
    seed: S,
    bytes: &'de [u8],
) -> Result<(S::Value, usize), CodecError> {
    let len = bytes.len();
    let claims = len.saturating_mul(CLAIM_RATIO);
    // The limit is a const generic: one branch per rung.
    macro_rules! on_rung {
        ($($rung:literal)*) => {
            $(if claims <= RUNGS[$rung] {
                decode_limited::<S, { RUNGS[$rung] }>(seed, bytes)
            } else)* {
                decode_limited::<S, { RUNGS[RUNGS.len() - 1] }>(seed, bytes)
            }
        };
    }
    let result = on_rung!(0 1 2 3 4 5 6 7);
    result.map_err(|e| match e {
        DecodeError::LimitExceeded => CodecError::new(format!(
            "a length prefix claims more memory than a {len}-byte message can hold"
        )),
        e => CodecError::new(crate::reason::decode(&e)),
    })
}

fn decode_limited<'de, S: DeserializeSeed<'de>, const LIMIT: usize>(
    seed: S,
    body: &'de [u8],
) -> Result<(S::Value, usize), DecodeError> {
    let config = config::standard().with_limit::<LIMIT>();
    debug_assert!(config.limit().is_some());
    bincode::serde::seed_decode_from_slice(seed, body, config)
}

/// A run of `count` values, read as bincode reads a tuple (one after the
/// other, no length), each through the depth limit on its own.
struct Run<T, F> {
    count: usize,
    body_len: usize,
    take: F,
    value: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>, F: FnMut(T)> DeserializeSeed<'de> for Run<T, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let count = self.count;
        deserializer.deserialize_tuple(count, self)
    }
}

impl<'de, T: Deserialize<'de>, F: FnMut(T)> Visitor<'de> for Run<T, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} stream items", self.count)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.count {
            match seq.next_element_seed(DepthLimited::<T>::new(self.body_len))? {
                Some(value) => (self.take)(value),
                None => return Err(serde::de::Error::invalid_length(0, &self)),
            }
        }
        Ok(())
    }
}

/// A bincode writer straight into the outgoing frame buffer.
struct BoundedWriter<'a> {
    buf: &'a mut BytesMut,
    remaining: usize,
    overflowed: bool,
}

impl Writer for BoundedWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        if bytes.len() > self.remaining {
            self.overflowed = true;
            return Err(EncodeError::Other("value exceeds the frame limit"));
        }
        self.remaining -= bytes.len();
        self.buf.put_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn round_trip<T>(value: T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let mut buf = BytesMut::new();
        encode(&value, &mut buf, usize::MAX).unwrap();
        assert_eq!(decode::<T>(&buf).unwrap(), value);
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_as_it_was() {
        let mut buf = BytesMut::from(&b"head"[..]);
        // The length and the first 49 bytes fit; the 50th does not.
        let failed = encode(&vec![1u8; 100], &mut buf, 50);
        assert!(matches!(failed, Err(EncodeFailure::TooLarge)));
        assert_eq!(&buf[..], b"head");
    }

    #[test]
    fn values_round_trip() {
        round_trip((1i64, -2i32, "héllo wörld ✓".to_string()));
        round_trip(Some(vec![1u8, 2, 3]));
        round_trip(HashMap::from([(1u32, "a".to_string()), (2, "b".into())]));
        round_trip(());
    }

    /// A recursive type, as users may send: one level per node.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
        Pair { left: Box<Tree>, right: Vec<Tree> },
    }

    fn chain(levels: usize) -> Tree {
        (0..levels).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
    }

    #[test]
    fn nesting_up_to_the_limit_round_trips() {
        // The tuple around the arguments is one level; each node one more.
        round_trip((chain(crate::depth::MAX_DEPTH - 2),));
        let wide = Tree::Pair {
            left: Box::new(chain(10)),
            right: (0..100).map(chain).collect(),
        };
        round_trip((wide,));
    }

    #[test]
    fn nesting_past_the_limit_is_an_error_not_a_stack_overflow() {
        let mut buf = BytesMut::new();
        encode(&(chain(crate::depth::MAX_DEPTH),), &mut buf, usize::MAX).unwrap();
        let err = decode::<(Tree,)>(&buf).unwrap_err();
        assert!(err.to_string().contains("nested more than 128"), "{err}");
        // A hostile body: variant 1 (Node) a million times. Without the
        // limit this overflows the stack and aborts the process.
        let bomb = vec![1u8; 1 << 20];
        let err = decode::<Tree>(&bomb).unwrap_err();
        assert!(err.to_string().contains("nested more than 128"), "{err}");
        // The same through sequences of sequences and options of options.
        let err = decode::<nested::Nested>(&bomb).unwrap_err();
        assert!(err.to_string().contains("nested more than 128"), "{err}");
    }

    /// A recursive type built from `Option` and `Vec` only.
    mod nested {
        #[derive(serde::Deserialize, Debug)]
        pub(super) struct Nested(#[allow(dead_code)] Option<Vec<Nested>>);
    }

    #[test]
    fn huge_string_claim_is_an_error_not_an_allocation() {
        // varint 253 = u64 follows; claims a 2^40-byte string in 9 bytes.
        let mut body = vec![253u8];
        body.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let err = decode::<String>(&body).unwrap_err();
        assert!(err.to_string().contains("claims more memory"), "{err}");
        let err = decode::<Vec<u8>>(&body).unwrap_err();
        assert!(!err.to_string().is_empty());
        let err = decode::<Vec<u64>>(&body).unwrap_err();
        assert!(!err.to_string().is_empty());
    }

    #[test]
    fn bodies_of_small_integers_decode() {
        // bincode counts 8 bytes of memory for each one-byte u64 (16 for a
        // u128): the limit must admit that, or honest bodies fail. These
        // failed while the limit was the body's size.
        round_trip(vec![1u64; 9_000]);
        round_trip(vec![1u128; 70_000]);
        round_trip(vec![vec![7u64; 200]; 64]);
    }

    #[test]
    fn a_claim_past_the_rung_is_refused() {
        // A 1 MiB body may claim 16 MiB (its rung), not 256 MiB.
        let mut body = vec![252u8];
        body.extend_from_slice(&(256u32 << 20).to_le_bytes());
        body.resize(1 << 20, 0);
        let err = decode::<String>(&body).unwrap_err();
        assert!(err.to_string().contains("claims more memory"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut buf = BytesMut::new();
        encode(&7u32, &mut buf, usize::MAX).unwrap();
        buf.put_u8(0);
        let err = decode::<u32>(&buf).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn truncated_body_is_an_error() {
        let mut buf = BytesMut::new();
        encode(&"some text".to_string(), &mut buf, usize::MAX).unwrap();
        for cut in 0..buf.len() {
            assert!(decode::<String>(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn byte_buf_is_a_vec_u8_on_the_wire() {
        use crate::__private::ByteBuf;
        let data: Vec<u8> = (0..=255).collect();
        let (mut plain, mut fast) = (BytesMut::new(), BytesMut::new());
        encode(&(data.clone(), 1u8), &mut plain, usize::MAX).unwrap();
        encode(&(ByteBuf(data.clone()), 1u8), &mut fast, usize::MAX).unwrap();
        assert_eq!(plain, fast);
        let (back, _): (ByteBuf, u8) = decode(&plain).unwrap();
        assert_eq!(back.0, data);
        let (back, _): (Vec<u8>, u8) = decode(&fast).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn encode_stops_at_the_limit() {
        let mut buf = BytesMut::new();
        let big = vec![0u8; 1000];
        assert!(matches!(
            encode(&big, &mut buf, 100),
            Err(EncodeFailure::TooLarge)
        ));
        assert!(buf.len() <= 100);
    }
}
