//! A buffer per thread that frames are encoded in, on both sides.
//!
//! A frame is written at the end of its thread's buffer and split off it,
//! sharing its allocation, so a small request or reply costs no allocation
//! of its own (a malloc and a free were a twentieth of a server's work per
//! small call). Frames live only until they are queued, where small ones
//! are copied (transport/outbox.rs), so a buffer is soon free again.

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of each thread's buffer.
const SIZE: usize = 16 * 1024;

/// Below this much room left, a thread starts a new buffer.
const LOW: usize = 1024;

std::thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Runs `encode` on an empty buffer carved from this thread's arena, and
/// returns what it wrote as a buffer of its own.
pub(crate) fn encode<T>(encode: impl FnOnce(&mut BytesMut) -> T) -> (BytesMut, T) {
    ARENA.with(|arena| match arena.try_borrow_mut() {
        Ok(mut arena) => {
            if arena.capacity() - arena.len() < LOW {
                *arena = BytesMut::with_capacity(SIZE);
            }
            let done = encode(&mut arena);
            let frame = arena.split();
            if frame.len() > SIZE / 2 {
                // A large value grew the buffer for itself: let it take the
                // whole allocation with it, or the thread would keep it.
                *arena = BytesMut::new();
            }
            (frame, done)
        }
        // Only if encoding a value itself encoded a frame.
        Err(_) => {
            let mut frame = BytesMut::new();
            let done = encode(&mut frame);
            (frame, done)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_share_the_buffer_and_a_large_one_takes_its_own() {
        let (first, ()) = encode(|buf| buf.extend_from_slice(b"one"));
        let (second, ()) = encode(|buf| buf.extend_from_slice(b"two"));
        assert_eq!((&first[..], &second[..]), (&b"one"[..], &b"two"[..]));
        assert_eq!(
            second.as_ptr(),
            first.as_ptr().wrapping_add(3),
            "one allocation"
        );
        let (large, ()) = encode(|buf| buf.extend_from_slice(&[7; 4 * SIZE]));
        assert_eq!(large.len(), 4 * SIZE);
        ARENA.with(|arena| assert_eq!(arena.borrow().capacity(), 0, "the thread let go of it"));
    }
}
