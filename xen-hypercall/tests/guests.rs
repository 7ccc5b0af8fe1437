//! Tests with real guests in the Xen test machine (`cargo xtask xen-test -p xen-hypercall`),
//! created with `xen-testkit` (paused, destroyed on drop).

use std::os::fd::AsRawFd;

use xen_hypercall::{DmOpBuf, DomId, Errno, Gfn, Plain, Privcmd, ShutdownReason};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus};
use xen_sys::hvm::{HVM_PARAM_STORE_PFN, HVM_PARAM_VM_GENERATION_ID_ADDR};
use xen_sys::memory::{XENMEM_resource_grant_table, XENMEM_resource_grant_table_id_shared};
use xen_testkit::{require_xen, Guest, GuestConfig};

fn privcmd() -> Privcmd {
    require_xen();
    Privcmd::open().expect("open /dev/xen/privcmd")
}

/// Issues nr_vcpus and returns Xen's answer.
fn nr_vcpus(xen: &Privcmd, domid: DomId) -> Result<u32, xen_hypercall::Error> {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_nr_vcpus;
    xen.dm_op("dm_op nr_vcpus", domid, &[DmOpBuf::from_mut(&mut op)])?;
    // SAFETY: Xen wrote the nr_vcpus member of the union; any bits are a valid u32.
    Ok(unsafe { op.u.nr_vcpus.vcpus })
}

fn pvh() -> Guest {
    Guest::create(&GuestConfig::pvh()).expect("create a paused PVH guest")
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn dm_op_to_a_pv_guest_is_einval_and_to_pvh_works() {
    let xen = privcmd();
    let pv = Guest::create(&GuestConfig::pv().memory_mib(256)).expect("create a paused PV guest");
    let e = nr_vcpus(&xen, DomId::new(pv.domid())).unwrap_err();
    println!("{e}");
    assert_eq!(e.errno(), Errno::EINVAL, "{e}");
    assert!(e.is_invalid_argument() && e.is_os());
    assert_eq!(e.domain(), Some(DomId::new(pv.domid())));

    let g = pvh();
    assert_eq!(nr_vcpus(&xen, DomId::new(g.domid())), Ok(1));
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restricted_handle_reaches_its_domain_only() {
    let g = pvh();
    let d = DomId::new(g.domid());
    let xen = privcmd();
    xen.restrict(d).unwrap();
    assert_eq!(nr_vcpus(&xen, d), Ok(1), "dm_op on d works");
    assert_eq!(
        nr_vcpus(&xen, DomId::DOM0).unwrap_err().errno(),
        Errno::EPERM
    );
    assert_eq!(xen.xen_version().unwrap_err().errno(), Errno::EPERM);
    // Not dm_ops: refused on a restricted handle even for d.
    assert_eq!(
        xen.hvm_get_param(d, HVM_PARAM_STORE_PFN)
            .unwrap_err()
            .errno(),
        Errno::EPERM
    );
    assert_eq!(
        xen.restrict(DomId::DOM0).unwrap_err().errno(),
        Errno::EINVAL
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn hvm_params_read_back() {
    let g = pvh();
    let d = DomId::new(g.domid());
    let xen = privcmd();
    let store = xen.hvm_get_param(d, HVM_PARAM_STORE_PFN).unwrap();
    println!("store pfn of domain {d}: {store:#x}");
    assert_ne!(store, 0, "libxl sets up the xenstore page");
    let old = xen
        .hvm_get_param(d, HVM_PARAM_VM_GENERATION_ID_ADDR)
        .unwrap();
    xen.hvm_set_param(d, HVM_PARAM_VM_GENERATION_ID_ADDR, 0x1234_5000)
        .unwrap();
    assert_eq!(
        xen.hvm_get_param(d, HVM_PARAM_VM_GENERATION_ID_ADDR),
        Ok(0x1234_5000)
    );
    xen.hvm_set_param(d, HVM_PARAM_VM_GENERATION_ID_ADDR, old)
        .unwrap();
    assert_eq!(
        xen.hvm_get_param(d, HVM_PARAM_VM_GENERATION_ID_ADDR),
        Ok(old)
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn remote_shutdown_shuts_the_guest_down() {
    let g = pvh();
    let d = DomId::new(g.domid());
    let xen = privcmd();
    assert!(g.list_entry().unwrap().is_some());
    xen.remote_shutdown(d, ShutdownReason::Poweroff).unwrap();
    // xl shows the domain as shut down ('s'), or it is already gone (xl's watcher destroyed it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match g.list_entry().unwrap() {
            None => break,
            Some(e) if e.state.contains('s') => break,
            Some(e) => {
                assert!(std::time::Instant::now() < deadline, "still {:?}", e.state);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    // dm_ops now fail or the domain is gone: either way Xen says so, typed.
    if let Err(e) = nr_vcpus(&xen, d) {
        assert!(e.is_os(), "{e}");
    }
}

/// Maps `gfn` of `d` through our MMAPBATCH_V2 plumbing; returns (address, len, per-frame error).
fn map_one(
    xen: &Privcmd,
    d: DomId,
    gfn: u64,
) -> (*mut u8, usize, i32, Result<(), xen_hypercall::Error>) {
    let len = 4096;
    // SAFETY: a fresh shared mapping of the privcmd fd at a kernel-chosen address.
    let addr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            xen.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let mut errs = [0i32; 1];
    // SAFETY: `addr` is the start of a one-page mapping of this privcmd fd, unused elsewhere.
    let r = unsafe { xen.mmapbatch_v2(d, addr, &[Gfn::new(gfn)], &mut errs) };
    (addr.cast(), len, errs[0], r)
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn populate_physmap_adds_a_frame_that_maps() {
    let g = pvh();
    let d = DomId::new(g.domid());
    let xen = privcmd();
    // A frame far above the guest's 32 MiB: nothing there yet.
    let gfn = 0x2_0000u64;
    let (addr, len, err, r) = map_one(&xen, d, gfn);
    println!("before populate: {r:?}, frame error {err}");
    // The ioctl succeeds; the frame's own error says it is not there.
    assert_eq!(r, Ok(()));
    assert_eq!(
        xen_hypercall::errno_from_xen(err.into()),
        Errno::EINVAL,
        "unpopulated frame must not map"
    );
    // SAFETY: our mapping from map_one, no references into it.
    unsafe { libc::munmap(addr.cast(), len) };

    let mut gfns = [Gfn::new(gfn)];
    assert_eq!(xen.populate_physmap(d, 0, 0, &mut gfns), Ok(1));
    assert_eq!(gfns, [Gfn::new(gfn)]);

    let (addr, len, err, r) = map_one(&xen, d, gfn);
    assert_eq!((r, err), (Ok(()), 0));
    // SAFETY: the page is mapped read-write (just checked); volatile access to guest memory.
    unsafe {
        addr.cast::<u64>().write_volatile(0x5eed_f00d_dead_beef);
        assert_eq!(addr.cast::<u64>().read_volatile(), 0x5eed_f00d_dead_beef);
    }
    // A second, independent mapping sees the same frame.
    let other = xen_testkit::privcmd::ForeignMapping::map(g.domid(), &[gfn]).unwrap();
    assert_eq!(other.read_u64(0), 0x5eed_f00d_dead_beef);
    // SAFETY: our mapping, no references into it.
    unsafe { libc::munmap(addr.cast(), len) };
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn resource_size_of_a_grant_table() {
    let g = pvh();
    let xen = privcmd();
    let n = xen
        .resource_size(
            DomId::new(g.domid()),
            XENMEM_resource_grant_table,
            XENMEM_resource_grant_table_id_shared,
        )
        .unwrap();
    println!("grant table frames of domain {}: {n}", g.domid());
    assert!(n > 0);
    let e = xen
        .resource_size(
            DomId::DOM0,
            XENMEM_resource_grant_table,
            XENMEM_resource_grant_table_id_shared,
        )
        .unwrap_err();
    println!("on dom0: {e}");
    assert!(e.is_permission_denied(), "{e}");
}
