//! Tests against a real Xen hypervisor (dom0 of the Xen test machine):
//! `cargo xtask xen-test -p xen-hypercall`. They fail, never skip, when Xen is missing.

use std::sync::Arc;

use xen_hypercall::{BufferSource, DmOpBuf, DmOpPath, DomId, Errno, Plain, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};

/// Opens privcmd, failing loudly when this is not a Xen dom0.
fn privcmd() -> Privcmd {
    xen_testkit::require_xen();
    Privcmd::open().expect("open /dev/xen/privcmd")
}

fn read_sys(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim_end_matches('\n')
        .trim_end()
        .to_owned()
}

fn sysfs(name: &str) -> String {
    read_sys(&format!("/sys/hypervisor/version/{name}"))
}

fn property(name: &str) -> String {
    read_sys(&format!("/sys/hypervisor/properties/{name}"))
}

/// A nr_vcpus dm_op (harmless, answered by Xen for HVM/PVH targets).
fn nr_vcpus_request() -> xen_dm_op {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_nr_vcpus;
    op
}

/// A domain id that does not exist in the test machine.
const ABSENT: DomId = DomId::new(0x7000);

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn xen_version_equals_sys_hypervisor() {
    let xen = privcmd();
    let v = xen.xen_version().unwrap();
    println!("xen_version: {v}");
    assert_eq!(v.major.to_string(), sysfs("major"));
    assert_eq!(v.minor.to_string(), sysfs("minor"));
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn extraversion_through_a_hypercall_buffer() {
    let xen = privcmd();
    assert_eq!(
        xen.buffers().source(),
        BufferSource::HypercallDevice,
        "dom0 has /dev/xen/hypercall"
    );
    let before = xen.buffers().stats();
    let extra = xen.xen_extraversion().unwrap();
    println!(
        "extraversion: {extra:?}, capabilities: {:?}",
        xen.xen_capabilities().unwrap()
    );
    assert_eq!(extra, sysfs("extra"));
    // The first call mapped one buffer; the next ones reuse it.
    let after_first = xen.buffers().stats();
    assert_eq!(after_first.maps, before.maps + 1);
    for _ in 0..10 {
        assert_eq!(xen.xen_extraversion().unwrap(), extra);
    }
    let st = xen.buffers().stats();
    assert_eq!(
        st.maps, after_first.maps,
        "no new mapping on repeated calls: {st:?}"
    );
    // Linux shows the same strings under /sys/hypervisor/properties (it asks Xen too).
    assert_eq!(
        xen.xen_capabilities().unwrap().trim_end(),
        property("capabilities")
    );
    assert_eq!(xen.xen_changeset().unwrap(), property("changeset"));
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn dm_op_on_dom0_is_refused_by_xen() {
    let xen = privcmd();
    let mut op = nr_vcpus_request();
    let e = xen
        .dm_op("dm_op nr_vcpus", DomId::DOM0, &[DmOpBuf::from_mut(&mut op)])
        .unwrap_err();
    println!("{e}");
    assert_eq!(e.errno(), Errno::EPERM);
    assert!(e.is_permission_denied());
    assert_eq!((e.op(), e.domain()), ("dm_op nr_vcpus", Some(DomId::DOM0)));
    assert_eq!(
        e.to_string(),
        "dm_op nr_vcpus on domain 0: Operation not permitted"
    );
    assert_eq!(
        xen.dm_op_path(),
        DmOpPath::Ioctl,
        "Linux 6.1 has IOCTL_PRIVCMD_DM_OP"
    );
    // A domain that does not exist: Xen answers ESRCH.
    let e = xen
        .dm_op("dm_op nr_vcpus", ABSENT, &[DmOpBuf::from_mut(&mut op)])
        .unwrap_err();
    assert!(e.is_no_such_domain(), "{e}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn dm_op_through_the_hypercall_fallback_reaches_xen() {
    let xen = privcmd();
    xen.set_dm_op_path(DmOpPath::Hypercall);
    let mut op = nr_vcpus_request();
    let e = xen
        .dm_op("dm_op nr_vcpus", DomId::DOM0, &[DmOpBuf::from_mut(&mut op)])
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EPERM, "{e}");
    let e = xen
        .dm_op("dm_op nr_vcpus", ABSENT, &[DmOpBuf::from_mut(&mut op)])
        .unwrap_err();
    assert_eq!(e.errno(), Errno::ESRCH, "{e}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn dm_op_limits_are_typed() {
    let xen = privcmd();
    assert_eq!(xen.dm_op_limits().max_bufs, 16);
    assert_eq!(xen.dm_op_limits().max_buf_size, 4096);
    let mut big = vec![0u8; 4097];
    let e = xen
        .dm_op("dm_op x", ABSENT, &[DmOpBuf::from_bytes(&mut big)])
        .unwrap_err();
    assert!(!e.is_os() && e.errno() == Errno::E2BIG, "{e}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restrict_limits_the_handle_to_one_domain() {
    let open = privcmd();
    let xen = privcmd();
    xen.restrict(ABSENT).unwrap();
    assert_eq!(xen.restricted_to(), Some(ABSENT));
    // Raw hypercalls: refused by the kernel.
    let e = xen.xen_version().unwrap_err();
    assert_eq!(e.errno(), Errno::EPERM, "{e}");
    // dm_op on another domain: refused by the kernel.
    let mut op = nr_vcpus_request();
    let e = xen
        .dm_op("dm_op nr_vcpus", DomId::DOM0, &[DmOpBuf::from_mut(&mut op)])
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EPERM, "{e}");
    let e = xen
        .dm_op(
            "dm_op nr_vcpus",
            DomId::new(1),
            &[DmOpBuf::from_mut(&mut op)],
        )
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EPERM, "{e}");
    // dm_op on the domain itself reaches Xen, which does not know it.
    let e = xen
        .dm_op("dm_op nr_vcpus", ABSENT, &[DmOpBuf::from_mut(&mut op)])
        .unwrap_err();
    assert_eq!(e.errno(), Errno::ESRCH, "{e}");
    // Same domain again: fine. Another one: EINVAL.
    xen.restrict(ABSENT).unwrap();
    let e = xen.restrict(DomId::new(0x7001)).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    assert_eq!(xen.restricted_to(), Some(ABSENT));
    // Other handles are unaffected.
    assert!(open.xen_version().is_ok());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn one_handle_shared_by_threads() {
    let xen = Arc::new(privcmd());
    let expected = (xen.xen_version().unwrap(), xen.xen_extraversion().unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let xen = Arc::clone(&xen);
            let expected = expected.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    assert_eq!(xen.xen_version().unwrap(), expected.0);
                    assert_eq!(xen.xen_extraversion().unwrap(), expected.1);
                    let mut op = nr_vcpus_request();
                    let e = xen
                        .dm_op("dm_op nr_vcpus", DomId::DOM0, &[DmOpBuf::from_mut(&mut op)])
                        .unwrap_err();
                    assert_eq!(e.errno(), Errno::EPERM);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = xen.buffers().stats();
    println!("buffer stats after 800 concurrent extraversion calls: {st:?}");
    assert!(
        st.maps <= xen_hypercall::BufferPool::CACHE_SLOTS as u64 + 1,
        "{st:?}"
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn hvm_and_sched_ops_reach_xen() {
    let xen = privcmd();
    // dom0 is PV: HVM params do not apply. Xen answers (typed), it is not the kernel refusing.
    let e = xen.hvm_get_param(DomId::DOM0, 1).unwrap_err();
    println!("hvm_get_param on dom0: {e}");
    assert!(e.is_os() && e.domain() == Some(DomId::DOM0));
    let e = xen.hvm_get_param(ABSENT, 1).unwrap_err();
    assert_eq!(e.errno(), Errno::ESRCH, "{e}");
    let e = xen
        .remote_shutdown(ABSENT, xen_hypercall::ShutdownReason::Poweroff)
        .unwrap_err();
    assert_eq!(e.errno(), Errno::ESRCH, "{e}");
    // Xen reports reservation ops on a missing domain as "0 extents done", not as an error.
    let mut gfns = [xen_hypercall::Gfn::new(0x10_0000)];
    assert_eq!(xen.populate_physmap(ABSENT, 0, 0, &mut gfns), Ok(0));
}
