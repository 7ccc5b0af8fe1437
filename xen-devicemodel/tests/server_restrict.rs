//! After `restrict_all` (a process-wide, permanent privilege drop, hence its own test
//! executable) the ioreq-server loop keeps serving the guest.
#![allow(missing_docs)]

use std::sync::{Arc, Mutex};

use xen_devicemodel::server::{Claim, Device, ServerBuilder};
use xen_devicemodel::{BufIoreqMode, DeviceModel, DomId};
use xen_testkit::{require_xen, TestGuest};

#[path = "support/running.rs"]
mod running;
use running::Running;

#[derive(Default)]
struct Echo(u32);

impl Device for Echo {
    fn port_write(&mut self, _port: u16, _size: u8, value: u32) {
        self.0 = value;
    }
    fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
        self.0 ^ 0xffff
    }
}

/// How many of this process's descriptors are open on the privcmd device.
fn privcmd_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_str().is_some_and(|t| t.ends_with("/privcmd")))
        .count()
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_loop_serves_after_restrict_all() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let dom = DomId::new(g.domid());
    let echo = Arc::new(Mutex::new(Echo::default()));
    let before = privcmd_fds();
    let mut server = ServerBuilder::new(dom)
        .buffered(BufIoreqMode::Atomic)
        .device(echo.clone(), [Claim::Ports(0x540..=0x541)])
        .restrict(true)
        .build()
        .unwrap();
    // One privcmd file serves the dm_ops and the foreign mappings (the handle's clones:
    // the device model's and the guest-memory cache's at least).
    assert_eq!(
        privcmd_fds() - before,
        1,
        "the server opens one privcmd file"
    );
    assert!(server.device_model().privcmd().handle_count() >= 2);
    assert_eq!(server.device_model().restricted_to(), Some(dom));
    // The server's own handle now refuses other domains (dom0 here).
    let e = server.device_model().nr_vcpus(DomId::new(0)).unwrap_err();
    eprintln!("xen-devicemodel server: restricted handle on d0: {e}");
    // A fresh handle is not restricted; the server's is.
    let _ = DeviceModel::open().unwrap();
    let running = Running::new(
        server.stop_handle(),
        std::thread::spawn(move || {
            let r = server.run();
            (r, server.stats())
        }),
    );
    for v in [0x1111u32, 0x2222, 0x3333] {
        g.port_out(0x540, v, 2).unwrap();
        assert_eq!(g.port_in(0x540, 2).unwrap(), v ^ 0xffff);
    }
    let d: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    g.rep_outs(0x541, 1, &d, false).unwrap(); // data_is_ptr: guest memory mapped after restrict
    assert_eq!(echo.lock().unwrap().0, 299 & 0xff);
    let (r, stats) = running.join();
    r.unwrap();
    eprintln!("xen-devicemodel server: after restrict_all: {stats:?}");
    assert!(stats.port >= 7, "{stats:?}");
}
