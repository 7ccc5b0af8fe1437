//! [`Ctx`]: what a device can do while it serves a request (interrupts, DMA, claims,
//! errors), and [`Interrupts`], the part of it that may leave the callback.

use std::sync::Arc;

use super::device::{Claim, Key};
use super::dispatch::GuestMemory;
use super::fast::{self, Doorbell, Doorbells, FastPath, FastPaths, IoreqPages};
use crate::{
    DeviceModel, DomId, Errno, Error, IntxPin, IoreqServer, IsaIrq, PciLink, Result, Sbdf,
};

/// The most claims one server holds (registered and claimed at run time together). A device
/// that claims without releasing gets `E2BIG` past it, not an ever-growing list.
pub const MAX_CLAIMS: usize = 1024;

/// Interrupt lines and MSIs of one guest: a [`DeviceModel`] clone and the domain. `Clone`,
/// `Send` and `Sync`: keep one in a thread of your own (a UART's input thread raising its
/// receive interrupt, a disk's completion thread sending an MSI). Each call is one dm_op.
#[derive(Debug, Clone)]
pub struct Interrupts {
    pub(crate) dm: DeviceModel,
    pub(crate) dom: DomId,
    /// What the server learned about the kernel's irqfd (shared by every clone).
    pub(crate) fast: Arc<FastPaths>,
}

impl Interrupts {
    /// The interrupts of `dom` through `dm`.
    pub fn new(dm: DeviceModel, dom: DomId) -> Interrupts {
        Interrupts::with_fast(dm, dom, Arc::default())
    }

    pub(crate) fn with_fast(dm: DeviceModel, dom: DomId, fast: Arc<FastPaths>) -> Interrupts {
        Interrupts { dm, dom, fast }
    }

    /// The guest.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// [`DeviceModel::set_isa_irq_level`] for this guest.
    pub fn set_isa_irq_level(&self, irq: IsaIrq, asserted: bool) -> Result<()> {
        self.dm.set_isa_irq_level(self.dom, irq, asserted)
    }

    /// [`DeviceModel::set_pci_intx_level`] for this guest.
    pub fn set_pci_intx_level(&self, dev: Sbdf, pin: IntxPin, asserted: bool) -> Result<()> {
        self.dm.set_pci_intx_level(self.dom, dev, pin, asserted)
    }

    /// [`DeviceModel::inject_msi`] for this guest.
    pub fn inject_msi(&self, addr: u64, data: u32) -> Result<()> {
        self.dm.inject_msi(self.dom, addr, data)
    }

    /// [`DeviceModel::set_pci_link_route`] for this guest.
    pub fn set_pci_link_route(&self, link: PciLink, irq: Option<IsaIrq>) -> Result<()> {
        self.dm.set_pci_link_route(self.dom, link, irq)
    }
}

/// What the loop does for a device besides calling it: interrupts and range claims (a trait
/// so the dispatch logic can be tested without Xen).
pub(crate) trait Platform {
    fn domid(&self) -> DomId;
    fn interrupts(&self) -> Option<Interrupts>;
    fn set_isa_irq_level(&self, irq: IsaIrq, asserted: bool) -> Result<()>;
    fn set_pci_intx_level(&self, dev: Sbdf, pin: IntxPin, asserted: bool) -> Result<()>;
    fn inject_msi(&self, addr: u64, data: u32) -> Result<()>;
    fn set_pci_link_route(&self, link: PciLink, irq: Option<IsaIrq>) -> Result<()>;
    fn map(&self, claim: &Claim) -> Result<()>;
    fn unmap(&self, claim: &Claim) -> Result<()>;
    /// The kernel's ioeventfd for `bell`, or `None` when the loop serves it.
    fn ioeventfd(&self, bell: &Doorbell) -> Result<Option<xen_hypercall::Ioeventfd>> {
        let _ = bell;
        Ok(None)
    }
}

/// The platform of a server in Xen: its ioreq server (claims) and its handle (interrupts).
pub(crate) struct XenPlatform {
    pub(crate) server: IoreqServer,
    /// What was learned about the kernel's fast paths.
    pub(crate) fast: Arc<FastPaths>,
    /// The ioreq page and ports, for the kernel's ioeventfd.
    pub(crate) pages: IoreqPages,
}

impl Platform for XenPlatform {
    fn domid(&self) -> DomId {
        self.server.domid()
    }
    fn interrupts(&self) -> Option<Interrupts> {
        Some(Interrupts::with_fast(
            self.server.device_model().clone(),
            self.server.domid(),
            self.fast.clone(),
        ))
    }
    fn set_isa_irq_level(&self, irq: IsaIrq, asserted: bool) -> Result<()> {
        let s = &self.server;
        s.device_model().set_isa_irq_level(s.domid(), irq, asserted)
    }
    fn set_pci_intx_level(&self, dev: Sbdf, pin: IntxPin, asserted: bool) -> Result<()> {
        let s = &self.server;
        s.device_model()
            .set_pci_intx_level(s.domid(), dev, pin, asserted)
    }
    fn inject_msi(&self, addr: u64, data: u32) -> Result<()> {
        let s = &self.server;
        s.device_model().inject_msi(s.domid(), addr, data)
    }
    fn set_pci_link_route(&self, link: PciLink, irq: Option<IsaIrq>) -> Result<()> {
        let s = &self.server;
        s.device_model().set_pci_link_route(s.domid(), link, irq)
    }
    fn map(&self, claim: &Claim) -> Result<()> {
        match claim {
            Claim::Ports(r) => self.server.map_port_range(r.clone()),
            Claim::Mmio(r) => self.server.map_mmio_range(r.clone()),
            Claim::Pci(s) => self.server.map_pci(*s),
        }
    }
    fn unmap(&self, claim: &Claim) -> Result<()> {
        match claim {
            Claim::Ports(r) => self.server.unmap_port_range(r.clone()),
            Claim::Mmio(r) => self.server.unmap_mmio_range(r.clone()),
            Claim::Pci(s) => self.server.unmap_pci(*s),
        }
    }
    fn ioeventfd(&self, bell: &Doorbell) -> Result<Option<xen_hypercall::Ioeventfd>> {
        let s = &self.server;
        fast::ioeventfd(s.device_model(), s.domid(), &self.pages, &self.fast, bell)
    }
}

/// No platform: interrupts and claims fail with `ENODEV` (for tests of the dispatch alone).
pub(crate) struct NoPlatform(pub(crate) DomId);

impl Platform for NoPlatform {
    fn domid(&self) -> DomId {
        self.0
    }
    fn interrupts(&self) -> Option<Interrupts> {
        None
    }
    fn set_isa_irq_level(&self, _: IsaIrq, _: bool) -> Result<()> {
        Err(Error::os(
            "ioreq server isa irq",
            Some(self.0),
            Errno::ENODEV,
        ))
    }
    fn set_pci_intx_level(&self, _: Sbdf, _: IntxPin, _: bool) -> Result<()> {
        Err(Error::os("ioreq server intx", Some(self.0), Errno::ENODEV))
    }
    fn inject_msi(&self, _: u64, _: u32) -> Result<()> {
        Err(Error::os("ioreq server msi", Some(self.0), Errno::ENODEV))
    }
    fn set_pci_link_route(&self, _: PciLink, _: Option<IsaIrq>) -> Result<()> {
        Err(Error::os("ioreq server link", Some(self.0), Errno::ENODEV))
    }
    fn map(&self, _: &Claim) -> Result<()> {
        Err(Error::os("ioreq server claim", Some(self.0), Errno::ENODEV))
    }
    fn unmap(&self, _: &Claim) -> Result<()> {
        Err(Error::os(
            "ioreq server release",
            Some(self.0),
            Errno::ENODEV,
        ))
    }
}

/// Errors devices reported, kept by the dispatch.
#[derive(Debug, Default)]
pub(crate) struct DeviceErrors {
    /// Errors reported with [`Ctx::report`] (and fatal ones).
    pub(crate) count: u64,
    /// The last one reported.
    pub(crate) last: Option<Error>,
    /// The first fatal one ([`Ctx::fail`]): the loop returns it.
    pub(crate) fatal: Option<Error>,
}

/// What a device can do from inside [`Device::access`](super::Device::access): raise its
/// interrupts, read and write guest memory (DMA), claim and release ranges (a BAR that
/// moves), learn which guest and vCPU it serves, and report errors. Valid for one access; no
/// heap allocation in any of its methods except [`Ctx::claim`] (which may grow the claim list).
pub struct Ctx<'a> {
    pub(crate) plat: &'a dyn Platform,
    pub(crate) mem: &'a mut dyn GuestMemory,
    pub(crate) keys: &'a mut Vec<(Key, usize)>,
    pub(crate) device: usize,
    pub(crate) vcpu: Option<u32>,
    pub(crate) errors: &'a mut DeviceErrors,
    pub(crate) bells: &'a mut Doorbells,
}

impl Ctx<'_> {
    /// The guest served.
    pub fn domid(&self) -> DomId {
        self.plat.domid()
    }

    /// The vCPU whose request this is; `None` for a buffered write (Xen does not say which
    /// vCPU made it).
    pub fn vcpu(&self) -> Option<u32> {
        self.vcpu
    }

    /// Sets the level of ISA IRQ `irq` (`XEN_DMOP_set_isa_irq_level`).
    pub fn set_isa_irq_level(&mut self, irq: IsaIrq, asserted: bool) -> Result<()> {
        self.plat.set_isa_irq_level(irq, asserted)
    }

    /// Sets the level of PCI function `dev`'s pin `pin` (`XEN_DMOP_set_pci_intx_level`).
    pub fn set_pci_intx_level(&mut self, dev: Sbdf, pin: IntxPin, asserted: bool) -> Result<()> {
        self.plat.set_pci_intx_level(dev, pin, asserted)
    }

    /// Sends an MSI: `data` written to `addr` (`XEN_DMOP_inject_msi`).
    pub fn inject_msi(&mut self, addr: u64, data: u32) -> Result<()> {
        self.plat.inject_msi(addr, data)
    }

    /// Routes PCI interrupt link `link` to ISA IRQ `irq` (`None`: disconnected), as a
    /// chipset's PIRQ route registers do (`XEN_DMOP_set_pci_link_route`).
    pub fn set_pci_link_route(&mut self, link: PciLink, irq: Option<IsaIrq>) -> Result<()> {
        self.plat.set_pci_link_route(link, irq)
    }

    /// A handle on the guest's interrupts that outlives this access (for other threads).
    /// `None` only in the dispatch's own tests.
    pub fn interrupts(&self) -> Option<Interrupts> {
        self.plat.interrupts()
    }

    /// Copies guest-physical memory at `gpa` into `buf` (DMA from the guest). The frames
    /// are mapped through a small cache of foreign mappings kept by the loop (dropped when
    /// Xen sends `IOREQ_TYPE_INVALIDATE`); a range that wraps the address space, or a frame
    /// that is not the guest's RAM, is an error and `buf` is then partly written.
    pub fn read_guest(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        self.check(gpa, buf.len())?;
        self.mem.read(gpa, buf)
    }

    /// Copies `data` into guest-physical memory at `gpa` (DMA to the guest); errors as for
    /// [`Ctx::read_guest`] (and then only a part may have been written).
    pub fn write_guest(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        self.check(gpa, data.len())?;
        self.mem.write(gpa, data)
    }

    fn check(&self, gpa: u64, len: usize) -> Result<()> {
        match gpa.checked_add(len as u64) {
            Some(_) => Ok(()),
            None => Err(Error::os(
                "ioreq server guest memory",
                Some(self.plat.domid()),
                Errno::EFAULT,
            )),
        }
    }

    /// Claims `claim` for this device while the server runs (a BAR placed or moved by the
    /// guest): Xen sends its requests to this server from now on, and the loop to this
    /// device. Fails with `E2BIG` past [`MAX_CLAIMS`], or with Xen's error (e.g. `EEXIST`
    /// when the range overlaps one claimed already).
    pub fn claim(&mut self, claim: Claim) -> Result<()> {
        if self.keys.len() >= MAX_CLAIMS {
            return Err(Error::os(
                "ioreq server claim",
                Some(self.plat.domid()),
                Errno::E2BIG,
            ));
        }
        self.plat.map(&claim)?;
        self.keys.push((Key::of(&claim), self.device));
        Ok(())
    }

    /// Releases a range this device claimed (at registration or with [`Ctx::claim`]), given
    /// exactly as claimed: its requests no longer reach this server. `ENOENT` if this
    /// device holds no such claim.
    pub fn release(&mut self, claim: Claim) -> Result<()> {
        let key = Key::of(&claim);
        let dev = self.device;
        let Some(i) = self.keys.iter().position(|&(k, d)| d == dev && k == key) else {
            return Err(Error::os(
                "ioreq server release",
                Some(self.plat.domid()),
                Errno::ENOENT,
            ));
        };
        self.plat.unmap(&claim)?;
        self.keys.remove(i);
        Ok(())
    }

    /// Asks for `bell` (a queue-notify register in one of this device's MMIO claims) to be
    /// served as fast as the kernel allows: by its ioeventfd when it has one and can express
    /// the doorbell ([`FastPath::Kernel`]: the guest's write is completed by the kernel, and
    /// the loop then calls this device with the same
    /// [`Access::MmioWrite`](super::Access::MmioWrite), `vcpu()` `None`), else by the loop
    /// as any MMIO write ([`FastPath::Loop`]). The device handles the write the same way in
    /// both cases. Fails with `EINVAL` when no MMIO claim of this device holds the register,
    /// `EEXIST` for a doorbell registered already, `E2BIG` past
    /// [`MAX_DOORBELLS`](super::MAX_DOORBELLS).
    pub fn doorbell(&mut self, bell: Doorbell) -> Result<FastPath> {
        let dom = self.plat.domid();
        let end = bell.addr.checked_add(u64::from(bell.len).saturating_sub(1));
        let held = end.is_some_and(|end| {
            self.keys.iter().any(|&(k, d)| {
                d == self.device && matches!(k, Key::Mmio(s, e) if s <= bell.addr && end <= e)
            })
        });
        if !held {
            return Err(Error::os("ioreq server doorbell", Some(dom), Errno::EINVAL));
        }
        let plat = self.plat;
        self.bells
            .add(self.device, bell, dom, |b| plat.ioeventfd(b))
    }

    /// Removes a doorbell this device asked for (given exactly as asked): its writes reach
    /// the device through the loop again (e.g. before its BAR moves). `ENOENT` if this device
    /// has no such doorbell.
    pub fn release_doorbell(&mut self, bell: Doorbell) -> Result<()> {
        let dom = self.plat.domid();
        self.bells.remove(self.device, bell, dom)
    }

    /// Reports an error the device met (its backing file failed, the guest programmed
    /// nonsense): counted in [`Stats::device_errors`](super::Stats::device_errors), the last
    /// one kept ([`Server::last_device_error`](super::Server::last_device_error)); serving goes on.
    pub fn report(&mut self, e: Error) {
        self.errors.count += 1;
        self.errors.last = Some(e);
    }

    /// Reports an error the device cannot go on after: as [`Ctx::report`], and the loop then
    /// stops as [`StopHandle::stop`](super::StopHandle::stop) does (completing the requests
    /// already posted) and returns this error (the first one, if several).
    pub fn fail(&mut self, e: Error) {
        self.report(e);
        if self.errors.fatal.is_none() {
            self.errors.fatal = Some(e);
        }
    }
}

impl core::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ctx")
            .field("dom", &self.plat.domid())
            .field("vcpu", &self.vcpu)
            .field("device", &self.device)
            .finish()
    }
}
