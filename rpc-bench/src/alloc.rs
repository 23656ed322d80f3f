//! A global allocator that counts allocations, bytes allocated and live
//! bytes per side (server threads, client threads), so that allocations per
//! call and memory per idle connection can be reported for each
//! implementation. The micro-benchmarks use it too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Which side a thread works for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// A server runtime thread.
    Server = 1,
    /// A client runtime thread.
    Client = 2,
}

thread_local! {
    static SIDE: Cell<u8> = const { Cell::new(0) };
}

/// One side's counters, on a cache line of their own: the two sides run on
/// different cores, and sharing a line would slow every allocation.
#[repr(align(128))]
struct Counters {
    allocs: AtomicU64,
    /// Bytes ever allocated, never decreased.
    bytes: AtomicU64,
    live: AtomicI64,
}

impl Counters {
    const fn new() -> Self {
        Counters {
            allocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            live: AtomicI64::new(0),
        }
    }

    fn allocated(&self, size: usize) {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
        self.live.fetch_add(size as i64, Ordering::Relaxed);
    }
}

static COUNTERS: [Counters; 3] = [Counters::new(), Counters::new(), Counters::new()];

/// Marks the calling thread as working for `side`.
pub fn set_side(side: Side) {
    SIDE.with(|s| s.set(side as u8));
}

/// Allocations made so far by threads of `side`.
pub fn allocations(side: Side) -> u64 {
    COUNTERS[side as usize].allocs.load(Ordering::Relaxed)
}

/// Bytes allocated so far by threads of `side`, whether freed or not.
#[allow(dead_code)] // Only the micro-benchmarks ask.
pub fn allocated_bytes(side: Side) -> u64 {
    COUNTERS[side as usize].bytes.load(Ordering::Relaxed)
}

/// Bytes allocated minus bytes freed by threads of `side`.
pub fn live_bytes(side: Side) -> i64 {
    COUNTERS[side as usize].live.load(Ordering::Relaxed)
}

/// The counting allocator over the system allocator.
pub struct Counting;

fn side() -> usize {
    SIDE.try_with(|s| s.get() as usize).unwrap_or(0)
}

// SAFETY: every method forwards to `System` unchanged; the counters are
// plain atomics and never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNTERS[side()].allocated(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        COUNTERS[side()].allocated(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        COUNTERS[side()]
            .live
            .fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let counters = &COUNTERS[side()];
        counters.allocated(new_size);
        counters
            .live
            .fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
