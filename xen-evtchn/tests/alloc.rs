//! The hot paths allocate nothing: notify, pending and unmask, counted by a global allocator
//! in this test executable (its own, so other tests' allocations do not count). Needs Xen:
//! `cargo xtask xen-test -p xen-evtchn`.

use xen_evtchn::{DomId, EventChannels, Port};

#[global_allocator]
static ALLOC: xen_testkit::alloc::CountingAllocator = xen_testkit::alloc::CountingAllocator;

use xen_testkit::alloc::allocations;

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn notify_pending_unmask_do_not_allocate() {
    xen_testkit::require_xen();
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
