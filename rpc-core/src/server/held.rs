//! Bytes one connection holds against a limit: the replies it has queued
//! but not yet written, and the requests of its running calls. Above
//! either limit the connection stops reading requests, so a client that
//! sends faster than the server answers, or than it reads, is held back by
//! TCP instead of growing the server's memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// One connection's held bytes against its limit.
#[derive(Debug)]
pub(crate) struct Held {
    limit: usize,
    bytes: AtomicUsize,
    /// Wakes whoever waits for room when bytes are given back: the
    /// reader, and every stream sender of the connection.
    freed: Notify,
}

impl Held {
    pub(crate) fn new(limit: usize) -> Self {
        Held {
            limit,
            bytes: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    pub(crate) fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, bytes: usize) {
        let before = self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        // Only a crossing of the limit can unblock a waiter, and one
        // crossing must wake them all: woken one at a time, the rest slept
        // on with the backlog empty (a review stalled a connection of 60
        // streams for good that way).
        if before >= self.limit && before - bytes < self.limit {
            self.freed.notify_waiters();
        }
    }

    /// Bytes held now.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the bytes held have reached the limit.
    pub(crate) fn full(&self) -> bool {
        self.bytes() >= self.limit
    }

    /// Completes once the connection holds less than its limit. One frame
    /// more may then be read whatever its size, so a reply larger than the
    /// limit cannot stall the connection forever.
    pub(crate) async fn below_limit(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.full() {
                return;
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn blocks_at_the_limit_and_wakes_when_freed() {
        let held = Held::new(10);
        assert!(held.below_limit().now_or_never().is_some());
        held.add(7);
        held.add(7);
        let mut waiting = Box::pin(held.below_limit());
        assert!(held.full());
        assert!((&mut waiting).now_or_never().is_none());
        held.sub(3);
        assert!((&mut waiting).now_or_never().is_none(), "11 held, limit 10");
        held.sub(7);
        assert!(waiting.now_or_never().is_some());
        assert_eq!(held.bytes(), 4);
    }

    #[tokio::test]
    async fn one_crossing_wakes_every_waiter() {
        let held = Held::new(10);
        held.add(20);
        let mut waiters: Vec<_> = (0..3).map(|_| Box::pin(held.below_limit())).collect();
        for waiter in &mut waiters {
            assert!(waiter.as_mut().now_or_never().is_none());
        }
        held.sub(20);
        for waiter in waiters {
            assert!(waiter.now_or_never().is_some(), "a waiter slept on");
        }
    }
}
