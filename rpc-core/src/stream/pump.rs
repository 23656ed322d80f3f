//! The sending end of one stream: pulls items from the local source only
//! while there is credit, and packs those that are ready into one frame.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;

use bytes::BytesMut;
use futures::Stream;
use serde::Serialize;

use super::Credit;
use super::inbound::Link;
use crate::codec::{self, EncodeFailure};
use crate::envelope;
use crate::frame;

/// Item bytes packed into one frame at most, unless credit is shorter: many
/// small items to a frame (tonic's HTTP/2 does the same), while a frame
/// stays small enough to be copied into the connection's outbox.
const BATCH_BYTES: usize = 32 * 1024;

/// Why a pump could not send every item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// The source panicked, saying this; the items before were sent.
    Panicked(String),
    /// An item could not be sent: why.
    Item(String),
}

/// How a pump ended without an error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// The source ended; every item was sent.
    Ended,
    /// The receiver stopped the stream, or the connection went away.
    Stopped,
}

/// Sends every item of `source` as stream `id` over `link`, within
/// `credit`. With `open`, the first frame goes out at once, even empty, to
/// tell the receiver the stream is open. An error says why an item could
/// not be sent (it does not encode, or no frame can hold it).
pub(crate) async fn pump<T: Serialize>(
    source: &mut Pin<Box<dyn Stream<Item = T> + Send>>,
    id: u64,
    credit: &Credit,
    link: &dyn Link,
    max_frame_length: usize,
    open: bool,
) -> Result<Pumped, Failed> {
    let mut sent = 0;
    let pumped = pump_counting(source, id, credit, link, max_frame_length, open, &mut sent).await;
    // On the span of the call whose stream this is: the pump runs in its
    // handler on the server, and in a task entered in it on the client.
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("rpc.items_sent", sent);
    }
    pumped
}

/// [`pump`], counting in `sent` the items sent.
async fn pump_counting<T: Serialize>(
    source: &mut Pin<Box<dyn Stream<Item = T> + Send>>,
    id: u64,
    credit: &Credit,
    link: &dyn Link,
    max_frame_length: usize,
    open: bool,
    sent: &mut u64,
) -> Result<Pumped, Failed> {
    let limit = frame::payload_limit(max_frame_length);
    let mut frame = BytesMut::new();
    // An item that did not fit in the last frame: the first of the next.
    let mut carried: Option<T> = None;
    let mut opening = open;
    loop {
        // Nothing is pulled without credit: a producer waits for its reader.
        let Some(available) = std::future::poll_fn(|cx| credit.poll_available(cx)).await else {
            return Ok(Pumped::Stopped);
        };
        // Nor while the connection's queue is full: credit is the peer's to
        // give, and a peer that grants much and reads nothing must not
        // grow that queue (a review queued 180 MiB so).
        if let Some(mut room) = link.room() {
            let stopped = std::future::poll_fn(|cx| {
                if credit.poll_stopped(cx).is_ready() {
                    return Poll::Ready(true);
                }
                room.as_mut().poll(cx).map(|()| false)
            })
            .await;
            if stopped {
                return Ok(Pumped::Stopped);
            }
        }
        let mut next = carried.take();
        let mut ended = false;
        if next.is_none() && !opening {
            let pulled = std::future::poll_fn(|cx| {
                if credit.poll_stopped(cx).is_ready() {
                    return Poll::Ready(None);
                }
                // The source is user code.
                match std::panic::catch_unwind(AssertUnwindSafe(|| source.as_mut().poll_next(cx))) {
                    Ok(polled) => polled.map(|item| Some(Ok(item))),
                    Err(panic) => Poll::Ready(Some(Err(panic))),
                }
            })
            .await;
            match pulled {
                None => return Ok(Pumped::Stopped),
                Some(Ok(None)) => ended = true,
                Some(Ok(Some(item))) => next = Some(item),
                Some(Err(panic)) => return Err(Failed::Panicked(crate::panic::message(&*panic))),
            }
        }
        // Items that are ready are taken without waiting: polled with a
        // waker that does nothing, made once per frame (`now_or_never`
        // made one per item).
        let mut ready = std::task::Context::from_waker(std::task::Waker::noop());
        let start = envelope::begin_items(&mut frame, id);
        let mut count: u32 = 0;
        let mut panicked = None;
        let budget = available.min(BATCH_BYTES);
        loop {
            if let Some(item) = next.take() {
                let used = frame.len() - start - frame::PREFIX_LEN;
                match codec::encode(&item, &mut frame, limit.saturating_sub(used)) {
                    Ok(()) => count += 1,
                    Err(EncodeFailure::TooLarge) if count > 0 => {
                        carried = Some(item);
                        break;
                    }
                    Err(EncodeFailure::TooLarge) => {
                        return Err(Failed::Item(format!(
                            "a stream item does not fit in a frame of at most {max_frame_length} bytes"
                        )));
                    }
                    Err(EncodeFailure::Codec(e)) => {
                        return Err(Failed::Item(format!(
                            "a stream item could not be encoded: {e}"
                        )));
                    }
                }
            }
            if ended || frame.len() - start >= budget || count == u32::MAX {
                break;
            }
            match std::panic::catch_unwind(AssertUnwindSafe(|| {
                source.as_mut().poll_next(&mut ready)
            })) {
                Ok(Poll::Ready(Some(item))) => next = Some(item),
                Ok(Poll::Ready(None)) => ended = true,
                Ok(Poll::Pending) => break,
                Err(panic) => {
                    // What came before the panic still goes out.
                    panicked = Some(crate::panic::message(&*panic));
                    break;
                }
            }
        }
        if count > 0 || opening {
            envelope::finish_items(&mut frame, start, count);
            credit.spend(frame.len() - start - frame::PREFIX_LEN);
            *sent += u64::from(count);
            if !link.send(frame.split()) {
                return Ok(Pumped::Stopped);
            }
        } else {
            frame.truncate(start);
        }
        opening = false;
        if let Some(message) = panicked {
            return Err(Failed::Panicked(message));
        }
        if ended {
            return Ok(Pumped::Ended);
        }
    }
}
