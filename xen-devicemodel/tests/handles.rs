//! Handles in the Xen machine (`cargo xtask xen-test -p xen-devicemodel handles`): ending an
//! ioreq server or a VRAM region by hand (`destroy`, `into_id`) releases the privcmd handle
//! it held, so a process that makes and ends them in a loop keeps a flat fd count.
#![allow(missing_docs)]

use xen_devicemodel::*;
use xen_testkit::protocol as p;
use xen_testkit::{require_xen, TestGuest};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-devicemodel handles: {}", format!($($t)*));
    }};
}

/// The process's open file descriptors.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

const ROUNDS: usize = 100;

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn destroy_and_into_id_keep_the_fd_count_flat() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let d = DomId::new(g.domid());
    // One warm-up round, so lazily opened fds (none expected) are counted before.
    DeviceModel::open()
        .unwrap()
        .create_ioreq_server(d, BufIoreqMode::Off)
        .unwrap()
        .destroy()
        .unwrap();
    let before = open_fds();
    for i in 0..ROUNDS {
        // Each round opens its own handle, as a short-lived tool would, and drops it.
        let dm = DeviceModel::open().unwrap();
        let srv = dm.create_ioreq_server(d, BufIoreqMode::Off).unwrap();
        srv.map_port_range(0x540..=0x540).unwrap();
        if i % 2 == 0 {
            srv.destroy().unwrap();
        } else {
            // Released, then adopted again and destroyed: the server is really gone (a second
            // destroy of the same id fails).
            let id = srv.into_id();
            IoreqServer::from_id(&dm, d, id, BufIoreqMode::Off)
                .destroy()
                .unwrap();
            let e = IoreqServer::from_id(&dm, d, id, BufIoreqMode::Off)
                .destroy()
                .unwrap_err();
            assert_eq!(e.errno(), Errno::ENOENT, "{e}");
        }
    }
    let after_servers = open_fds();
    #[cfg(feature = "vram")]
    for _ in 0..ROUNDS {
        let dm = DeviceModel::open().unwrap();
        VramRegion::create(&dm, d, Gfn::new(0xa000), Gfn::new(p::SCRATCH_GFN), 4)
            .unwrap()
            .destroy()
            .unwrap();
    }
    let after = open_fds();
    report!(
        "open fds: {before} before, {after_servers} after {ROUNDS} server rounds, {after} after \
         {ROUNDS} VRAM rounds"
    );
    assert_eq!(
        after_servers, before,
        "ioreq server destroy/into_id leak fds"
    );
    assert_eq!(after, before, "VramRegion::destroy leaks fds");
    let _ = p::SCRATCH_GFN;
}
