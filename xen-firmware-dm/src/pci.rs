//! A PCI host bridge and one simple PCI device, served through `IOREQ_TYPE_PCI_CONFIG`
//! requests (Xen decodes the guest's 0xcf8/0xcfc accesses and sends the config accesses of
//! the functions we claim).
//!
//! - 00:00.0: a host bridge (Intel 440FX ids, class 06:00), no BARs.
//! - 00:02.0: a display controller (class 03:00, ids 1b36:00ff) whose expansion ROM is a
//!   512-byte VGA option ROM ([`VGA_ROM`]): SeaBIOS finds it, copies it out of the ROM BAR
//!   (MMIO reads served here) and runs it; the ROM hooks `int 10h` and sends every teletype
//!   character (`AH=0Eh`) to the UART at 0x3f8. That is how SeaBIOS's screen output — its
//!   banner, "Booting from ...", "No bootable device" — reaches this device model: on Xen,
//!   SeaBIOS moves its debug log from port 0x402 to port 0xe9, which Xen handles itself.
//!   It also has an I/O BAR (so the firmware enables I/O decoding, which SeaBIOS requires of
//!   a VGA device) that nothing uses.
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
/// The display controller's address.
pub const DISPLAY: (u8, u8, u8) = (0, 2, 0);
/// The display controller's ids (vendor, device).
pub const DISPLAY_IDS: (u16, u16) = (0x1b36, 0x00ff);
/// The size of the display's ROM BAR.
pub const ROM_BAR_SIZE: u32 = 4096;

/// The display's option ROM: 512 bytes of 16-bit x86 code and headers.
///
/// ```text
/// 0x00  55 aa 01          signature, size = 1 x 512 bytes
/// 0x03  eb 3b             jmp 0x40 (init entry, called far by the BIOS)
/// 0x18  20 00             offset of the PCI data structure
/// 0x20  "PCIR" ...        vendor/device (must match the function), class 03:00:00,
///                         image length 1, code type 0 (x86), last image
/// 0x40  init:  push ds; xor ax,ax; mov ds,ax
///              mov word [0x40], 0x60   ; int 10h vector offset -> handler
///              mov [0x42], cs          ; ... and segment
///              pop ds; retf
/// 0x60  handler: cmp ah,0x0e; jne done
///              push dx; push ax; mov dx,0x3f8; out dx,al; pop ax; pop dx
///       done:  iret
/// 0x1ff checksum (all bytes sum to 0)
/// ```
pub const VGA_ROM: [u8; 512] = vga_rom();

#[rustfmt::skip]
const fn vga_rom() -> [u8; 512] {
    let mut r = [0u8; 512];
    r[0] = 0x55;
    r[1] = 0xaa;
    r[2] = 1;
    r[3] = 0xeb;
    r[4] = 0x3b;
    r[0x18] = 0x20;
    let pcir: [u8; 24] = [
        b'P', b'C', b'I', b'R',
        DISPLAY_IDS.0 as u8, (DISPLAY_IDS.0 >> 8) as u8,
        DISPLAY_IDS.1 as u8, (DISPLAY_IDS.1 >> 8) as u8,
        0, 0, // vital product data
        24, 0, // structure length
        0, // revision
        0x00, 0x00, 0x03, // class: prog-if, subclass, base class
        1, 0, // image length (x 512)
        0, 0, // code revision
        0, // code type: x86
        0x80, // last image
        0, 0,
    ];
    let mut i = 0;
    while i < pcir.len() {
        r[0x20 + i] = pcir[i];
        i += 1;
    }
    let init: [u8; 17] = [
        0x1e, // push ds
        0x31, 0xc0, // xor ax, ax
        0x8e, 0xd8, // mov ds, ax
        0xc7, 0x06, 0x40, 0x00, 0x60, 0x00, // mov word [0x40], 0x0060
        0x8c, 0x0e, 0x42, 0x00, // mov [0x42], cs
        0x1f, // pop ds
        0xcb, // retf
    ];
    let mut i = 0;
    while i < init.len() {
        r[0x40 + i] = init[i];
        i += 1;
    }
    let handler: [u8; 14] = [
        0x80, 0xfc, 0x0e, // cmp ah, 0x0e
        0x75, 0x08, // jne done
        0x52, // push dx
        0x50, // push ax
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee, // out dx, al
        0x58, // pop ax
        0x5a, // pop dx
        0xcf, // done: iret
    ];
    let mut i = 0;
    while i < handler.len() {
        r[0x60 + i] = handler[i];
        i += 1;
    }
    let mut sum = 0u8;
    let mut i = 0;
    while i < 511 {
        sum = sum.wrapping_add(r[i]);
        i += 1;
    }
    r[511] = 0u8.wrapping_sub(sum);
    r
}

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

const ROM_ENABLE: u32 = 1;

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

    // At most the value's 4 bytes, whatever `size` says: no shift overflow.
    fn read(&self, reg: u16, size: u8) -> u32 {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().take(usize::from(size)).enumerate() {
            *x = self.cfg.get(usize::from(reg) + i).copied().unwrap_or(0);
        }
        u32::from_le_bytes(b)
    }

    fn write(&mut self, reg: u16, size: u8, value: u32) {
        for (i, &x) in value
            .to_le_bytes()
            .iter()
            .take(usize::from(size))
            .enumerate()
        {
            let r = usize::from(reg) + i;
            if r < 256 {
                let m = self.writable[r];
                self.cfg[r] = (self.cfg[r] & !m) | (x & m);
            }
        }
    }
}

/// The host bridge and the test device, as one [`Device`] (register it with
/// [`PciBus::claims`]).
#[derive(Debug)]
pub struct PciBus {
    host: Function,
    display: Function,
    dev: Function,
    bar_mem: Box<[u8; BAR_SIZE as usize]>,
    /// Config accesses so far.
    pub config_accesses: u64,
    /// Accesses to the BAR so far.
    pub bar_accesses: u64,
    /// Reads of the display's option ROM so far.
    pub rom_reads: u64,
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
        let mut display = Function::new(DISPLAY, DISPLAY_IDS, [0x00, 0x00, 0x03], 0x00);
        display.writable[0x10..0x14].copy_from_slice(&(!(BAR_SIZE - 1)).to_le_bytes());
        display.cfg[0x14] = 0x01; // BAR1: I/O, 16 ports
        display.writable[0x14..0x18].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let rom_mask = !(ROM_BAR_SIZE - 1) | ROM_ENABLE;
        display.writable[0x30..0x34].copy_from_slice(&rom_mask.to_le_bytes());
        PciBus {
            host,
            display,
            dev,
            bar_mem: Box::new([0; BAR_SIZE as usize]),
            config_accesses: 0,
            bar_accesses: 0,
            rom_reads: 0,
        }
    }

    /// What it claims: both functions' config space and the BAR window.
    pub fn claims() -> Vec<Claim> {
        let s = |a: (u8, u8, u8)| Sbdf::new(0, a.0, a.1, a.2).unwrap_or(Sbdf::from_raw(0));
        vec![
            Claim::Pci(s(HOST_BRIDGE)),
            Claim::Pci(s(DISPLAY)),
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

    /// The display's ROM BAR address, if the ROM and memory decoding are enabled.
    pub fn rom(&self) -> Option<u64> {
        let cmd = self.display.read(0x04, 2) as u16;
        let rom = self.display.read(0x30, 4);
        let base = u64::from(rom & !(ROM_BAR_SIZE - 1));
        (cmd & COMMAND_MEMORY != 0 && rom & ROM_ENABLE != 0 && base != 0).then_some(base)
    }

    fn rom_read(&mut self, addr: u64, size: u8) -> Option<u64> {
        let off = addr.checked_sub(self.rom()?)?;
        if off + u64::from(size) > u64::from(ROM_BAR_SIZE) {
            return None;
        }
        self.rom_reads += 1;
        let mut v = 0u64;
        for i in 0..u64::from(size) {
            let b = VGA_ROM.get((off + i) as usize).copied().unwrap_or(0);
            v |= u64::from(b) << (8 * i);
        }
        Some(v)
    }

    fn function(&mut self, sbdf: Sbdf) -> Option<&mut Function> {
        if sbdf == self.host.sbdf {
            Some(&mut self.host)
        } else if sbdf == self.display.sbdf {
            Some(&mut self.display)
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
        if let Some(v) = self.rom_read(addr, size) {
            return v;
        }
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
