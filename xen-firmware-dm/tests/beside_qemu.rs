//! Our device model beside QEMU (`cargo xtask xen-test -p xen-firmware-dm stock_host`): libxl
//! starts Debian's QEMU as the guest's device model, as on any stock Xen host, and our server is
//! a second ioreq server claiming one device's port, the debug console at 0x402, which QEMU's
//! Xen machine does not have. In one boot, hvmloader and SeaBIOS run on QEMU's chipset and PCI
//! devices, and SeaBIOS's log reaches our debug console.
#![allow(missing_docs)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;
use support::spawn;
use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::DomId;
use xen_firmware_dm::debugcon;
use xen_testkit::{require_xen, xl, Guest, GuestConfig};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "beside qemu: {}", format!($($t)*));
    }};
}

/// The hypervisor-console lines of domain `domid` (hvmloader's and SeaBIOS's port-0xe9 log).
fn dmesg_of(domid: u16) -> Vec<String> {
    let tag = format!("(d{domid})");
    xl::dmesg()
        .unwrap()
        .lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn stock_host_beside_qemu_seabios_logs_to_our_debug_console() {
    require_xen();
    let cfg = GuestConfig::hvm_hvmloader()
        .qemu()
        .memory_mib(64)
        .extra("tsc_mode = \"native\"");
    let g = match Guest::create(&cfg) {
        Ok(g) => g,
        Err(e) => {
            // QEMU's own words are in libxl's device-model log.
            for f in std::fs::read_dir("/var/log/xen").unwrap().flatten() {
                if f.file_name().to_string_lossy().starts_with("qemu-dm-") {
                    let log = std::fs::read_to_string(f.path()).unwrap_or_default();
                    report!("{}:\n{log}", f.path().display());
                }
            }
            panic!("xl create with QEMU failed: {e}");
        }
    };
    let domid = g.domid();
    // QEMU is up (libxl waited for it), serving everything but our port.
    let qemu = std::process::Command::new("pidof")
        .arg("xen-qemu-system-i386")
        .output()
        .unwrap();
    let qemu_pids = String::from_utf8_lossy(&qemu.stdout).trim().to_string();
    assert!(!qemu_pids.is_empty(), "QEMU is not running");

    let (tx, rx) = mpsc::channel();
    let server = ServerBuilder::new(DomId::new(domid))
        .device(debugcon::DebugCon::new(tx), debugcon::DebugCon::claims())
        .build()
        .unwrap();
    let ioreq_id = server.ioreq_server().id();
    let running = spawn(server);
    let t0 = Instant::now();
    g.unpause().unwrap();

    let mut ours = Vec::new();
    let mut xen_log = Vec::new();
    let mut booted = false;
    while t0.elapsed() < Duration::from_secs(90) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            ours.push(l.text);
        }
        xen_log = dmesg_of(domid);
        // SeaBIOS's screen output, through QEMU's devices, ends with the boot attempt.
        booted = xen_log.iter().any(|l| l.contains("No bootable device"))
            || xen_log.iter().any(|l| l.contains("Booting from"));
        if booted && !ours.is_empty() {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (r, server) = running.join();
    r.unwrap();
    let stats = server.stats();
    drop(server);
    report!("QEMU pid(s) {qemu_pids}; our ioreq server {ioreq_id}; {secs:.1} s; served: {stats}");
    for l in &ours {
        report!("ours| {l}");
    }
    for l in &xen_log {
        report!("xen| {l}");
    }
    // Ours: SeaBIOS's first log lines, on the port only we claim.
    assert!(
        ours.iter().any(|l| l.contains("SeaBIOS (version")),
        "no SeaBIOS banner on our debug console: {ours:?}"
    );
    assert!(stats.port > 0, "{stats:?}");
    assert_eq!(
        stats.pci_config, 0,
        "PCI config went to us, not QEMU: {stats:?}"
    );
    // QEMU's: hvmloader found QEMU's PCI devices (our server has none), SeaBIOS recognised
    // QEMU's host bridge and found its IDE controllers.
    let xen_has = |t: &str| xen_log.iter().any(|l| l.contains(t));
    assert!(
        xen_has("pci dev"),
        "hvmloader saw no PCI device: {xen_log:?}"
    );
    assert!(
        xen_has("Running on QEMU"),
        "SeaBIOS did not see QEMU: {xen_log:?}"
    );
    assert!(
        xen_has("ATA controller"),
        "no IDE controller of QEMU's: {xen_log:?}"
    );
    assert!(booted, "SeaBIOS did not reach its boot attempt within 90 s");
}
