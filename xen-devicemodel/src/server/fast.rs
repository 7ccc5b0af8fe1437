//! The kernel's fast paths, with the loop as their fallback: [`Doorbell`]s (a queue-notify
//! register the kernel completes itself through an ioeventfd) and [`IrqTrigger`]s (an
//! interrupt the kernel injects itself through an irqfd).
//!
//! Both are asked for the same way whatever the kernel offers, and the device sees the same
//! thing either way:
//! - a doorbell write reaches the device as an [`Access::MmioWrite`](super::Access) of the
//!   doorbell's address, size and value: through the ioreq slot (the loop), or, when the
//!   kernel took it (ioeventfd), from the loop reading the eventfd (then the vCPU did not
//!   wait for the device, as for a buffered write, and [`Ctx::vcpu`](super::Ctx::vcpu) is
//!   `None`);
//! - [`IrqTrigger::fire`] is one `write` to an irqfd, or the dm_op the loop would send.
//!
//! Whether the kernel has them is asked once per server (the first doorbell or trigger) and
//! remembered: Linux has them from 6.7 when built with `CONFIG_XEN_PRIVCMD_EVENTFD` (which
//! depends on `CONFIG_XEN_VIRTIO`); kernels without them answer `ENOTTY`, which
//! [`xen_hypercall`] reports as [`Error::NotSupported`](crate::Error::NotSupported).

// Unsafe: hands the kernel the ioreq page for its ioeventfds.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};

use xen_hypercall::{Ioeventfd, IoeventfdConfig, Irqfd, VIRTIO_MMIO_QUEUE_NOTIFY};
use xen_sys::dm_op::{XEN_DMOP_inject_msi, XEN_DMOP_set_irq_level};

use super::Interrupts;
use crate::{DeviceModel, DomId, Errno, Error, Result};

/// The most doorbells one server holds; past it [`Ctx::doorbell`](super::Ctx::doorbell)
/// fails with `E2BIG`.
pub const MAX_DOORBELLS: usize = 256;

/// The most doorbells served through the kernel at once (their eventfds are polled on the
/// loop's stack); the others are served by the loop.
pub(crate) const MAX_FAST_DOORBELLS: usize = 30;

/// A queue-notify register a device wants served as fast as the kernel allows: writes of
/// `len` bytes to `addr` (whose value is `datamatch`, when given). The address must lie in
/// one of the device's MMIO claims.
///
/// The kernel's ioeventfd can take it when the write has a `datamatch` (a queue index below
/// 65536: the kernel compares the low 16 bits of the value, as virtio's notify register
/// carries the queue index there) and `len` is 1, 2, 4 or 8; otherwise, or on kernels without
/// ioeventfd, the loop serves it. Either way the device gets the same
/// [`Access::MmioWrite`](super::Access::MmioWrite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doorbell {
    /// The guest-physical address of the register.
    pub addr: u64,
    /// The width of the guest's write: 1, 2, 4 or 8 bytes.
    pub len: u8,
    /// The value written (the queue index), if the doorbell is for one value only.
    pub datamatch: Option<u64>,
}

impl Doorbell {
    /// Writes of `len` bytes to `addr`, any value.
    pub fn new(addr: u64, len: u8) -> Doorbell {
        Doorbell {
            addr,
            len,
            datamatch: None,
        }
    }

    /// Only writes of `value` (a queue index).
    pub fn datamatch(self, value: u64) -> Doorbell {
        Doorbell {
            datamatch: Some(value),
            ..self
        }
    }

    /// The kernel's form of this doorbell (`virtio-mmio base, addr_len, vq`), or `None` when
    /// the kernel cannot express it.
    pub(crate) fn kernel_form(&self) -> Option<(u64, u32, u32)> {
        let vq = u32::try_from(self.datamatch?)
            .ok()
            .filter(|&v| v <= 0xffff)?;
        let base = self.addr.checked_sub(VIRTIO_MMIO_QUEUE_NOTIFY)?;
        matches!(self.len, 1 | 2 | 4 | 8).then_some((base, self.len.into(), vq))
    }
}

/// How a doorbell or an interrupt trigger is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPath {
    /// By the kernel (ioeventfd, irqfd): no round trip through the loop.
    Kernel,
    /// By the loop (an ordinary MMIO request; a dm_op per interrupt).
    Loop,
}

/// Whether the kernel offers a fast path: not asked yet, yes, no.
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// What a server learned about the kernel's fast paths (shared by its [`Interrupts`]).
#[derive(Debug, Default)]
pub(crate) struct FastPaths {
    irqfd: AtomicU8,
    ioeventfd: AtomicU8,
}

/// The decision: try the kernel's path while it is not known to be missing; a
/// [`Error::NotSupported`] marks it missing (and the caller falls back), anything else is the
/// caller's error. `attempt` returns `Ok(None)` when this one request cannot take the path
/// (e.g. a doorbell the kernel cannot express): that says nothing about the kernel.
fn decide<T>(state: &AtomicU8, attempt: impl FnOnce() -> Result<Option<T>>) -> Result<Option<T>> {
    if state.load(Ordering::Relaxed) == NO {
        return Ok(None);
    }
    match attempt() {
        Ok(Some(t)) => {
            state.store(YES, Ordering::Relaxed);
            Ok(Some(t))
        }
        Ok(None) => Ok(None),
        Err(Error::NotSupported { .. }) => {
            state.store(NO, Ordering::Relaxed);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl FastPaths {
    /// Whether the kernel is known to offer irqfd (`None`: not asked yet).
    pub(crate) fn irqfd(&self) -> Option<bool> {
        known(&self.irqfd)
    }

    /// Whether the kernel is known to offer ioeventfd (`None`: not asked yet).
    pub(crate) fn ioeventfd(&self) -> Option<bool> {
        known(&self.ioeventfd)
    }
}

fn known(s: &AtomicU8) -> Option<bool> {
    match s.load(Ordering::Relaxed) {
        UNKNOWN => None,
        YES => Some(true),
        _ => Some(false),
    }
}

/// Where the kernel's ioeventfd finds the ioreq server: its ioreq page (mapped by privcmd in
/// this process) and the vCPUs' event channels in this domain.
#[derive(Debug, Default)]
pub(crate) struct IoreqPages {
    /// The address of the mapped ioreq page (0: not mapped in a form the kernel can use).
    pub(crate) page: usize,
    /// The local ports, in vCPU order.
    pub(crate) ports: Vec<u32>,
}

/// Makes `bell` an ioeventfd, if the kernel has them and can express it.
///
/// Where the kernel cannot be handed the ioreq page (`pages.page` 0: mapped the legacy way,
/// or this domain is PV, where the first kernels with ioeventfd took the page from a
/// mapping only auto-translated domains have), the kernel is only asked whether it has
/// ioeventfd (a removal of nothing, which reads no page) and the loop serves the doorbell.
pub(crate) fn ioeventfd(
    dm: &DeviceModel,
    dom: DomId,
    pages: &IoreqPages,
    fast: &FastPaths,
    bell: &Doorbell,
) -> Result<Option<Ioeventfd>> {
    let Some((addr, addr_len, vq)) = bell.kernel_form() else {
        return Ok(None);
    };
    let page = core::ptr::NonNull::new(pages.page as *mut u8).filter(|_| !pages.ports.is_empty());
    decide(&fast.ioeventfd, || {
        let Some(page) = page else {
            return match dm.privcmd().probe_ioeventfd(dom) {
                Ok(false) => Err(Error::NotSupported {
                    op: "ioeventfd probe",
                    domain: Some(dom),
                    errno: Errno::ENOTTY,
                }),
                Ok(true) => {
                    fast.ioeventfd.store(YES, Ordering::Relaxed);
                    Ok(None)
                }
                Err(_) => Ok(None),
            };
        };
        let config = IoeventfdConfig {
            domid: dom,
            addr,
            addr_len,
            vq,
            ports: &pages.ports,
        };
        // SAFETY: `page` is the Server's privcmd mapping of this ioreq server's synchronous
        // page (mapped with map_resource), `ports` its vCPUs' channels bound in this domain;
        // the Server drops every Ioeventfd before it unmaps the page (see its Drop).
        unsafe { dm.privcmd().ioeventfd(page, &config) }.map(Some)
    })
}

/// Whether this domain is a PV guest of Xen (`/sys/hypervisor/guest_type`); when that
/// cannot be read, assumed so (the cautious answer: the loop serves the doorbells).
pub(crate) fn dom0_is_pv() -> bool {
    std::fs::read_to_string("/sys/hypervisor/guest_type").map_or(true, |t| t.trim() == "PV")
}

/// An interrupt to fire through an [`IrqTrigger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// A message-signalled interrupt: `data` written to `addr` (`XEN_DMOP_inject_msi`).
    Msi {
        /// The MSI address.
        addr: u64,
        /// The MSI data.
        data: u32,
    },
    /// An edge on interrupt line `irq` of the guest's interrupt controller: the line is set
    /// asserted (`XEN_DMOP_set_irq_level`, the Arm form, for the virtual GIC's SPIs; Xen on
    /// x86 answers `EOPNOTSUPP`).
    Line(u32),
}

impl Interrupt {
    fn dm_op(self) -> xen_sys::dm_op::xen_dm_op {
        match self {
            Interrupt::Msi { addr, data } => {
                let mut req = DeviceModel::request(XEN_DMOP_inject_msi);
                req.u.inject_msi.addr = addr;
                req.u.inject_msi.data = data;
                req
            }
            Interrupt::Line(irq) => {
                let mut req = DeviceModel::request(XEN_DMOP_set_irq_level);
                req.u.set_irq_level.irq = irq;
                req.u.set_irq_level.level = 1;
                req
            }
        }
    }
}

/// An interrupt a device fires again and again (a virtio queue's MSI): through an irqfd when
/// the kernel has them (one `write`; the kernel sends the dm_op), else the dm_op itself. Made
/// by [`Interrupts::trigger`]. `Send` and `Sync`: fire it from any thread.
#[derive(Debug)]
pub struct IrqTrigger {
    irq: Interrupt,
    path: TriggerPath,
}

#[derive(Debug)]
enum TriggerPath {
    Irqfd(Irqfd),
    DmOp(Interrupts),
}

impl IrqTrigger {
    /// Fires the interrupt.
    pub fn fire(&self) -> Result<()> {
        match &self.path {
            TriggerPath::Irqfd(fd) => fd.trigger(),
            TriggerPath::DmOp(i) => match self.irq {
                Interrupt::Msi { addr, data } => i.inject_msi(addr, data),
                Interrupt::Line(irq) => i.dm.set_irq_level(i.dom, irq, true),
            },
        }
    }

    /// The interrupt it fires.
    pub fn interrupt(&self) -> Interrupt {
        self.irq
    }

    /// Whether the kernel fires it (irqfd) or the dm_op goes from here.
    pub fn path(&self) -> FastPath {
        match self.path {
            TriggerPath::Irqfd(_) => FastPath::Kernel,
            TriggerPath::DmOp(_) => FastPath::Loop,
        }
    }
}

impl Interrupts {
    /// An [`IrqTrigger`] for `irq`: an irqfd when the kernel offers them (asked once per
    /// server, then remembered), the dm_op otherwise. Fails with the kernel's error when the
    /// irqfd is refused for another reason than "not supported" (e.g. `EPERM` on a handle
    /// restricted to another domain).
    pub fn trigger(&self, irq: Interrupt) -> Result<IrqTrigger> {
        let req = irq.dm_op();
        let fd = decide(&self.fast.irqfd, || {
            self.dm.privcmd().irqfd(self.dom, &req).map(Some)
        })?;
        let path = match fd {
            Some(fd) => TriggerPath::Irqfd(fd),
            None => TriggerPath::DmOp(self.clone()),
        };
        Ok(IrqTrigger { irq, path })
    }
}

/// A registered doorbell: the device it rings, and its eventfd when the kernel serves it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) device: usize,
    pub(crate) bell: Doorbell,
    pub(crate) fd: Option<Ioeventfd>,
}

/// The doorbells of a server.
#[derive(Debug, Default)]
pub(crate) struct Doorbells {
    pub(crate) entries: Vec<Entry>,
    /// How many entries have an eventfd.
    pub(crate) fast: usize,
}

impl Doorbells {
    /// Registers `bell` for `device`, through `make` (the platform's ioeventfd) while fewer
    /// than [`MAX_FAST_DOORBELLS`] are fast.
    pub(crate) fn add(
        &mut self,
        device: usize,
        bell: Doorbell,
        dom: DomId,
        make: impl FnOnce(&Doorbell) -> Result<Option<Ioeventfd>>,
    ) -> Result<FastPath> {
        const OP: &str = "ioreq server doorbell";
        if !matches!(bell.len, 1 | 2 | 4 | 8) {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(dom),
                reason: "a doorbell is 1, 2, 4 or 8 bytes wide",
            });
        }
        if self
            .entries
            .iter()
            .any(|e| e.bell.addr == bell.addr && e.bell.datamatch == bell.datamatch)
        {
            return Err(Error::os(OP, Some(dom), Errno::EEXIST));
        }
        if self.entries.len() >= MAX_DOORBELLS {
            return Err(Error::os(OP, Some(dom), Errno::E2BIG));
        }
        let fd = if self.fast < MAX_FAST_DOORBELLS {
            make(&bell)?
        } else {
            None
        };
        let path = if fd.is_some() {
            self.fast += 1;
            FastPath::Kernel
        } else {
            FastPath::Loop
        };
        self.entries.push(Entry { device, bell, fd });
        Ok(path)
    }

    /// Removes `device`'s `bell` (its ioeventfd, if any, is deassigned).
    pub(crate) fn remove(&mut self, device: usize, bell: Doorbell, dom: DomId) -> Result<()> {
        let Some(i) = self
            .entries
            .iter()
            .position(|e| e.device == device && e.bell == bell)
        else {
            return Err(Error::os("ioreq server doorbell", Some(dom), Errno::ENOENT));
        };
        let e = self.entries.swap_remove(i);
        if let Some(fd) = e.fd {
            self.fast -= 1;
            fd.deassign()?;
        }
        Ok(())
    }

    /// Drops every ioeventfd (before the ioreq page is unmapped).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.fast = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn not_supported() -> Error {
        Error::NotSupported {
            op: "x",
            domain: None,
            errno: Errno::ENOTTY,
        }
    }

    #[test]
    fn kernel_form_only_for_what_ioeventfd_expresses() {
        let b = Doorbell::new(0xe000_3000, 2).datamatch(3);
        assert_eq!(b.kernel_form(), Some((0xe000_3000 - 0x50, 2, 3)));
        // Any value: the kernel always compares the queue index.
        assert_eq!(Doorbell::new(0xe000_3000, 2).kernel_form(), None);
        // Above 16 bits, below the register offset, odd widths: the loop's.
        assert_eq!(
            Doorbell::new(0xe000_3000, 4)
                .datamatch(0x1_0000)
                .kernel_form(),
            None
        );
        assert_eq!(Doorbell::new(0x40, 4).datamatch(0).kernel_form(), None);
        assert_eq!(Doorbell::new(0x1000, 3).datamatch(0).kernel_form(), None);
        assert!(Doorbell::new(0x50, 8)
            .datamatch(0xffff)
            .kernel_form()
            .is_some());
    }

    #[test]
    fn not_supported_is_remembered_and_never_asked_again() {
        let s = AtomicU8::new(UNKNOWN);
        let mut asked = 0;
        let r = decide::<()>(&s, || {
            asked += 1;
            Err(not_supported())
        });
        assert!(matches!(r, Ok(None)));
        let r = decide::<()>(&s, || {
            asked += 1;
            Ok(Some(()))
        });
        assert!(matches!(r, Ok(None)));
        assert_eq!(asked, 1);
        assert_eq!(known(&s), Some(false));
    }

    #[test]
    fn other_errors_are_the_callers_and_decide_nothing() {
        let s = AtomicU8::new(UNKNOWN);
        let e = decide::<()>(&s, || Err(Error::os("x", None, Errno::EPERM))).unwrap_err();
        assert_eq!(e.errno(), Errno::EPERM);
        assert_eq!(known(&s), None);
        // A request the kernel cannot express says nothing about the kernel either.
        assert!(matches!(decide::<()>(&s, || Ok(None)), Ok(None)));
        assert_eq!(known(&s), None);
        assert!(matches!(decide(&s, || Ok(Some(5))), Ok(Some(5))));
        assert_eq!(known(&s), Some(true));
    }

    #[test]
    fn doorbells_fall_back_to_the_loop_and_are_bounded() {
        let dom = DomId::new(3);
        let mut d = Doorbells::default();
        let mut asked = 0;
        let p = d
            .add(0, Doorbell::new(0x1050, 2).datamatch(0), dom, |_| {
                asked += 1;
                Ok(None)
            })
            .unwrap();
        assert_eq!(p, FastPath::Loop);
        assert_eq!(asked, 1);
        let e = d.add(1, Doorbell::new(0x1050, 2).datamatch(0), dom, |_| Ok(None));
        assert_eq!(e.unwrap_err().errno(), Errno::EEXIST);
        let e = d.add(1, Doorbell::new(0x2000, 3), dom, |_| Ok(None));
        assert!(matches!(e, Err(Error::InvalidArgument { .. })));
        let e = d.add(1, Doorbell::new(0x2000, 4), dom, |_| {
            Err(Error::os("x", None, Errno::EPERM))
        });
        assert_eq!(e.unwrap_err().errno(), Errno::EPERM);
        assert_eq!(d.entries.len(), 1);
        for i in 1..MAX_DOORBELLS as u64 {
            d.add(0, Doorbell::new(0x10_0000 + i * 4, 4), dom, |_| Ok(None))
                .unwrap();
        }
        let e = d.add(0, Doorbell::new(0x9000, 4), dom, |_| Ok(None));
        assert_eq!(e.unwrap_err().errno(), Errno::E2BIG);
        assert_eq!(
            d.remove(1, Doorbell::new(0x1050, 2).datamatch(0), dom)
                .unwrap_err()
                .errno(),
            Errno::ENOENT
        );
        d.remove(0, Doorbell::new(0x1050, 2).datamatch(0), dom)
            .unwrap();
        assert_eq!(d.entries.len(), MAX_DOORBELLS - 1);
    }

    /// A privcmd on /dev/null answers every ioctl `ENOTTY`, as a kernel without
    /// `CONFIG_XEN_PRIVCMD_EVENTFD` does: the trigger takes the dm_op, the doorbell the loop,
    /// and the kernel is not asked again.
    #[test]
    #[cfg_attr(miri, ignore = "makes ioctls on /dev/null")]
    fn without_the_kernels_fast_paths_the_loop_serves() {
        let null = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        let dm = DeviceModel::from_privcmd(xen_hypercall::Privcmd::from(
            std::os::fd::OwnedFd::from(null),
        ));
        let dom = DomId::new(3);
        let i = Interrupts::new(dm.clone(), dom);
        let t = i
            .trigger(Interrupt::Msi {
                addr: 0xfee0_0000,
                data: 0x41,
            })
            .unwrap();
        assert_eq!(t.path(), FastPath::Loop);
        assert_eq!(i.fast.irqfd(), Some(false));
        // The clone shares what was learned.
        assert_eq!(i.clone().fast.irqfd(), Some(false));

        let fast = FastPaths::default();
        let mut page = [0u8; 64];
        let pages = IoreqPages {
            page: page.as_mut_ptr() as usize,
            ports: vec![5],
        };
        let bell = Doorbell::new(0x1050, 4).datamatch(0);
        assert!(ioeventfd(&dm, dom, &pages, &fast, &bell).unwrap().is_none());
        assert_eq!(fast.ioeventfd(), Some(false));
        // A page the kernel cannot be handed: only asked, which also says "not supported".
        let probed = FastPaths::default();
        let legacy = IoreqPages {
            page: 0,
            ports: vec![5],
        };
        assert!(ioeventfd(&dm, dom, &legacy, &probed, &bell)
            .unwrap()
            .is_none());
        assert_eq!(probed.ioeventfd(), Some(false));
        // Not expressible: not asked at all.
        let fresh = FastPaths::default();
        assert!(
            ioeventfd(&dm, dom, &pages, &fresh, &Doorbell::new(0x1050, 4))
                .unwrap()
                .is_none()
        );
        assert_eq!(fresh.ioeventfd(), None);
    }

    /// What the loop does with a doorbell the kernel took: the device gets the same MMIO
    /// write as through the slot, without a vCPU, counted once.
    #[test]
    fn a_doorbell_the_kernel_took_reaches_the_device_as_its_mmio_write() {
        use crate::server::dispatch::{Dispatch, GuestMemory};
        use crate::server::{Access, Ctx, Device};
        struct NoMem;
        impl GuestMemory for NoMem {
            fn read(&mut self, _: u64, _: &mut [u8]) -> Result<()> {
                Ok(())
            }
            fn write(&mut self, _: u64, _: &[u8]) -> Result<()> {
                Ok(())
            }
            fn invalidate(&mut self) {}
        }
        type Seen = Arc<std::sync::Mutex<Vec<(Access, Option<u32>)>>>;
        struct Dev(Seen);
        impl Device for Dev {
            fn access(&mut self, ctx: &mut Ctx<'_>, a: Access) -> u64 {
                self.0.lock().unwrap().push((a, ctx.vcpu()));
                0
            }
        }
        let seen = Seen::default();
        let mut d = Dispatch::new(vec![Box::new(Dev(seen.clone()))], vec![], NoMem);
        d.vcpu = Some(3);
        d.bells
            .add(
                0,
                Doorbell::new(0x2050, 2).datamatch(4),
                DomId::new(1),
                |_| Ok(None),
            )
            .unwrap();
        d.ring_doorbell(0);
        d.ring_doorbell(1); // no such doorbell: nothing
        assert_eq!(
            *seen.lock().unwrap(),
            [(
                Access::MmioWrite {
                    addr: 0x2050,
                    size: 2,
                    value: 4
                },
                None
            )]
        );
        assert_eq!(d.stats.doorbells, 1);
    }
}
