//! The sending end's view of one stream's credit: bytes it may still
//! send, what the receiver grants, and whether the receiver has stopped.

use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::INITIAL_CREDIT;

/// Most credit a sender may hold: a grant beyond it is a protocol violation
/// (as in HTTP/2), so the count cannot overflow.
const MAX_ALLOWANCE: i64 = i32::MAX as i64;

/// One stream's credit, shared by the connection's reader (which grants)
/// and the pump that sends.
pub(crate) struct Credit {
    state: Mutex<State>,
}

struct State {
    /// Bytes the sender may still send; below zero after a frame that
    /// overdrew it, which the protocol allows once.
    allowance: i64,
    /// The receiver stops reading, or the call ended: send nothing more.
    stopped: bool,
    waker: Option<Waker>,
}

impl Default for Credit {
    fn default() -> Self {
        Credit {
            state: Mutex::new(State {
                allowance: i64::from(INITIAL_CREDIT),
                stopped: false,
                waker: None,
            }),
        }
    }
}

impl Credit {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned state is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a grant from the receiver; an error (a grant past the most a
    /// sender may hold) closes the connection.
    pub(crate) fn grant(&self, bytes: u32) -> Result<(), String> {
        let mut state = self.lock();
        let allowance = state.allowance + i64::from(bytes);
        if allowance > MAX_ALLOWANCE {
            return Err(format!(
                "a stream credit grant of {bytes} bytes takes the credit past {MAX_ALLOWANCE}"
            ));
        }
        state.allowance = allowance;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Stops the sender: the receiver reads no more, or the call is over.
    pub(crate) fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready with the bytes the sender may send once there are some, or
    /// with `None` once it is stopped.
    pub(crate) fn poll_available(&self, cx: &mut Context<'_>) -> Poll<Option<usize>> {
        let mut state = self.lock();
        if state.stopped {
            return Poll::Ready(None);
        }
        if state.allowance > 0 {
            return Poll::Ready(Some(state.allowance as usize));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready once stopped; otherwise registers to be woken by any change.
    pub(crate) fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.stopped {
            return Poll::Ready(());
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Counts a sent frame of `cost` bytes.
    pub(crate) fn spend(&self, cost: usize) {
        self.lock().allowance -= cost as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    #[test]
    fn credit_is_spent_granted_and_capped() {
        let credit = Credit::default();
        let mut cx = Context::from_waker(noop_waker_ref());
        assert_eq!(credit.poll_available(&mut cx), Poll::Ready(Some(65_536)));
        credit.spend(70_000);
        assert!(credit.poll_available(&mut cx).is_pending(), "overdrawn");
        credit.grant(10_000).unwrap();
        assert_eq!(credit.poll_available(&mut cx), Poll::Ready(Some(5_536)));
        assert!(
            credit.grant(u32::MAX).is_err(),
            "past the most a sender may hold"
        );
        credit.stop();
        assert_eq!(credit.poll_available(&mut cx), Poll::Ready(None));
    }
}
