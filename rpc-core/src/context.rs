//! What a handler can know of the call it serves, without a change to its
//! signature: [`CallContext::current`].
//!
//! The server makes a context for every call from what it has already read
//! (the request's names and metadata stay in the request's own buffer; the
//! peer is the connection's), so a handler that never asks costs no
//! allocation. Wherever the server polls a call's future (the handler, the
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
    if extensions.is_empty() {
        return;
    }
    CURRENT.with(|current| {
        if let Some(context) = current.borrow_mut().as_mut() {
            context.extensions = Some(Arc::new(extensions));
        }
    });
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
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The request frame up to its arguments, or a copy of its names and
    /// metadata when the frame is large (a handler must not hold a large
    /// frame it has decoded).
    head: Bytes,
    /// Where the names and the metadata block lie in `head`: kept small,
    /// since the context is moved in and out of its task-local at every
    /// poll of the handler.
    service: Span,
    method: Span,
    metadata: Span,
    id: u64,
    peer: Arc<Peer>,
    deadline: Option<Instant>,
    extensions: Option<Arc<Extensions>>,
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

/// Frames up to this size are kept whole by a context; larger ones have
/// their names and metadata copied out.
const KEEP_WHOLE: usize = 8 * 1024;

impl CallContext {
    /// The call being served, or `None` outside one (a trait method called
    /// directly, or code on a task the handler spawned: pass the context
    /// to such a task yourself).
    pub fn current() -> Option<CallContext> {
        CURRENT.with(|current| current.borrow().clone())
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
        let (service, method, metadata) = (span(service), span(method), span(metadata));
        let head = if payload.len() <= KEEP_WHOLE {
            payload.clone()
        } else {
            let end = [service, method, metadata]
                .iter()
                .map(|span| span.at as usize + span.len as usize)
                .max()
                .unwrap_or(0);
            Bytes::copy_from_slice(&payload[..end])
        };
        CallContext {
            head,
            service,
            method,
            metadata,
            id,
            peer,
            deadline,
            extensions: None,
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
