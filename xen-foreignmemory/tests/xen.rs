//! Tests against a real Xen hypervisor (dom0 of the Xen test machine):
//! `cargo xtask xen-test -p xen-foreignmemory`. They fail, never skip, when Xen is missing.
//!
//! One HVM test guest serves every test (creating one takes seconds); the tests take a lock so
//! they run one at a time and can count this process's privcmd mappings.

use std::sync::{Mutex, MutexGuard, OnceLock};
use xen_foreignmemory::Gfn;

use xen_foreignmemory::{
    field, BatchIoctl, DomId, Errno, Error, FailurePolicy, ForeignMemory, GrantTable, MapOptions,
    Mapping, Plain, ReadOnly, ReadWrite, Resource, RetryPolicy, PAGE_SIZE,
};
use xen_hypercall::DmOpBuf;
use xen_sys::dm_op::{
    xen_dm_op, XEN_DMOP_create_ioreq_server, XEN_DMOP_destroy_ioreq_server,
    XEN_DMOP_set_ioreq_server_state,
};
use xen_testkit::protocol::{self as p, fnv1a64, pattern_byte};
use xen_testkit::{require_xen, TestGuest};

/// Counts this thread's heap allocations, to show what a map call allocates.
#[global_allocator]
static ALLOC: xen_testkit::alloc::CountingAllocator = xen_testkit::alloc::CountingAllocator;

mod alloc_count {
    pub use xen_testkit::alloc::allocations;
}

/// A domain id no domain has.
const ABSENT: DomId = DomId::new(0x7000);
/// A frame far beyond the test guest's 32 MiB (and below any special page).
const BEYOND: u64 = 0x10_0000;

fn guest() -> &'static TestGuest {
    // Shared, not stored in the static itself: a static is never dropped, and a guest kept in
    // one stayed running after the tests. `shared` destroys it when the process exits.
    static GUEST: OnceLock<&'static TestGuest> = OnceLock::new();
    GUEST.get_or_init(|| {
        require_xen();
        let g = TestGuest::hvm().expect("start the HVM test guest");
        g.set_flags(p::FLAG_QUIET);
        g.shared()
    })
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn fm() -> ForeignMemory {
    require_xen();
    ForeignMemory::open().expect("open privcmd")
}

fn dom(g: &TestGuest) -> DomId {
    DomId::new(g.domid())
}

/// How many privcmd mappings this process has (from /proc/self/maps).
fn privcmd_vmas() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("privcmd"))
        .count()
}

/// An ioreq slot (`xen/include/public/hvm/ioreq.h`), as plain old data. (`xen_sys::hvm::ioreq`
/// is not `Plain` yet.)
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Ioreq {
    addr: u64,
    data: u64,
    count: u32,
    size: u32,
    vp_eport: u32,
    pad: u16,
    /// state:4, data_is_ptr:1, dir:1, df:1, pad:1
    flags: u8,
    kind: u8,
}
// SAFETY: integers only, no padding: every bit pattern is valid.
unsafe impl Plain for Ioreq {}
const _: () = assert!(std::mem::size_of::<Ioreq>() == std::mem::size_of::<xen_sys::hvm::ioreq>());

fn pattern(seed: u64) -> Vec<u8> {
    (0..PAGE_SIZE).map(|i| pattern_byte(seed, i)).collect()
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn guest_pattern_reads_back_through_a_mapping() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let gfn = g.fill(Some(p::SCRATCH_GFN), 0x5eed).unwrap();
    let m: Mapping<ReadOnly> = fm.map(dom(g), &[Gfn::new(gfn)], ReadOnly).unwrap();
    assert_eq!(fm.batch_ioctl(), BatchIoctl::V2);
    assert_eq!((m.len(), m.frames(), m.domid()), (PAGE_SIZE, 1, dom(g)));
    assert!(m.is_complete());
    let mut page = vec![0u8; PAGE_SIZE];
    m.read_bytes(0, &mut page).unwrap();
    assert_eq!(page, pattern(0x5eed));
    let word: u64 = m.read(8).unwrap();
    assert_eq!(word.to_ne_bytes(), page[8..16]);
    let odd: u32 = m.read(13).unwrap(); // unaligned: byte-wise
    assert_eq!(odd.to_ne_bytes(), page[13..17]);
    let arr = m.view::<[u8; 16]>(32).unwrap();
    assert_eq!(arr.read(), page[32..48]);
    assert_eq!(arr.get(3).unwrap().read(), page[35]);
    // Bounds.
    let e = m.read::<u64>(PAGE_SIZE - 4).unwrap_err();
    assert!(matches!(e, Error::OutOfBounds { .. }), "{e}");
    assert_eq!(e.errno(), Errno::EFAULT);
    assert!(m.read_bytes(usize::MAX, &mut [0; 2]).is_err());
    assert!(matches!(
        m.view::<u64>(4).unwrap_err(),
        Error::Misaligned { .. }
    ));
    println!(
        "read the guest's pattern from gfn {gfn:#x} of d{}",
        g.domid()
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn writes_through_a_read_write_mapping_reach_the_guest() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let raw = [p::SCRATCH_GFN + 1, p::SCRATCH_GFN + 2];
    let gfns = raw.map(Gfn::new);
    let m = fm.map(dom(g), &gfns, ReadWrite).unwrap();
    let data = pattern(77);
    m.write_bytes(PAGE_SIZE, &data).unwrap();
    m.fill(0, PAGE_SIZE, 0xab).unwrap();
    m.write(0x10, 0x1122_3344_5566_7788u64).unwrap();
    // The guest sees both frames as we wrote them.
    assert_eq!(g.checksum(raw[1]).unwrap(), fnv1a64(data.iter().copied()));
    let mut first = vec![0xabu8; PAGE_SIZE];
    first[0x10..0x18].copy_from_slice(&0x1122_3344_5566_7788u64.to_ne_bytes());
    assert_eq!(g.copy_out(raw[0]).unwrap(), first);
    assert_eq!(
        g.mem_read(raw[0] << 12 | 0x10, 8).unwrap(),
        0x1122_3344_5566_7788
    );
    // The guest writes; we see it through a second, read-only mapping.
    g.mem_write(raw[0] << 12 | 0x20, 0xfeed_f00d, 4).unwrap();
    let ro = fm.map(dom(g), &gfns[..1], ReadOnly).unwrap();
    assert_eq!(ro.read::<u32>(0x20).unwrap(), 0xfeed_f00d);
    assert_eq!(m.read::<u32>(0x20).unwrap(), 0xfeed_f00d);
    // A typed view, written through one mapping, read through the other.
    let v = m
        .view::<xen_sys::dm_op::xen_dm_op_create_ioreq_server>(0x40)
        .unwrap();
    field!(v, id).unwrap().write(0x4242);
    assert_eq!(ro.read::<u16>(0x44).unwrap(), 0x4242);
    let ro2: Mapping<ReadOnly> = m.into_read_only();
    assert_eq!(ro2.read::<u16>(0x44).unwrap(), 0x4242);
    println!(
        "wrote 2 frames of d{}; the guest checksummed them",
        g.domid()
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn failed_frames_are_per_frame_errors_or_fail_the_whole_call() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let good = g.fill(Some(p::SCRATCH_GFN + 3), 3).unwrap();
    let gfns = [good, BEYOND, good].map(Gfn::new);
    let before = privcmd_vmas();

    // All or nothing: the error names frame 1, and nothing stays mapped.
    let e = fm.map(dom(g), &gfns, ReadOnly).unwrap_err();
    println!("all-or-nothing: {e}");
    let frame = e.frame().expect("a frame error");
    assert_eq!((frame.index, frame.gfn.get()), (1, BEYOND));
    assert!(
        matches!(
            e,
            Error::Frame {
                failed: 1,
                count: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(privcmd_vmas(), before, "nothing left mapped");

    // Per frame: frames 0 and 2 map, frame 1 is a hole that refuses access.
    let m = fm.map_partial(dom(g), &gfns, ReadOnly).unwrap();
    println!("per-frame: {:?}", m.frame_errors());
    assert!(!m.is_complete());
    assert_eq!(m.frame_errors().len(), 1);
    assert_eq!(m.frame_errors()[0].index, 1);
    assert_eq!(m.frame_errors()[0].errno, frame.errno);
    assert_eq!(m.frame_status(0), Some(Ok(())));
    let mut page = vec![0u8; PAGE_SIZE];
    m.read_bytes(2 * PAGE_SIZE, &mut page).unwrap();
    assert_eq!(page, pattern(3));
    let e = m.read::<u8>(PAGE_SIZE + 5).unwrap_err();
    assert!(matches!(e, Error::NotMapped { .. }), "{e}");
    // A copy spanning the hole is refused as a whole.
    assert!(m.read_bytes(PAGE_SIZE - 8, &mut [0; 16]).is_err());
    drop(m);
    assert_eq!(privcmd_vmas(), before);

    // Every frame bad: the per-frame form fails too, cleanly.
    let e = fm
        .map_partial(dom(g), &[Gfn::new(BEYOND), Gfn::new(BEYOND + 1)], ReadOnly)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Frame {
                failed: 2,
                count: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(privcmd_vmas(), before);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn bad_input_is_refused_with_typed_errors_and_nothing_mapped() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let before = privcmd_vmas();

    let e = fm.map(dom(g), &[], ReadOnly).unwrap_err();
    assert!(
        e.is_invalid_argument() && matches!(e, Error::InvalidArgument { .. }),
        "{e}"
    );
    println!("zero frames: {e}");

    let e = fm
        .map(DomId::SELF, &[Gfn::new(0x100)], ReadOnly)
        .unwrap_err();
    assert!(e.is_invalid_argument(), "{e}");
    println!("DOMID_SELF: {e}");

    let opts = MapOptions::new().at(0x7f00_0000_0001);
    let e = fm
        .map_with(dom(g), &[Gfn::new(0x100)], ReadOnly, &opts)
        .unwrap_err();
    assert!(e.is_invalid_argument(), "{e}");
    println!("unaligned address: {e}");

    // A size that overflows: the check needs no real frame list.
    let e = fm
        .map_resource(
            dom(g),
            Resource::GrantTable(GrantTable::Shared),
            0,
            usize::MAX / 2,
            ReadOnly,
        )
        .unwrap_err();
    assert!(e.is_invalid_argument(), "{e}");
    println!("overflowing size: {e}");
    let e = fm
        .map_resource(
            dom(g),
            Resource::GrantTable(GrantTable::Shared),
            u32::MAX,
            2,
            ReadOnly,
        )
        .unwrap_err();
    assert!(e.is_invalid_argument(), "{e}");
    let e = fm
        .map_resource(
            dom(g),
            Resource::GrantTable(GrantTable::Shared),
            0,
            0,
            ReadOnly,
        )
        .unwrap_err();
    assert!(e.is_invalid_argument(), "{e}");

    // A domain that does not exist.
    let e = fm
        .map(ABSENT, &[Gfn::new(0x100), Gfn::new(0x101)], ReadOnly)
        .unwrap_err();
    println!("absent domain: {e}");
    assert!(e.is_no_such_domain(), "{e:?}");
    let e = fm
        .map_partial(ABSENT, &[Gfn::new(0x100)], ReadWrite)
        .unwrap_err();
    assert!(e.is_no_such_domain(), "{e:?}");

    assert_eq!(privcmd_vmas(), before, "nothing left mapped");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn the_old_mmapbatch_ioctl_works_too() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    fm.set_batch_ioctl(BatchIoctl::V1);
    let gfn = g.fill(Some(p::SCRATCH_GFN + 4), 44).unwrap();
    let m = fm.map(dom(g), &[Gfn::new(gfn)], ReadOnly).unwrap();
    let mut page = vec![0u8; PAGE_SIZE];
    m.read_bytes(0, &mut page).unwrap();
    assert_eq!(page, pattern(44));
    let m = fm
        .map_partial(dom(g), &[Gfn::new(gfn), Gfn::new(BEYOND)], ReadOnly)
        .unwrap();
    assert_eq!(m.frame_errors().len(), 1);
    assert_eq!(m.frame_errors()[0].errno, Errno::EINVAL);
    assert_eq!(fm.batch_ioctl(), BatchIoctl::V1);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn caller_chosen_addresses() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let gfn = g.fill(Some(p::SCRATCH_GFN + 5), 55).unwrap();
    // Reserve a range, then map into it (MAP_FIXED replaces our own reservation).
    // SAFETY: a fresh anonymous PROT_NONE reservation, used by nothing.
    let resv = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4 * PAGE_SIZE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(resv, libc::MAP_FAILED);
    let addr = resv as usize;
    // Occupied: NOREPLACE refuses.
    let e = fm
        .map_with(
            dom(g),
            &[Gfn::new(gfn)],
            ReadOnly,
            &MapOptions::new().at(addr),
        )
        .unwrap_err();
    assert_eq!(e.errno(), Errno::EEXIST, "{e}");
    // SAFETY: the range is our reservation and nothing uses it.
    let opts = unsafe { MapOptions::new().at_replacing(addr + PAGE_SIZE) };
    let m = fm
        .map_with(dom(g), &[Gfn::new(gfn)], ReadOnly, &opts)
        .unwrap();
    assert_eq!(m.as_ptr() as usize, addr + PAGE_SIZE);
    assert_eq!(m.read::<[u8; 8]>(0).unwrap(), pattern(55)[..8]);
    drop(m);
    // Free now (the mapping left a hole in the reservation): NOREPLACE lands exactly there.
    let m = fm
        .map_with(
            dom(g),
            &[Gfn::new(gfn)],
            ReadOnly,
            &MapOptions::new().at(addr + PAGE_SIZE),
        )
        .unwrap();
    assert_eq!(m.as_ptr() as usize, addr + PAGE_SIZE);
    drop(m);
    // A hint only.
    let m = fm
        .map_with(
            dom(g),
            &[Gfn::new(gfn)],
            ReadOnly,
            &MapOptions::new().near(0x6000_0000_0000),
        )
        .unwrap();
    assert_eq!(m.read::<u8>(1).unwrap(), pattern_byte(55, 1));
    // SAFETY: our reservation, nothing in it is used any more.
    unsafe { libc::munmap(resv, 4 * PAGE_SIZE) };
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn map_allocates_nothing_once_the_handle_has_its_error_array() {
    use alloc_count::allocations;
    let _s = serial();
    let g = guest();
    let fm = fm();
    let d = dom(g);
    let gfns: Vec<Gfn> = (0x400..0x400 + 1024).map(Gfn::new).collect();
    // Up to 8 frames the outcome array is on the stack: nothing allocated, ever.
    let a0 = allocations();
    drop(fm.map(d, &gfns[..8], ReadOnly).unwrap());
    assert_eq!(allocations() - a0, 0, "8 frames");
    // Beyond, the handle keeps one array: the first large map allocates it, once.
    let a0 = allocations();
    drop(fm.map(d, &gfns, ReadOnly).unwrap());
    assert_eq!(allocations() - a0, 1, "the kept array, once");
    for (n, expected) in [(1, 0), (9, 0), (64, 0), (65, 0), (1024, 0)] {
        let a0 = allocations();
        let m = fm.map(d, &gfns[..n], ReadOnly).unwrap();
        let a1 = allocations();
        drop(m);
        assert_eq!(allocations(), a1, "unmapping allocates nothing");
        assert_eq!(a1 - a0, expected, "allocations mapping {n} frames");
    }
    // Failure paths allocate nothing either.
    let a0 = allocations();
    let e = fm
        .map(d, &[Gfn::new(0x400), Gfn::new(BEYOND)], ReadOnly)
        .unwrap_err();
    assert_eq!(allocations() - a0, 0, "{e}");
}

/// Creates an ioreq server on the guest with a raw dm_op; returns its id.
fn create_ioreq_server(fm: &ForeignMemory, domid: DomId) -> u16 {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_create_ioreq_server;
    op.u.create_ioreq_server.handle_bufioreq = xen_sys::hvm::HVM_IOREQSRV_BUFIOREQ_ATOMIC as u8;
    fm.privcmd()
        .dm_op(
            "dm_op create_ioreq_server",
            domid,
            &[DmOpBuf::from_mut(&mut op)],
        )
        .expect("create an ioreq server");
    // SAFETY: reading a union field of a Plain struct: any bits are valid.
    unsafe { op.u.create_ioreq_server.id }
}

fn set_ioreq_server_state(fm: &ForeignMemory, domid: DomId, id: u16, enabled: bool) {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_set_ioreq_server_state;
    op.u.set_ioreq_server_state.id = id;
    op.u.set_ioreq_server_state.enabled = enabled.into();
    fm.privcmd()
        .dm_op(
            "dm_op set_ioreq_server_state",
            domid,
            &[DmOpBuf::from_mut(&mut op)],
        )
        .expect("set the ioreq server's state");
}

fn destroy_ioreq_server(fm: &ForeignMemory, domid: DomId, id: u16) {
    let mut op = xen_dm_op::zeroed();
    op.op = XEN_DMOP_destroy_ioreq_server;
    op.u.destroy_ioreq_server.id = id;
    fm.privcmd()
        .dm_op(
            "dm_op destroy_ioreq_server",
            domid,
            &[DmOpBuf::from_mut(&mut op)],
        )
        .expect("destroy the ioreq server");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn ioreq_server_pages_map_as_a_resource() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let d = dom(g);
    let id = create_ioreq_server(&fm, d);
    let server = Resource::IoreqServer { id };
    let frames = fm.resource_size(d, server).unwrap();
    println!("ioreq server {id} of d{}: {frames} frames", g.domid());
    assert_eq!(frames, 2, "the buffered page and one ioreq page");
    let pages = fm.map_resource(d, server, 0, 2, ReadWrite).unwrap();
    // Enabling the server makes Xen write each vCPU's event channel into its slot.
    set_ioreq_server_state(&fm, d, id, true);
    assert_eq!(pages.len(), 2 * PAGE_SIZE);
    // The synchronous page: one ioreq per vCPU, idle; Xen filled in vCPU 0's event channel.
    let ioreq_page = PAGE_SIZE * Resource::ioreq_server_ioreq_frame(0) as usize;
    let slot = pages.view::<Ioreq>(ioreq_page).unwrap();
    let port = field!(slot, vp_eport).unwrap().load_acquire();
    let state = slot.read().flags & 0xf;
    println!("vCPU 0 slot: vp_eport {port}, state {state}");
    assert_eq!(u32::from(state), xen_sys::hvm::STATE_IOREQ_NONE);
    assert_ne!(
        port, 0,
        "Xen wrote vCPU 0's event channel into the page we mapped"
    );
    // The buffered page: empty ring.
    let rp = pages.view::<u32>(0).unwrap().load_acquire();
    let wp = pages.view::<u32>(4).unwrap().load_acquire();
    assert_eq!((rp, wp), (0, 0));
    // A second mapping of the same page sees what we write through the first.
    let again = fm
        .map_resource(
            d,
            server,
            Resource::ioreq_server_ioreq_frame(0),
            1,
            ReadOnly,
        )
        .unwrap();
    field!(slot, addr).unwrap().write(0xcafe);
    assert_eq!(again.read::<u64>(0).unwrap(), 0xcafe);
    assert_eq!(again.read::<u32>(24).unwrap(), port);
    field!(slot, addr).unwrap().write(0);
    drop((pages, again));
    destroy_ioreq_server(&fm, d, id);
    // Gone: Xen refuses the resource now.
    // Gone: Xen still answers the size query (it does not look the server up), but mapping
    // its pages fails.
    let after = fm.map_resource(d, server, 0, 2, ReadOnly);
    println!("map_resource after destroy: {after:?}");
    assert!(after.is_err(), "{after:?}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn grant_table_maps_as_a_resource_and_the_guest_sees_our_writes() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let d = dom(g);
    let shared = Resource::GrantTable(GrantTable::Shared);
    let frames = fm.resource_size(d, shared).unwrap();
    println!("grant table of d{}: {frames} frames", g.domid());
    assert!(frames >= 1);
    let gt = fm.map_resource(d, shared, 0, 1, ReadWrite).unwrap();
    // Let the guest map its grant frame 0 into its physmap (XENMEM_add_to_physmap), so it can
    // read what we write.
    let gpfn = p::SCRATCH_GFN + 8;
    let xatp = xen_sys::memory::xen_add_to_physmap {
        domid: DomId::SELF.get(),
        size: 0,
        space: xen_sys::memory::XENMAPSPACE_grant_table,
        idx: 0,
        gpfn,
    };
    // SAFETY: a plain #[repr(C)] struct of integers, read as its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts((&raw const xatp).cast::<u8>(), std::mem::size_of_val(&xatp))
    };
    let data_page = p::data_gfn(0);
    let mailbox = g.map_frames(&[data_page]).unwrap();
    mailbox.write_bytes(0, bytes);
    let rc = g
        .hypercall(
            xen_sys::xen::__HYPERVISOR_memory_op.into(),
            [
                xen_sys::memory::XENMEM_add_to_physmap.into(),
                data_page << 12,
                0,
                0,
                0,
            ],
        )
        .unwrap();
    assert_eq!(rc, 0, "guest add_to_physmap of its grant frame");
    gt.write(0x100, 0x0123_4567_89ab_cdefu64).unwrap();
    assert_eq!(
        g.mem_read(gpfn << 12 | 0x100, 8).unwrap(),
        0x0123_4567_89ab_cdef
    );
    gt.write(0x100, 0u64).unwrap();
    let status = fm.resource_size(d, Resource::GrantTable(GrantTable::Status));
    println!("grant table status frames: {status:?}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn resources_of_dom0_are_refused_with_a_typed_error() {
    let _s = serial();
    let fm = fm();
    let e = fm
        .resource_size(DomId::DOM0, Resource::GrantTable(GrantTable::Shared))
        .unwrap_err();
    println!("dom0 resource_size: {e}");
    assert!(e.is_permission_denied(), "{e:?}");
    let e = fm
        .map_resource(
            DomId::DOM0,
            Resource::GrantTable(GrantTable::Shared),
            0,
            1,
            ReadOnly,
        )
        .unwrap_err();
    println!("dom0 map_resource: {e}");
    assert!(e.is_permission_denied(), "{e:?}");
    // A resource kind Xen does not know: Xen 4.17 says "not supported" (EOPNOTSUPP), as
    // callers test for; Xen 4.20 answers the size query with EINVAL.
    let e = fm
        .resource_size(
            guest_domid(),
            Resource::Other {
                kind: 0x7777,
                id: 0,
            },
        )
        .unwrap_err();
    println!("unknown resource: {e}");
    let v = fm.privcmd().xen_version().expect("xen_version");
    match (v.major, v.minor) {
        (4, 17) => assert!(e.is_not_supported(), "{e:?}"),
        (4, 20) => {
            assert!(!e.is_not_supported(), "{e:?}");
            assert_eq!(e.errno(), Errno::EINVAL, "{e:?}");
        }
        _ => panic!("Xen {v}: an answer this test does not know: {e:?}"),
    }
}

fn guest_domid() -> DomId {
    dom(guest())
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restricted_handles_map_their_domain_only() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let gfn = g.fill(Some(p::SCRATCH_GFN + 6), 66).unwrap();
    fm.restrict(dom(g)).unwrap();
    assert_eq!(fm.restricted_to(), Some(dom(g)));
    let m = fm.map(dom(g), &[Gfn::new(gfn)], ReadOnly).unwrap();
    assert_eq!(m.read::<u8>(0).unwrap(), pattern_byte(66, 0));
    let e = fm.map(ABSENT, &[Gfn::new(0x100)], ReadOnly).unwrap_err();
    println!("restricted, other domain: {e}");
    assert!(e.is_permission_denied(), "{e:?}");
    let e = fm
        .map(DomId::DOM0, &[Gfn::new(0x100)], ReadOnly)
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e:?}");
    let e = fm
        .resource_size(ABSENT, Resource::GrantTable(GrantTable::Shared))
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e:?}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn mappings_outlive_the_handle_and_cross_threads() {
    let _s = serial();
    let g = guest();
    let gfn = g.fill(Some(p::SCRATCH_GFN + 7), 7).unwrap();
    let m = {
        let fm = fm();
        fm.map_with(
            dom(g),
            &[Gfn::new(gfn)],
            ReadOnly,
            &MapOptions::new()
                .retry(RetryPolicy::NEVER)
                .failure(FailurePolicy::PerFrame),
        )
        .unwrap()
    }; // handle closed
    let m = std::sync::Arc::new(m);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || m.read::<u8>(t).unwrap())
        })
        .collect();
    for (t, h) in threads.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), pattern_byte(7, t));
    }
}

/// Prints past the test harness's output capture (the benchmark's numbers are its result).
fn report(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Maps `n` frames of guest RAM and unmaps them, repeatedly; prints frames per second for our
/// read-only and read-write mappings and for the test kit's raw mapper, interleaved, best of 3
/// (TCG timings are noisy: compare the ratios, not the absolute numbers).
#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn bench_map_unmap() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    // RAM frames of the 32 MiB guest, clear of the VGA hole and of the test guest's image.
    let gfns: Vec<Gfn> = (0x400..0x400 + 1024).map(Gfn::new).collect();
    let d = dom(g);
    let time = |rounds: usize, f: &mut dyn FnMut()| {
        let t0 = std::time::Instant::now();
        for _ in 0..rounds {
            f();
        }
        t0.elapsed()
    };
    let c = CForeignMemory::load();
    if c.is_none() {
        report("libxenforeignmemory.so.1 not found: no C comparison".into());
    }
    for n in [1usize, 64, 1024] {
        let rounds = (4096 / n).clamp(8, 1000);
        let list = &gfns[..n];
        let mut best = [std::time::Duration::MAX; 4];
        for _ in 0..3 {
            let runs: [&mut dyn FnMut(); 4] = [
                &mut || drop(std::hint::black_box(fm.map(d, list, ReadOnly).unwrap())),
                &mut || drop(std::hint::black_box(fm.map(d, list, ReadWrite).unwrap())),
                &mut || {
                    drop(std::hint::black_box(
                        g.map_frames(Gfn::as_raw_slice(list)).unwrap(),
                    ))
                },
                &mut || {
                    if let Some(c) = &c {
                        c.map_unmap(d, Gfn::as_raw_slice(list));
                    }
                },
            ];
            for (b, f) in best.iter_mut().zip(runs) {
                *b = (*b).min(time(rounds, f));
            }
        }
        let fps = |dt: std::time::Duration| (n * rounds) as f64 / dt.as_secs_f64();
        let us = |dt: std::time::Duration| dt.as_secs_f64() * 1e6 / rounds as f64;
        report(format!(
            "foreignmemory map {n} frames: {:.0} frames/s read-only, {:.0} frames/s read-write \
             ({:.1} / {:.1} us per map+unmap; xen-testkit raw mapper: {:.0} frames/s, {:.1} us)",
            fps(best[0]),
            fps(best[1]),
            us(best[0]),
            us(best[1]),
            fps(best[2]),
            us(best[2]),
        ));
        if c.is_some() {
            report(format!(
                "libxenforeignmemory (C, Debian 4.17) map {n} frames: {:.0} frames/s read-only ({:.1} us per map+unmap)",
                fps(best[3]),
                us(best[3]),
            ));
        }
    }
}

/// rust-vmm's guest-memory traits over our mappings: what a virtio device would do.
#[cfg(feature = "vm-memory")]
#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn vm_memory_guest_memory_over_a_mapping() {
    use vm_memory::{Address, Bytes, GuestAddress, GuestRegionCollection};
    use xen_foreignmemory::GuestRegion;

    let _s = serial();
    let g = guest();
    let fm = fm();
    let base = p::SCRATCH_GFN + 9;
    let gfns = [base, base + 1].map(Gfn::new);
    let m = fm.map(dom(g), &gfns, ReadWrite).unwrap();
    let slice = m.as_volatile_slice().unwrap();
    assert_eq!(slice.len(), 2 * PAGE_SIZE);
    slice.write_obj(0x5a5a_5a5a_u32, 0).unwrap();
    assert_eq!(g.mem_read(base << 12, 4).unwrap(), 0x5a5a_5a5a);
    let start = GuestAddress(base << 12);
    let mem =
        GuestRegionCollection::from_regions(vec![GuestRegion::new(start, m).unwrap()]).unwrap();
    let data = pattern(99);
    // Across the frame boundary, through GuestMemory.
    mem.write_slice(&data, start.unchecked_add(2048)).unwrap();
    let mut expect = vec![0u8; PAGE_SIZE];
    expect[2048..].copy_from_slice(&data[..2048]);
    let first = g.copy_out(base).unwrap();
    assert_eq!(first[2048..], expect[2048..]);
    let second = g.copy_out(base + 1).unwrap();
    assert_eq!(second[..2048], data[2048..]);
    g.mem_write((base << 12) + 8, 0x77, 1).unwrap();
    let back: u8 = mem.read_obj(start.unchecked_add(8)).unwrap();
    assert_eq!(back, 0x77);
    assert!(mem
        .read_obj::<u8>(start.unchecked_add(2 * PAGE_SIZE as u64))
        .is_err());
    // A partial or read-only mapping cannot become a region.
    let partial = fm
        .map_partial(dom(g), &[Gfn::new(base), Gfn::new(BEYOND)], ReadWrite)
        .unwrap();
    assert!(partial.as_volatile_slice().is_err());
    assert!(GuestRegion::new(start, partial).is_err());
}

/// Debian's C libxenforeignmemory, loaded with `dlopen` for the benchmark only (nothing links
/// it).
struct CForeignMemory {
    handle: *mut libc::c_void,
    map: CMap,
    unmap: CUnmap,
}

type CMap = unsafe extern "C" fn(
    *mut libc::c_void,
    u32,
    libc::c_int,
    usize,
    *const u64,
    *mut libc::c_int,
) -> *mut libc::c_void;
type CUnmap = unsafe extern "C" fn(*mut libc::c_void, *mut libc::c_void, usize) -> libc::c_int;

impl CForeignMemory {
    fn load() -> Option<CForeignMemory> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have the C signatures
        // of xenforeignmemory.h (Xen 4.17), which the function pointer types spell out.
        unsafe {
            let lib = libc::dlopen(c"libxenforeignmemory.so.1".as_ptr(), libc::RTLD_NOW);
            if lib.is_null() {
                return None;
            }
            let sym = |name: &std::ffi::CStr| libc::dlsym(lib, name.as_ptr());
            let open = sym(c"xenforeignmemory_open");
            let map = sym(c"xenforeignmemory_map");
            let unmap = sym(c"xenforeignmemory_unmap");
            if open.is_null() || map.is_null() || unmap.is_null() {
                return None;
            }
            let open: unsafe extern "C" fn(*mut libc::c_void, libc::c_uint) -> *mut libc::c_void =
                std::mem::transmute(open);
            let handle = open(std::ptr::null_mut(), 0);
            if handle.is_null() {
                return None;
            }
            Some(CForeignMemory {
                handle,
                map: std::mem::transmute::<*mut libc::c_void, CMap>(map),
                unmap: std::mem::transmute::<*mut libc::c_void, CUnmap>(unmap),
            })
        }
    }

    /// Maps read-only with no error array (the C library then checks every frame, like our
    /// all-or-nothing `map`), and unmaps.
    fn map_unmap(&self, d: DomId, gfns: &[u64]) {
        // SAFETY: a live handle; `gfns` is a live array of `len` frame numbers; the mapping is
        // unmapped with the same length and never touched.
        unsafe {
            let p = (self.map)(
                self.handle,
                d.get().into(),
                libc::PROT_READ,
                gfns.len(),
                gfns.as_ptr(),
                std::ptr::null_mut(),
            );
            assert!(!p.is_null(), "C xenforeignmemory_map failed");
            (self.unmap)(self.handle, p, gfns.len());
        }
    }
}

/// Maps of 9 to 64 frames keep their per-frame outcomes on the stack: a failed frame there
/// is found and named like anywhere else, and the next map of the same size succeeds.
#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn failed_frames_of_medium_maps_are_found() {
    let _s = serial();
    let g = guest();
    let fm = fm();
    let good = g.fill(Some(p::SCRATCH_GFN + 3), 3).unwrap();
    let before = privcmd_vmas();
    for (n, bad) in [(9, 8), (40, 37), (64, 0), (64, 63)] {
        let mut gfns = vec![Gfn::new(good); n];
        gfns[bad] = Gfn::new(BEYOND);
        let e = fm.map(dom(g), &gfns, ReadOnly).unwrap_err();
        let frame = e.frame().expect("a frame error");
        assert_eq!(
            (frame.index, frame.gfn.get()),
            (bad, BEYOND),
            "{n} frames: {e}"
        );
        assert_eq!(privcmd_vmas(), before, "nothing left mapped");
        let m = fm.map_partial(dom(g), &gfns, ReadOnly).unwrap();
        assert_eq!(m.frame_errors().len(), 1);
        assert_eq!(m.frame_errors()[0].index, bad);
        let mut page = vec![0u8; PAGE_SIZE];
        let other = if bad == 0 { 1 } else { 0 };
        m.read_bytes(other * PAGE_SIZE, &mut page).unwrap();
        assert_eq!(page, pattern(3));
        drop(m);
        // All good now: no outcome of the failed call is left over.
        let m = fm.map(dom(g), &vec![Gfn::new(good); n], ReadOnly).unwrap();
        assert!(m.is_complete());
        drop(m);
        assert_eq!(privcmd_vmas(), before);
    }
    println!("medium maps (9 to 64 frames): a failed frame is named, then the next map succeeds");
}
