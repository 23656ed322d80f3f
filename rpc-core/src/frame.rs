//! Length-prefixed framing and the connection handshake.
//!
//! A frame is a 4-byte little-endian payload length followed by the payload.
//! Reading goes through tokio-util's `LengthDelimitedCodec`, which rejects an
//! over-size length before allocating for it. Writing patches the prefix in
//! place so a message is serialized straight into its frame.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::LengthDelimitedCodec;

/// Default largest frame payload, in bytes, that either side sends or accepts.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 16 * 1024 * 1024;

/// Bytes of the length prefix in front of every frame.
pub(crate) const PREFIX_LEN: usize = 4;

/// The first four bytes each side sends, so that a stray client (an HTTP
/// request, a port scanner) is told apart from a peer at once.
pub(crate) const MAGIC: [u8; 4] = *b"RKIT";

/// The one protocol version this build speaks.
pub(crate) const VERSION: u16 = 1;

/// Bytes of the handshake: magic, version, reserved flags.
pub(crate) const HELLO_LEN: usize = 8;

/// The reading half's codec, refusing payloads above `max_frame_length`.
pub(crate) fn codec(max_frame_length: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_type::<u32>()
        .little_endian()
        .max_frame_length(max_frame_length)
        .new_codec()
}

/// Reserves the length prefix of a frame that the caller is about to fill;
/// pass the result to [`finish`].
pub(crate) fn begin(buf: &mut BytesMut) -> usize {
    let start = buf.len();
    buf.put_u32_le(0);
    start
}

/// Writes the payload length into the prefix reserved by [`begin`].
///
/// The caller bounds the payload while writing it, so the length fits the
/// limit and a `u32`.
pub(crate) fn finish(buf: &mut BytesMut, start: usize) {
    let payload = buf.len() - start - PREFIX_LEN;
    let len = u32::try_from(payload).expect("payload bounded by the frame limit");
    buf[start..start + PREFIX_LEN].copy_from_slice(&len.to_le_bytes());
}

/// The largest payload a frame may have under `max_frame_length`, given that
/// the prefix itself is not counted.
pub(crate) fn payload_limit(max_frame_length: usize) -> usize {
    max_frame_length.min(u32::MAX as usize)
}

/// Sends this side's handshake.
pub(crate) async fn write_hello<W: AsyncWrite + Unpin>(io: &mut W) -> io::Result<()> {
    let mut hello = [0u8; HELLO_LEN];
    hello[..4].copy_from_slice(&MAGIC);
    hello[4..6].copy_from_slice(&VERSION.to_le_bytes());
    io.write_all(&hello).await?;
    io.flush().await
}

/// Reads the peer's handshake and checks that it speaks this protocol.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(io: &mut R) -> Result<(), HelloError> {
    let mut hello = [0u8; HELLO_LEN];
    io.read_exact(&mut hello).await.map_err(HelloError::Io)?;
    check_hello(&hello)
}

fn check_hello(hello: &[u8; HELLO_LEN]) -> Result<(), HelloError> {
    if hello[..4] != MAGIC {
        return Err(HelloError::Magic(hello[..4].try_into().unwrap_or_default()));
    }
    let version = u16::from_le_bytes([hello[4], hello[5]]);
    if version != VERSION {
        return Err(HelloError::Version(version));
    }
    Ok(())
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelloError {
    #[error("i/o error during the handshake: {0}")]
    Io(#[source] io::Error),
    #[error("peer does not speak this protocol (first bytes {0:02x?}, expected {MAGIC:02x?})")]
    Magic([u8; 4]),
    #[error("peer speaks protocol version {0}; this side speaks version {VERSION}")]
    Version(u16),
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio_util::codec::FramedRead;

    #[test]
    fn hello_is_checked() {
        let mut hello = [0u8; HELLO_LEN];
        hello[..4].copy_from_slice(&MAGIC);
        hello[4..6].copy_from_slice(&VERSION.to_le_bytes());
        assert!(check_hello(&hello).is_ok());
        assert!(matches!(
            check_hello(b"GET / HT"),
            Err(HelloError::Magic(m)) if &m == b"GET "
        ));
        hello[4] = 9;
        assert!(matches!(check_hello(&hello), Err(HelloError::Version(9))));
    }

    #[tokio::test]
    async fn written_frames_read_back_and_oversize_is_refused() {
        let mut buf = BytesMut::new();
        let start = begin(&mut buf);
        buf.put_slice(b"hello");
        finish(&mut buf, start);
        assert_eq!(&buf[..4], &5u32.to_le_bytes());

        let mut frames = FramedRead::new(&buf[..], codec(16));
        assert_eq!(&frames.next().await.unwrap().unwrap()[..], b"hello");

        let mut frames = FramedRead::new(&buf[..], codec(4));
        assert!(frames.next().await.unwrap().is_err());
    }
}
