//! The calls of one connection that run on tasks of their own: counted for
//! the call limit, their requests' bytes held against a limit, found by id
//! for cancel messages and duplicate checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::held::Held;

/// One connection's running calls.
#[derive(Debug)]
pub(crate) struct Running {
    /// How many entries `by_id` has, readable without the lock: every
    /// request checks it against the call limit.
    count: AtomicUsize,
    /// Bytes of the request frames of the calls in `by_id`: a call that
    /// waits holds its request, and the reader stops reading while these
    /// are over their limit.
    requests: Held,
    /// What stops each call.
    by_id: Mutex<HashMap<u64, CancellationToken>>,
    /// Woken whenever the last running call ends.
    none_left: Notify,
}

impl Running {
    /// No calls yet; reading pauses while their requests hold
    /// `max_request_bytes` or more.
    pub(crate) fn new(max_request_bytes: usize) -> Self {
        Running {
            count: AtomicUsize::new(0),
            requests: Held::new(max_request_bytes),
            by_id: Mutex::default(),
            none_left: Notify::new(),
        }
    }

    /// Calls running now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The bytes of requests the running calls hold.
    pub(crate) fn requests(&self) -> &Held {
        &self.requests
    }

    /// Registers the call `id`, stopped by `stop` and holding a request of
    /// `bytes`, until the returned guard drops; `None` if a call with that
    /// id is already running.
    pub(crate) fn start(
        self: &Arc<Self>,
        id: u64,
        bytes: usize,
        stop: CancellationToken,
    ) -> Option<RunningCall> {
        let mut by_id = self.lock();
        if by_id.contains_key(&id) {
            return None;
        }
        by_id.insert(id, stop);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.requests.add(bytes);
        Some(RunningCall {
            running: self.clone(),
            id,
            bytes,
        })
    }

    /// Completes once no call is running.
    pub(crate) async fn all_ended(&self) {
        loop {
            let ended = self.none_left.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }

    /// Whether a call with this id is running.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.count() > 0 && self.lock().contains_key(&id)
    }

    /// Stops the call `id`, saying whether it was running and not yet
    /// told to stop.
    pub(crate) fn cancel(&self, id: u64) -> Cancelled {
        match self.lock().get(&id) {
            Some(stop) if stop.is_cancelled() => Cancelled::Already,
            Some(stop) => {
                stop.cancel();
                Cancelled::Now
            }
            None => Cancelled::NotRunning,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // Nothing panics while holding it, but a poisoned map is still sound.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a cancel found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// A running call, stopped now.
    Now,
    /// A running call that had been told to stop already.
    Already,
    /// No call with that id.
    NotRunning,
}

/// A registered call; dropping it (however its task ends) frees its id and
/// its place and bytes under the limits.
pub(crate) struct RunningCall {
    running: Arc<Running>,
    id: u64,
    bytes: usize,
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
        self.running.requests.sub(self.bytes);
        if self.running.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.running.none_left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_counted_refused_twice_and_freed_on_drop() {
        let running = Arc::new(Running::new(25));
        let first = running.start(1, 10, CancellationToken::new()).unwrap();
        assert!(running.start(1, 5, CancellationToken::new()).is_none());
        let stop = CancellationToken::new();
        let second = running.start(2, 20, stop.clone()).unwrap();
        assert_eq!(running.count(), 2);
        assert_eq!(running.requests().bytes(), 30);
        assert!(running.requests().full());
        assert!(running.contains(1) && !running.contains(3));
        assert_eq!(running.cancel(2), Cancelled::Now);
        assert!(stop.is_cancelled());
        assert_eq!(running.cancel(2), Cancelled::Already);
        assert_eq!(running.cancel(3), Cancelled::NotRunning);
        drop(first);
        assert_eq!(running.requests().bytes(), 20);
        assert!(!running.requests().full());
        drop(second);
        assert_eq!((running.count(), running.requests().bytes()), (0, 0));
        assert_eq!(running.cancel(2), Cancelled::NotRunning);
        assert!(running.start(1, 0, CancellationToken::new()).is_some());
    }
}
