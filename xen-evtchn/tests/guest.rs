//! An event channel between dom0 and a real domU (the project's PVH test guest), carrying
//! notifications both ways. Needs Xen: `cargo xtask xen-test -p xen-evtchn`.
//!
//! The guest side is driven through the test guest's raw-hypercall command: its event-channel
//! hypercalls take their argument structures from vCPU 0's mailbox data page, which the test
//! writes through its foreign mapping. The guest sees dom0's events in its shared_info page,
//! which it maps into a scratch frame with `XENMEM_add_to_physmap` (2-level ABI: the port's
//! bit in `evtchn_pending`).

use core::mem::offset_of;
use std::time::{Duration, Instant};

use xen_evtchn::{DomId, Errno, EventChannels, Port};
use xen_sys::event_channel::{
    evtchn_alloc_unbound, evtchn_bind_interdomain, EVTCHNOP_alloc_unbound,
    EVTCHNOP_bind_interdomain, EVTCHNOP_send,
};
use xen_sys::memory::{xen_add_to_physmap, XENMAPSPACE_shared_info, XENMEM_add_to_physmap};
use xen_sys::xen::{__HYPERVISOR_event_channel_op, __HYPERVISOR_memory_op, shared_info};
use xen_testkit::protocol as p;
use xen_testkit::TestGuest;

/// Prints a report line that shows even when the test passes (libtest captures `println!`,
/// not direct writes to stderr).
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(500);

/// Offsets of the argument structures in vCPU 0's data page.
const BIND_AT: usize = 0;
const SEND_AT: usize = 64;
const ALLOC_AT: usize = 128;
const PHYSMAP_AT: usize = 192;
/// The scratch frame the guest's shared_info goes to.
const SHARED_INFO_GFN: u64 = p::SCRATCH_GFN + p::SCRATCH_PAGES as u64 - 1;

struct Guest {
    g: TestGuest,
}

impl Guest {
    fn start() -> Guest {
        xen_testkit::require_xen();
        let g = TestGuest::pvh().expect("start the PVH test guest");
        g.set_flags(p::FLAG_QUIET);
        Guest { g }
    }

    fn domid(&self) -> DomId {
        DomId::new(self.g.domid())
    }

    /// Guest-physical address of `off` in vCPU 0's data page.
    fn gpa(off: usize) -> u64 {
        (p::data_gfn(0) << 12) + off as u64
    }

    /// Writes `bytes` at `off` of vCPU 0's data page (page 1 of the mailbox mapping).
    fn put(&self, off: usize, bytes: &[u8]) {
        self.g.mailbox().write_bytes(p::PAGE_SIZE + off, bytes);
    }

    fn get_u32(&self, off: usize) -> u32 {
        self.g.mailbox().read_u32(p::PAGE_SIZE + off)
    }

    fn event_channel_op(&self, cmd: u32, off: usize) -> i64 {
        self.g
            .hypercall(
                __HYPERVISOR_event_channel_op.into(),
                [cmd.into(), Self::gpa(off), 0, 0, 0],
            )
            .expect("guest hypercall")
    }

    /// The guest binds to dom0's `remote_port`; returns the guest's local port.
    fn bind_interdomain(&self, remote_port: Port) -> u32 {
        let mut b = [0u8; core::mem::size_of::<evtchn_bind_interdomain>()];
        let o = offset_of!(evtchn_bind_interdomain, remote_dom);
        b[o..o + 2].copy_from_slice(&0u16.to_le_bytes()); // dom0
        let o = offset_of!(evtchn_bind_interdomain, remote_port);
        b[o..o + 4].copy_from_slice(&remote_port.get().to_le_bytes());
        self.put(BIND_AT, &b);
        let r = self.event_channel_op(EVTCHNOP_bind_interdomain, BIND_AT);
        assert_eq!(
            r, 0,
            "guest EVTCHNOP_bind_interdomain to dom0 port {remote_port}"
        );
        self.get_u32(BIND_AT + offset_of!(evtchn_bind_interdomain, local_port))
    }

    /// The guest allocates a port dom0 may bind to; returns it.
    fn alloc_unbound_for_dom0(&self) -> u32 {
        let mut b = [0u8; core::mem::size_of::<evtchn_alloc_unbound>()];
        let o = offset_of!(evtchn_alloc_unbound, dom);
        b[o..o + 2].copy_from_slice(&0x7ff0u16.to_le_bytes()); // DOMID_SELF
        let o = offset_of!(evtchn_alloc_unbound, remote_dom);
        b[o..o + 2].copy_from_slice(&0u16.to_le_bytes());
        self.put(ALLOC_AT, &b);
        let r = self.event_channel_op(EVTCHNOP_alloc_unbound, ALLOC_AT);
        assert_eq!(r, 0, "guest EVTCHNOP_alloc_unbound");
        self.get_u32(ALLOC_AT + offset_of!(evtchn_alloc_unbound, port))
    }

    /// The guest sends on its port `port`.
    fn send(&self, port: u32) -> i64 {
        self.put(SEND_AT, &port.to_le_bytes());
        self.event_channel_op(EVTCHNOP_send, SEND_AT)
    }

    /// The guest maps its shared_info page at [`SHARED_INFO_GFN`].
    fn map_shared_info(&self) {
        let mut b = [0u8; core::mem::size_of::<xen_add_to_physmap>()];
        let o = offset_of!(xen_add_to_physmap, domid);
        b[o..o + 2].copy_from_slice(&0x7ff0u16.to_le_bytes()); // DOMID_SELF
        let o = offset_of!(xen_add_to_physmap, space);
        b[o..o + 4].copy_from_slice(&XENMAPSPACE_shared_info.to_le_bytes());
        let o = offset_of!(xen_add_to_physmap, idx);
        b[o..o + 8].copy_from_slice(&0u64.to_le_bytes());
        let o = offset_of!(xen_add_to_physmap, gpfn);
        b[o..o + 8].copy_from_slice(&SHARED_INFO_GFN.to_le_bytes());
        self.put(PHYSMAP_AT, &b);
        let r = self
            .g
            .hypercall(
                __HYPERVISOR_memory_op.into(),
                [XENMEM_add_to_physmap.into(), Self::gpa(PHYSMAP_AT), 0, 0, 0],
            )
            .expect("guest hypercall");
        assert_eq!(r, 0, "guest XENMEM_add_to_physmap(shared_info)");
    }

    /// Address and bit of guest port `port`'s pending bit in its shared_info.
    fn pending_word(port: u32) -> (u64, u64) {
        let word = (port / 64) as u64;
        let addr =
            (SHARED_INFO_GFN << 12) + offset_of!(shared_info, evtchn_pending) as u64 + 8 * word;
        (addr, 1u64 << (port % 64))
    }

    /// Is guest port `port` pending, as the guest reads its shared_info?
    fn is_pending(&self, port: u32) -> bool {
        let (addr, bit) = Self::pending_word(port);
        self.g.mem_read(addr, 8).expect("guest mem_read") & bit != 0
    }

    /// The guest clears its port's pending bit (as its event handler would).
    fn clear_pending(&self, port: u32) {
        let (addr, bit) = Self::pending_word(port);
        let v = self.g.mem_read(addr, 8).expect("guest mem_read");
        self.g
            .mem_write(addr, v & !bit, 8)
            .expect("guest mem_write");
    }

    fn wait_pending(&self, port: u32, what: &str) {
        let t = Instant::now();
        while !self.is_pending(port) {
            assert!(
                t.elapsed() < WAIT,
                "{what}: guest port {port} never became pending"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn expect_event(ch: &EventChannels, port: Port, what: &str) {
    let got = ch
        .pending_timeout(WAIT)
        .expect("pending")
        .unwrap_or_else(|| panic!("{what}: no event on dom0 port {port} within {WAIT:?}"));
    assert_eq!(got, port, "{what}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn dom0_and_domu_notify_each_other() {
    let guest = Guest::start();
    guest.map_shared_info();
    let ch = EventChannels::open().unwrap();

    // dom0 offers a port, the guest binds to it.
    let ours = ch.bind_unbound_port(guest.domid()).unwrap();
    let theirs = guest.bind_interdomain(ours.port());
    report!(
        "evtchn: dom0 port {} <-> d{} port {theirs}",
        ours.port(),
        guest.domid()
    );
    // Xen raised the guest's new port once at bind time; the guest clears it.
    guest.wait_pending(theirs, "bind-time event");
    guest.clear_pending(theirs);
    assert!(!guest.is_pending(theirs));

    for round in 0..5 {
        // guest -> dom0
        assert_eq!(guest.send(theirs), 0, "guest EVTCHNOP_send");
        expect_event(&ch, ours.port(), "guest -> dom0");
        ours.unmask().unwrap();
        assert_eq!(
            ch.pending_timeout(QUIET).unwrap(),
            None,
            "round {round}: once"
        );
        // dom0 -> guest
        ours.notify().unwrap();
        guest.wait_pending(theirs, "dom0 -> guest");
        guest.clear_pending(theirs);
        assert!(!guest.is_pending(theirs));
    }

    // After dom0 unbinds, the guest's sends go nowhere and dom0 sees nothing.
    let raw = ours.port();
    ours.unbind().unwrap();
    assert_eq!(guest.send(theirs), 0);
    assert_eq!(ch.pending_timeout(QUIET).unwrap(), None);
    assert_eq!(ch.notify(raw).unwrap_err().errno(), Errno::ENOTCONN);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restricted_handle_binds_its_guest_only() {
    let guest = Guest::start();
    guest.map_shared_info();
    let ch = EventChannels::open().unwrap();
    ch.restrict(guest.domid()).unwrap();

    // The guest offers a port; the restricted handle may bind to it (its own domain).
    let theirs = guest.alloc_unbound_for_dom0();
    let ours = ch
        .bind_interdomain(guest.domid(), theirs)
        .expect("restricted handle binding its own guest's port");
    expect_event(&ch, ours.port(), "bind-time event");
    ours.unmask().unwrap();
    // Other domains, and unbound ports, are refused.
    let e = ch
        .bind_interdomain(DomId::SELF, 1u32)
        .map(|_| ())
        .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    let e = ch.bind_unbound_port(guest.domid()).map(|_| ()).unwrap_err();
    assert!(e.is_permission_denied(), "{e}");

    // And the channel works both ways.
    assert_eq!(guest.send(theirs), 0);
    expect_event(&ch, ours.port(), "guest -> restricted dom0 handle");
    ours.unmask().unwrap();
    ours.notify().unwrap();
    guest.wait_pending(theirs, "restricted dom0 handle -> guest");
}
