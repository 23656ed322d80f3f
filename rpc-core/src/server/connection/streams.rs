//! What the streams of a server's calls need of their connection.

use std::sync::Arc;

use bytes::BytesMut;

use super::writer::Outbox;
use crate::envelope::{self, FLAG_STREAM_IN, FLAG_STREAM_OUT};
use crate::server::running::Running;
use crate::stream::{CallStreams, Credit, Inbound, Link, Streams};

/// A connection's side of its calls' streams.
pub(super) struct ServerLink {
    pub(super) outbox: Outbox,
    /// What clients' stream items held unread count against: the bytes
    /// running calls hold, so that reading pauses when they are too many.
    pub(super) running: Arc<Running>,
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

    fn hold(&self, bytes: usize, held: bool) {
        if held {
            self.running.requests().add(bytes);
        } else {
            self.running.requests().sub(bytes);
        }
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
