//! When to try reconnecting after a failed attempt: exponential backoff
//! with jitter, with gRPC's defaults (1 s, x1.6, ±20 %, at most 120 s).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

/// Delay after the first failed attempt.
pub const DEFAULT_RECONNECT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
pub const DEFAULT_RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(120);
/// Growth of the delay after each failed attempt.
const MULTIPLIER: f64 = 1.6;
/// Each delay is moved at random by up to this fraction either way, so that
/// clients that lost the same server do not all return at once.
const JITTER: f64 = 0.2;

/// The reconnect schedule of one channel.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// The delay to use after the next failure, before jitter.
    next_delay: Duration,
    /// No attempt before this instant.
    not_before: Option<Instant>,
    /// What the last failed attempt said.
    pub(crate) last_error: String,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        // Any well-mixed seed will do; RandomState is std's source of one.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::with_seed(initial, max, seed)
    }

    fn with_seed(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max,
            next_delay: initial,
            not_before: None,
            last_error: String::new(),
            rng: seed | 1,
        }
    }

    /// How long until an attempt is allowed, if one is not allowed now.
    pub(crate) fn wait_remaining(&self, now: Instant) -> Option<Duration> {
        self.not_before.filter(|&at| at > now).map(|at| at - now)
    }

    /// Records a failed attempt; returns the delay before the next one.
    pub(crate) fn failed(&mut self, now: Instant, error: String) -> Duration {
        let delay = self.jittered(self.next_delay);
        self.not_before = Some(now + delay);
        self.next_delay = self.next_delay.mul_f64(MULTIPLIER).min(self.max);
        self.last_error = error;
        delay
    }

    /// Records a successful connection: the next failure starts over.
    pub(crate) fn succeeded(&mut self) {
        self.next_delay = self.initial;
        self.not_before = None;
        self.last_error.clear();
    }

    fn jittered(&mut self, delay: Duration) -> Duration {
        // xorshift64: enough randomness to spread clients apart.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        delay.mul_f64(1.0 + JITTER * (2.0 * unit - 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_within_the_jitter_up_to_the_cap() {
        let mut backoff = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(120), 42);
        let now = Instant::now();
        let mut base = 1.0f64;
        for _ in 0..20 {
            let delay = backoff.failed(now, "refused".into()).as_secs_f64();
            assert!(
                delay >= base * 0.8 - 1e-9 && delay <= base * 1.2 + 1e-9,
                "{delay} vs {base}"
            );
            base = (base * 1.6).min(120.0);
        }
        assert!(base == 120.0);
    }

    #[test]
    fn attempts_wait_until_the_delay_has_passed_and_success_resets() {
        let mut backoff = Backoff::with_seed(Duration::from_secs(1), Duration::from_secs(120), 7);
        let now = Instant::now();
        assert_eq!(backoff.wait_remaining(now), None);
        let delay = backoff.failed(now, "refused".into());
        assert_eq!(backoff.wait_remaining(now), Some(delay));
        assert_eq!(backoff.wait_remaining(now + delay), None);
        backoff.failed(now, "refused".into());
        backoff.succeeded();
        assert_eq!(backoff.wait_remaining(now), None);
        let first_again = backoff.failed(now, "refused".into()).as_secs_f64();
        assert!((0.8..=1.2).contains(&first_again));
    }
}
