//! Linux on xen-pcdm's PC (`cargo xtask xen-test -p xen-pcdm linux`): hvmloader and
//! SeaBIOS boot a boot sector from the virtio disk, which loads dom0's own kernel, an
//! initramfs and the command line from fw_cfg by DMA (the Linux boot protocol, 16-bit
//! entry); the guest's init prints on ttyS0, loads the virtio modules, reads the disk,
//! writes to it, and powers off.
//!
//! What it asserts: Linux boots to user space (its init prints a marker on ttyS0); it
//! reads the disk's magic and a known MiB whose MD5 matches dom0's; its write lands in the
//! image file; `/proc/interrupts` shows ttyS0 and the disk's queue interrupt (MSI-X,
//! through a Xen pirq) counting. A second boot with `pci=nomsi` does the same on INTx: the
//! disk's INTA# (`set_pci_intx_level`) on an IO-APIC line. The boot pieces (boot sector,
//! setup header, initramfs, command line) are `xen_pcdm::linux`'s. Each boot reports the time to user space, the time of a 64 MiB
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
use xen_pcdm::linux::{self, LinuxBoot};
use xen_pcdm::machine::{self, Config};
use xen_testkit::{require_xen, Guest, GuestConfig};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-pcdm linux: {}", format!($($t)*));
    }};
}

const MEM_MIB: u32 = 256;
const DISK_MAGIC: &[u8] = b"XENPCDM-DISK-MAGIC-0123456789";
const WRITTEN: &str = "GUEST-WROTE-THIS-PATTERN";
const WRITE_SECTOR: u64 = 2048;
const PATTERN_AT: u64 = 8 << 20;

/// What the guest's init does once the disk is there.
const INIT_BODY: &str = r#"echo XENPCDM-READ $(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -c 29)
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

/// The peak resident memory of this process (`VmHWM`, KiB): the device model runs in it.
fn vm_hwm_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// How the disk interrupts the guest.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Irq {
    /// MSI-X (Linux's default): a `virtio0-req.0` vector, sent through a Xen pirq.
    Msix,
    /// INTx (`pci=nomsi`): INTA# (`set_pci_intx_level`), an IO-APIC line `virtio0`.
    Intx,
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn xen_linux_boots_to_user_space_on_our_pc() {
    boot_linux(Irq::Msix, &[]);
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn xen_linux_disk_works_on_intx_with_pci_nomsi() {
    boot_linux(Irq::Intx, &["pci=nomsi"]);
}

/// Boots the guest with `extra_cmdline`, checks what it did, reports the numbers.
fn boot_linux(irq: Irq, extra_cmdline: &[&str]) {
    require_xen();
    report!("---- boot with {irq:?} (extra command line {extra_cmdline:?})");
    let payload = std::env::var("XEN_RS_PAYLOAD_DIR").unwrap_or("/opt/xen-rs".into());
    let bz = std::fs::read(format!("{payload}/linux-guest.bzImage")).unwrap();
    let initrd = linux::dom0_initramfs(&linux::Initramfs {
        init: linux::init_script(INIT_BODY),
        extra: vec![],
    })
    .unwrap();
    let boot = LinuxBoot::new(
        &bz,
        initrd,
        &linux::cmdline(extra_cmdline),
        u64::from(MEM_MIB) << 20,
    )
    .unwrap();
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
        f.write_all_at(&boot.boot_sector(), 0).unwrap();
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
    boot.install(&mut m.fw_cfg.lock().unwrap());
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
        if init_at.is_none() && s.contains(linux::INIT_MARKER) {
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
    let disk_line = |name: &str| {
        s.lines()
            .filter_map(|l| l.strip_prefix("XENPCDM-IRQ "))
            .find(|l| l.trim_end().ends_with(name))
            .map(str::to_owned)
    };
    let disk_name = match irq {
        Irq::Msix => "virtio0-req.0",
        Irq::Intx => "virtio0",
    };
    let (uart_irqs, disk_irqs) = (irq_count("ttyS0"), irq_count(disk_name));
    let line = disk_line(disk_name).unwrap_or_default();
    let routes: Vec<Option<u8>> = {
        let c = m.chipset.lock().unwrap();
        (0..4).map(|i| c.route(i)).collect()
    };
    report!(
        "interrupts: ttyS0 {uart_irqs:?}, {disk_name} {disk_irqs:?} ({}); sent by the device: \
         {} MSI, {} INTx; PIIX3 routes (links A-D) {routes:?}",
        line.trim(),
        disk.stats().msi,
        disk.stats().intx
    );
    report!(
        "numbers: boot to user space (unpause -> init marker) {:.1} s; requests served {stats}; \
         peak RSS of the test process serving the guest (VmHWM) {} KiB",
        init_at.map_or(f64::NAN, |d| d.as_secs_f64()),
        vm_hwm_kib().map_or("?".into(), |k| k.to_string())
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
        "virtio interrupts counted on {disk_name}"
    );
    match irq {
        Irq::Msix => assert!(disk.stats().msi > 0, "the disk sent MSI-X messages"),
        Irq::Intx => {
            // An IO-APIC GSI; Xen's HVM guests name it "xen-pirq -ioapic-level".
            assert!(
                line.to_ascii_lowercase().contains("ioapic") || line.contains("IO-APIC"),
                "INTx on an IO-APIC line: {line}"
            );
            assert!(disk.stats().intx > 0, "the disk raised INTA#");
            assert_eq!(disk.stats().msi, 0, "no MSI with pci=nomsi");
        }
    }
    assert!(soft_off, "poweroff reached ACPI PM1a control");
    assert!(gone, "the domain is shut down after poweroff");
    assert!(r.is_ok(), "the device model's run ended cleanly");
    assert!(
        ended_itself,
        "the guest's poweroff ended the device model's run"
    );
    let _ = std::fs::remove_file(&path);
}
