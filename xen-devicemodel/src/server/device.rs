//! The [`Device`] trait a device model implements, and the [`Claim`]s it registers for.

use std::ops::RangeInclusive;
use std::sync::Arc;

use crate::Sbdf;

/// A device model's device: the guest's accesses to the ranges it was registered for.
///
/// `size` is the access size in bytes (1, 2, 4, or 8 for MMIO). Reads return the value in
/// the low `size` bytes (the rest is masked off). Every method has a default: reads answer
/// all-ones (nothing there), writes are ignored.
pub trait Device: Send {
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

#[derive(Debug, Clone, Copy)]
pub(super) enum Key {
    Port(u64, u64),
    Mmio(u64, u64),
    Pci(u32),
}
