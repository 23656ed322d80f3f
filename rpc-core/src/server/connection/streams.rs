//! What the streams of a server's calls need of their connection.

use std::sync::Arc;

use bytes::BytesMut;

use super::writer::Outbox;
use crate::envelope::{self, FLAG_STREAM_IN, FLAG_STREAM_OUT};
use crate::stream::{CallStreams, Credit, Inbound, Link, Streams};

/// A connection's side of its calls' streams.
///
/// What a client's streams hold unread is bounded by their windows (and
/// one frame each), not by pausing the reader: a paused reader would not
/// read the credit and cancels that let those streams move on (a review
/// deadlocked echo calls that way).
pub(super) struct ServerLink {
    pub(super) outbox: Outbox,
}

impl Link for ServerLink {
    fn send(&self, frame: BytesMut) -> bool {
        self.outbox.send(frame)
    }

    fn abandon(&self, id: u64) {
        let mut stop = BytesMut::new();
        envelope::encode_stop(&mut stop, id);
        self.outbox.send(stop);
    }

    fn room(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> {
        // Credit is the client's to give; the connection's reply backlog
        // bounds what a stream may queue whatever credit it has.
        let backlog = self.outbox.backlog();
        backlog.full().then(|| Box::pin(backlog.below_limit()) as _)
    }
}

/// Opens the streams a request's `flags` ask for.
pub(super) fn open(
    registry: &Arc<Streams>,
    link: &Arc<ServerLink>,
    id: u64,
    flags: u8,
    window: usize,
) -> CallStreams {
    let link: Arc<dyn Link> = link.clone();
    let inbound = (flags & FLAG_STREAM_IN != 0).then(|| Inbound::new(id, window, link.clone()));
    let credit = (flags & FLAG_STREAM_OUT != 0).then(|| Arc::new(Credit::default()));
    CallStreams::open(registry, id, inbound, credit, link)
}
