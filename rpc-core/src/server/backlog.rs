//! The bytes of replies one connection has queued but not yet written.
//! Above the limit the connection stops reading requests, so a client that sends but never reads is held
//! back by TCP instead of growing the server's memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// One connection's held bytes against its limit.
#[derive(Debug)]
pub(crate) struct Backlog {
    limit: usize,
    held: AtomicUsize,
    /// Wakes the reader when bytes are given back.
    freed: Notify,
}

impl Backlog {
    pub(crate) fn new(limit: usize) -> Self {
        Backlog {
            limit,
            held: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    pub(crate) fn add(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, bytes: usize) {
        let before = self.held.fetch_sub(bytes, Ordering::Relaxed);
        // Only a crossing of the limit can unblock the reader.
        if before >= self.limit && before - bytes < self.limit {
            self.freed.notify_one();
        }
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Completes once the connection holds less than its limit. One frame
    /// more may then be read whatever its size, so a reply larger than the
    /// limit cannot stall the connection forever.
    pub(crate) async fn below_limit(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.held() < self.limit {
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
        let backlog = Backlog::new(10);
        assert!(backlog.below_limit().now_or_never().is_some());
        backlog.add(7);
        backlog.add(7);
        let mut waiting = Box::pin(backlog.below_limit());
        assert!((&mut waiting).now_or_never().is_none());
        backlog.sub(3);
        assert!((&mut waiting).now_or_never().is_none(), "11 held, limit 10");
        backlog.sub(7);
        assert!(waiting.now_or_never().is_some());
        assert_eq!(backlog.held(), 4);
    }
}
