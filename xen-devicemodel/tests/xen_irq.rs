//! Tests in the Xen machine (`cargo xtask xen-test -p xen-devicemodel`): interrupts and events, each
//! operation's *effect* on a real guest (the project's test guest, see `xen-testkit`).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use xen_devicemodel::*;
use xen_testkit::ioreq::wait_until;
use xen_testkit::protocol as p;
use xen_testkit::{report, require_xen, TestGuest};

fn dom(g: &TestGuest) -> DomId {
    DomId::new(g.domid())
}

/// An HVM test guest with a 5 s command deadline, and a device-model handle.
fn guest() -> (TestGuest, DomId, DeviceModel) {
    let mut g = TestGuest::hvm().expect("test guest");
    g.set_timeout(Duration::from_secs(5));
    let d = dom(&g);
    (g, d, DeviceModel::open().unwrap())
}

fn ioapic_route(g: &TestGuest, pin: u32, vector: u8) {
    // IOREGSEL at 0xfec00000, IOWIN at 0xfec00010: redirection entry of `pin`, low then
    // high dword: fixed delivery, physical destination APIC 0, edge, active high, unmasked.
    g.mem_write(0xfec0_0000, u64::from(0x10 + 2 * pin + 1), 4)
        .unwrap();
    g.mem_write(0xfec0_0010, 0, 4).unwrap();
    g.mem_write(0xfec0_0000, u64::from(0x10 + 2 * pin), 4)
        .unwrap();
    g.mem_write(0xfec0_0010, u64::from(vector), 4).unwrap();
}

fn wait_vector(g: &TestGuest, vector: u8, above: u32) -> u32 {
    wait_until(
        &format!("vector {vector:#x} in the guest"),
        Duration::from_secs(10),
        || g.vector_count(vector) > above,
    );
    g.vector_count(vector)
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn inject_msi_reaches_the_guest() {
    require_xen();
    let (g, d, dm) = guest();
    // MSI to APIC 0, vector 0x60.
    dm.inject_msi(d, 0xfee0_0000, 0x60).unwrap();
    wait_vector(&g, 0x60, 0);
    report!("inject_msi: vector 0x60 seen");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn isa_irq_level_reaches_the_guest() {
    require_xen();
    let (g, d, dm) = guest();
    // ISA IRQ 3 -> IOAPIC pin 3 -> vector 0x62.
    let irq3 = IsaIrq::new(3).unwrap();
    ioapic_route(&g, 3, 0x62);
    dm.set_isa_irq_level(d, irq3, true).unwrap();
    wait_vector(&g, 0x62, 0);
    dm.set_isa_irq_level(d, irq3, false).unwrap();
    report!("set_isa_irq_level: vector 0x62 seen");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn pci_intx_and_link_routes_reach_the_guest() {
    require_xen();
    let (g, d, dm) = guest();
    // PCI 00:04.0 INTA -> GSI 16 + ((4*4 + 4/8 + 0) % 32) = 32 -> vector 0x63.
    let dev = Sbdf::new(0, 0, 4, 0).unwrap();
    ioapic_route(&g, 32, 0x63);
    dm.set_pci_intx_level(d, dev, IntxPin::A, true).unwrap();
    let c63 = wait_vector(&g, 0x63, 0);
    dm.set_pci_intx_level(d, dev, IntxPin::A, false).unwrap();
    report!("set_pci_intx_level: vector 0x63 seen");

    // Link A (device 4 + pin A = link 0) routed to ISA IRQ 5 -> IOAPIC pin 5 -> vector 0x64.
    ioapic_route(&g, 5, 0x64);
    dm.set_pci_link_route(d, PciLink::A, Some(IsaIrq::new(5).unwrap()))
        .unwrap();
    dm.set_pci_intx_level(d, dev, IntxPin::A, true).unwrap();
    let c64 = wait_vector(&g, 0x64, 0);
    wait_vector(&g, 0x63, c63);
    dm.set_pci_intx_level(d, dev, IntxPin::A, false).unwrap();
    report!("set_pci_link_route: vector 0x64 seen through ISA IRQ 5");
    dm.set_pci_link_route(d, PciLink::A, None).unwrap();
    dm.set_pci_intx_level(d, dev, IntxPin::A, true).unwrap();
    let c63b = wait_vector(&g, 0x63, c63 + 1);
    dm.set_pci_intx_level(d, dev, IntxPin::A, false).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(g.vector_count(0x64), c64, "unrouted link: no ISA IRQ 5");
    report!("unrouted: 0x63 {c63b}, 0x64 stays {c64}");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn set_irq_level_is_refused_on_x86() {
    require_xen();
    let (_g, d, dm) = guest();
    // The Arm form has no x86 implementation.
    let e = dm.set_irq_level(d, 40, true).unwrap_err();
    report!("set_irq_level on x86: {e}");
    assert!(e.is_not_supported() || e.errno() == Errno::EINVAL, "{e}");
}

/// Injects `ev` into a fresh HVM test guest; returns whether the guest took the vector, and
/// reports what happened.
fn inject_one(name: &str, ev: Event) -> bool {
    let mut g = TestGuest::hvm().expect("test guest");
    g.set_timeout(Duration::from_secs(3));
    g.set_flags(p::FLAG_CONTINUE_ON_EXCEPTION);
    let d = dom(&g);
    let dm = DeviceModel::open().unwrap();
    let before = g.vector_count(ev.vector);
    let r = dm.inject_event(d, ev);
    // Some kinds make Xen crash the domain here (QEMU's nested SVM refuses the injection:
    // "Unexpected vmexit: reason 0xffffffff"): look at its state now and then, so a crashed
    // guest does not cost the whole wait and a ping timeout.
    let crashed = || {
        g.guest()
            .list_entry()
            .ok()
            .flatten()
            .is_some_and(|e| e.state.contains('c'))
    };
    let t0 = Instant::now();
    let mut last_look = t0;
    let mut dead = false;
    while g.vector_count(ev.vector) == before && t0.elapsed() < Duration::from_secs(3) {
        if last_look.elapsed() > Duration::from_millis(250) {
            last_look = Instant::now();
            if crashed() {
                dead = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = g.vector_count(ev.vector);
    // A second injection fails with EBUSY while the first is still pending in Xen.
    let again = dm.inject_event(d, ev);
    let dead = dead || (after == before && crashed());
    let alive = !dead && g.ping().is_ok();
    let h = g.header();
    report!(
        "inject_event {name}: {r:?}, vector {:#x} count {before} -> {after}; inject again: {again:?}; guest answers: {alive}{}; exc_vector {} ticks {}",
        ev.vector,
        if dead { " (Xen crashed the domain)" } else { "" },
        h.exc_vector,
        h.ticks
    );
    after > before
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn inject_event_reaches_the_guest() {
    require_xen();
    // Each kind on its own guest (one that goes wrong must not hide the others).
    let kinds = [
        (
            "sw_int 0x62",
            Event {
                kind: EventType::SwInt,
                ..Event::interrupt(0, 0x62)
            },
        ),
        (
            "hw_exc #UD",
            Event {
                kind: EventType::HwException,
                ..Event::interrupt(0, 6)
            },
        ),
        (
            "nmi",
            Event {
                kind: EventType::Nmi,
                ..Event::interrupt(0, 2)
            },
        ),
        ("ext_int 0x61", Event::interrupt(0, 0x61)),
    ];
    let seen: Vec<&str> = kinds
        .iter()
        .filter(|(name, ev)| inject_one(name, *ev))
        .map(|(name, _)| *name)
        .collect();
    report!("inject_event: seen by the guest: {seen:?}");
    assert!(
        seen.contains(&"sw_int 0x62"),
        "the software interrupt reached the guest"
    );
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn pvh_guest_dm_ops_that_apply() {
    // PVH: no emulated PIC/IOAPIC (ISA/PCI INTx are never sent, see the crate docs), but a
    // local APIC: MSIs work, and so do ioreq servers and the generic ops.
    require_xen();
    let g = TestGuest::pvh().expect("PVH test guest");
    let d = dom(&g);
    let dm = DeviceModel::open().unwrap();
    assert_eq!(dm.nr_vcpus(d).unwrap(), 1);
    dm.inject_msi(d, 0xfee0_0000, 0x70).unwrap();
    wait_vector(&g, 0x70, 0);
    let srv = dm.create_ioreq_server(d, BufIoreqMode::Off).unwrap();
    srv.map_port_range(0x5e0..=0x5e0).unwrap();
    srv.destroy().unwrap();
    report!("PVH: nr_vcpus, inject_msi (vector 0x70 seen), ioreq server create/map/destroy");
}
