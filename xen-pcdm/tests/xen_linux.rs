//! Linux on xen-pcdm's PC (`cargo xtask xen-test -p xen-pcdm linux`): hvmloader and
//! SeaBIOS boot a boot sector from the virtio disk, which loads dom0's own kernel, an
//! initramfs and the command line from fw_cfg by DMA (the Linux boot protocol, 16-bit
//! entry); the guest's init prints on ttyS0, loads the virtio modules, reads the disk,
//! writes to it, and powers off.
//!
//! What it asserts: Linux boots to user space (its init prints a marker on ttyS0); it
//! reads the disk's magic and a known MiB whose MD5 matches dom0's; its write lands in the
//! image file; `/proc/interrupts` shows ttyS0 and the disk's queue interrupt (MSI-X,
//! through a Xen pirq) counting. It reports the time to user space, the time of a 64 MiB
//! sequential O_DIRECT read by the guest's clock, and the requests the device served
//! (never asserted: the machine's speed varies with the host's load).
#![allow(missing_docs)]

mod common;
use common::Out;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{BufIoreqMode, DomId};
use xen_pcdm::blk::FileDisk;
use xen_pcdm::fw_cfg;
use xen_pcdm::machine::{self, Config};
use xen_testkit::{require_xen, Guest, GuestConfig};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-pcdm linux: {}", format!($($t)*));
    }};
}

const SETUP_ADDR: u32 = 0x9_0000;
const CMDLINE_ADDR: u32 = 0x9_e000;
const KERNEL_ADDR: u32 = 0x10_0000;
const INITRD_ADDR: u32 = 0x800_0000;
const MEM_MIB: u32 = 256;
const DISK_MAGIC: &[u8] = b"XENPCDM-DISK-MAGIC-0123456789";
const WRITTEN: &str = "GUEST-WROTE-THIS-PATTERN";
const WRITE_SECTOR: u64 = 2048;
const PATTERN_AT: u64 = 8 << 20;

/// A boot sector that loads setup, kernel, initrd and command line through fw_cfg DMA
/// (one descriptor each, in the sector), then enters the kernel's real-mode setup.
fn boot_sector(lens: [(u16, u32, u32); 4]) -> Vec<u8> {
    let mut code: Vec<u8> = vec![
        0xfa, // cli
        0xfc, // cld
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0x8e, 0xd0, // mov ss, ax
        0xbc, 0x00, 0x7c, // mov sp, 0x7c00
        0x66, 0x31, 0xc0, // xor eax, eax
        0xba, 0x14, 0x05, // mov dx, 0x514
        0x66, 0xef, // out dx, eax (high half: 0)
    ];
    // Four "mov eax, desc; mov dx, 0x518; out dx, eax": 11 bytes each; then the jump: 27.
    let tail = 4 * 11 + 27;
    let desc0 = 0x7c00 + (code.len() + tail) as u32;
    for i in 0..4u32 {
        let d = (desc0 + 16 * i).swap_bytes().to_le_bytes();
        code.extend_from_slice(&[
            0x66, 0xb8, d[0], d[1], d[2], d[3], 0xba, 0x18, 0x05, 0x66, 0xef,
        ]);
    }
    code.extend_from_slice(&[
        0xb8, 0x00, 0x90, // mov ax, 0x9000
        0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xe0, 0x8e, 0xe8, 0x8e, 0xd0, // ds es fs gs ss
        0xbc, 0x00, 0xe0, // mov sp, 0xe000
        0xea, 0x00, 0x00, 0x20, 0x90, // jmp 0x9020:0000
        0x90, 0x90, 0x90, 0x90, 0x90, 0x90, // padding to the descriptors
    ]);
    assert_eq!(0x7c00 + code.len() as u32, desc0);
    for (key, len, addr) in lens {
        let control = (u32::from(key) << 16) | 0x08 | 0x02;
        code.extend_from_slice(&control.to_be_bytes());
        code.extend_from_slice(&len.to_be_bytes());
        code.extend_from_slice(&u64::from(addr).to_be_bytes());
    }
    let mut s = vec![0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// A `newc` cpio archive of `files` (path, mode, data).
fn cpio(files: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |name: &str, mode: u32, data: &[u8], ino: usize| {
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, data)) in files.iter().enumerate() {
        entry(name, *mode, data, i + 1);
    }
    entry("TRAILER!!!", 0, &[], 0);
    out
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo XENPCDM-LINUX-INIT uptime $(cut -d' ' -f1 /proc/uptime)
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod /lib/modules/$m.ko || echo "insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo XENPCDM-READ $(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -c 29)
echo XENPCDM-SUM $(dd if=/dev/vda bs=1M skip=8 count=1 iflag=direct 2>/dev/null | md5sum)
echo -n GUEST-WROTE-THIS-PATTERN | dd of=/dev/vda bs=512 seek=2048 conv=sync,fsync 2>/dev/null
echo XENPCDM-WROTE
t0=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/vda of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null
echo XENPCDM-SEQ $t0 $(cut -d' ' -f1 /proc/uptime)
grep -E "ttyS0|virtio" /proc/interrupts | sed 's/^/XENPCDM-IRQ /'
echo XENPCDM-LINUX-DONE
poweroff -f
"#;

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn xen_linux_boots_to_user_space_on_our_pc() {
    require_xen();
    let payload = std::env::var("XEN_RS_PAYLOAD_DIR").unwrap_or("/opt/xen-rs".into());
    let bz = std::fs::read(format!("{payload}/linux-guest.bzImage")).unwrap();
    assert_eq!(&bz[0x202..0x206], b"HdrS", "a bzImage");
    let sects = match bz[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let setup_len = (sects + 1) * 512;
    let (mut setup, kernel) = (bz[..setup_len].to_vec(), bz[setup_len..].to_vec());
    // The guest's initramfs: busybox, the virtio modules, the init script.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = release.trim();
    let mut files: Vec<(&str, u32, Vec<u8>)> = vec![
        ("bin", 0o040755, vec![]),
        ("lib", 0o040755, vec![]),
        ("lib/modules", 0o040755, vec![]),
        ("init", 0o100755, INIT.as_bytes().to_vec()),
    ];
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .expect("dom0's busybox");
    files.push(("bin/busybox", 0o100755, busybox));
    let mods = [
        ("virtio", "virtio"),
        ("virtio_ring", "virtio"),
        ("virtio_pci_modern_dev", "virtio"),
        ("virtio_pci_legacy_dev", "virtio"),
        ("virtio_pci", "virtio"),
        ("virtio_blk", "block"),
    ];
    let names: Vec<String> = mods
        .iter()
        .map(|(m, _)| format!("lib/modules/{m}.ko"))
        .collect();
    for ((m, dir), name) in mods.iter().zip(&names) {
        let path = format!("/lib/modules/{release}/kernel/drivers/{dir}/{m}.ko");
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        files.push((name.as_str(), 0o100644, data));
    }
    let initrd = cpio(&files);
    let cmdline =
        b"console=ttyS0 xen_emul_unplug=never rdinit=/init panic=-1 quiet loglevel=1\0".to_vec();
    // The boot header, as a boot loader fills it in.
    setup[0x210] = 0xff; // type_of_loader
    setup[0x211] |= 0x80; // CAN_USE_HEAP
    setup[0x224..0x226].copy_from_slice(&0xde00u16.to_le_bytes()); // heap_end_ptr
    setup[0x228..0x22c].copy_from_slice(&CMDLINE_ADDR.to_le_bytes());
    setup[0x218..0x21c].copy_from_slice(&INITRD_ADDR.to_le_bytes());
    setup[0x21c..0x220].copy_from_slice(&(initrd.len() as u32).to_le_bytes());
    let lens = [
        (fw_cfg::SETUP_DATA, setup.len() as u32, SETUP_ADDR),
        (fw_cfg::KERNEL_DATA, kernel.len() as u32, KERNEL_ADDR),
        (fw_cfg::INITRD_DATA, initrd.len() as u32, INITRD_ADDR),
        (fw_cfg::CMDLINE_DATA, cmdline.len() as u32, CMDLINE_ADDR),
    ];
    // A known MiB the guest reads back; its MD5 as dom0's busybox computes it.
    let pattern: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let pattern_sum = {
        let p = std::env::temp_dir().join(format!("xen-pcdm-pattern-{}", std::process::id()));
        std::fs::write(&p, &pattern).unwrap();
        let o = std::process::Command::new("busybox")
            .args(["md5sum", p.to_str().unwrap()])
            .output()
            .expect("dom0's busybox md5sum");
        let _ = std::fs::remove_file(&p);
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(pattern_sum.len(), 32, "an MD5 of the pattern");
    // The disk: the boot sector, a magic in sector 1, 64 MiB in all.
    let path = std::env::temp_dir().join(format!("xen-pcdm-linux-{}.img", std::process::id()));
    {
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&boot_sector(lens), 0).unwrap();
        f.write_all_at(DISK_MAGIC, 512).unwrap();
        f.write_all_at(&pattern, PATTERN_AT).unwrap();
    }

    let g = Guest::create(
        &GuestConfig::hvm_hvmloader()
            .memory_mib(MEM_MIB)
            .extra("tsc_mode = \"native\"")
            .paused(true),
    )
    .unwrap();
    let dom = DomId::new(g.domid());
    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let cfg = Config {
        dom,
        ram_bytes: u64::from(MEM_MIB) << 20,
        disk: Some(FileDisk::open(&path).unwrap()),
        serial_out: Box::new(Out(console.clone())),
        vcpus: 1,
    };
    let builder = ServerBuilder::new(dom).buffered(BufIoreqMode::Atomic);
    let (builder, m) = machine::register(builder, cfg).unwrap();
    {
        let mut f = m.fw_cfg.lock().unwrap();
        f.set_item(fw_cfg::SETUP_DATA, setup);
        f.set_item(fw_cfg::KERNEL_DATA, kernel);
        f.set_item(fw_cfg::INITRD_DATA, initrd);
        f.set_item(fw_cfg::CMDLINE_DATA, cmdline);
    }
    let mut server = builder.build().unwrap();
    let stop = server.stop_handle();
    m.acpi_pm
        .lock()
        .unwrap()
        .stop_on_power_off(server.stop_handle());
    let t = std::thread::spawn(move || (server.run(), server));
    let t0 = Instant::now();
    g.unpause().unwrap();
    let text = || String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    let mut init_at = None;
    let mut done = false;
    let mut shown = 0;
    while !done && t0.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(500));
        let s = text();
        // Stream the guest's console as it arrives (whole lines).
        if let Some(end) = s[shown..].rfind('\n') {
            for l in s[shown..shown + end].lines() {
                report!("{:6.1} s | {l}", t0.elapsed().as_secs_f64());
            }
            shown += end + 1;
        }
        let f = m.fw_cfg.lock().unwrap().dma_errors;
        if f > 0 && shown == 0 {
            report!("fw_cfg DMA errors: {f}");
        }
        if init_at.is_none() && s.contains("XENPCDM-LINUX-INIT") {
            init_at = Some(t0.elapsed());
        }
        done = s.contains("XENPCDM-LINUX-DONE");
        if init_at.is_some_and(|t| t0.elapsed() > t + Duration::from_secs(150)) {
            break;
        }
    }
    // poweroff: the domain goes away.
    // The domain is shut down (state 's') or already gone.
    let mut gone = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let o = std::process::Command::new("xl")
            .args(["list", &g.domid().to_string()])
            .output();
        let state = match &o {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(4))
                .unwrap_or_default()
                .to_owned(),
            _ => "gone".to_owned(),
        };
        if state == "gone" || state.contains('s') {
            report!("domain state after poweroff: {state}");
            gone = true;
            break;
        }
    }
    let soft_off = m.acpi_pm.lock().unwrap().power_off_requested();
    report!("guest asked for soft off: {soft_off}; the domain is shut down: {gone}");
    let ended_itself = t.is_finished();
    stop.stop();
    let (r, server) = t.join().unwrap();
    let stats = server.stats();
    drop(server);
    let s = text();
    for l in s[shown..].lines() {
        report!("| {l}");
    }
    let disk = m.disk.as_ref().unwrap().lock().unwrap();
    report!(
        "served {stats}; init after {init_at:?}; disk {:?} status {:#x} broken {:?}; fw_cfg DMA errors {}",
        disk.stats(),
        disk.status(),
        disk.broken(),
        m.fw_cfg.lock().unwrap().dma_errors
    );
    report!("device model's run ended: {r:?} (by itself at the guest's poweroff: {ended_itself})");
    let want = format!("XENPCDM-READ {}", String::from_utf8_lossy(DISK_MAGIC));
    let f = std::fs::File::open(&path).unwrap();
    let mut back = vec![0u8; WRITTEN.len()];
    f.read_exact_at(&mut back, WRITE_SECTOR * 512).unwrap();
    report!(
        "init finished: {done}; disk read by the guest: {}; guest's write in the image: {}",
        s.contains(&want),
        back == WRITTEN.as_bytes()
    );
    // The 64 MiB read's start and end by the guest's clock.
    let seq: Vec<f64> = s
        .lines()
        .find_map(|l| l.strip_prefix("XENPCDM-SEQ "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if let [a, b] = seq[..] {
        report!(
            "64 MiB sequential O_DIRECT read (1 MiB requests): {:.2} s, {:.1} MB/s",
            b - a,
            64.0 * 1.048_576 / (b - a).max(0.01)
        );
    }
    // /proc/interrupts: the first count after "N:" (one vCPU).
    let irq_count = |name: &str| -> Option<u64> {
        s.lines()
            .filter_map(|l| l.strip_prefix("XENPCDM-IRQ "))
            .find(|l| l.trim_end().ends_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
    };
    let (uart_irqs, disk_irqs) = (irq_count("ttyS0"), irq_count("virtio0-req.0"));
    report!(
        "interrupts: ttyS0 {uart_irqs:?}, virtio0-req.0 {disk_irqs:?}; boot to user space {:?}",
        init_at
    );
    assert!(
        init_at.is_some(),
        "the guest's init did not print its marker"
    );
    assert!(s.contains(&want), "the guest read the disk's magic");
    let sum_line = format!("XENPCDM-SUM {pattern_sum}");
    assert!(s.contains(&sum_line), "the guest's checksum of the pattern");
    assert_eq!(
        back,
        WRITTEN.as_bytes(),
        "the guest's write is in the image"
    );
    assert!(done, "the guest's init finished");
    assert!(uart_irqs.is_some_and(|n| n > 0), "UART interrupts counted");
    assert!(
        disk_irqs.is_some_and(|n| n > 0),
        "virtio interrupts counted"
    );
    assert!(soft_off, "poweroff reached ACPI PM1a control");
    assert!(gone, "the domain is shut down after poweroff");
    assert!(r.is_ok(), "the device model's run ended cleanly");
    assert!(
        ended_itself,
        "the guest's poweroff ended the device model's run"
    );
    let _ = std::fs::remove_file(&path);
}
