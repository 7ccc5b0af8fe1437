//! `xen_hypercall::restrict_all` covers ForeignMemory handles (a test binary of its own: it
//! restricts every privcmd handle of the process). Needs Xen: `cargo xtask xen-test`.

use xen_foreignmemory::Gfn;
use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
use xen_testkit::protocol::pattern_byte;
use xen_testkit::{require_xen, TestGuest};

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn restrict_all_restricts_foreign_memory_handles() {
    require_xen();
    let g = TestGuest::hvm().expect("start the HVM test guest");
    let d = DomId::new(g.domid());
    let gfn = g.fill(None, 12).unwrap();
    let fm = ForeignMemory::open().unwrap();
    let n = xen_hypercall::restrict_all(d).unwrap();
    assert!(n >= 1, "at least our handle was registered");
    assert_eq!(fm.restricted_to(), Some(d));
    let m = fm.map(d, &[Gfn::new(gfn)], ReadOnly).unwrap();
    assert_eq!(m.read::<u8>(3).unwrap(), pattern_byte(12, 3));
    let e = fm
        .map(DomId::new(0x7000), &[Gfn::new(gfn)], ReadOnly)
        .unwrap_err();
    println!("after restrict_all, another domain: {e}");
    assert!(e.is_permission_denied(), "{e:?}");
}
