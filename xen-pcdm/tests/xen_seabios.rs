//! hvmloader and SeaBIOS on xen-pcdm's PC (`cargo xtask xen-test -p xen-pcdm seabios`):
//! SeaBIOS takes the chipset for QEMU's i440FX, hvmloader's PIRQ routes reach Xen through
//! the PIIX3, and SeaBIOS boots the virtio-blk disk: the boot sector it read through our
//! device prints a marker on Xen's debug port.
#![allow(missing_docs)]

mod common;
use common::Out;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_devicemodel::server::{Claim, Device, ServerBuilder};
use xen_devicemodel::{BufIoreqMode, DomId};
use xen_pcdm::blk::FileDisk;
use xen_pcdm::machine::{self, Config};
use xen_testkit::{require_xen, xl, Guest, GuestConfig};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-pcdm seabios: {}", format!($($t)*));
    }};
}

const MARKER: &str = "XENPCDM-BOOT-SECTOR";

/// A boot sector that prints MARKER to port 0xe9 and halts (16-bit real mode at 0x7c00).
fn boot_sector() -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0xfa, // cli
        0xfc, // cld
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xbe, 0x00, 0x00, // mov si, msg (patched below)
        // l:
        0xac, // lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x04, // jz done
        0xe6, 0xe9, // out 0xe9, al
        0xeb, 0xf7, // jmp l
        // done:
        0xf4, // hlt
        0xeb, 0xfd, // jmp done
    ];
    let msg = 0x7c00u16 + code.len() as u16;
    code[7..9].copy_from_slice(&msg.to_le_bytes());
    code.extend_from_slice(MARKER.as_bytes());
    code.extend_from_slice(b"\n\0");
    let mut s = vec![0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// SeaBIOS's early log (before it moves to Xen's port 0xe9).
#[derive(Default)]
struct DebugCon(Vec<u8>);

impl Device for DebugCon {
    fn port_write(&mut self, _port: u16, _size: u8, value: u32) {
        if self.0.len() < 1 << 20 {
            self.0.push(value as u8);
        }
    }
    fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
        0xe9
    }
}

fn guest_lines(dom: u16) -> Vec<String> {
    let tag = format!("(d{dom})");
    xl::dmesg()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.find(&tag).map(|i| l[i + tag.len()..].trim().to_string()))
        .collect()
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn xen_seabios_boots_the_virtio_disk_on_our_pc() {
    require_xen();
    let path = std::env::temp_dir().join(format!("xen-pcdm-boot-{}.img", std::process::id()));
    let mut image = vec![0u8; 1 << 20];
    image[..512].copy_from_slice(&boot_sector());
    std::fs::write(&path, &image).unwrap();
    let mem_mib = 64u32;
    let g = Guest::create(
        &GuestConfig::hvm_hvmloader()
            .memory_mib(mem_mib)
            .paused(true),
    )
    .unwrap();
    let dom = DomId::new(g.domid());
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let cfg = Config {
        dom,
        ram_bytes: u64::from(mem_mib) << 20,
        disk: Some(FileDisk::open(&path).unwrap()),
        serial_out: Box::new(Out(out.clone())),
        vcpus: 1,
    };
    let debugcon = Arc::new(Mutex::new(DebugCon::default()));
    let builder = ServerBuilder::new(dom)
        .buffered(BufIoreqMode::Atomic)
        .device(debugcon.clone(), [Claim::Ports(0x402..=0x402)]);
    let (builder, m) = machine::register(builder, cfg).unwrap();
    let mut server = builder.build().unwrap();
    let stop = server.stop_handle();
    let t = std::thread::spawn(move || (server.run(), server));
    let t0 = Instant::now();
    g.unpause().unwrap();
    let mut seen = false;
    while !seen && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(500));
        seen = guest_lines(g.domid()).iter().any(|l| l.contains(MARKER));
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.stop();
    let (r, server) = t.join().unwrap();
    let stats = server.stats();
    let last_err = server.last_device_error();
    drop(server);
    let lines = guest_lines(g.domid());
    let early = String::from_utf8_lossy(&debugcon.lock().unwrap().0).into_owned();
    for l in early.lines().chain(lines.iter().map(String::as_str)) {
        if l.contains("QEMU")
            || l.contains("irtio")
            || l.contains("oot")
            || l.contains("PCI")
            || l.contains("fw_cfg")
            || l.contains(MARKER)
        {
            report!("| {l}");
        }
    }
    let disk = m.disk.as_ref().unwrap().lock().unwrap();
    let routes: Vec<Option<u8>> = (0..4).map(|i| m.chipset.lock().unwrap().route(i)).collect();
    report!(
        "served {stats} in {secs:.1} s; disk {:?}, status {:#x}, broken {:?}, bar {:x?}; \
         PIRQ routes {routes:?}; uart bytes {}; last device error {last_err:?}",
        disk.stats(),
        disk.status(),
        disk.broken(),
        disk.bar(),
        m.uart.lock().unwrap().tx_bytes
    );
    r.unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(seen, "no boot-sector marker within 120 s");
    assert!(disk.stats().reads > 0);
    assert!(
        routes.iter().any(Option::is_some),
        "hvmloader routed no PIRQ"
    );
}
