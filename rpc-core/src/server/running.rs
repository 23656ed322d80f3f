//! The calls of one connection that run on tasks of their own: counted for
//! the call limit, found by id for cancel messages and duplicate checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One connection's running calls.
#[derive(Debug, Default)]
pub(crate) struct Running {
    /// How many entries `by_id` has, readable without the lock: every
    /// request checks it against the call limit.
    count: AtomicUsize,
    /// What stops each call.
    by_id: Mutex<HashMap<u64, CancellationToken>>,
    /// Woken whenever the last running call ends.
    none_left: Notify,
}

impl Running {
    /// Calls running now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Registers the call `id`, stopped by `stop`, until the returned guard
    /// drops; `None` if a call with that id is already running.
    pub(crate) fn start(self: &Arc<Self>, id: u64, stop: CancellationToken) -> Option<RunningCall> {
        let mut by_id = self.lock();
        if by_id.contains_key(&id) {
            return None;
        }
        by_id.insert(id, stop);
        self.count.fetch_add(1, Ordering::Relaxed);
        Some(RunningCall {
            running: self.clone(),
            id,
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

    /// Stops the call `id`; `false` if no such call is running.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        match self.lock().get(&id) {
            Some(stop) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // Nothing panics while holding it, but a poisoned map is still sound.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registered call; dropping it (however its task ends) frees its id and
/// its place under the limit.
pub(crate) struct RunningCall {
    running: Arc<Running>,
    id: u64,
}

impl Drop for RunningCall {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
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
        let running = Arc::new(Running::default());
        let first = running.start(1, CancellationToken::new()).unwrap();
        assert!(running.start(1, CancellationToken::new()).is_none());
        let stop = CancellationToken::new();
        let second = running.start(2, stop.clone()).unwrap();
        assert_eq!(running.count(), 2);
        assert!(running.contains(1) && !running.contains(3));
        assert!(running.cancel(2));
        assert!(stop.is_cancelled());
        assert!(!running.cancel(3));
        drop((first, second));
        assert_eq!(running.count(), 0);
        assert!(!running.cancel(2));
        assert!(running.start(1, CancellationToken::new()).is_some());
    }
}
