//! One call's deadline: fixed when the caller asks, and every wait of the
//! call (reconnect, permit, reply) runs against it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::RpcError;

/// When a call must be done by, and the time it was given (for its error).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// The deadline of a call given `timeout` from now, if any. Timers need
    /// a tokio runtime; without one a timed call fails instead of panicking.
    pub(crate) fn start(timeout: Option<Duration>) -> Result<Option<Deadline>, RpcError> {
        let Some(timeout) = timeout else {
            return Ok(None);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RpcError::NoRuntime);
        }
        Ok(Some(Deadline {
            at: Instant::now() + timeout,
            timeout,
        }))
    }

    /// When the call must be done by.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// The time the call was given.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Time left, for the server.
    pub(crate) fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Runs `future` to completion, or until `deadline` (if any) passes.
    pub(crate) async fn within<T>(
        deadline: Option<Deadline>,
        future: impl Future<Output = T>,
    ) -> Result<T, RpcError> {
        match deadline {
            None => Ok(future.await),
            Some(deadline) => tokio::time::timeout_at(deadline.at, future)
                .await
                .map_err(|_| RpcError::DeadlineExceeded {
                    timeout: deadline.timeout,
                }),
        }
    }
}
