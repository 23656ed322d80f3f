//! What a handler can know of the call it serves, without a change to its
//! signature: [`CallContext::current`].
//!
//! The server makes a context for every call from what it has already read:
//! a call answered at its first poll refers to its request's own buffer (no
//! allocation); one that goes on running gets a copy of its names and
//! metadata, so that it does not hold the connection's read buffer for as
//! long as it runs. Wherever the server polls a call's future (the handler, the
//! stream it returns, the layers around it), it moves the context into a
//! thread-local for the poll and back out after. That costs less than a
//! tokio task-local around the handler's future, which moved the future
//! once more and cost the server about 440 instructions per small call.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::metadata::Metadata;
use crate::server::{Extensions, Peer};

std::thread_local! {
    static CURRENT: RefCell<Option<CallContext>> = const { RefCell::new(None) };
}

/// Runs `poll` with the context in `slot` as the current one, and puts it
/// back in `slot` after, even if `poll` panics.
pub(crate) fn within<R>(slot: &mut Option<CallContext>, poll: impl FnOnce() -> R) -> R {
    struct Restore<'a>(&'a mut Option<CallContext>);

    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            CURRENT.with(|current| std::mem::swap(&mut *current.borrow_mut(), self.0));
        }
    }

    CURRENT.with(|current| std::mem::swap(&mut *current.borrow_mut(), slot));
    let _restore = Restore(slot);
    poll()
}

/// Gives the current call the extensions layers attached to it.
pub(crate) fn attach(extensions: Extensions) {
    let replaced = CURRENT.with(|current| current.borrow_mut().as_mut()?.attach(extensions));
    // Dropped after the borrow: a value's Drop may ask for the context.
    drop(replaced);
}

/// The call a handler is serving: its names, request id, metadata, peer,
/// deadline and the typed extensions layers attached.
///
/// ```
/// use rpc_core::{CallContext, rpc_service};
///
/// #[rpc_service]
/// pub trait Greeter {
///     async fn hello(&self) -> String;
/// }
///
/// struct Hi;
///
/// impl Greeter for Hi {
///     async fn hello(&self) -> String {
///         match CallContext::current() {
///             Some(cx) => format!("hello, {}", cx.peer().addr()),
///             // Called as a plain method, not over RPC.
///             None => "hello, local caller".to_owned(),
///         }
///     }
/// }
/// # assert_eq!(futures::executor::block_on(Hi.hello()), "hello, local caller");
/// ```
#[derive(Clone)]
pub struct CallContext {
    /// The request frame, or once the call runs on ([`CallContext::detach`])
    /// a copy of it up to the end of its names and metadata.
    head: Bytes,
    /// Where the names and the metadata block lie in `head`: kept small,
    /// since the context is moved in and out of its thread-local at every
    /// poll of the call.
    service: Span,
    method: Span,
    metadata: Span,
    id: u64,
    peer: Arc<Peer>,
    deadline: Option<Instant>,
    extensions: Option<Arc<Extensions>>,
}

impl std::fmt::Debug for CallContext {
    /// Names, id, metadata keys, peer and deadline: not the metadata's values,
    /// which are often credentials, nor the arguments.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("service", &self.service())
            .field("method", &self.method())
            .field("id", &self.id)
            .field("metadata", &self.metadata())
            .field("peer", &self.peer.addr())
            .field("deadline", &self.deadline)
            .field("extensions", &self.extensions())
            .finish()
    }
}

/// A part of a context's `head`.
#[derive(Clone, Copy, Debug)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn of(head: &[u8], span: Span) -> &[u8] {
        let at = span.at as usize;
        head.get(at..at + span.len as usize).unwrap_or_default()
    }
}

impl CallContext {
    /// The call being served, or `None` outside one (a trait method called
    /// directly, or code on a task the handler spawned: pass the context
    /// to such a task yourself).
    pub fn current() -> Option<CallContext> {
        CURRENT
            .try_with(|current| current.borrow().clone())
            .ok()
            .flatten()
    }

    /// `service`, `method` and `metadata` are parts of `payload`, which the
    /// envelope decoder checked (names are UTF-8).
    #[allow(clippy::too_many_arguments)] // the parts of one request, as read
    pub(crate) fn new(
        payload: &Bytes,
        service: &[u8],
        method: &[u8],
        metadata: &[u8],
        id: u64,
        peer: Arc<Peer>,
        deadline: Option<Instant>,
    ) -> Self {
        // Frames are bounded by a u32 length, so offsets fit a u32.
        let start = payload.as_ptr() as usize;
        let span = |part: &[u8]| {
            let at = (part.as_ptr() as usize).wrapping_sub(start);
            if part.is_empty() || at.saturating_add(part.len()) > payload.len() {
                Span { at: 0, len: 0 }
            } else {
                Span {
                    at: at as u32,
                    len: part.len() as u32,
                }
            }
        };
        CallContext {
            head: payload.clone(),
            service: span(service),
            method: span(method),
            metadata: span(metadata),
            id,
            peer,
            deadline,
            extensions: None,
        }
    }

    /// Attaches `extensions`, returning those attached before.
    pub(crate) fn attach(&mut self, extensions: Extensions) -> Option<Arc<Extensions>> {
        if extensions.is_empty() {
            return None;
        }
        self.extensions.replace(Arc::new(extensions))
    }

    /// Copies the names and metadata out of the request's buffer, which a
    /// call that goes on running must not hold: it is a slice of the
    /// connection's read buffer, up to 64 KiB and more (a review held 66 KB
    /// per waiting call that way, counted as 40 bytes). A call answered at
    /// its first poll never needs the copy.
    pub(crate) fn detach(&mut self) {
        let end = [self.service, self.method, self.metadata]
            .iter()
            .map(|span| span.at as usize + span.len as usize)
            .max()
            .unwrap_or(0);
        if self.head.len() > end {
            self.head = Bytes::copy_from_slice(self.head.get(..end).unwrap_or_default());
        }
    }

    /// The service the call names.
    pub fn service(&self) -> &str {
        text(Span::of(&self.head, self.service))
    }

    /// The method the call names.
    pub fn method(&self) -> &str {
        text(Span::of(&self.head, self.method))
    }

    /// The request id the client chose.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The pairs the client set with
    /// [`Channel::with_metadata`](crate::Channel::with_metadata).
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata::new(Span::of(&self.head, self.metadata))
    }

    /// Who sent the call: its address and, under mutual TLS, its
    /// certificates.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// When the server stops the call, if the client gave it a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left before the deadline (zero once it has passed), if the
    /// call has one: what a nested call passes on with
    /// [`Channel::with_timeout`](crate::Channel::with_timeout), so that it
    /// gives up when its caller does.
    ///
    /// ```
    /// use rpc_core::{CallContext, Channel};
    ///
    /// /// Calls on `backend` within what is left of the current call's time.
    /// fn within_my_deadline(backend: &Channel) -> Channel {
    ///     match CallContext::current().and_then(|cx| cx.remaining()) {
    ///         Some(left) => backend.with_timeout(left),
    ///         None => backend.clone(),
    ///     }
    /// }
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The values layers attached to the call
    /// ([`Call::extensions_mut`](crate::Call::extensions_mut)), by type.
    pub fn extensions(&self) -> &Extensions {
        static NONE: LazyLock<Extensions> = LazyLock::new(Extensions::default);
        self.extensions.as_deref().unwrap_or(&NONE)
    }
}

/// A name the envelope decoder checked is UTF-8.
fn text(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{PeerAddr, PeerIdentity};

    #[test]
    fn a_detached_context_holds_its_names_and_metadata_only() {
        // A small request read into a large buffer: the context refers to
        // the buffer until it is detached.
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let payload = buffer.slice(100..4_100);
        let peer = Arc::new(Peer::new(PeerAddr::Unix(None), PeerIdentity::default()));
        // No metadata: a block that is there was checked by the decoder.
        let (service, method, metadata) = (&payload[11..14], &payload[15..18], &payload[30..30]);
        let mut context = CallContext::new(&payload, service, method, metadata, 7, peer, None);
        assert_eq!(context.head.len(), 4_000, "the request, not a copy");
        context.detach();
        assert_eq!(context.head.len(), 18, "up to the end of the names");
        assert_eq!(
            (context.service(), context.method(), context.id()),
            ("xxx", "xxx", 7)
        );
        assert!(context.metadata().get("none").is_none());
    }

    #[test]
    fn parts_outside_the_payload_are_empty() {
        let payload = Bytes::from_static(b"0123456789abcdef");
        let peer = Arc::new(Peer::new(PeerAddr::Unix(None), PeerIdentity::default()));
        let elsewhere = b"Svc";
        let context = CallContext::new(&payload, elsewhere, &payload[2..5], &[], 1, peer, None);
        assert_eq!((context.service(), context.method()), ("", "234"));
        assert_eq!(context.remaining(), None);
    }
}
