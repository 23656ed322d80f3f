//! When a failed call of a balanced channel goes to another endpoint, and
//! how many such retries the channel allows.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::RpcError;
use crate::status::Code;

/// Default share of calls that may be retries, over the last
/// [`DEFAULT_RETRY_WINDOW`], on top of [`DEFAULT_RETRY_MIN_PER_SEC`]
/// (Finagle's defaults).
pub const DEFAULT_RETRY_PERCENT: f32 = 0.2;
/// Default number of retries a second allowed whatever the traffic.
pub const DEFAULT_RETRY_MIN_PER_SEC: u32 = 10;
/// Default time over which calls earn retries.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Whether `error` lets the call go to another endpoint: always when it
/// definitely did not run there; when it may have run, only if the method
/// is idempotent and the failure was the endpoint's (its connection broke,
/// it was out of room), not the call's.
pub(crate) fn may_retry(error: &RpcError, idempotent: bool) -> bool {
    if error.is_retryable() {
        return true;
    }
    idempotent
        && (matches!(error, RpcError::ConnectionClosed { .. })
            || error.code() == Some(Code::ResourceExhausted))
}

/// Retries allowed: each call earns `percent` of one, a floor of
/// `min_per_sec` comes whatever the traffic, and what is earned expires
/// after the window. A cluster that fails every call therefore sees at
/// most that much more traffic, not a multiple of it.
///
/// The accounting is tower's `TpsBudget` (and Finagle's): ten slots across
/// the window, withdrawals taken from the current one so that they too
/// expire. Calls are banked in batches of [`BATCH`], so that a call costs
/// one atomic add; `TpsBudget`'s lock and clock read on every call cost a
/// balanced channel a tenth of W3's rate.
pub(crate) struct Allowance {
    /// Calls not yet banked.
    unbanked: AtomicU64,
    state: Mutex<Slots>,
    /// Millitokens each call earns, and a retry costs (1,000).
    per_call: i64,
    /// The floor: `min_per_sec` retries a second over the window.
    reserve: i64,
    slot_length: Duration,
}

/// Calls banked at once.
const BATCH: u64 = 32;

/// Millitokens a retry costs.
const RETRY_COST: i64 = 1_000;

struct Slots {
    /// Millitokens earned (less those spent) in each tenth of the window.
    earned: [i64; 10],
    /// The slot being written, and when it began.
    current: usize,
    began: Instant,
}

impl Allowance {
    pub(crate) fn new(window: Duration, min_per_sec: u32, percent: f32) -> Allowance {
        let window = window.max(Duration::from_secs(1));
        Allowance {
            unbanked: AtomicU64::new(0),
            state: Mutex::new(Slots {
                earned: [0; 10],
                current: 0,
                began: Instant::now(),
            }),
            per_call: (f64::from(percent.clamp(0.0, 1.0)) * RETRY_COST as f64) as i64,
            reserve: (f64::from(min_per_sec) * window.as_secs_f64()) as i64 * RETRY_COST,
            slot_length: window / 10,
        }
    }

    /// A call was made.
    pub(crate) fn earn(&self) {
        if self.unbanked.fetch_add(1, Ordering::Relaxed) + 1 >= BATCH {
            let mut slots = self.lock();
            self.bank(&mut slots);
        }
    }

    /// Takes one retry, if one is left.
    pub(crate) fn spend(&self) -> bool {
        let mut slots = self.lock();
        self.bank(&mut slots);
        let left = self.reserve + slots.earned.iter().sum::<i64>();
        if left < RETRY_COST {
            return false;
        }
        let current = slots.current;
        slots.earned[current] -= RETRY_COST;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to the slot of now, emptying those passed, and adds the calls
    /// not yet banked to it.
    fn bank(&self, slots: &mut Slots) {
        let now = Instant::now();
        let mut passed = now.saturating_duration_since(slots.began);
        let mut moved = 0;
        while passed >= self.slot_length && moved < slots.earned.len() {
            slots.current = (slots.current + 1) % slots.earned.len();
            let current = slots.current;
            slots.earned[current] = 0;
            passed -= self.slot_length;
            moved += 1;
        }
        if moved > 0 {
            slots.began = now - passed.min(self.slot_length);
        }
        let calls = self.unbanked.swap(0, Ordering::Relaxed);
        let current = slots.current;
        slots.earned[current] += calls as i64 * self.per_call;
    }
}

impl std::fmt::Debug for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Allowance")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    #[test]
    fn only_calls_that_did_not_run_are_retried_unless_the_method_is_idempotent() {
        let not_run = RpcError::NotProcessed {
            reason: "drain".into(),
        };
        let broke = RpcError::ConnectionClosed {
            reason: "reset".into(),
        };
        let busy = RpcError::Status(Status::new(Code::ResourceExhausted, "full".into()));
        let panicked = RpcError::Status(Status::new(Code::HandlerPanicked, "boom".into()));
        let late = RpcError::DeadlineExceeded {
            timeout: Duration::from_millis(1),
        };
        assert!(may_retry(&not_run, false));
        assert!(!may_retry(&broke, false));
        assert!(!may_retry(&busy, false));
        assert!(may_retry(&broke, true));
        assert!(may_retry(&busy, true));
        assert!(!may_retry(&panicked, true));
        assert!(!may_retry(&late, true));
    }

    #[test]
    fn the_allowance_runs_out_and_calls_earn_more() {
        let allowance = Allowance::new(Duration::from_secs(10), 0, 0.5);
        assert!(!allowance.spend());
        allowance.earn();
        allowance.earn();
        // Banked when a retry is asked for, even short of a batch.
        assert!(allowance.spend());
        assert!(!allowance.spend());
        for _ in 0..100 {
            allowance.earn();
        }
        let granted = (0..100).filter(|_| allowance.spend()).count();
        assert_eq!(granted, 50);
    }

    #[test]
    fn the_floor_gives_retries_without_calls_and_what_is_earned_expires() {
        let allowance = Allowance::new(Duration::from_secs(1), 3, 0.0);
        let granted = (0..10).filter(|_| allowance.spend()).count();
        assert_eq!(granted, 3, "3 a second over a 1 s window");

        let allowance = Allowance::new(Duration::from_secs(1), 0, 1.0);
        for _ in 0..5 {
            allowance.earn();
        }
        {
            // A window later, as if the clock had moved on.
            let mut slots = allowance.lock();
            allowance.bank(&mut slots);
            slots.began -= Duration::from_millis(1_100);
        }
        assert!(!allowance.spend(), "what was earned a window ago is gone");
    }
}
