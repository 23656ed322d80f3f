//! Log lines about single connections, rate-limited: a host churning
//! connections must not be able to fill the disk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::rate::Rate;

/// Connection-level log lines (a connection refused or closed for cause)
/// written per second at most, beyond a burst; the rest are counted and the
/// count is reported with the next line written.
const LOG_LINES_PER_SECOND: u32 = 10;
const LOG_BURST: u32 = 50;

/// Rate-limited log lines about single connections.
pub(crate) struct ConnectionLog {
    rate: Mutex<Rate>,
    suppressed: AtomicU64,
}

impl ConnectionLog {
    pub(crate) fn new() -> Self {
        ConnectionLog {
            rate: Mutex::new(Rate::new(
                Duration::from_secs(1) / LOG_LINES_PER_SECOND,
                LOG_BURST,
            )),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now, and how many were held back
    /// since the last one.
    fn allow(&self) -> Option<u64> {
        let allowed = self.rate.lock().unwrap_or_else(|e| e.into_inner()).allow();
        if allowed {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Logs at INFO why a connection was refused or closed, within the rate
    /// (at DEBUG beyond it).
    pub(crate) fn closed(&self, peer: &dyn std::fmt::Display, reason: &str) {
        match self.allow() {
            Some(0) => tracing::info!(%peer, "closing connection: {reason}"),
            Some(held) => tracing::info!(
                %peer,
                "closing connection: {reason} ({held} similar lines held back)"
            ),
            None => tracing::debug!(%peer, "closing connection: {reason}"),
        }
    }
}
