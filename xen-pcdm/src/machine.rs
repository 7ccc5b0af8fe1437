//! The whole PC: every device of this crate registered on one server builder, as the
//! binary and the tests use it.

use std::sync::{Arc, Mutex};

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{DeviceModel, DomId, IsaIrq, Sbdf, ShutdownReason};
use xen_foreignmemory::ForeignMemory;

use crate::acpi_pm::AcpiPm;
use crate::blk::FileDisk;
use crate::fw_cfg::FwCfg;
use crate::pc::Chipset;
use crate::uart::{Uart, COM1, COM1_IRQ};
use crate::virtio_pci::VirtioBlk;
use crate::xen_ram::XenRam;

/// The PCI function of the virtio-blk disk (where QEMU puts its first disk on Xen).
pub const DISK_FUNCTION: (u8, u8) = (3, 0);

/// What a PC is made of.
pub struct Config {
    /// The guest.
    pub dom: DomId,
    /// Its RAM below 4 GiB in bytes (`memory` of its xl configuration).
    pub ram_bytes: u64,
    /// The raw image of the virtio-blk disk, if any.
    pub disk: Option<FileDisk>,
    /// Where the guest's serial output goes.
    pub serial_out: Box<dyn std::io::Write + Send>,
    /// fw_cfg's number of CPUs item.
    pub vcpus: u16,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("dom", &self.dom)
            .field("ram_bytes", &self.ram_bytes)
            .field("disk", &self.disk.is_some())
            .field("vcpus", &self.vcpus)
            .finish_non_exhaustive()
    }
}

/// The devices whose state outlives the run (shared with the server).
pub struct Machine {
    /// The UART (to feed it input).
    pub uart: Arc<Mutex<Uart>>,
    /// The chipset (its link routes).
    pub chipset: Arc<Mutex<Chipset>>,
    /// The disk, if any.
    pub disk: Option<Arc<Mutex<VirtioBlk<XenRam, FileDisk>>>>,
    /// The firmware configuration device.
    pub fw_cfg: Arc<Mutex<FwCfg>>,
    /// ACPI PM1a control (the guest's soft off).
    pub acpi_pm: Arc<Mutex<AcpiPm>>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("disk", &self.disk.is_some())
            .finish_non_exhaustive()
    }
}

/// The guest's RAM regions for DMA: below the VGA hole, and from the BIOS area to the end
/// of RAM (HVM guests of up to 3 GiB; above that, RAM moves above 4 GiB).
pub fn ram_regions(ram_bytes: u64) -> Vec<(u64, u64)> {
    let end = ram_bytes.min(0xf000_0000) & !0xfff;
    let mut r = vec![(0, 0xa_0000)];
    if end > 0xc_0000 {
        r.push((0xc_0000, end - 0xc_0000));
    }
    r
}

/// Registers the chipset, COM1, fw_cfg and (with a disk) the virtio-blk function on
/// `builder`.
pub fn register(
    builder: ServerBuilder,
    cfg: Config,
) -> xen_devicemodel::Result<(ServerBuilder, Machine)> {
    let chipset = Arc::new(Mutex::new(Chipset::new()));
    let irq = IsaIrq::new(COM1_IRQ)?;
    let uart = Arc::new(Mutex::new(Uart::new(COM1, irq, cfg.serial_out)));
    let mut fw = FwCfg::new();
    fw.set_item(crate::fw_cfg::NB_CPUS, cfg.vcpus.to_le_bytes().to_vec());
    fw.set_item(
        crate::fw_cfg::RAM_SIZE,
        cfg.ram_bytes.to_le_bytes().to_vec(),
    );
    // SeaBIOS on a "QEMU" machine takes RAM above 4 GiB from the CMOS unless fw_cfg has an
    // `etc/e820` table; Xen's CMOS has no such field (it reads as all-ones: a terabyte of RAM
    // that is not there). The table here only repeats the reservation of the BIOS's last
    // 256 KiB below 4 GiB; the RAM map itself comes from hvmloader.
    let mut e820 = Vec::with_capacity(20);
    e820.extend_from_slice(&0xfffc_0000u64.to_le_bytes());
    e820.extend_from_slice(&0x4_0000u64.to_le_bytes());
    e820.extend_from_slice(&2u32.to_le_bytes()); // E820_RESERVED
    fw.add_file("etc/e820", e820);
    let fw_cfg = Arc::new(Mutex::new(fw));
    let chipset_claims = lock(&chipset).claims();
    let uart_claims = lock(&uart).claims();
    let fw_claims = lock(&fw_cfg).claims();
    // The guest's soft off becomes a poweroff shutdown of the domain.
    let dm = DeviceModel::open()?;
    let dom = cfg.dom;
    let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(Box::new(move || {
        dm.shutdown(dom, ShutdownReason::Poweroff)
    }))));
    let pm_claims = lock(&acpi_pm).claims();
    let mut builder = builder
        .device(acpi_pm.clone(), pm_claims)
        .device(chipset.clone(), chipset_claims)
        .device(uart.clone(), uart_claims)
        .device(fw_cfg.clone(), fw_claims);
    let mut disk_dev = None;
    if let Some(disk) = cfg.disk {
        let fm = ForeignMemory::open().map_err(|e| {
            xen_devicemodel::Error::os("xen-pcdm foreign memory", Some(cfg.dom), e.errno())
        })?;
        let ram = XenRam::new(fm, cfg.dom, ram_regions(cfg.ram_bytes));
        let (d, f) = DISK_FUNCTION;
        let sbdf = Sbdf::new(0, 0, d, f)?;
        let dev = Arc::new(Mutex::new(VirtioBlk::new(sbdf, ram, disk, "xen-pcdm-disk")));
        let claims = lock(&dev).claims();
        builder = builder.device(dev.clone(), claims);
        disk_dev = Some(dev);
    }
    Ok((
        builder,
        Machine {
            uart,
            chipset,
            disk: disk_dev,
            fw_cfg,
            acpi_pm,
        },
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
