//! Notices a connection whose reading task is stuck in a handler.
//!
//! A call's first poll runs where the call was read, which saves a task and
//! two wake-ups per call (docs/PERFORMANCE.md). A handler that does
//! synchronous work before its first `.await` would then stop its whole
//! connection: nothing else is read, not even a cancel or a ping. Instead
//! of paying for a task per call to rule that out, one thread per process
//! looks at every connection each [`PERIOD`]; a connection whose reader has
//! been inside user code since an earlier look is rescued: another task
//! takes over reading it until the stuck poll returns. A quick call beside
//! a blocking one therefore waits at most two periods, and the fast path
//! pays a few atomic operations per call.
//!
//! The watchdog is one thread for the whole process, not a task: a task
//! could itself sit behind the stuck one (tokio runs the task a worker woke
//! last on that worker, out of reach of the others), and then nobody would
//! look. It sleeps while no reader is inside user code. Rescue needs a
//! runtime with more than one worker thread: on a current-thread runtime a
//! blocking handler stops everything anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// How often the watchdog looks, and so how long a stuck reader waits for
/// rescue: between one and two periods.
const PERIOD: Duration = Duration::from_millis(10);

/// Looks with nothing polling after which the watchdog parks until a
/// reader wakes it, so that an idle server does not wake 100 times a second.
const PARK_AFTER: u32 = 100;

/// The process's watchdog, its thread started on first use.
static WATCHDOG: LazyLock<Arc<Watchdog>> = LazyLock::new(|| {
    let watchdog = Arc::new(Watchdog::default());
    let looking = watchdog.clone();
    let started = std::thread::Builder::new()
        .name("rpc-watchdog".to_owned())
        .spawn(move || run(&looking));
    match started {
        Ok(thread) => {
            let _ = watchdog.thread.set(thread.thread().clone());
        }
        // Without it calls are still served; only stuck readers stay stuck.
        Err(e) => tracing::warn!("could not start the watchdog thread: {e}"),
    }
    watchdog
});

/// The process's watchdog.
pub(crate) fn global() -> Arc<Watchdog> {
    WATCHDOG.clone()
}

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

/// A watchdog: its clock and the readers it watches.
#[derive(Default)]
pub(crate) struct Watchdog {
    tick: AtomicU64,
    parked: AtomicBool,
    /// The thread that looks, to wake when parked.
    thread: OnceLock<std::thread::Thread>,
    readers: Mutex<Readers>,
}

#[derive(Default)]
struct Readers {
    next: u64,
    by_key: HashMap<u64, Weak<dyn Watched>>,
}

impl Watchdog {
    /// Starts watching `reader` until the returned guard drops.
    pub(crate) fn watch(self: &Arc<Self>, reader: Weak<dyn Watched>) -> Watching {
        let mut readers = self.lock();
        let key = readers.next;
        readers.next += 1;
        readers.by_key.insert(key, reader);
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
        if self.parked.swap(false, Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
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
                // The poll may have ended between the load and the swap,
                // before `rescued` was set, so that nobody would tell the
                // rescuer to stop: look again.
                if stamp.since.load(Ordering::SeqCst) == since {
                    stuck.push(reader);
                } else {
                    stamp.rescued.store(false, Ordering::SeqCst);
                }
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

fn run(watchdog: &Watchdog) {
    let mut quiet = 0;
    loop {
        std::thread::sleep(PERIOD);
        // A look may drop the last handle on a connection, and with it user
        // code (a service's `Drop`); a panic there must not end the one
        // thread that rescues every connection.
        let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| watchdog.look()));
        quiet = match looked {
            Ok(true) => 0,
            Ok(false) => quiet + 1,
            Err(_) => {
                tracing::warn!("the watchdog caught a panic while looking; it goes on");
                0
            }
        };
        if quiet < PARK_AFTER {
            continue;
        }
        watchdog.parked.store(true, Ordering::SeqCst);
        // A reader that entered just before `parked` was set is seen here;
        // one that enters after unparks this thread, and an unpark that
        // comes before the park makes it return at once.
        if !watchdog.any_polling() {
            std::thread::park();
        }
        watchdog.parked.store(false, Ordering::SeqCst);
        quiet = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reader {
        stamp: Stamp,
        rescues: std::sync::mpsc::Sender<()>,
    }

    impl Watched for Reader {
        fn stamp(&self) -> &Stamp {
            &self.stamp
        }
        fn rescue(self: Arc<Self>) {
            let _ = self.rescues.send(());
        }
    }

    fn watched(watchdog: &Arc<Watchdog>) -> (Arc<Reader>, Watching, std::sync::mpsc::Receiver<()>) {
        let (rescues, rescued) = std::sync::mpsc::channel();
        let reader = Arc::new(Reader {
            stamp: Stamp::default(),
            rescues,
        });
        let watching = watchdog.watch(Arc::downgrade(&reader) as Weak<dyn Watched>);
        (reader, watching, rescued)
    }

    #[test]
    fn a_reader_stuck_for_a_period_is_rescued_once() {
        let watchdog = Arc::new(Watchdog::default());
        let (reader, _watching, rescued) = watched(&watchdog);
        // Polls that end before the next look are never rescued.
        for _ in 0..50 {
            watchdog.enter(&reader.stamp);
            watchdog.leave(&reader.stamp);
            assert!(!watchdog.look());
        }
        assert!(rescued.try_recv().is_err());
        watchdog.enter(&reader.stamp);
        assert!(watchdog.look(), "polling");
        assert!(rescued.try_recv().is_err(), "not a whole period yet");
        watchdog.look();
        assert!(rescued.try_recv().is_ok());
        watchdog.look();
        assert!(rescued.try_recv().is_err(), "one stall, one rescue");
        reader.stamp.rescue_over();
        watchdog.look();
        assert!(rescued.try_recv().is_ok(), "still stuck: rescued again");
        watchdog.leave(&reader.stamp);
        assert!(!watchdog.look());
    }

    #[test]
    fn a_reader_that_is_gone_is_not_watched() {
        let watchdog = Arc::new(Watchdog::default());
        let (reader, watching, _rescued) = watched(&watchdog);
        watchdog.enter(&reader.stamp);
        drop(watching);
        assert!(!watchdog.look());
        assert!(!watchdog.any_polling());
    }

    #[test]
    fn the_process_watchdog_rescues_within_a_few_periods() {
        let watchdog = global();
        let (reader, _watching, rescued) = watched(&watchdog);
        watchdog.enter(&reader.stamp);
        assert!(rescued.recv_timeout(Duration::from_secs(10)).is_ok());
        watchdog.leave(&reader.stamp);
    }
}
