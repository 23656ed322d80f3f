//! The codec's failures as stable, human text: bincode 2 shows its errors
//! as Rust debug output (`UnexpectedEnd { additional: 1 }`), which a
//! client in another language would have to parse, and which could change
//! with any bincode release. The texts are listed in docs/PROTOCOL.md §4.

use bincode::error::{DecodeError, EncodeError, IntegerType};

/// Why a value did not decode.
pub(crate) fn decode(e: &DecodeError) -> String {
    match e {
        DecodeError::UnexpectedEnd { additional } => {
            format!("the value ends early: {additional} more byte(s) needed")
        }
        DecodeError::LimitExceeded => "a length prefix claims more memory than allowed".to_owned(),
        DecodeError::InvalidIntegerType { expected, found } => format!(
            "expected an integer of type {}, found a {} marker",
            integer(expected),
            integer(found)
        ),
        DecodeError::NonZeroTypeIsZero { non_zero_type } => {
            format!("a non-zero {} is zero", integer(non_zero_type))
        }
        DecodeError::UnexpectedVariant {
            type_name, found, ..
        } => format!("{type_name} has no variant {found}"),
        DecodeError::Utf8 { .. } => "a string is not valid UTF-8".to_owned(),
        DecodeError::InvalidCharEncoding(_) => "a char is not a valid UTF-8 scalar".to_owned(),
        DecodeError::InvalidBooleanValue(byte) => {
            format!("a bool is the byte {byte}, not 0 or 1")
        }
        DecodeError::ArrayLengthMismatch { required, found } => {
            format!("an array of {required} elements has {found}")
        }
        DecodeError::OutsideUsizeRange(n) => format!("the length {n} does not fit in memory"),
        DecodeError::EmptyEnum { type_name } => format!("{type_name} has no variants"),
        DecodeError::InvalidDuration { .. } | DecodeError::InvalidSystemTime { .. } => {
            "a duration is out of range".to_owned()
        }
        DecodeError::CStringNulError { position } => {
            format!("a C string has a nul byte at {position}")
        }
        DecodeError::Io { .. } => "the value could not be read".to_owned(),
        DecodeError::Other(text) => (*text).to_owned(),
        // serde's own messages ("invalid value: integer `5`, expected
        // variant index 0 <= i < 1") are already written for people.
        DecodeError::OtherString(text) => text.clone(),
        DecodeError::Serde(e) => format!("the type cannot be decoded from bincode ({e:?})"),
        _ => format!("the value does not decode ({e:?})"),
    }
}

/// Why a value did not encode.
pub(crate) fn encode(e: &EncodeError) -> String {
    match e {
        EncodeError::Other(text) => (*text).to_owned(),
        EncodeError::OtherString(text) => text.clone(),
        EncodeError::Serde(e) => format!("the type cannot be encoded as bincode ({e:?})"),
        _ => format!("the value does not encode ({e:?})"),
    }
}

fn integer(kind: &IntegerType) -> &'static str {
    match kind {
        IntegerType::U8 => "u8",
        IntegerType::U16 => "u16",
        IntegerType::U32 => "u32",
        IntegerType::U64 => "u64",
        IntegerType::U128 => "u128",
        IntegerType::Usize => "usize",
        IntegerType::I8 => "i8",
        IntegerType::I16 => "i16",
        IntegerType::I32 => "i32",
        IntegerType::I64 => "i64",
        IntegerType::I128 => "i128",
        IntegerType::Isize => "isize",
        _ => "reserved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_read_as_sentences() {
        assert_eq!(
            decode(&DecodeError::UnexpectedEnd { additional: 1 }),
            "the value ends early: 1 more byte(s) needed"
        );
        assert_eq!(
            decode(&DecodeError::InvalidBooleanValue(7)),
            "a bool is the byte 7, not 0 or 1"
        );
        let text = decode(&DecodeError::InvalidIntegerType {
            expected: IntegerType::U32,
            found: IntegerType::U64,
        });
        assert_eq!(text, "expected an integer of type u32, found a u64 marker");
    }
}
