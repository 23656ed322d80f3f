//! Length-prefixed framing and the connection handshake.
//!
//! A frame is a 4-byte little-endian payload length followed by the payload.
//! Reading is a tokio-util `Decoder` that rejects an over-size length before
//! allocating for it. Writing patches the prefix in place so a message is
//! serialized straight into its frame.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// Default largest frame payload, in bytes, that either side sends or accepts.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 16 * 1024 * 1024;

/// Bytes of the length prefix in front of every frame.
pub(crate) const PREFIX_LEN: usize = 4;

/// A receive buffer up to this size may be kept alive by any frame split
/// off it; see [`FrameDecoder::decode`].
const PIN_FREE: usize = 64 * 1024;
/// A frame split off a larger buffer keeps at most this many times its
/// own size alive; smaller frames are copied out.
const PIN_RATIO: usize = 4;

/// A partial frame's nearly full buffer grows to twice what has arrived,
/// or by this, whichever is more (and never past the frame).
const GROWTH_FLOOR: usize = 8 * 1024;

/// Room made for the next read once a read has filled the buffer.
const READ_CHUNK: usize = 8 * 1024;

/// The first four bytes each side sends, so that a stray client (an HTTP
/// request, a port scanner) is told apart from a peer at once.
pub(crate) const MAGIC: [u8; 4] = *b"RKIT";

/// The one protocol version this build speaks.
pub(crate) const VERSION: u16 = 1;

/// Bytes of the handshake: magic, version, and a `u16` that the server
/// sets to the calls it accepts in flight per connection (0: no limit) and
/// the client sets to 0.
pub(crate) const HELLO_LEN: usize = 8;

/// What the reading half yields.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The first bytes of a frame that is not complete yet arrived: time
    /// its completion from now.
    Started,
    /// A whole frame's payload.
    Frame(BytesMut),
}

/// Reads frames of at most `max_frame_length` bytes.
///
/// tokio-util's `LengthDelimitedCodec` reserves a frame's whole claimed
/// length as soon as it reads the prefix, so a thousand peers each claiming
/// 16 MiB and sending one byte would pin 16 GiB. This decoder's buffer
/// grows with the bytes actually received (to at most twice them, see
/// [`GROWTH_FLOOR`]): it splits a frame off only once the whole frame has
/// arrived, and the bytes of a partial frame are charged to an optional
/// shared budget meanwhile.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    max_frame_length: usize,
    /// Whether `Started` was reported for the frame now being received.
    started: bool,
    budget: Option<Arc<ReceiveBudget>>,
    /// Bytes of the partial frame charged to the budget.
    charged: usize,
    /// Size of the last whole frame received, prefix included.
    last: usize,
    /// Room taken for the partial frame on the strength of the last one.
    paid: usize,
}

impl FrameDecoder {
    pub(crate) fn new(max_frame_length: usize, budget: Option<Arc<ReceiveBudget>>) -> Self {
        FrameDecoder {
            max_frame_length,
            started: false,
            budget,
            charged: 0,
            last: 0,
            paid: 0,
        }
    }

    /// Charges the partial frame's `held` bytes, or fails if the budget
    /// cannot take them. Touches the budget, which every connection shares,
    /// only when the amount changes: a frame that arrives whole costs it
    /// nothing.
    fn charge(&mut self, held: usize) -> io::Result<()> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let held = held.saturating_sub(budget.allowance);
        if held == self.charged {
            return Ok(());
        }
        if held > self.charged {
            budget.take(held - self.charged)?;
        } else {
            budget.give(self.charged - held);
        }
        self.charged = held;
        Ok(())
    }
}

/// Makes room for `capacity` bytes in `src`: in place if its allocation
/// has it, else in a new one of exactly that size (`reserve` may double
/// it, and a buffer must stay within twice what its frame has sent).
fn grow(src: &mut BytesMut, capacity: usize) {
    if src.capacity() >= capacity {
        return;
    }
    if src.try_reclaim(capacity - src.len()) {
        return;
    }
    let mut grown = BytesMut::with_capacity(capacity);
    grown.extend_from_slice(src);
    *src = grown;
}

impl Decoder for FrameDecoder {
    type Item = Incoming;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Incoming>> {
        let claimed = match src.get(..PREFIX_LEN) {
            Some(prefix) => {
                let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
                if len > self.max_frame_length {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a frame of {len} bytes exceeds the limit of {} bytes",
                            self.max_frame_length
                        ),
                    ));
                }
                Some(len)
            }
            None => None,
        };
        let complete = claimed.filter(|&len| src.len() - PREFIX_LEN >= len);
        let Some(len) = complete else {
            // Room for more of the frame. Growing a read at a time copied
            // each large frame over and over (a quarter of the server's
            // work on 64 KiB calls), and room for the whole claim at once
            // let a 4-byte claim pin 64 KiB (found in review). So a nearly
            // full buffer grows to twice what has arrived (or GROWTH_FLOOR
            // more), or at once to the size of the connection's previous
            // frame: a client that has sent a frame that large has paid
            // for the room, and bulk calls then land in one buffer.
            let received = src.len();
            let nearly_full = src.capacity() - received < GROWTH_FLOOR / 2;
            let room = match claimed {
                Some(len) if nearly_full => {
                    let whole = PREFIX_LEN + len;
                    let grown = (received * 2).max(received + GROWTH_FLOOR);
                    self.paid = self.paid.max(whole.min(self.last));
                    whole.min(grown).max(self.paid)
                }
                _ => received,
            };
            // What is charged is what was received, or the room taken on
            // the strength of the previous frame if more: a claim costs
            // the budget what was sent for it.
            self.charge(received.max(self.paid))?;
            // A read that filled the buffer suggests more is waiting: read
            // READ_CHUNK at a time then. Buffers start small so that idle
            // connections are cheap, and reads of 1 KiB took a third more
            // system calls than raw framing on many small calls.
            let chunk = if received == src.capacity() {
                received + READ_CHUNK
            } else {
                0
            };
            grow(src, room.max(chunk));
            if src.is_empty() || self.started {
                return Ok(None);
            }
            self.started = true;
            return Ok(Some(Incoming::Started));
        };
        self.charge(0)?;
        self.started = false;
        self.paid = 0;
        self.last = PREFIX_LEN + len;
        let room = src.capacity();
        src.advance(PREFIX_LEN);
        // A frame split off a buffer keeps the whole buffer alive for as
        // long as its call runs: a small call read just after a 16 MiB one
        // would pin 16 MiB while counted as a few bytes. A frame much
        // smaller than a large buffer is copied out instead, so that a
        // frame never keeps more than PIN_RATIO times its size (or
        // PIN_FREE) alive.
        if room > PIN_FREE && len.saturating_mul(PIN_RATIO) < room {
            let frame = BytesMut::from(&src[..len]);
            src.advance(len);
            return Ok(Some(Incoming::Frame(frame)));
        }
        Ok(Some(Incoming::Frame(src.split_to(len))))
    }
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.charged);
        }
    }
}

/// Bytes that all connections of a server may hold in frames they have
/// begun but not finished receiving.
#[derive(Debug)]
pub(crate) struct ReceiveBudget {
    limit: usize,
    /// Bytes of a partial frame each connection holds without charge, so
    /// that connections holding the budget cannot starve small frames that
    /// happen to arrive in two reads.
    allowance: usize,
    used: AtomicUsize,
}

impl ReceiveBudget {
    #[cfg(test)]
    pub(crate) fn new(limit: usize) -> Self {
        Self::with_allowance(limit, 0)
    }

    pub(crate) fn with_allowance(limit: usize, allowance: usize) -> Self {
        ReceiveBudget {
            limit,
            allowance,
            used: AtomicUsize::new(0),
        }
    }

    fn take(&self, bytes: usize) -> io::Result<()> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let wanted = used.saturating_add(bytes);
            if wanted > self.limit {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "the server's budget of {} bytes for partly received frames is spent",
                        self.limit
                    ),
                ));
            }
            match self.used.compare_exchange_weak(
                used,
                wanted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    fn give(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held now, for tests.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
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

/// Sends this side's handshake, with `call_limit` in its last two bytes.
pub(crate) async fn write_hello<W: AsyncWrite + Unpin>(
    io: &mut W,
    call_limit: u16,
) -> io::Result<()> {
    let mut hello = [0u8; HELLO_LEN];
    hello[..4].copy_from_slice(&MAGIC);
    hello[4..6].copy_from_slice(&VERSION.to_le_bytes());
    hello[6..8].copy_from_slice(&call_limit.to_le_bytes());
    io.write_all(&hello).await?;
    io.flush().await
}

/// Reads the peer's handshake, checks that it speaks this protocol, and
/// returns the call limit it carries.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(io: &mut R) -> Result<u16, HelloError> {
    let mut hello = [0u8; HELLO_LEN];
    io.read_exact(&mut hello).await.map_err(HelloError::Io)?;
    check_hello(&hello)
}

fn check_hello(hello: &[u8; HELLO_LEN]) -> Result<u16, HelloError> {
    // A TLS record: handshake (22) or alert (21), then major version 3.
    if matches!(hello[0], 0x15 | 0x16) && hello[1] == 0x03 {
        return Err(HelloError::Tls);
    }
    if hello[..4] != MAGIC {
        return Err(HelloError::Magic(hello[..4].try_into().unwrap_or_default()));
    }
    let version = u16::from_le_bytes([hello[4], hello[5]]);
    if version != VERSION {
        return Err(HelloError::Version(version));
    }
    Ok(u16::from_le_bytes([hello[6], hello[7]]))
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
    #[error(
        "peer speaks TLS and this side does not: set TLS on this side \
         (ChannelBuilder::tls, ServerBuilder::tls), or connect to the port that serves plaintext"
    )]
    Tls,
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
        assert_eq!(check_hello(&hello).unwrap(), 0);
        // The start of a TLS ClientHello, and of a TLS alert.
        for tls in [
            [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01],
            [0x15, 0x03, 0x03, 0, 2, 2, 50, 0],
        ] {
            assert!(
                matches!(check_hello(&tls), Err(HelloError::Tls)),
                "{tls:02x?}"
            );
        }
        hello[6..8].copy_from_slice(&100u16.to_le_bytes());
        assert_eq!(check_hello(&hello).unwrap(), 100);
        assert!(matches!(
            check_hello(b"GET / HT"),
            Err(HelloError::Magic(m)) if &m == b"GET "
        ));
        hello[4] = 9;
        assert!(matches!(check_hello(&hello), Err(HelloError::Version(9))));
    }

    fn framed(payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        let start = begin(&mut buf);
        buf.put_slice(payload);
        finish(&mut buf, start);
        buf
    }

    #[test]
    fn a_small_frame_does_not_keep_a_large_buffer_alive() {
        use tokio_util::codec::Decoder;
        let mut src = BytesMut::with_capacity(1024 * 1024);
        src.extend_from_slice(&framed(&vec![1; 512 * 1024]));
        src.extend_from_slice(&framed(b"small"));
        let buffer = src.as_ptr() as usize..src.as_ptr() as usize + src.capacity();
        let mut decoder = FrameDecoder::new(1024 * 1024, None);
        let frame = |decoded| match decoded {
            Some(Incoming::Frame(frame)) => frame,
            other => panic!("{other:?}"),
        };
        let large = frame(decoder.decode(&mut src).unwrap());
        assert!(
            buffer.contains(&(large.as_ptr() as usize)),
            "split, not copied"
        );
        let small = frame(decoder.decode(&mut src).unwrap());
        assert_eq!(&small[..], b"small");
        assert!(
            !buffer.contains(&(small.as_ptr() as usize)),
            "copied out of the 1 MiB buffer"
        );
    }

    #[tokio::test]
    async fn written_frames_read_back_and_oversize_is_refused() {
        let buf = framed(b"hello");
        assert_eq!(&buf[..4], &5u32.to_le_bytes());

        let mut frames = FramedRead::new(&buf[..], FrameDecoder::new(16, None));
        match frames.next().await.unwrap().unwrap() {
            Incoming::Frame(f) => assert_eq!(&f[..], b"hello"),
            other => panic!("{other:?}"),
        }

        let mut frames = FramedRead::new(&buf[..], FrameDecoder::new(4, None));
        let err = frames.next().await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("5 bytes exceeds the limit of 4"),
            "{err}"
        );
    }

    #[test]
    fn a_partial_frame_reserves_little_and_its_bytes_are_charged() {
        let budget = Arc::new(ReceiveBudget::new(100));
        let mut decoder = FrameDecoder::new(1 << 30, Some(budget.clone()));
        // Claims 1 GiB, sends 10 bytes of it.
        let mut src = BytesMut::new();
        src.put_u32_le(1 << 30);
        src.put_slice(&[0; 10]);
        assert!(matches!(
            decoder.decode(&mut src),
            Ok(Some(Incoming::Started))
        ));
        assert!(matches!(decoder.decode(&mut src), Ok(None)));
        assert!(
            src.capacity() <= 2 * GROWTH_FLOOR,
            "nothing like the claim reserved: {}",
            src.capacity()
        );
        assert_eq!(budget.used(), 14);
        // More than the budget allows fails this connection.
        src.put_slice(&[0; 100]);
        assert!(decoder.decode(&mut src).is_err());
        drop(decoder);
        assert_eq!(budget.used(), 0, "a closed connection gives its bytes back");
    }

    #[test]
    fn a_buffer_holds_at_most_twice_what_its_partial_frame_sent() {
        let mut decoder = FrameDecoder::new(1 << 30, None);
        let whole = framed(&[9; 300_000]);
        let mut src = BytesMut::new();
        for piece in whole[..200_000].chunks(10_000) {
            src.extend_from_slice(piece);
            let _ = decoder.decode(&mut src);
            let most = (2 * src.len()).max(2 * GROWTH_FLOOR) + READ_CHUNK;
            assert!(
                src.capacity() <= most,
                "{} bytes of room for {} received",
                src.capacity(),
                src.len()
            );
        }
    }

    #[test]
    fn a_frame_arriving_in_pieces_is_moved_a_few_times_not_every_read() {
        let mut decoder = FrameDecoder::new(1 << 22, None);
        let whole = framed(&[3; 1 << 20]);
        let mut src = BytesMut::from(&whole[..1000]);
        assert!(matches!(
            decoder.decode(&mut src),
            Ok(Some(Incoming::Started))
        ));
        // Before: the buffer grew a read at a time, and each growth copied
        // what had arrived.
        let (mut moves, mut reads, mut sent) = (0, 0, 1000);
        let mut at = src.as_ptr();
        while sent < whole.len() {
            // A read fills at most the room the decoder made.
            let room = src.capacity() - src.len();
            assert!(room > 0, "room for the next read");
            let n = room.min(7000).min(whole.len() - sent);
            src.extend_from_slice(&whole[sent..sent + n]);
            sent += n;
            reads += 1;
            let _ = decoder.decode(&mut src);
            if src.as_ptr() != at {
                moves += 1;
                at = src.as_ptr();
            }
        }
        assert!(reads > 100);
        assert!(moves <= 12, "moved {moves} times in {reads} reads");
    }

    #[test]
    fn a_read_that_fills_the_buffer_makes_room_for_a_larger_one() {
        let mut decoder = FrameDecoder::new(1000, None);
        let mut src = BytesMut::with_capacity(64);
        while src.len() + 10 <= src.capacity() {
            src.extend_from_slice(&framed(&[5; 6]));
        }
        let next = framed(&[5; 6]);
        let rest = src.capacity() - src.len();
        src.extend_from_slice(&next[..rest]);
        assert_eq!(src.len(), src.capacity(), "the read filled it");
        while let Ok(Some(Incoming::Frame(_))) = decoder.decode(&mut src) {}
        assert!(src.capacity() - src.len() >= READ_CHUNK);
        // One that did not fill it leaves the buffer as it is.
        let mut src = BytesMut::with_capacity(64);
        src.extend_from_slice(&framed(&[5; 6]));
        while let Ok(Some(Incoming::Frame(_))) = decoder.decode(&mut src) {}
        assert!(src.capacity() < READ_CHUNK);
    }

    #[test]
    fn a_frame_like_the_last_gets_its_room_at_once_and_is_charged_for_it() {
        let budget = Arc::new(ReceiveBudget::with_allowance(1 << 20, 0));
        let mut decoder = FrameDecoder::new(1 << 20, Some(budget.clone()));
        let whole = framed(&[4; 100_000]);
        let mut src = BytesMut::from(&whole[..]);
        // Kept, as a running call keeps its frame: its buffer is not free.
        let Ok(Some(Incoming::Frame(_first))) = decoder.decode(&mut src) else {
            panic!("a whole frame");
        };
        // The next one of the same size: its prefix and a few bytes, in a
        // buffer they nearly fill.
        let mut src = BytesMut::with_capacity(16);
        src.extend_from_slice(&whole[..10]);
        assert!(matches!(
            decoder.decode(&mut src),
            Ok(Some(Incoming::Started))
        ));
        assert!(src.capacity() >= whole.len(), "room for all of it");
        assert_eq!(budget.used(), whole.len(), "and charged for it");
        src.extend_from_slice(&whole[10..]);
        assert!(matches!(
            decoder.decode(&mut src),
            Ok(Some(Incoming::Frame(_)))
        ));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn partial_frames_within_the_allowance_are_free() {
        let budget = Arc::new(ReceiveBudget::with_allowance(0, 100));
        let mut decoder = FrameDecoder::new(1000, Some(budget.clone()));
        let mut src = BytesMut::from(&framed(&[1; 500])[..100]);
        assert!(matches!(
            decoder.decode(&mut src),
            Ok(Some(Incoming::Started))
        ));
        assert_eq!(budget.used(), 0);
        src.extend_from_slice(&[1]);
        assert!(
            decoder.decode(&mut src).is_err(),
            "one byte over, nothing left"
        );
    }

    #[test]
    fn a_completed_frame_gives_its_budget_back() {
        let budget = Arc::new(ReceiveBudget::new(1000));
        let mut decoder = FrameDecoder::new(1000, Some(budget.clone()));
        let whole = framed(&[7; 50]);
        let mut src = BytesMut::from(&whole[..20]);
        assert!(matches!(
            decoder.decode(&mut src),
            Ok(Some(Incoming::Started))
        ));
        assert_eq!(budget.used(), 20);
        src.extend_from_slice(&whole[20..]);
        assert!(matches!(decoder.decode(&mut src), Ok(Some(Incoming::Frame(f))) if f.len() == 50));
        assert_eq!(budget.used(), 0);
    }
}
