//! The kernel's newer privcmd fast paths, probed at run time: irqfd and ioeventfd (Linux 6.7,
//! built with `CONFIG_XEN_PRIVCMD_EVENTFD`, which depends on `CONFIG_XEN_VIRTIO`) and the GSI of a
//! PCI device (Linux 6.12, `CONFIG_XEN_ACPI`).
//!
//! - [`Irqfd`]: an eventfd whose signal makes the kernel issue a stored dm_op (an interrupt
//!   injection) itself, without waking the device model.
//! - [`Ioeventfd`]: an eventfd the kernel signals when the guest writes a virtio-mmio queue
//!   notify register; the kernel completes that ioreq itself, so the device model's loop never
//!   sees it.
//! - [`Privcmd::pcidev_get_gsi`]: the GSI of a dom0 PCI device (on 6.12, one bound to
//!   `xen-pciback`), for passing it through.
//!
//! Kernels without them answer `ENOTTY` (older than the ioctl), `EOPNOTSUPP` (built without
//! it) or `EINVAL` (old drivers): every call here turns those into [`Error::NotSupported`], and
//! [`Privcmd::probe_irqfd`] / [`Privcmd::probe_ioeventfd`] ask without changing anything, so a
//! device model can choose the fallback (its own loop) once, up front.

// Unsafe: privcmd ioctls that take pointers.
#![allow(unsafe_code)]

use core::ffi::{c_ulong, c_void};
use core::ptr::NonNull;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::Errno;
use xen_sys::dm_op::xen_dm_op;
use xen_sys::privcmd::{
    privcmd_ioeventfd, privcmd_irqfd, privcmd_pcidev_get_gsi, IOCTL_PRIVCMD_IOEVENTFD,
    IOCTL_PRIVCMD_IRQFD, IOCTL_PRIVCMD_PCIDEV_GET_GSI, PRIVCMD_IOEVENTFD_FLAG_DEASSIGN,
    PRIVCMD_IRQFD_FLAG_DEASSIGN,
};

use crate::{sys, DomId, Error, Privcmd};

/// The most vCPUs the kernel accepts for one ioeventfd ioreq page set.
pub const IOEVENTFD_MAX_VCPUS: usize = 4096;

/// An eventfd (`eventfd(2)`, close-on-exec, non-blocking): the counter the kernel's irqfd and
/// ioeventfd paths signal or watch. Closed on drop.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new eventfd with a zero counter.
    pub fn new() -> Result<EventFd, Error> {
        let fd = sys::eventfd(true).map_err(|e| Error::os("eventfd", None, e))?;
        Ok(EventFd { fd })
    }

    /// Adds 1 to the counter (wakes whoever watches it: the kernel for an [`Irqfd`]).
    pub fn signal(&self) -> Result<(), Error> {
        match sys::write(self.fd.as_fd(), &[1u64]) {
            Ok(8) => Ok(()),
            // An eventfd takes all 8 bytes or none.
            Ok(_) => Err(Error::os("eventfd signal", None, Errno::EIO)),
            Err(e) => Err(Error::os("eventfd signal", None, e)),
        }
    }

    /// Reads and resets the counter: how many signals arrived since the last call (0 when none;
    /// never blocks).
    pub fn take(&self) -> Result<u64, Error> {
        let mut v = [0u64];
        match sys::read(self.fd.as_fd(), &mut v) {
            Ok(8) => Ok(v[0]),
            Ok(_) => Err(Error::os("eventfd read", None, Errno::EIO)),
            Err(Errno::EAGAIN) => Ok(0),
            Err(e) => Err(Error::os("eventfd read", None, e)),
        }
    }

    fn raw(&self) -> u32 {
        // A live descriptor is never negative.
        u32::try_from(self.fd.as_raw_fd()).unwrap_or(u32::MAX)
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `ENOTTY`, `EOPNOTSUPP`, `ENOSYS` and (from these ioctls, whose arguments we check first)
/// `EINVAL`: the kernel lacks the operation.
fn unsupported(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL
    )
}

fn error(op: &'static str, domid: Option<DomId>, errno: Errno) -> Error {
    if unsupported(errno) {
        Error::NotSupported {
            op,
            domain: domid,
            errno,
        }
    } else {
        Error::os(op, domid, errno)
    }
}

/// Issues one of this module's ioctls on a privcmd descriptor.
///
/// # Safety
/// `arg` must point to the struct `request` expects, every user pointer in it valid as the
/// request's documentation demands.
unsafe fn fast_path_ioctl(fd: BorrowedFd<'_>, request: u32, arg: *mut c_void) -> Result<(), Errno> {
    // SAFETY: forwarded from the caller.
    unsafe { sys::ioctl(fd, c_ulong::from(request), arg) }.map(drop)
}

/// `IOCTL_PRIVCMD_IRQFD`: assigns (`Some(dm_op)`) or removes (`None`) the irqfd of `eventfd`.
fn irqfd_ioctl(
    fd: BorrowedFd<'_>,
    domid: DomId,
    eventfd: &EventFd,
    dm_op: Option<&xen_dm_op>,
) -> Result<(), Error> {
    let (op, flags) = match dm_op {
        Some(_) => ("irqfd assign", 0),
        None => ("irqfd deassign", PRIVCMD_IRQFD_FLAG_DEASSIGN),
    };
    let mut req = privcmd_irqfd {
        dm_op: dm_op.map_or(0, |d| core::ptr::from_ref(d) as u64),
        size: dm_op.map_or(0, |_| core::mem::size_of::<xen_dm_op>() as u32),
        fd: eventfd.raw(),
        flags,
        dom: domid.get(),
        pad: [0; 2],
    };
    // SAFETY: `req` is live; `dm_op`, when given, points to a live xen_dm_op of `size` bytes,
    // which the kernel copies during the call and does not keep.
    unsafe { fast_path_ioctl(fd, IOCTL_PRIVCMD_IRQFD, (&raw mut req).cast()) }
        .map_err(|e| error(op, Some(domid), e))
}

/// A second descriptor of this handle's open file, for a guard to remove its assignment with:
/// it shares the handle's restriction (the kernel keeps that per open file).
fn dup(privcmd: &Privcmd, op: &'static str, domid: DomId) -> Result<OwnedFd, Error> {
    privcmd.as_fd().try_clone_to_owned().map_err(|e| {
        Error::os(
            op,
            Some(domid),
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })
}

impl Privcmd {
    /// Whether this kernel offers [`Irqfd`]: `Ok(false)` when it does not (the fallback is to
    /// issue the dm_op from user space). Changes nothing: it removes an irqfd that does not
    /// exist, which a supporting kernel accepts. `Err` for other failures (`EPERM` when this
    /// handle is restricted to another domain than `domid`).
    pub fn probe_irqfd(&self, domid: DomId) -> Result<bool, Error> {
        let probe = EventFd::new()?;
        match irqfd_ioctl(self.as_fd(), domid, &probe, None) {
            Ok(()) => Ok(true),
            Err(Error::NotSupported { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether this kernel offers [`Ioeventfd`]: `Ok(false)` when it does not (the fallback is
    /// to serve queue notifications in the device model's loop). Changes nothing: it removes an
    /// ioeventfd that does not exist, which a supporting kernel refuses with `ENODEV`.
    pub fn probe_ioeventfd(&self, domid: DomId) -> Result<bool, Error> {
        let probe = EventFd::new()?;
        let mut req = privcmd_ioeventfd {
            vcpus: 1,
            addr_len: 4,
            event_fd: probe.raw(),
            flags: PRIVCMD_IOEVENTFD_FLAG_DEASSIGN,
            dom: domid.get(),
            ..Default::default()
        };
        // SAFETY: a live privcmd_ioeventfd; a deassignment only compares its addresses with
        // those of existing assignments and dereferences none of them.
        match unsafe {
            fast_path_ioctl(self.as_fd(), IOCTL_PRIVCMD_IOEVENTFD, (&raw mut req).cast())
        } {
            Ok(()) | Err(Errno::ENODEV) => Ok(true),
            Err(e) if unsupported(e) => Ok(false),
            Err(e) => Err(Error::os("ioeventfd probe", Some(domid), e)),
        }
    }

    /// Creates an [`Irqfd`]: from now on, signalling it makes the kernel issue `dm_op` (a copy
    /// is kept; typically `set_irq_level`, `set_isa_irq_level`, `set_pci_intx_level` or
    /// `inject_msi`) on `domid`, without a round trip through user space. Removed on drop.
    ///
    /// [`Error::NotSupported`] on kernels without irqfd: issue the dm_op yourself instead.
    pub fn irqfd(&self, domid: DomId, dm_op: &xen_dm_op) -> Result<Irqfd, Error> {
        let eventfd = EventFd::new()?;
        let privcmd = dup(self, "irqfd assign", domid)?;
        irqfd_ioctl(privcmd.as_fd(), domid, &eventfd, Some(dm_op))?;
        Ok(Irqfd {
            privcmd,
            domid,
            eventfd,
        })
    }

    /// Creates an [`Ioeventfd`] for virtio-mmio queue `config.vq` of the device at
    /// `config.addr`: from now on the kernel completes the guest's writes of that queue index
    /// to the device's `QueueNotify` register (offset 0x50) itself and signals the eventfd
    /// instead of passing the ioreq to the device model. Removed on drop.
    ///
    /// The arguments are checked first (typed errors, no syscall): `addr_len` 1, 2, 4 or 8,
    /// one port per vCPU (1 to [`IOEVENTFD_MAX_VCPUS`]), no address overflow.
    /// [`Error::NotSupported`] on kernels without ioeventfd: keep serving the register in the
    /// device model's loop.
    ///
    /// # Safety
    /// `ioreq_page` must be the start of a mapping, made through privcmd in this process and
    /// alive until the returned [`Ioeventfd`] is dropped, of `config.domid`'s synchronous ioreq
    /// page(s) of the ioreq server whose per-vCPU event channels (bound in this domain) are
    /// `config.ports`: the kernel looks the mapping up and reads and writes the ioreq slots
    /// through its pages from interrupt context.
    pub unsafe fn ioeventfd(
        &self,
        ioreq_page: NonNull<u8>,
        config: &IoeventfdConfig<'_>,
    ) -> Result<Ioeventfd, Error> {
        const OP: &str = "ioeventfd assign";
        let domain = Some(config.domid);
        let invalid = |reason| Error::InvalidArgument {
            op: OP,
            domain,
            reason,
        };
        if !matches!(config.addr_len, 1 | 2 | 4 | 8) {
            return Err(invalid("addr_len must be 1, 2, 4 or 8"));
        }
        if config.ports.is_empty() || config.ports.len() > IOEVENTFD_MAX_VCPUS {
            return Err(invalid("one event channel port per vCPU, 1 to 4096"));
        }
        if config
            .addr
            .checked_add(VIRTIO_MMIO_QUEUE_NOTIFY + u64::from(config.addr_len))
            .is_none()
        {
            return Err(invalid("the notify register's address overflows"));
        }
        let eventfd = EventFd::new()?;
        let privcmd = dup(self, OP, config.domid)?;
        let mut req = privcmd_ioeventfd {
            ioreq: ioreq_page.as_ptr() as u64,
            ports: config.ports.as_ptr() as u64,
            addr: config.addr,
            addr_len: config.addr_len,
            event_fd: eventfd.raw(),
            // Checked above: at most 4096.
            vcpus: config.ports.len() as u32,
            vq: config.vq,
            flags: 0,
            dom: config.domid.get(),
            pad: [0; 2],
        };
        // SAFETY: `req` is live; `ports` points to `vcpus` u32 ports, copied during the call;
        // the caller guarantees `ioreq` is a privcmd mapping of the ioreq pages that outlives
        // the assignment (the returned guard removes it on drop).
        unsafe {
            fast_path_ioctl(
                privcmd.as_fd(),
                IOCTL_PRIVCMD_IOEVENTFD,
                (&raw mut req).cast(),
            )
        }
        .map_err(|e| error(OP, domain, e))?;
        req.ports = 0;
        Ok(Ioeventfd {
            privcmd,
            eventfd,
            req,
        })
    }

    /// `IOCTL_PRIVCMD_PCIDEV_GET_GSI` (Linux 6.12): the GSI (global system interrupt) of the
    /// dom0 PCI device `segment:bus:device.function`. Linux 6.12 asks `xen-pciback`, so there the
    /// device must be bound to it (and `EINVAL` means pciback is not loaded); later kernels ask
    /// ACPI about any device.
    ///
    /// `device` above 31 or `function` above 7 are refused before the syscall.
    /// [`Error::NotSupported`] on kernels without the ioctl or built without `CONFIG_XEN_ACPI`.
    pub fn pcidev_get_gsi(
        &self,
        segment: u16,
        bus: u8,
        device: u8,
        function: u8,
    ) -> Result<u32, Error> {
        const OP: &str = "pcidev_get_gsi";
        if device > 31 || function > 7 {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: None,
                reason: "PCI device above 31 or function above 7",
            });
        }
        let mut req = privcmd_pcidev_get_gsi {
            sbdf: (u32::from(segment) << 16)
                | (u32::from(bus) << 8)
                | (u32::from(device) << 3)
                | u32::from(function),
            gsi: 0,
        };
        // SAFETY: a live privcmd_pcidev_get_gsi, read and written by the kernel during the call.
        unsafe {
            fast_path_ioctl(
                self.as_fd(),
                IOCTL_PRIVCMD_PCIDEV_GET_GSI,
                (&raw mut req).cast(),
            )
        }
        .map_err(|e| error(OP, None, e))?;
        Ok(req.gsi)
    }
}

/// The offset of virtio-mmio's `QueueNotify` register, which the kernel's ioeventfd matches.
pub const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;

/// An eventfd the kernel signals to inject an interrupt: see [`Privcmd::irqfd`]. Removed from
/// the kernel on drop (errors then are ignored; call [`Irqfd::deassign`] to see them).
///
/// It owns a second descriptor of the [`Privcmd`]'s open file (sharing its restriction), so it
/// borrows nothing: keep it next to the handle in a struct, or move it to another thread.
#[derive(Debug)]
pub struct Irqfd {
    /// The handle's open file (a second descriptor), to remove the irqfd with.
    privcmd: OwnedFd,
    domid: DomId,
    eventfd: EventFd,
}

impl Irqfd {
    /// Fires the interrupt: one `write` to the eventfd; the kernel issues the stored dm_op.
    pub fn trigger(&self) -> Result<(), Error> {
        self.eventfd.signal()
    }

    /// The eventfd, to hand to whatever should fire the interrupt (e.g. a vhost backend).
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// The domain the interrupt goes to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Removes the irqfd now; when this returns, the kernel injects no more interrupts for it.
    pub fn deassign(self) -> Result<(), Error> {
        let this = core::mem::ManuallyDrop::new(self);
        let result = irqfd_ioctl(this.privcmd.as_fd(), this.domid, &this.eventfd, None);
        // SAFETY: `this` is never used again and its Drop does not run, so each descriptor is
        // moved out exactly once (and closed here).
        drop(unsafe {
            (
                core::ptr::read(&this.eventfd),
                core::ptr::read(&this.privcmd),
            )
        });
        result
    }
}

impl Drop for Irqfd {
    fn drop(&mut self) {
        let _ = irqfd_ioctl(self.privcmd.as_fd(), self.domid, &self.eventfd, None);
    }
}

/// Where an [`Ioeventfd`] listens: see [`Privcmd::ioeventfd`].
#[derive(Clone, Copy, Debug)]
pub struct IoeventfdConfig<'a> {
    /// The guest.
    pub domid: DomId,
    /// The guest-physical base address of the virtio-mmio device.
    pub addr: u64,
    /// The width of the guest's write to `QueueNotify`: 1, 2, 4 or 8 bytes (virtio-mmio: 4).
    pub addr_len: u32,
    /// The queue index the guest writes.
    pub vq: u32,
    /// The ioreq server's event channel ports in this domain, one per guest vCPU, in vCPU order.
    pub ports: &'a [u32],
}

/// An eventfd the kernel signals on a guest's virtio-mmio queue notification: see
/// [`Privcmd::ioeventfd`]. Removed from the kernel on drop. Like [`Irqfd`], it owns a second
/// descriptor of the [`Privcmd`]'s open file and borrows nothing.
#[derive(Debug)]
pub struct Ioeventfd {
    /// The handle's open file (a second descriptor), to remove the ioeventfd with.
    privcmd: OwnedFd,
    eventfd: EventFd,
    /// The assignment (its `ports` cleared): a deassignment names the same ioreq page, vCPU
    /// count, domain and eventfd.
    req: privcmd_ioeventfd,
}

impl Ioeventfd {
    /// The eventfd, to wait on (poll, epoll, an async reactor); readable after a notification.
    pub fn eventfd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// How many notifications arrived since the last call (0 when none; never blocks).
    pub fn take(&self) -> Result<u64, Error> {
        self.eventfd.take()
    }

    /// The queue index this eventfd stands for.
    pub fn vq(&self) -> u32 {
        self.req.vq
    }

    fn deassign_ioctl(&self) -> Result<(), Error> {
        let mut req = privcmd_ioeventfd {
            flags: PRIVCMD_IOEVENTFD_FLAG_DEASSIGN,
            ..self.req
        };
        // SAFETY: a live privcmd_ioeventfd; a deassignment only compares its addresses with
        // those of existing assignments.
        unsafe {
            fast_path_ioctl(
                self.privcmd.as_fd(),
                IOCTL_PRIVCMD_IOEVENTFD,
                (&raw mut req).cast(),
            )
        }
        .map_err(|e| error("ioeventfd deassign", Some(DomId::new(self.req.dom)), e))
    }

    /// Removes the ioeventfd now: the guest's notifications of this queue go to the device
    /// model's loop again.
    pub fn deassign(self) -> Result<(), Error> {
        let this = core::mem::ManuallyDrop::new(self);
        let result = this.deassign_ioctl();
        // SAFETY: `this` is never used again and its Drop does not run, so each descriptor is
        // moved out exactly once (and closed here).
        drop(unsafe {
            (
                core::ptr::read(&this.eventfd),
                core::ptr::read(&this.privcmd),
            )
        });
        result
    }
}

impl Drop for Ioeventfd {
    fn drop(&mut self) {
        let _ = self.deassign_ioctl();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_borrow_nothing() {
        fn owned<T: Send + Sync + 'static>() {}
        owned::<Irqfd>();
        owned::<Ioeventfd>();
        owned::<EventFd>();
    }

    #[test]
    fn eventfd_counts_signals() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.take().unwrap(), 0);
        e.signal().unwrap();
        e.signal().unwrap();
        assert_eq!(e.take().unwrap(), 2);
        assert_eq!(e.take().unwrap(), 0);
    }

    #[test]
    fn kernel_answers_map_to_not_supported() {
        for errno in [Errno::ENOTTY, Errno::EOPNOTSUPP, Errno::EINVAL] {
            let e = error("irqfd assign", Some(DomId::new(3)), errno);
            assert!(matches!(e, Error::NotSupported { .. }), "{errno}");
            assert!(e.is_not_supported());
            assert_eq!(e.errno(), errno);
        }
        let e = error("irqfd assign", Some(DomId::new(3)), Errno::EPERM);
        assert!(matches!(e, Error::Os { .. }));
        assert_eq!(
            Error::NotSupported {
                op: "irqfd assign",
                domain: Some(DomId::new(3)),
                errno: Errno::ENOTTY
            }
            .to_string(),
            format!(
                "irqfd assign on domain 3: not supported by this kernel ({})",
                Errno::ENOTTY
            )
        );
    }
}
