//! The hot paths allocate nothing: notify, pending and unmask, counted by a global allocator
//! in this test executable (its own, so other tests' allocations do not count). Needs Xen:
//! `cargo xtask xen-test -p xen-evtchn`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use xen_evtchn::{DomId, EventChannels, Port};

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator; the counter touches no allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn notify_pending_unmask_do_not_allocate() {
    assert!(
        std::path::Path::new("/dev/xen/privcmd").exists(),
        "/dev/xen/privcmd is missing: this test needs a Xen dom0 (needs Xen: cargo xtask xen-test)"
    );
    let a = EventChannels::open().unwrap();
    let b = EventChannels::open().unwrap();
    let pa = a.bind_unbound_port(DomId::SELF).unwrap();
    let pb = b.bind_interdomain(DomId::SELF, pa.port()).unwrap();
    // The bind-time event on b's new port.
    assert_eq!(b.pending().unwrap(), pb.port());
    pb.unmask().unwrap();
    let mut buf = [Port::default(); 8];
    // Warm up (first use of anything lazily set up).
    pb.notify().unwrap();
    let p = a.pending().unwrap();
    a.unmask(p).unwrap();

    let before = allocations();
    for _ in 0..200 {
        pb.notify().unwrap();
        let p = a.pending().unwrap();
        a.unmask(p).unwrap();
        pa.notify().unwrap();
        let ports = b.pending_many(&mut buf).unwrap();
        b.unmask_many(ports).unwrap();
    }
    let after = allocations();
    assert_eq!(
        after - before,
        0,
        "the hot path allocated {} times",
        after - before
    );
}
