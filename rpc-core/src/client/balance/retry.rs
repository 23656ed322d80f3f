//! When a failed call of a balanced channel goes to another endpoint, and
//! how many such retries the channel allows.

use std::time::Duration;

use tower::retry::budget::{Budget as _, TpsBudget};

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
pub(crate) struct Allowance(TpsBudget);

impl Allowance {
    pub(crate) fn new(window: Duration, min_per_sec: u32, percent: f32) -> Allowance {
        Allowance(TpsBudget::new(window, min_per_sec, percent))
    }

    /// A call was made.
    pub(crate) fn earn(&self) {
        self.0.deposit();
    }

    /// Takes one retry, if one is left.
    pub(crate) fn spend(&self) -> bool {
        self.0.withdraw()
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
        assert!(allowance.spend());
        assert!(!allowance.spend());
    }
}
