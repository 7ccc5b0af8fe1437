//! In the Xen machine: a dm_op that reaches the hypervisor allocates nothing, on success and on
//! failure (`cargo xtask xen-test -p xen-hypercall`). Its own executable because it installs a
//! counting global allocator.

use xen_hypercall::{DmOpBuf, DomId, Errno, Plain, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};

#[global_allocator]
static ALLOC: xen_testkit::alloc::CountingAllocator = xen_testkit::alloc::CountingAllocator;

use xen_testkit::alloc::allocations;

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn dm_op_to_xen_allocates_nothing() {
    xen_testkit::require_xen();
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
