//! Call metadata: key-value pairs a call carries beside its arguments, such
//! as credentials, for the server's interceptor to read.
//!
//! On the wire each pair is one request extension of tag `0x0002`:
//! `key_len: u16, key (UTF-8), value_len: u32, value` (docs/PROTOCOL.md §5).
//! Clients encode their pairs once, when they are set on a channel; the
//! server reads them in place, without copying or allocating.

use std::fmt;

use bytes::BufMut;

/// Extension tag of one metadata pair.
pub(crate) const TAG_METADATA: u16 = 0x0002;

/// Bytes of an extension entry's tag and length.
const ENTRY_HEADER_LEN: usize = 2 + 4;

/// The metadata of one call, as the server received it: read-only, in the
/// order the client sent it. Keys may repeat; [`Metadata::get`] finds the
/// first.
#[derive(Clone, Copy, Default)]
pub struct Metadata<'a> {
    /// The request's whole extension block, already checked by the
    /// envelope decoder: every metadata entry in it is well formed.
    block: &'a [u8],
}

impl<'a> Metadata<'a> {
    /// Metadata over an extension block whose metadata entries
    /// [`check_entry`] accepted.
    pub(crate) fn new(block: &'a [u8]) -> Self {
        Metadata { block }
    }

    /// The extension block this reads.
    pub(crate) fn block(&self) -> &'a [u8] {
        self.block
    }

    /// The value of the first pair with this key.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The value of the first pair with this key, if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every pair, in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let mut rest = self.block;
        std::iter::from_fn(move || {
            while rest.len() >= ENTRY_HEADER_LEN {
                let tag = u16::from_le_bytes([rest[0], rest[1]]);
                let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
                let value = &rest[ENTRY_HEADER_LEN..ENTRY_HEADER_LEN + len];
                rest = &rest[ENTRY_HEADER_LEN + len..];
                if tag == TAG_METADATA {
                    return Some(split_entry(value).expect("checked when decoded"));
                }
            }
            None
        })
    }

    /// Whether the call carries no metadata.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl fmt::Debug for Metadata<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are often credentials: keys only.
        f.debug_list()
            .entries(self.iter().map(|(key, _)| key))
            .finish()
    }
}

/// Checks one metadata entry's value as the envelope decoder meets it.
pub(crate) fn check_entry(value: &[u8]) -> Result<(), &'static str> {
    split_entry(value).map(|_| ())
}

fn split_entry(value: &[u8]) -> Result<(&str, &[u8]), &'static str> {
    const MALFORMED: &str = "a metadata entry's lengths do not add up to its size";
    let key_len = value.get(..2).ok_or(MALFORMED)?;
    let key_len = usize::from(u16::from_le_bytes([key_len[0], key_len[1]]));
    let key = value.get(2..2 + key_len).ok_or(MALFORMED)?;
    let key = std::str::from_utf8(key).map_err(|_| "a metadata key is not UTF-8")?;
    if key.is_empty() {
        return Err("a metadata key is empty");
    }
    let rest = &value[2 + key_len..];
    let value_len = rest.get(..4).ok_or(MALFORMED)?;
    let value_len = u32::from_le_bytes([value_len[0], value_len[1], value_len[2], value_len[3]]);
    let value = &rest[4..];
    if value.len() != value_len as usize {
        return Err(MALFORMED);
    }
    Ok((key, value))
}

/// Appends one metadata pair as a whole extension entry.
///
/// # Panics
///
/// If `key` is empty or over 65,535 bytes, or `value` over 4 GiB: limits a
/// program meets by mistake, not by input.
pub(crate) fn put_entry(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    assert!(
        !key.is_empty() && key.len() <= usize::from(u16::MAX),
        "metadata keys are 1 to 65,535 bytes long; got {} bytes",
        key.len()
    );
    let entry_len = 2 + key.len() + 4 + value.len();
    let entry_len = u32::try_from(entry_len).expect("a metadata value of 4 GiB or more");
    buf.put_u16_le(TAG_METADATA);
    buf.put_u32_le(entry_len);
    buf.put_u16_le(key.len() as u16);
    buf.put_slice(key.as_bytes());
    buf.put_u32_le(value.len() as u32);
    buf.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_read_back_in_order_and_first_wins() {
        let mut block = Vec::new();
        put_entry(&mut block, "authorization", b"Bearer abc");
        put_entry(&mut block, "tenant", b"\xff\x00");
        put_entry(&mut block, "authorization", b"second");
        let metadata = Metadata::new(&block);
        let pairs: Vec<_> = metadata.iter().collect();
        assert_eq!(
            pairs,
            [
                ("authorization", &b"Bearer abc"[..]),
                ("tenant", &b"\xff\x00"[..]),
                ("authorization", &b"second"[..]),
            ]
        );
        assert_eq!(metadata.get_str("authorization"), Some("Bearer abc"));
        assert_eq!(metadata.get_str("tenant"), None, "not UTF-8");
        assert_eq!(metadata.get("missing"), None);
        assert_eq!(
            format!("{metadata:?}"),
            r#"["authorization", "tenant", "authorization"]"#
        );
    }

    #[test]
    fn malformed_entries_are_refused() {
        let mut block = Vec::new();
        put_entry(&mut block, "k", b"v");
        let value = &block[ENTRY_HEADER_LEN..];
        assert!(check_entry(value).is_ok());
        for cut in 0..value.len() {
            assert!(check_entry(&value[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = value.to_vec();
        longer.push(0);
        assert!(check_entry(&longer).is_err());
        assert_eq!(
            check_entry(&[0, 0, 0, 0, 0, 0]),
            Err("a metadata key is empty")
        );
        assert_eq!(
            check_entry(&[1, 0, 0xff, 0, 0, 0, 0]),
            Err("a metadata key is not UTF-8")
        );
    }
}
