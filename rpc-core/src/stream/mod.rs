//! Streams of items between a client and a server, with flow control.
//!
//! A method may take one [`Streaming<T>`] argument (the client sends a
//! stream) and may return `Streaming<T>` or `Result<Streaming<T>, E>` (the
//! server sends one). One type serves both directions and both sides: the
//! side that sends makes it from a stream, an iterator or a channel; the
//! side that receives reads it as a `Stream` of `Result<T, RpcError>`.
//!
//! Every stream is flow-controlled on its own: its receiver grants the
//! sender credit in bytes as items are taken, so a stream nobody reads
//! holds at most its window (plus one frame) and stalls only itself.
//! docs/PROTOCOL.md ("Streams") is the wire account.

mod credit;
mod inbound;
mod pump;
mod registry;
pub(crate) mod serve;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::error::RpcError;

pub(crate) use credit::Credit;
pub(crate) use inbound::{Decode, Inbound, Link, decode};
pub(crate) use pump::{Failed, Pumped, pump};
pub(crate) use registry::{CallStreams, Entry, Routed, Streams};

/// Credit every stream starts with, in bytes, before its receiver grants
/// any: a protocol constant (docs/PROTOCOL.md), so that the first items go
/// out without waiting for a grant.
pub(crate) const INITIAL_CREDIT: u32 = 64 * 1024;

/// Bytes a receiver lets one stream have in flight unless told otherwise:
/// the items it holds unread plus those on their way. Four 64 KiB chunks.
pub const DEFAULT_STREAM_WINDOW: usize = 256 * 1024;

/// A connection that drops what a stream sends it, for driving a receiving
/// end by hand (the property tests, the fuzz target).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) struct Detached;

#[cfg(any(test, feature = "fuzzing"))]
impl Link for Detached {
    fn send(&self, _frame: bytes::BytesMut) -> bool {
        true
    }

    fn abandon(&self, _id: u64) {}
}

/// Every item `inbound` yields now, read as `T` without waiting.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn read_now<T: DeserializeOwned>(inbound: Inbound) -> Vec<Result<T, RpcError>> {
    let mut stream = Streaming::<T>::remote(inbound, None);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut read = Vec::new();
    while let Poll::Ready(Some(item)) = Pin::new(&mut stream).poll_next(&mut cx) {
        read.push(item);
    }
    read
}

/// A stream of items of type `T`, sent or received by a call.
///
/// Made on the sending side with [`Streaming::from_stream`],
/// [`Streaming::from_iter`] or [`Streaming::channel`]; read on the
/// receiving side as a [`Stream`] of `Result<T, RpcError>`: an error item
/// (the connection died, the deadline passed, the producer panicked, the
/// call was refused) is the stream's last, followed by `None`. A clean end
/// is `None` alone, never an error.
///
/// ```
/// use futures::StreamExt;
/// use rpc_core::Streaming;
///
/// # futures::executor::block_on(async {
/// let mut numbers = Streaming::from_iter([1, 2, 3]);
/// let mut sum = 0;
/// while let Some(n) = numbers.next().await {
///     sum += n?;
/// }
/// assert_eq!(sum, 6);
/// # Ok::<(), rpc_core::RpcError>(())
/// # }).unwrap();
/// ```
pub struct Streaming<T> {
    source: Source<T>,
}

enum Source<T> {
    /// Items made on this side.
    Local(Pin<Box<dyn Stream<Item = T> + Send>>),
    /// Items arriving from the other side.
    Remote(inbound::Reader<T>),
}

impl<T> Streaming<T> {
    /// A stream of the items `stream` yields.
    pub fn from_stream(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        Streaming {
            source: Source::Local(Box::pin(stream)),
        }
    }

    /// A stream of the items of `items`, taken as they are sent.
    #[allow(clippy::should_implement_trait)] // also a constructor by name, as issue #9 asks
    pub fn from_iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::from_stream(futures::stream::iter(items))
    }

    /// A stream fed through a channel: each [`StreamSender::send`] waits
    /// while `capacity` items are waiting to be sent (at least 1), and the
    /// network takes them only as the receiver grants credit, so a slow
    /// reader slows the sender. The stream ends when every sender is
    /// dropped.
    pub fn channel(capacity: usize) -> (StreamSender<T>, Self)
    where
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        (StreamSender { tx }, Self::from_stream(stream))
    }

    /// The stream arriving at `inbound`, read by `deadline` (when, and
    /// the time the call was given) if there is one.
    pub(crate) fn remote(
        inbound: Inbound,
        deadline: Option<(tokio::time::Instant, std::time::Duration)>,
    ) -> Self
    where
        T: DeserializeOwned,
    {
        let deadline =
            deadline.map(|(at, timeout)| (Box::pin(tokio::time::sleep_until(at)), timeout));
        Streaming {
            source: Source::Remote(inbound::Reader::new(
                inbound,
                deadline,
                inbound::decode::<T, T>,
            )),
        }
    }

    /// [`Streaming::remote`] for the stream a client reads as a call's
    /// answer, whose clean end is the end of the call.
    pub(crate) fn answer(
        inbound: Inbound,
        deadline: Option<(tokio::time::Instant, std::time::Duration)>,
    ) -> Self
    where
        T: DeserializeOwned,
    {
        match Self::remote(inbound, deadline).source {
            Source::Remote(reader) => Streaming {
                source: Source::Remote(reader.ending_call()),
            },
            local => Streaming { source: local },
        }
    }

    /// The same stream with items of type `U`, which travels as `T` does:
    /// items made here are converted with `convert`; items from the other
    /// side are decoded with `decode`, which need not go through `U`'s own
    /// `Deserialize` (a `Vec<u8>` decodes faster as `__private::ByteBuf`).
    pub(crate) fn retyped<U>(self, convert: fn(T) -> U, decode: Decode<U>) -> Streaming<U>
    where
        T: Send + 'static,
        U: Send + 'static,
    {
        match self.source {
            Source::Local(stream) => Streaming::from_stream(stream.map(convert)),
            Source::Remote(reader) => Streaming {
                source: Source::Remote(reader.retyped(convert, decode)),
            },
        }
    }

    /// The items to send. A stream that arrived from the other side is
    /// passed on item by item, up to its first error (which ends it).
    pub(crate) fn into_items(self) -> Pin<Box<dyn Stream<Item = T> + Send>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        match self.source {
            Source::Local(stream) => stream,
            source @ Source::Remote(..) => {
                let remote = Streaming { source };
                Box::pin(
                    remote
                        .take_while(|item| std::future::ready(item.is_ok()))
                        .filter_map(|item| std::future::ready(item.ok())),
                )
            }
        }
    }
}

// Nothing in it is pinned in place: the local stream is boxed, and items
// decoded ahead are plain values waiting in a queue.
impl<T> Unpin for Streaming<T> {}

impl<T: DeserializeOwned> Stream for Streaming<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Neither variant is structurally pinned: the local stream is boxed.
        match &mut self.get_mut().source {
            Source::Local(stream) => stream.as_mut().poll_next(cx).map(|item| item.map(Ok)),
            Source::Remote(reader) => reader.poll_item(cx),
        }
    }
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.source {
            Source::Local(_) => "Streaming(local)",
            Source::Remote(..) => "Streaming(remote)",
        })
    }
}

/// The sending end of [`Streaming::channel`]; cheap to clone.
pub struct StreamSender<T> {
    tx: tokio::sync::mpsc::Sender<T>,
}

impl<T> Clone for StreamSender<T> {
    fn clone(&self) -> Self {
        StreamSender {
            tx: self.tx.clone(),
        }
    }
}

impl<T> fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamSender")
    }
}

impl<T> StreamSender<T> {
    /// Sends `item`, waiting for room. Fails, handing the item back, once
    /// the stream is gone: the receiver dropped it, the call ended or the
    /// connection closed.
    pub async fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.tx.send(item).await.map_err(|e| SendError(e.0))
    }

    /// Whether the stream is gone, so that sending would fail.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// [`StreamSender::send`] failed: the stream is gone. Holds the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the stream is gone: its receiver dropped it or the call ended")
    }
}

impl<T: fmt::Debug> std::error::Error for SendError<T> {}
