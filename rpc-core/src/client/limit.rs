//! How many calls a client may have unanswered on one connection: the
//! limit the server advertised in its handshake.
//!
//! tokio's `Semaphore` takes a lock on every release; this limiter costs one
//! atomic operation to take a permit and two to give one back, and touches
//! `Notify` only when a caller actually has to wait. A permit is a guard
//! that gives itself back when dropped, whatever path the call takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use tokio::sync::Notify;

/// Permits for calls in flight.
#[derive(Debug)]
pub(crate) struct CallLimit {
    available: AtomicUsize,
    /// Callers between registering to be woken and being woken.
    waiting: AtomicUsize,
    closed: AtomicBool,
    notify: Notify,
}

/// The limiter was closed: the connection ended.
#[derive(Debug)]
pub(crate) struct LimitClosed;

impl CallLimit {
    pub(crate) fn new(permits: usize) -> Self {
        CallLimit {
            available: AtomicUsize::new(permits),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Takes a permit, waiting for one if none is left. Dropping the future
    /// while it waits takes nothing.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Permit, LimitClosed> {
        loop {
            if self.closed.load(SeqCst) {
                return Err(LimitClosed);
            }
            if let Some(permit) = self.try_acquire() {
                return Ok(permit);
            }
            let notified = self.notify.notified();
            tokio::pin!(notified);
            let _waiting = Waiting::register(&self.waiting);
            notified.as_mut().enable();
            // A permit given back between `try_take` and `register` was not
            // announced to us: look again before sleeping.
            if self.closed.load(SeqCst) {
                return Err(LimitClosed);
            }
            if let Some(permit) = self.try_acquire() {
                return Ok(permit);
            }
            notified.await;
        }
    }

    /// Takes a permit if one is left.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.try_take().then(|| Permit(self.clone()))
    }

    fn try_take(&self) -> bool {
        let mut available = self.available.load(SeqCst);
        while available > 0 {
            match self
                .available
                .compare_exchange_weak(available, available - 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => available = now,
            }
        }
        false
    }

    fn release(&self) {
        self.available.fetch_add(1, SeqCst);
        if self.waiting.load(SeqCst) > 0 {
            self.notify.notify_one();
        }
    }

    /// Fails every waiting and later `acquire`.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        self.notify.notify_waiters();
    }
}

/// One call's place under the limit, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit(Arc<CallLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Counts a caller as waiting until dropped, however its wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn register(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, SeqCst);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_are_taken_waited_for_and_given_back() {
        let limit = Arc::new(CallLimit::new(2));
        let first = limit.acquire().await.unwrap();
        let _second = limit.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn closing_fails_waiters_and_later_callers() {
        let limit = Arc::new(CallLimit::new(0));
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await }
        });
        tokio::task::yield_now().await;
        limit.close();
        assert!(waiter.await.unwrap().is_err());
        assert!(limit.acquire().await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_callers_never_exceed_the_limit() {
        let limit = Arc::new(CallLimit::new(3));
        let inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (limit, inside) = (limit.clone(), inside.clone());
                tokio::spawn(async move {
                    let permit = limit.acquire().await.unwrap();
                    assert!(inside.fetch_add(1, SeqCst) < 3);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, SeqCst);
                    drop(permit);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(limit.available.load(SeqCst), 3);
    }
}
