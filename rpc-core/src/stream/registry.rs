//! A connection's open streams by call id, for its reader to route item,
//! end, credit and stop messages to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{Credit, Inbound};
use crate::error::RpcError;

/// One call's streams: what it receives, and the credit of what it sends.
#[derive(Clone, Default)]
pub(crate) struct Entry {
    pub(crate) inbound: Option<Inbound>,
    pub(crate) credit: Option<Arc<Credit>>,
}

/// What the reader should do about a stream message it routed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Handled.
    Done,
    /// No open stream of that call takes it: late (the call ended while it
    /// was on its way) or wrong, and ignored; free work, to be rate-limited.
    Unknown,
}

/// The open streams of one connection.
#[derive(Default)]
pub(crate) struct Streams {
    by_id: Mutex<HashMap<u64, Entry>>,
    /// How many `by_id` holds: read without the lock, so that a
    /// connection without streams pays no lock per reply for them.
    open: AtomicUsize,
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Nothing panics while holding it; a poisoned map is still sound.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the streams of call `id`.
    pub(crate) fn insert(&self, id: u64, entry: Entry) {
        let mut by_id = self.lock();
        by_id.insert(id, entry);
        self.open.store(by_id.len(), Ordering::Release);
    }

    /// Forgets call `id`'s streams: the call is over. Its sender, if any, stops.
    pub(crate) fn remove(&self, id: u64) -> Option<Entry> {
        // Stored under the lock by every change, and an id's entry is in
        // before anything for it can arrive: a count of 0 means none.
        if self.open.load(Ordering::Acquire) == 0 {
            return None;
        }
        let entry = {
            let mut by_id = self.lock();
            let entry = by_id.remove(&id);
            self.open.store(by_id.len(), Ordering::Release);
            entry
        };
        if let Some(credit) = entry.as_ref().and_then(|e| e.credit.as_ref()) {
            credit.stop();
        }
        entry
    }

    fn get(&self, id: u64) -> Option<Entry> {
        self.lock().get(&id).cloned()
    }

    /// Hands an item frame to call `id`'s receiving end. An error is a
    /// protocol violation.
    pub(crate) fn items(
        &self,
        id: u64,
        count: u32,
        items: Bytes,
        cost: usize,
    ) -> Result<Routed, String> {
        match self.get(id).and_then(|e| e.inbound) {
            Some(inbound) => inbound.push(count, items, cost).map(|()| Routed::Done),
            None => Ok(Routed::Unknown),
        }
    }

    /// The sender of call `id`'s stream ended it.
    pub(crate) fn end(&self, id: u64) -> Result<Routed, String> {
        match self.get(id).and_then(|e| e.inbound) {
            Some(inbound) => inbound.end_by_peer().map(|()| Routed::Done),
            None => Ok(Routed::Unknown),
        }
    }

    /// The receiver of call `id`'s stream grants `bytes` more.
    pub(crate) fn credit(&self, id: u64, bytes: u32) -> Result<Routed, String> {
        match self.get(id).and_then(|e| e.credit) {
            Some(credit) => credit.grant(bytes).map(|()| Routed::Done),
            None => Ok(Routed::Unknown),
        }
    }

    /// The receiver of call `id`'s stream reads no more of it.
    pub(crate) fn stop(&self, id: u64) -> Routed {
        match self.get(id).and_then(|e| e.credit) {
            Some(credit) => {
                credit.stop();
                Routed::Done
            }
            None => Routed::Unknown,
        }
    }

    /// The connection is over: every stream ends with `error` (made per
    /// stream), and every sender stops.
    pub(crate) fn close(&self, error: impl Fn() -> RpcError) {
        let entries: Vec<Entry> = {
            let mut by_id = self.lock();
            self.open.store(0, Ordering::Release);
            by_id.drain().map(|(_, e)| e).collect()
        };
        for entry in entries {
            if let Some(inbound) = entry.inbound {
                inbound.finish(Err(error()));
            }
            if let Some(credit) = entry.credit {
                credit.stop();
            }
        }
    }

    /// Ends, with `error`, every stream the connection receives, and only
    /// those: reading is over, so nothing more arrives for them, while
    /// what the calls send may still go out.
    pub(crate) fn end_inbound(&self, error: impl Fn() -> RpcError) {
        let inbound: Vec<Inbound> = self
            .lock()
            .values()
            .filter_map(|e| e.inbound.clone())
            .collect();
        for inbound in inbound {
            inbound.finish(Err(error()));
        }
    }

    /// Ends, with `error`, the streams of calls with ids `first_unread` and
    /// above: a draining server did not read them.
    pub(crate) fn drain(&self, first_unread: u64, error: impl Fn() -> RpcError) {
        let mut by_id = self.lock();
        let unread: Vec<u64> = by_id
            .keys()
            .copied()
            .filter(|&id| id >= first_unread)
            .collect();
        let entries: Vec<Entry> = unread.iter().filter_map(|id| by_id.remove(id)).collect();
        self.open.store(by_id.len(), Ordering::Release);
        drop(by_id);
        for entry in entries {
            if let Some(inbound) = entry.inbound {
                inbound.finish(Err(error()));
            }
            if let Some(credit) = entry.credit {
                credit.stop();
            }
        }
    }
}

/// The streams of one call as its handler sees them; dropped when the call
/// is over, which closes them.
pub(crate) struct CallStreams {
    pub(crate) id: u64,
    /// What the client streams to the call.
    pub(crate) inbound: Option<Inbound>,
    /// The credit of what the call streams back.
    pub(crate) credit: Option<Arc<Credit>>,
    pub(crate) link: Arc<dyn super::Link>,
    registry: Arc<Streams>,
}

impl CallStreams {
    /// Opens call `id`'s streams in `registry`.
    pub(crate) fn open(
        registry: &Arc<Streams>,
        id: u64,
        inbound: Option<Inbound>,
        credit: Option<Arc<Credit>>,
        link: Arc<dyn super::Link>,
    ) -> Self {
        registry.insert(
            id,
            Entry {
                inbound: inbound.clone(),
                credit: credit.clone(),
            },
        );
        CallStreams {
            id,
            inbound,
            credit,
            link,
            registry: registry.clone(),
        }
    }
}

impl Drop for CallStreams {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl std::fmt::Debug for CallStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStreams")
            .field("id", &self.id)
            .field("inbound", &self.inbound.is_some())
            .field("outbound", &self.credit.is_some())
            .finish()
    }
}
