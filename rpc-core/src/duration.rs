//! Durations from settings, made safe to add to an instant.

use std::time::Duration;

/// Longest duration a setting takes; longer ones mean "never" for any
/// practical purpose, and adding them to an `Instant` could overflow.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `setting`, capped at a century.
pub(crate) fn capped(setting: Duration) -> Duration {
    setting.min(LONGEST)
}
