//! Durations from settings, made safe to add to an instant, and waiting
//! for an instant that may not be set.

use std::time::Duration;

use tokio::time::Instant;

/// Longest duration a setting takes; longer ones mean "never" for any
/// practical purpose, and adding them to an `Instant` could overflow.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `setting`, capped at a century.
pub(crate) fn capped(setting: Duration) -> Duration {
    setting.min(LONGEST)
}

/// Completes at `deadline`, or never without one. `select!` builds the
/// future of a disabled branch too, and a `Sleep` made there costs a timer
/// entry and a clock read each time; this costs nothing until polled.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
