//! The newer privcmd fast paths (irqfd, ioeventfd: Linux 6.7; PCI GSI: Linux 6.12) against the
//! Xen test machine's kernel: `cargo xtask xen-test -p xen-hypercall fast_path`. Debian's kernels
//! are built without them (6.1 lacks the ioctls: `ENOTTY`), so what these tests show there is
//! the typed "not supported" a device model falls back on, and that probing changes nothing.

use core::ptr::NonNull;

use xen_hypercall::{DomId, Errno, Error, IoeventfdConfig, Privcmd};
use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_set_isa_irq_level};

fn privcmd() -> Privcmd {
    xen_testkit::require_xen();
    Privcmd::open().expect("open /dev/xen/privcmd")
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("osrelease")
        .trim()
        .to_owned()
}

/// The errno a kernel without the ioctl answers: 6.1 predates it (`ENOTTY`); newer kernels
/// built without `CONFIG_XEN_PRIVCMD_EVENTFD` / `CONFIG_XEN_ACPI` answer `EOPNOTSUPP`/`EINVAL`.
fn assert_not_supported(e: Error, op: &str, release: &str) {
    println!("{op}: {e}");
    assert!(
        matches!(e, Error::NotSupported { .. }),
        "{op}: expected NotSupported, got {e:?}"
    );
    assert!(e.is_not_supported());
    if release.starts_with("6.1.") {
        assert_eq!(e.errno(), Errno::ENOTTY, "{op} on Linux {release}");
    }
    // Debian's 6.12 has the ioctls but not CONFIG_XEN_PRIVCMD_EVENTFD behind them.
    if release.starts_with("6.12.") {
        assert_eq!(e.errno(), Errno::EOPNOTSUPP, "{op} on Linux {release}");
    }
}

/// Any domain id: an unrestricted handle passes every id to these ioctls.
const GUEST: DomId = DomId::new(1);

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn fast_path_irqfd_probe_and_assign() {
    let xen = privcmd();
    let release = kernel_release();
    let supported = xen.probe_irqfd(GUEST).expect("probe irqfd");
    println!("Linux {release}: irqfd supported: {supported}");
    let op = xen_dm_op {
        op: XEN_DMOP_set_isa_irq_level,
        ..Default::default()
    };
    match xen.irqfd(GUEST, &op) {
        Ok(irqfd) => {
            assert!(supported, "the probe said no, but assigning worked");
            irqfd.deassign().expect("deassign");
        }
        Err(e) => {
            assert!(!supported, "the probe said yes, but assigning failed: {e}");
            assert_not_supported(e, "irqfd assign", &release);
            assert_eq!(e.op(), "irqfd assign");
            assert_eq!(e.domain(), Some(GUEST));
        }
    }
    if release.starts_with("6.1.") || release.starts_with("6.12.") {
        assert!(!supported, "Debian's 6.1 and 6.12 have no irqfd");
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn fast_path_ioeventfd_probe_and_refusals() {
    let xen = privcmd();
    let release = kernel_release();
    let supported = xen.probe_ioeventfd(GUEST).expect("probe ioeventfd");
    println!("Linux {release}: ioeventfd supported: {supported}");
    let ports = [5u32];
    let config = IoeventfdConfig {
        domid: GUEST,
        addr: 0x0a00_0000,
        addr_len: 4,
        vq: 0,
        ports: &ports,
    };
    let mut stand_in = [0u8; 64];
    let page = NonNull::from(&mut stand_in).cast::<u8>();
    // Bad arguments are refused before any syscall, whatever the kernel.
    for (bad, why) in [
        (
            IoeventfdConfig {
                addr_len: 3,
                ..config
            },
            "addr_len",
        ),
        (
            IoeventfdConfig {
                ports: &[],
                ..config
            },
            "no ports",
        ),
        (
            IoeventfdConfig {
                addr: u64::MAX - 8,
                ..config
            },
            "overflow",
        ),
    ] {
        // SAFETY: refused before the syscall; `page` is never handed to the kernel.
        let e = unsafe { xen.ioeventfd(page, &bad) }.expect_err(why);
        assert!(matches!(e, Error::InvalidArgument { .. }), "{why}: {e:?}");
    }
    if supported {
        // Assigning needs a real ioreq page mapping (the device-model tests' business).
        return;
    }
    // SAFETY: this kernel lacks the ioctl (probed above), so it refuses the request before
    // looking at the (stand-in) ioreq page.
    let e = unsafe { xen.ioeventfd(page, &config) }.expect_err("no ioeventfd here");
    assert_not_supported(e, "ioeventfd assign", &release);
    if release.starts_with("6.1.") || release.starts_with("6.12.") {
        assert!(!supported, "Debian's 6.1 and 6.12 have no ioeventfd");
    }
}

/// dom0's PCI functions (`0000:00:1f.3`) with no driver bound, as (name, bus, device, function).
fn unbound_pci_functions() -> Vec<(String, u8, u8, u8)> {
    let mut v: Vec<(String, u8, u8, u8)> = std::fs::read_dir("/sys/bus/pci/devices")
        .expect("/sys/bus/pci/devices")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let (seg, rest) = name.split_once(':')?;
            let (bus, rest) = rest.split_once(':')?;
            let (dev, func) = rest.split_once('.')?;
            let unbound =
                std::fs::symlink_metadata(format!("/sys/bus/pci/devices/{name}/driver")).is_err();
            (seg == "0000" && unbound).then_some(())?;
            Some((
                name.clone(),
                u8::from_str_radix(bus, 16).ok()?,
                u8::from_str_radix(dev, 16).ok()?,
                u8::from_str_radix(func, 16).ok()?,
            ))
        })
        .collect();
    v.sort();
    v
}

/// Writes `value` to a sysfs file of xen-pciback's driver.
fn pciback(file: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(format!("/sys/bus/pci/drivers/pciback/{file}"), value)
}

/// `PCIDEV_GET_GSI` against one of dom0's PCI functions, as each kernel answers it. Linux 6.1
/// lacks the ioctl: the typed "not supported". Linux 6.12 asks xen-pciback (loaded in the
/// machine's dom0): a function pciback does not own is `ENODEV`; once it owns it, pciback
/// answers with the GSI it recorded when it seized the function, which Linux records for a PVH
/// dom0 only: the machine's dom0 is PV, so the answer is pciback's "no GSI" (-1, `EPERM`).
#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn fast_path_pcidev_get_gsi_of_a_dom0_device() {
    let xen = privcmd();
    let release = kernel_release();
    let funcs = unbound_pci_functions();
    // QEMU's q35 always has its host bridge, LPC, SATA and SMBus functions; dom0 loads no
    // driver for some of them.
    let (name, bus, dev, func) = funcs
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no PCI function without a driver in dom0"));
    let sbdf = name;
    let before = xen.pcidev_get_gsi(0, bus, dev, func);
    println!("Linux {release}: {sbdf} not owned by pciback: {before:?}");
    if release.starts_with("6.1.") {
        assert_not_supported(
            before.expect_err("6.1 has no PCIDEV_GET_GSI"),
            "pcidev_get_gsi",
            &release,
        );
        return;
    }
    assert!(
        release.starts_with("6.12."),
        "a kernel this test does not know yet: {release}"
    );
    let e = before.expect_err("pciback does not own the function yet");
    assert!(!e.is_not_supported(), "Linux 6.12 has the ioctl: {e:?}");
    assert_eq!(e.errno(), Errno::ENODEV, "{sbdf} not owned by pciback: {e}");
    assert_eq!(e.op(), "pcidev_get_gsi");

    pciback("new_slot", &sbdf).expect("pciback new_slot");
    pciback("bind", &sbdf).expect("bind the function to pciback");
    let owned = xen.pcidev_get_gsi(0, bus, dev, func);
    let _ = pciback("unbind", &sbdf);
    let _ = pciback("remove_slot", &sbdf);
    println!("Linux {release}: {sbdf} owned by pciback: {owned:?}");
    let pvh =
        std::fs::read_to_string("/sys/hypervisor/guest_type").is_ok_and(|t| t.trim() == "PVH");
    match owned {
        Ok(gsi) => {
            assert!(pvh, "a PV dom0 gets no GSI from pciback, yet got {gsi}");
            assert!(gsi < 24, "GSI {gsi} of {sbdf}: QEMU's IOAPIC has GSIs 0-23");
        }
        Err(e) => {
            assert!(!pvh, "a PVH dom0 gets the GSI: {e}");
            assert_eq!(e.errno(), Errno::EPERM, "pciback's -1 for a PV dom0: {e}");
        }
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn fast_path_pcidev_get_gsi_on_an_older_kernel() {
    let xen = privcmd();
    let release = kernel_release();
    let e = xen
        .pcidev_get_gsi(0, 0, 32, 0)
        .expect_err("device 32 does not exist");
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    match xen.pcidev_get_gsi(0, 0, 0, 0) {
        Ok(gsi) => println!("Linux {release}: GSI of 0000:00:00.0: {gsi}"),
        Err(e) if release.starts_with("6.1.") => {
            assert_not_supported(e, "pcidev_get_gsi", &release)
        }
        // Linux 6.12 with a device that xen-pciback does not own: an OS error, not a panic.
        Err(e) => println!("Linux {release}: pcidev_get_gsi 0000:00:00.0: {e}"),
    }
}
