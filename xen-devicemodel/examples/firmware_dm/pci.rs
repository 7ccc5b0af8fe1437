//! A PCI host bridge and one simple PCI device, served through `IOREQ_TYPE_PCI_CONFIG`
//! requests (Xen decodes the guest's 0xcf8/0xcfc accesses and sends the config accesses of
//! the functions we claim).
//!
//! - 00:00.0: a host bridge (Intel 440FX ids, class 06:00), no BARs.
//! - 00:03.0: a test device (ids 1b36:0005, QEMU's "PCI test device"; class 00:ff) with one
//!   4 KiB 32-bit memory BAR0 backed by 4 KiB of scratch memory the guest can read and
//!   write once it has placed the BAR and enabled memory decoding. BAR sizing works as on
//!   real hardware (write all-ones, read back the size mask).
//!
//! The MMIO of the BAR is served wherever the guest puts it inside [`MMIO_WINDOW`], the part
//! of the PCI hole this device model claims (hvmloader places BARs from 0xf0000000).

use std::ops::RangeInclusive;

use xen_devicemodel::server::{Claim, Device};
use xen_devicemodel::Sbdf;

/// The host bridge's address.
pub const HOST_BRIDGE: (u8, u8, u8) = (0, 0, 0);
/// The test device's address.
pub const TEST_DEVICE: (u8, u8, u8) = (0, 3, 0);
/// The test device's ids (vendor, device).
pub const TEST_IDS: (u16, u16) = (0x1b36, 0x0005);
/// BAR0's size.
pub const BAR_SIZE: u32 = 4096;
/// The guest-physical range claimed for BARs.
pub const MMIO_WINDOW: RangeInclusive<u64> = 0xe000_0000..=0xfbff_ffff;

const COMMAND_MEMORY: u16 = 0x2;

/// One function's 256-byte configuration space with a write mask.
#[derive(Debug)]
struct Function {
    sbdf: Sbdf,
    cfg: [u8; 256],
    writable: [u8; 256],
}

impl Function {
    fn new(addr: (u8, u8, u8), ids: (u16, u16), class: [u8; 3], header: u8) -> Function {
        let sbdf = Sbdf::new(0, addr.0, addr.1, addr.2).unwrap_or(Sbdf::from_raw(0));
        let mut cfg = [0u8; 256];
        cfg[0..2].copy_from_slice(&ids.0.to_le_bytes());
        cfg[2..4].copy_from_slice(&ids.1.to_le_bytes());
        cfg[0x09..0x0c].copy_from_slice(&class); // prog-if, subclass, class
        cfg[0x0e] = header;
        let mut writable = [0u8; 256];
        writable[0x04] = 0x07; // command: I/O, memory, bus master
        writable[0x0d] = 0xff; // latency timer
        writable[0x3c] = 0xff; // interrupt line
        Function {
            sbdf,
            cfg,
            writable,
        }
    }

    fn read(&self, reg: u16, size: u8) -> u32 {
        let mut v = 0u32;
        for i in 0..u16::from(size) {
            let r = usize::from(reg + i);
            v |= u32::from(self.cfg.get(r).copied().unwrap_or(0)) << (8 * i);
        }
        v
    }

    fn write(&mut self, reg: u16, size: u8, value: u32) {
        for i in 0..u16::from(size) {
            let r = usize::from(reg + i);
            if r < 256 {
                let m = self.writable[r];
                self.cfg[r] = (self.cfg[r] & !m) | ((value >> (8 * i)) as u8 & m);
            }
        }
    }
}

/// The host bridge and the test device, as one [`Device`] (register it with
/// [`PciBus::claims`]).
#[derive(Debug)]
pub struct PciBus {
    host: Function,
    dev: Function,
    bar_mem: Box<[u8; BAR_SIZE as usize]>,
    /// Config accesses so far.
    pub config_accesses: u64,
    /// Accesses to the BAR so far.
    pub bar_accesses: u64,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl PciBus {
    /// The bus with both functions; BAR0 unassigned, decoding off.
    pub fn new() -> PciBus {
        let host = Function::new(HOST_BRIDGE, (0x8086, 0x1237), [0x00, 0x00, 0x06], 0x00);
        let mut dev = Function::new(TEST_DEVICE, TEST_IDS, [0x00, 0x00, 0xff], 0x00);
        // BAR0: 32-bit memory, not prefetchable: address bits above the size are writable.
        let m = (!(BAR_SIZE - 1)).to_le_bytes();
        dev.writable[0x10..0x14].copy_from_slice(&m);
        dev.cfg[0x2c..0x30].copy_from_slice(&0x1af4_1100u32.to_le_bytes()); // subsystem
        PciBus {
            host,
            dev,
            bar_mem: Box::new([0; BAR_SIZE as usize]),
            config_accesses: 0,
            bar_accesses: 0,
        }
    }

    /// What it claims: both functions' config space and the BAR window.
    pub fn claims() -> Vec<Claim> {
        let s = |a: (u8, u8, u8)| Sbdf::new(0, a.0, a.1, a.2).unwrap_or(Sbdf::from_raw(0));
        vec![
            Claim::Pci(s(HOST_BRIDGE)),
            Claim::Pci(s(TEST_DEVICE)),
            Claim::Mmio(MMIO_WINDOW),
        ]
    }

    /// BAR0's address, if memory decoding is on.
    pub fn bar0(&self) -> Option<u64> {
        let cmd = self.dev.read(0x04, 2) as u16;
        let bar = u64::from(self.dev.read(0x10, 4) & !(BAR_SIZE - 1));
        (cmd & COMMAND_MEMORY != 0 && bar != 0).then_some(bar)
    }

    fn function(&mut self, sbdf: Sbdf) -> Option<&mut Function> {
        if sbdf == self.host.sbdf {
            Some(&mut self.host)
        } else if sbdf == self.dev.sbdf {
            Some(&mut self.dev)
        } else {
            None
        }
    }

    fn bar_offset(&self, addr: u64, size: u8) -> Option<usize> {
        let base = self.bar0()?;
        let off = addr.checked_sub(base)?;
        (off + u64::from(size) <= u64::from(BAR_SIZE)).then_some(off as usize)
    }
}

impl Device for PciBus {
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        self.config_accesses += 1;
        self.function(dev).map_or(u32::MAX, |f| f.read(reg, size))
    }

    fn pci_config_write(&mut self, dev: Sbdf, reg: u16, size: u8, value: u32) {
        self.config_accesses += 1;
        if let Some(f) = self.function(dev) {
            f.write(reg, size, value);
        }
    }

    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        let Some(off) = self.bar_offset(addr, size) else {
            return u64::MAX;
        };
        self.bar_accesses += 1;
        let mut b = [0u8; 8];
        b[..usize::from(size)].copy_from_slice(&self.bar_mem[off..off + usize::from(size)]);
        u64::from_le_bytes(b)
    }

    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        let Some(off) = self.bar_offset(addr, size) else {
            return;
        };
        self.bar_accesses += 1;
        let n = usize::from(size);
        self.bar_mem[off..off + n].copy_from_slice(&value.to_le_bytes()[..n]);
    }
}
