//! The firmware devices in the Xen machine (`cargo xtask xen-test -p xen-firmware-dm server`):
//! hvmloader + SeaBIOS served by the whole device set, the PCI bus driven by the project's test
//! guest (config space, BAR sizing and placement, MMIO and string MMIO to the BAR), and the
//! devices on their own against malformed accesses.
#![allow(missing_docs)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_devicemodel::server::{Device, Server, ServerBuilder, Stats};
use xen_devicemodel::{BufIoreqMode, DomId};
use xen_firmware_dm::{devices, pci, serial};
use xen_testkit::{require_xen, Guest, GuestConfig, TestGuest};

mod support;
use support::{spawn, Running};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-firmware-dm server: {}", format!($($t)*));
    }};
}

/// Stops the loop, checks it ended well, drops the server (unmapping its pages, destroying the
/// ioreq server) and returns its counters.
fn finish(running: Running<(xen_devicemodel::Result<()>, Server)>) -> Stats {
    let (r, server) = running.join();
    r.unwrap();
    let s = server.stats();
    drop(server);
    s
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

// ---- the devices on their own (no Xen) ----

/// The runtime sends ports 1, 2 or 4-byte accesses only, but the devices do not
/// trust it: any size, even 8 or 255, is served without a panic (an 8-byte port write made
/// the UART shift a u32 by 32, a panic in debug builds).
#[test]
fn devices_take_any_access_size() {
    let (tx, _rx) = mpsc::channel();
    let mut uart = serial::Serial::new(tx);
    for size in [0u8, 1, 2, 3, 4, 8, 255] {
        for port in [serial::BASE, serial::BASE + 7, 0, u16::MAX] {
            uart.port_write(port, size, 0x8080_8080);
            let _ = uart.port_read(port, size);
        }
    }
    let mut bus = pci::PciBus::new();
    let host = xen_devicemodel::Sbdf::new(0, 0, 0, 0).unwrap();
    for size in [0u8, 3, 8, 255] {
        for reg in [0u16, 0xfc, 0xff, 0xfff] {
            bus.pci_config_write(host, reg, size, u32::MAX);
            let _ = bus.pci_config_read(host, reg, size);
        }
    }
}

// ---- SeaBIOS ----

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_seabios_prints_through_our_devices() {
    require_xen();
    let g = Guest::create(&GuestConfig::hvm_hvmloader().paused(true)).unwrap();
    let (tx, rx) = mpsc::channel();
    let (builder, pci, windows) = devices::register(
        ServerBuilder::new(DomId::new(g.domid())).buffered(BufIoreqMode::Atomic),
        tx,
    );
    let server = builder.build().unwrap();
    let running = spawn(server);
    let t0 = Instant::now();
    g.unpause().unwrap();
    let mut lines = Vec::new();
    let mut done = false;
    while !done && t0.elapsed() < Duration::from_secs(60) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            done = l.text.contains("No bootable device");
            lines.push(l);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let stats = finish(running);
    for l in &lines {
        report!("{}| {}", l.source, l.text);
    }
    let w = windows.lock().unwrap();
    for a in &w.first {
        report!("mmio {:x?}", a);
    }
    let pci = pci.lock().unwrap();
    report!(
        "pci config accesses {}, BAR0 {:x?}; stats {stats:?}",
        pci.config_accesses,
        pci.bar0()
    );
    report!(
        "seabios run: served: {stats} in {secs:.2} s ({:.0} req/s); loop's own time {:.1} us/request",
        stats.total() as f64 / secs,
        stats.busy_ns as f64 / stats.total() as f64 / 1e3
    );
    report!(
        "option ROM reads {}, ROM BAR {:x?}",
        pci.rom_reads,
        pci.rom()
    );
    let via = |src: &str, t: &str| lines.iter().any(|l| l.source == src && l.text.contains(t));
    // The banner through the debug console (SeaBIOS's log, before it moves it to Xen's
    // port 0xe9) and through the UART (its screen output, via our option ROM).
    assert!(
        via("debugcon", "SeaBIOS (version"),
        "no banner on the debug console"
    );
    assert!(
        via("serial", "SeaBIOS (version"),
        "no banner on the screen/UART"
    );
    assert!(done, "no 'No bootable device' within 60 s");
    assert!(via("serial", "No bootable device"));
    assert!(stats.port > 0 && stats.pci_config > 0, "{stats:?}");
    assert!(stats.mmio > 0, "no MMIO request: {stats:?}");
    assert!(pci.rom_reads > 0, "the option ROM was not read");
}

#[test]
fn option_rom_is_well_formed() {
    let r = &pci::VGA_ROM;
    assert_eq!(&r[..3], &[0x55, 0xaa, 1]);
    assert_eq!(r.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0, "checksum");
    let pcir = usize::from(u16::from_le_bytes([r[0x18], r[0x19]]));
    assert_eq!(&r[pcir..pcir + 4], b"PCIR");
    assert_eq!(
        u16::from_le_bytes([r[pcir + 4], r[pcir + 5]]),
        pci::DISPLAY_IDS.0
    );
    assert_eq!(
        u16::from_le_bytes([r[pcir + 6], r[pcir + 7]]),
        pci::DISPLAY_IDS.1
    );
    // The init entry jumps to 0x40; the handler the init installs is at 0x60.
    assert_eq!(3 + 2 + usize::from(r[4]), 0x40);
    assert_eq!(&r[0x45..0x4b], &[0xc7, 0x06, 0x40, 0x00, 0x60, 0x00]);
    assert_eq!(r[0x60 + 13], 0xcf);
}

// ---- the PCI bus, driven by the test guest ----

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_pci_device_config_and_bar_through_our_server() {
    require_xen();
    let g = TestGuest::hvm().unwrap();
    let pci = Arc::new(Mutex::new(pci::PciBus::new()));
    let server = ServerBuilder::new(DomId::new(g.domid()))
        .buffered(BufIoreqMode::Off)
        .device(pci.clone(), pci::PciBus::claims())
        .build()
        .unwrap();
    let running = spawn(server);
    let (b, d, f) = pci::TEST_DEVICE;
    let ids = g.pci_cfg_read(b, d, f, 0, 4).unwrap();
    assert_eq!(
        ids,
        u32::from(pci::TEST_IDS.0) | (u32::from(pci::TEST_IDS.1) << 16)
    );
    assert_eq!(g.pci_cfg_read(0, 0, 0, 0, 2).unwrap(), 0x8086);
    assert_eq!(g.pci_cfg_read(0, 0, 0, 0x0b, 1).unwrap(), 0x06);
    // BAR sizing, then place it and enable memory decoding.
    g.pci_cfg_write(b, d, f, 0x10, 0xffff_ffff, 4).unwrap();
    assert_eq!(
        g.pci_cfg_read(b, d, f, 0x10, 4).unwrap(),
        !(pci::BAR_SIZE - 1)
    );
    let bar = 0xf000_0000u32;
    g.pci_cfg_write(b, d, f, 0x10, bar, 4).unwrap();
    g.pci_cfg_write(b, d, f, 0x04, 0x2, 2).unwrap();
    assert_eq!(g.pci_cfg_read(b, d, f, 0x10, 4).unwrap(), bar);
    let base = u64::from(bar);
    g.mem_write(base + 0x10, 0x1122_3344_5566_7788, 8).unwrap();
    g.mem_write(base + 0x20, 0xabcd, 2).unwrap();
    assert_eq!(g.mem_read(base + 0x10, 8).unwrap(), 0x1122_3344_5566_7788);
    assert_eq!(g.mem_read(base + 0x14, 4).unwrap(), 0x1122_3344);
    assert_eq!(g.mem_read(base + 0x20, 2).unwrap(), 0xabcd);
    // String MMIO (data_is_ptr requests of type COPY), both directions.
    let d8 = data(512, 7);
    g.rep_movs_to(base + 0x100, 8, &d8, false).unwrap();
    assert_eq!(g.rep_movs_from(base + 0x100, 8, 64, false).unwrap(), d8);
    let d4 = data(256, 9);
    g.rep_movs_to(base + 0x800, 4, &d4, true).unwrap();
    assert_eq!(g.rep_movs_from(base + 0x800, 4, 64, true).unwrap(), d4);
    let stats = finish(running);
    report!(
        "pci test: {stats:?}, bar accesses {}",
        pci.lock().unwrap().bar_accesses
    );
    assert!(stats.pci_config >= 8 && stats.mmio >= 5, "{stats:?}");
}
