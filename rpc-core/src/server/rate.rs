//! A token bucket: how often something may happen, with a burst.

use std::time::Duration;

use tokio::time::Instant;

/// Allows `burst` events at once and one more every `every`.
#[derive(Debug)]
pub(crate) struct Rate {
    every: Duration,
    burst: u32,
    /// Events that may happen now without waiting.
    tokens: u32,
    /// When `tokens` was last topped up.
    since: Instant,
}

impl Rate {
    pub(crate) fn new(every: Duration, burst: u32) -> Self {
        Rate {
            every: every.max(Duration::from_nanos(1)),
            burst: burst.max(1),
            tokens: burst.max(1),
            since: Instant::now(),
        }
    }

    /// Takes one token; `false` if none is left.
    pub(crate) fn allow(&mut self) -> bool {
        self.take(1)
    }

    /// Takes `n` tokens at once; `false`, taking none, if fewer are left.
    pub(crate) fn take(&mut self, n: u32) -> bool {
        if self.tokens < n {
            self.refill(Instant::now());
        }
        match self.tokens.checked_sub(n) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        let earned = elapsed.as_nanos() / self.every.as_nanos();
        if earned == 0 {
            return;
        }
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(earned).min(self.burst);
        // Keep the remainder, so a steady rate just under the limit holds.
        self.since += self.every * earned.min(self.burst);
        if self.tokens == self.burst {
            self.since = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_rate() {
        let mut rate = Rate::new(Duration::from_secs(1), 3);
        assert!(rate.allow() && rate.allow() && rate.allow());
        assert!(!rate.allow(), "burst spent");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!rate.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(rate.allow(), "one earned after a second");
        assert!(!rate.allow());
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..3 {
            assert!(rate.allow());
        }
        assert!(!rate.allow(), "no more than the burst is saved up");
    }

    #[tokio::test(start_paused = true)]
    async fn takes_many_at_once_or_none() {
        let mut rate = Rate::new(Duration::from_millis(1), 100);
        assert!(rate.take(60));
        assert!(!rate.take(41), "40 left");
        assert!(rate.take(40));
        tokio::time::advance(Duration::from_millis(30)).await;
        assert!(!rate.take(31));
        assert!(rate.take(30), "30 earned");
        assert!(!rate.take(101), "never more than the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn three_a_second_exceeds_one_a_second() {
        // The old ping rule let bursts of three every second through.
        let mut rate = Rate::new(Duration::from_secs(1), 3);
        let mut refused = false;
        for _ in 0..10 {
            for _ in 0..3 {
                refused |= !rate.allow();
            }
            tokio::time::advance(Duration::from_millis(1001)).await;
        }
        assert!(refused);
    }
}
