//! A global allocator that aborts on any single allocation over 64 MiB:
//! with `-s none` libFuzzer's own malloc limit is not enforced, and an
//! allocation bomb must show up as a crash.

use std::alloc::{GlobalAlloc, Layout, System};

const LIMIT: usize = 64 << 20;

pub struct Capped;

// SAFETY: forwards to `System`; only adds a size check.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            std::process::abort();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > LIMIT {
            std::process::abort();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
