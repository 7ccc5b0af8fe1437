//! Tests in the Xen machine (`cargo xtask xen-test -p xen-devicemodel`): domain-wide
//! operations (vCPU count, S3, shutdown) and restricted handles, each seen by the guest or the
//! toolstack.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use xen_devicemodel::*;
use xen_testkit::{report, require_xen, xl, Guest, GuestConfig};

/// Two HVM guests that stay around after poweroff, reboot and crash (so their shutdown reason
/// can be read): `a` with two vCPUs, `b` with one.
fn two_guests() -> (Guest, Guest, DomId, DomId) {
    let preserve = |c: GuestConfig| {
        c.extra("on_poweroff = \"preserve\"")
            .extra("on_reboot = \"preserve\"")
            .extra("on_crash = \"preserve\"")
    };
    let a = Guest::create(&preserve(GuestConfig::hvm().vcpus(2))).unwrap();
    let b = Guest::create(&preserve(GuestConfig::hvm())).unwrap();
    let (da, db) = (DomId::new(a.domid()), DomId::new(b.domid()));
    (a, b, da, db)
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn nr_vcpus_and_s3_states() {
    require_xen();
    let dm = DeviceModel::open().unwrap();
    let (_a, _b, da, db) = two_guests();
    assert_eq!(dm.nr_vcpus(da).unwrap(), 2);
    assert_eq!(dm.nr_vcpus(db).unwrap(), 1);

    // S3.
    assert_eq!(dm.acpi_s_state(da).unwrap(), 0);
    dm.s3_suspend(da).unwrap();
    assert_eq!(dm.acpi_s_state(da).unwrap(), 3);
    dm.s3_awaken(da).unwrap();
    assert_eq!(dm.acpi_s_state(da).unwrap(), 0);
    report!("s3: ACPI_S_STATE read back 3 then 0");
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn a_restricted_handle_reaches_its_domain_only() {
    require_xen();
    let (_a, _b, da, db) = two_guests();

    // Restrict a second handle to `a`.
    let r = DeviceModel::open().unwrap();
    r.restrict(da).unwrap();
    assert_eq!(r.restricted_to(), Some(da));
    assert_eq!(
        r.nr_vcpus(da).unwrap(),
        2,
        "dm_ops on the domain still work"
    );
    let e = r.nr_vcpus(db).unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    let irq = IsaIrq::new(7).unwrap();
    for (name, res) in [
        (
            "create_ioreq_server",
            r.create_ioreq_server(db, BufIoreqMode::Off).map(drop),
        ),
        ("set_isa_irq_level", r.set_isa_irq_level(db, irq, false)),
        ("inject_msi", r.inject_msi(db, 0xfee0_0000, 0x40)),
        ("modified_memory", r.modified_memory(db, Gfn::new(0x100), 1)),
        ("shutdown", r.shutdown(db, ShutdownReason::Poweroff)),
    ] {
        let e = res.unwrap_err();
        assert!(e.is_permission_denied(), "{name}: {e}");
    }
    assert_eq!(r.nr_vcpus(da).unwrap(), 2, "still works on its own domain");
    let e = r.populate_ram(da, Gfn::new(0x9000), 1).unwrap_err();
    assert!(
        e.is_permission_denied() && e.op().contains("not a dm_op"),
        "{e}"
    );
    let e = r.s3_suspend(da).unwrap_err();
    assert!(
        e.is_permission_denied() && e.op().contains("not a dm_op"),
        "{e}"
    );
    report!("restrict: other domain -> {}", r.nr_vcpus(db).unwrap_err());
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn shutdown_reasons_reach_the_toolstack() {
    require_xen();
    let dm = DeviceModel::open().unwrap();
    let (a, b, da, db) = two_guests();
    // Reboot through a handle restricted to `a`, crash `b` through the unrestricted one.
    let r = DeviceModel::open().unwrap();
    r.restrict(da).unwrap();
    r.reboot(da).unwrap();
    dm.shutdown(db, ShutdownReason::Crash).unwrap();
    let line = |d: u16| {
        xl::xl(&["list", "-v", &d.to_string()])
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    let t0 = Instant::now();
    loop {
        let l = xl::list().unwrap();
        let st = |d: u16| l.iter().find(|e| e.domid == d).map(|e| e.state.clone());
        let (sa, sb) = (st(a.domid()), st(b.domid()));
        if sa.as_deref().is_some_and(|s| s.contains('s'))
            && sb
                .as_deref()
                .is_some_and(|s| s.contains('c') || s.contains('s'))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "shutdown not seen: a {sa:?} b {sb:?}; xl list -v:\n{}",
            xl::xl(&["list", "-v"])
                .map(|o| o.stdout)
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (la, lb) = (line(a.domid()), line(b.domid()));
    report!("after reboot:\n{la}after crash:\n{lb}");
    let reason = |l: &str| -> Option<String> {
        // xl list -v: Name ID Mem VCPUs State Time(s) UUID Reason-Code Security-Label
        l.lines()
            .nth(1)?
            .split_whitespace()
            .nth(7)
            .map(str::to_string)
    };
    assert_eq!(reason(&la).as_deref(), Some("1"), "reboot reason");
    assert_eq!(reason(&lb).as_deref(), Some("3"), "crash reason");
}
