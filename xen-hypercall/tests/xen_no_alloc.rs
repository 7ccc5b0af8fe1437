//! In the Xen machine: a dm_op that reaches the hypervisor allocates nothing, on success and on
//! failure (`cargo xtask xen-test -p xen-hypercall`). Its own executable because it installs a
//! counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use xen_hypercall::{DmOpBuf, DomId, Errno, Plain, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator; counting touches no allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract.
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
fn dm_op_to_xen_allocates_nothing() {
    assert!(
        std::path::Path::new("/dev/xen/privcmd").exists(),
        "/dev/xen/privcmd is missing: this test needs a Xen dom0 (cargo xtask xen-test)"
    );
    let xen = Privcmd::open().unwrap();
    let call = |domid: DomId| {
        let mut op = xen_dm_op::zeroed();
        op.op = XEN_DMOP_nr_vcpus;
        xen.dm_op("dm_op nr_vcpus", domid, &[DmOpBuf::from_mut(&mut op)])
    };
    // Warm up: the first call probes the path.
    let _ = call(DomId::DOM0);
    let before = allocations();
    for _ in 0..100 {
        assert_eq!(call(DomId::DOM0).unwrap_err().errno(), Errno::EPERM);
        assert_eq!(call(DomId::new(0x7000)).unwrap_err().errno(), Errno::ESRCH);
    }
    assert_eq!(allocations() - before, 0, "dm_op allocated");
    // Repeated buffer-based hypercalls allocate only the returned String.
    let _ = xen.xen_version().unwrap();
    let before = allocations();
    for _ in 0..100 {
        xen.xen_version().unwrap();
    }
    assert_eq!(allocations() - before, 0, "xen_version allocated");
}
