//! The [`Device`] trait a device model implements, and the [`Claim`]s it registers for.

use std::ops::RangeInclusive;
use std::sync::Arc;

use super::Ctx;
use crate::Sbdf;

/// One guest access, as [`Device::access`] gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read of I/O port `port`, `size` bytes.
    PortRead {
        /// The port.
        port: u16,
        /// 1, 2 or 4.
        size: u8,
    },
    /// A write of `value` to I/O port `port`.
    PortWrite {
        /// The port.
        port: u16,
        /// 1, 2 or 4.
        size: u8,
        /// The value, masked to `size` bytes.
        value: u32,
    },
    /// A read of guest-physical MMIO address `addr`.
    MmioRead {
        /// The address.
        addr: u64,
        /// 1, 2, 4 or 8.
        size: u8,
    },
    /// A write of `value` to guest-physical MMIO address `addr` (also for buffered writes).
    MmioWrite {
        /// The address.
        addr: u64,
        /// 1, 2, 4 or 8.
        size: u8,
        /// The value, masked to `size` bytes.
        value: u64,
    },
    /// A read of configuration register `reg` of PCI function `dev`.
    PciRead {
        /// The function.
        dev: Sbdf,
        /// Byte offset, 0-4095.
        reg: u16,
        /// 1, 2 or 4.
        size: u8,
    },
    /// A write to configuration register `reg` of PCI function `dev`.
    PciWrite {
        /// The function.
        dev: Sbdf,
        /// Byte offset, 0-4095.
        reg: u16,
        /// 1, 2 or 4.
        size: u8,
        /// The value, masked to `size` bytes.
        value: u32,
    },
}

/// A device model's device: the guest's accesses to the ranges it was registered for.
///
/// `size` is the access size in bytes (1, 2, 4, or 8 for MMIO). Reads return the value in
/// the low `size` bytes (the rest is masked off). Every method has a default: reads answer
/// all-ones (nothing there), writes are ignored.
///
/// A device that needs more than the access itself (raise an interrupt, DMA, move a BAR,
/// report an error) overrides [`Device::access`], which gets a [`Ctx`]; its default calls the
/// per-kind methods, so a device that needs none of that implements those alone.
pub trait Device: Send {
    /// Any access, with the [`Ctx`] of the request. The default calls the method of the
    /// access's kind ([`Device::port_read`], ...). Reads return the value (masked to the
    /// access size by the loop); for writes the value returned is ignored.
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        let _ = ctx;
        match access {
            Access::PortRead { port, size } => self.port_read(port, size).into(),
            Access::PortWrite { port, size, value } => {
                self.port_write(port, size, value);
                0
            }
            Access::MmioRead { addr, size } => self.mmio_read(addr, size),
            Access::MmioWrite { addr, size, value } => {
                self.mmio_write(addr, size, value);
                0
            }
            Access::PciRead { dev, reg, size } => self.pci_config_read(dev, reg, size).into(),
            Access::PciWrite {
                dev,
                reg,
                size,
                value,
            } => {
                self.pci_config_write(dev, reg, size, value);
                0
            }
        }
    }

    /// Xen asked the device model to drop its guest-memory mappings (`IOREQ_TYPE_INVALIDATE`:
    /// the guest's memory map changed, e.g. a balloon gave frames back). A device that keeps
    /// mappings of guest memory of its own drops them here and maps afresh when next needed;
    /// the loop's own cache (behind [`Ctx::read_guest`]) is already dropped. Default: nothing.
    fn mappings_invalidated(&mut self) {}

    /// A read of I/O port `port`.
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        let _ = (port, size);
        u32::MAX
    }

    /// A write of `value` to I/O port `port`.
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        let _ = (port, size, value);
    }

    /// A read of guest-physical MMIO address `addr`.
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        let _ = (addr, size);
        u64::MAX
    }

    /// A write of `value` to guest-physical MMIO address `addr` (also for buffered writes).
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        let _ = (addr, size, value);
    }

    /// A read of configuration register `reg` (byte offset, 0-4095) of PCI function `dev`.
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        let _ = (dev, reg, size);
        u32::MAX
    }

    /// A write to configuration register `reg` of PCI function `dev`.
    fn pci_config_write(&mut self, dev: Sbdf, reg: u16, size: u8, value: u32) {
        let _ = (dev, reg, size, value);
    }
}

/// A device shared with other threads (to read its state while or after the server runs):
/// each request locks the mutex (a poisoned lock is taken over, not a panic).
impl<D: Device + ?Sized> Device for Arc<std::sync::Mutex<D>> {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        lock(self).access(ctx, access)
    }
    fn mappings_invalidated(&mut self) {
        lock(self).mappings_invalidated()
    }
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        lock(self).port_read(port, size)
    }
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        lock(self).port_write(port, size, value)
    }
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        lock(self).mmio_read(addr, size)
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        lock(self).mmio_write(addr, size, value)
    }
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        lock(self).pci_config_read(dev, reg, size)
    }
    fn pci_config_write(&mut self, dev: Sbdf, reg: u16, size: u8, value: u32) {
        lock(self).pci_config_write(dev, reg, size, value)
    }
}

/// A boxed device (e.g. `Box<dyn Device>`, to register devices chosen at run time).
impl<D: Device + ?Sized> Device for Box<D> {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        (**self).access(ctx, access)
    }
    fn mappings_invalidated(&mut self) {
        (**self).mappings_invalidated()
    }
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        (**self).port_read(port, size)
    }
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        (**self).port_write(port, size, value)
    }
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        (**self).mmio_read(addr, size)
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        (**self).mmio_write(addr, size, value)
    }
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        (**self).pci_config_read(dev, reg, size)
    }
    fn pci_config_write(&mut self, dev: Sbdf, reg: u16, size: u8, value: u32) {
        (**self).pci_config_write(dev, reg, size, value)
    }
}

fn lock<D: ?Sized>(m: &std::sync::Mutex<D>) -> std::sync::MutexGuard<'_, D> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A range a device claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// I/O ports (inclusive).
    Ports(RangeInclusive<u16>),
    /// Guest-physical MMIO bytes (inclusive).
    Mmio(RangeInclusive<u64>),
    /// The configuration space of one PCI function (requests of type
    /// `IOREQ_TYPE_PCI_CONFIG`, whether the guest used ports 0xcf8/0xcfc or MMCONFIG).
    Pci(Sbdf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Port(u64, u64),
    Mmio(u64, u64),
    Pci(u32),
}

impl Key {
    pub(crate) fn of(c: &Claim) -> Key {
        match c {
            Claim::Ports(r) => Key::Port((*r.start()).into(), (*r.end()).into()),
            Claim::Mmio(r) => Key::Mmio(*r.start(), *r.end()),
            Claim::Pci(s) => Key::Pci(s.to_raw()),
        }
    }
}
