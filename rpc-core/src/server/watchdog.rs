//! Notices a connection whose reading task is stuck in a handler.
//!
//! A call's first poll runs where the call was read, which saves a task and
//! two wake-ups per call (docs/PERFORMANCE.md). A handler that does
//! synchronous work before its first `.await` would then stop its whole
//! connection: nothing else is read, not even a cancel or a ping. Instead
//! of paying for a task per call to rule that out, one task per server
//! looks at every connection each [`PERIOD`]; a connection whose reader has
//! been inside user code since an earlier look is rescued: another task
//! takes over reading it until the stuck poll returns. A quick call beside
//! a blocking one therefore waits at most two periods, and the fast path
//! pays a few atomic operations per call.
//!
//! This needs a runtime with more than one worker thread: on a
//! current-thread runtime a blocking handler stops everything anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// How often the watchdog looks, and so how long a stuck reader waits for
/// rescue: between one and two periods.
const PERIOD: Duration = Duration::from_millis(10);

/// Looks with nothing polling after which the watchdog parks until a
/// reader wakes it, so that an idle server does not wake 100 times a second.
const PARK_AFTER: u32 = 100;

/// Longest park: the watchdog holds its state while parked, and checks this
/// often whether the server is gone.
const PARK_CHECK: Duration = Duration::from_secs(1);

/// A connection's reader, as the watchdog sees it.
pub(crate) trait Watched: Send + Sync + 'static {
    /// The reader's stamp: 0 when it is not inside user code.
    fn stamp(&self) -> &Stamp;
    /// Starts another task reading the connection while its reader is stuck.
    fn rescue(self: Arc<Self>);
}

/// Where one reader stands: 0 while it is not polling user code, else one
/// more than the watchdog's tick when it began.
#[derive(Debug, Default)]
pub(crate) struct Stamp {
    since: AtomicU64,
    /// Set while a rescue is under way, so that one stall gets one rescuer.
    rescued: AtomicBool,
}

impl Stamp {
    /// Whether the reader is inside user code now.
    pub(crate) fn polling(&self) -> bool {
        self.since.load(Ordering::SeqCst) != 0
    }

    /// Whether a rescuer is (or is about to be) reading.
    pub(crate) fn rescued(&self) -> bool {
        self.rescued.load(Ordering::SeqCst)
    }

    /// A rescuer stops reading.
    pub(crate) fn rescue_over(&self) {
        self.rescued.store(false, Ordering::SeqCst);
    }
}

/// The server's watchdog: its clock and the readers it watches.
#[derive(Default)]
pub(crate) struct Watchdog {
    tick: AtomicU64,
    parked: AtomicBool,
    wake: Notify,
    readers: Mutex<Readers>,
}

#[derive(Default)]
struct Readers {
    next: u64,
    by_key: HashMap<u64, Weak<dyn Watched>>,
}

impl Watchdog {
    /// Starts watching `reader` until the returned guard drops. The first
    /// reader watched starts the watchdog's task, within the caller's
    /// runtime; it ends once the watchdog is dropped.
    pub(crate) fn watch(self: &Arc<Self>, reader: Weak<dyn Watched>) -> Watching {
        let mut readers = self.lock();
        let key = readers.next;
        readers.next += 1;
        readers.by_key.insert(key, reader);
        if key == 0 {
            tokio::spawn(run(Arc::downgrade(self)));
        }
        Watching {
            watchdog: self.clone(),
            key,
        }
    }

    /// Marks the reader of `stamp` as inside user code.
    pub(crate) fn enter(&self, stamp: &Stamp) {
        stamp
            .since
            .store(self.tick.load(Ordering::Relaxed) + 1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.parked.store(false, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    /// Marks the reader of `stamp` as out of user code.
    pub(crate) fn leave(&self, stamp: &Stamp) {
        stamp.since.store(0, Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, Readers> {
        // Nothing panics while holding it; a poisoned map is still sound.
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One look: rescues the readers stuck since before the last tick, and
    /// says whether any reader was polling at all.
    fn look(&self) -> bool {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        let mut stuck = Vec::new();
        let mut polling = false;
        for reader in self.lock().by_key.values() {
            let Some(reader) = reader.upgrade() else {
                continue;
            };
            let stamp = reader.stamp();
            let since = stamp.since.load(Ordering::SeqCst);
            polling |= since != 0;
            // Began during an earlier period: stuck for one period at least.
            if since != 0 && since < tick && !stamp.rescued.swap(true, Ordering::SeqCst) {
                stuck.push(reader);
            }
        }
        // Outside the lock: a rescue spawns a task.
        for reader in stuck {
            tracing::debug!(
                "a handler holds its connection's reader; another task reads meanwhile"
            );
            reader.rescue();
        }
        polling
    }

    /// Whether any reader is polling; read after `parked` is set, so that a
    /// reader that entered just before is not missed.
    fn any_polling(&self) -> bool {
        self.lock().by_key.values().any(|reader| {
            reader
                .upgrade()
                .is_some_and(|reader| reader.stamp().polling())
        })
    }
}

/// A reader being watched; dropping it stops that.
pub(crate) struct Watching {
    watchdog: Arc<Watchdog>,
    key: u64,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.watchdog.lock().by_key.remove(&self.key);
    }
}

async fn run(watchdog: Weak<Watchdog>) {
    let mut quiet = 0;
    loop {
        tokio::time::sleep(PERIOD).await;
        let Some(dog) = watchdog.upgrade() else {
            return;
        };
        quiet = if dog.look() { 0 } else { quiet + 1 };
        if quiet < PARK_AFTER {
            continue;
        }
        dog.parked.store(true, Ordering::SeqCst);
        loop {
            if dog.any_polling() || !dog.parked.load(Ordering::SeqCst) {
                break;
            }
            let woken = tokio::time::timeout(PARK_CHECK, dog.wake.notified()).await;
            if woken.is_ok() {
                break;
            }
            if Arc::strong_count(&dog) == 1 {
                // The server and every connection are gone.
                return;
            }
        }
        dog.parked.store(false, Ordering::SeqCst);
        quiet = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reader {
        stamp: Stamp,
        rescues: tokio::sync::mpsc::UnboundedSender<()>,
    }

    impl Watched for Reader {
        fn stamp(&self) -> &Stamp {
            &self.stamp
        }
        fn rescue(self: Arc<Self>) {
            let _ = self.rescues.send(());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_stuck_for_a_period_is_rescued_once() {
        let watchdog = Arc::new(Watchdog::default());
        let (rescues, mut rescued) = tokio::sync::mpsc::unbounded_channel();
        let reader = Arc::new(Reader {
            stamp: Stamp::default(),
            rescues,
        });
        let weak: Weak<dyn Watched> = Arc::downgrade(&reader) as Weak<dyn Watched>;
        let _watching = watchdog.watch(weak);
        // Quick polls are never rescued.
        for _ in 0..50 {
            watchdog.enter(&reader.stamp);
            watchdog.leave(&reader.stamp);
            tokio::time::sleep(PERIOD).await;
        }
        assert!(rescued.try_recv().is_err());
        watchdog.enter(&reader.stamp);
        tokio::time::sleep(PERIOD * 5).await;
        assert!(rescued.try_recv().is_ok());
        assert!(rescued.try_recv().is_err(), "one stall, one rescue");
        reader.stamp.rescue_over();
        tokio::time::sleep(PERIOD * 3).await;
        assert!(rescued.try_recv().is_ok(), "still stuck: rescued again");
        watchdog.leave(&reader.stamp);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_watchdog_wakes_for_the_next_poll() {
        let watchdog = Arc::new(Watchdog::default());
        let (rescues, mut rescued) = tokio::sync::mpsc::unbounded_channel();
        let reader = Arc::new(Reader {
            stamp: Stamp::default(),
            rescues,
        });
        let _watching = watchdog.watch(Arc::downgrade(&reader) as Weak<dyn Watched>);
        tokio::time::sleep(PERIOD * (PARK_AFTER + 10)).await;
        assert!(watchdog.parked.load(Ordering::SeqCst));
        watchdog.enter(&reader.stamp);
        tokio::time::sleep(PERIOD * 5).await;
        assert!(rescued.try_recv().is_ok());
    }
}
