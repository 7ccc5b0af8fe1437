//! `restrict_all` in a real Xen dom0 (`cargo xtask xen-test -p xen-hypercall`). In its own test
//! executable because it restricts every handle of the process.

use xen_hypercall::{DmOpBuf, DomId, Errno, Plain, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};

/// A domain id that does not exist in the test machine.
const ABSENT: DomId = DomId::new(0x7000);

fn privcmd() -> Privcmd {
    xen_testkit::require_xen();
    Privcmd::open().expect("open /dev/xen/privcmd")
}

fn nr_vcpus_request() -> xen_dm_op {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_nr_vcpus;
    op
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restrict_all_restricts_every_open_handle() {
    let a = privcmd();
    let b = privcmd();
    assert_eq!(xen_hypercall::restrict_all(ABSENT), Ok(2));
    for h in [&a, &b] {
        assert_eq!(h.restricted_to(), Some(ABSENT));
        assert_eq!(h.xen_version().unwrap_err().errno(), Errno::EPERM);
        let mut op = nr_vcpus_request();
        let e = h
            .dm_op("dm_op nr_vcpus", ABSENT, &[DmOpBuf::from_mut(&mut op)])
            .unwrap_err();
        assert_eq!(e.errno(), Errno::ESRCH, "reaches Xen: {e}");
    }
    drop((a, b));
    // Handles opened later are not restricted (as with libxentoolcore).
    assert!(privcmd().xen_version().is_ok());
}
