//! A counting global allocator, so a test can show that a hot path allocates nothing.
//!
//! Install it in a test executable (or a crate's unit tests) and read the calling thread's count
//! before and after the code under test:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: xen_testkit::alloc::CountingAllocator = xen_testkit::alloc::CountingAllocator;
//!
//! let before = xen_testkit::alloc::allocations();
//! let v: Vec<u8> = Vec::with_capacity(16);
//! assert_eq!(xen_testkit::alloc::allocations() - before, 1);
//! # drop(v);
//! ```
//!
//! Counts are per thread, so other tests running in parallel do not disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting every allocation and reallocation of each thread
/// (see [`allocations`]). Deallocations are not counted.
#[derive(Debug)]
pub struct CountingAllocator;

// SAFETY: every method forwards to the system allocator with the caller's arguments; the counter
// is a thread-local `Cell` that touches no allocated memory (and `try_with` tolerates use during
// thread teardown).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through us with this layout (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as for `dealloc`, plus the caller's `new_size` contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations and reallocations made by the calling thread so far (0 where
/// [`CountingAllocator`] is not the global allocator).
pub fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}
