//! `xen_hypercall::restrict_all` restricts event-channel handles too. Its own test executable:
//! it restricts every handle of the process. Needs Xen: `cargo xtask xen-test -p xen-evtchn`.

use xen_evtchn::{DomId, EventChannels, Virq};

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restrict_all_reaches_evtchn_handles() {
    xen_testkit::require_xen();
    let a = EventChannels::open().unwrap();
    let b = EventChannels::open_nonblocking().unwrap();
    // Before: unrestricted.
    drop(a.bind_unbound_port(DomId::SELF).unwrap());
    let d = DomId::new(77);
    let n = xen_hypercall::restrict_all(d).unwrap();
    assert!(n >= 2, "restricted {n} handles");
    for ch in [&a, &b] {
        assert_eq!(ch.restricted_to(), Some(d));
        let e = ch.bind_unbound_port(DomId::SELF).map(|_| ()).unwrap_err();
        assert!(e.is_permission_denied(), "{e}");
        let e = ch.bind_virq(Virq::DEBUGGER).map(|_| ()).unwrap_err();
        assert!(e.is_permission_denied(), "{e}");
        let e = ch
            .bind_interdomain(DomId::SELF, 1u32)
            .map(|_| ())
            .unwrap_err();
        assert!(e.is_permission_denied(), "{e}");
    }
}
