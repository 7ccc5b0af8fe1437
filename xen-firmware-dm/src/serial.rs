//! A 16550-style UART at 0x3f8 (COM1), enough for firmware to find it and print to it:
//! the scratch, interrupt-enable and line-control registers hold what is written, the
//! divisor latch works, the transmitter is always empty, and each byte written to THR is
//! output. No receive path, no interrupts.

use xen_devicemodel::server::{Claim, Device};

use crate::console::{Line, LineBuffer};

/// COM1's base port.
pub const BASE: u16 = 0x3f8;

/// The UART.
#[derive(Debug)]
pub struct Serial {
    out: LineBuffer,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    /// Register accesses so far (firmware probing shows here even when it prints nothing).
    pub accesses: u64,
}

const LCR_DLAB: u8 = 0x80;
const IER_THRI: u8 = 0x02;
/// LSR: transmitter holding register empty + transmitter empty.
const LSR_IDLE: u8 = 0x60;

impl Serial {
    /// A UART at [`BASE`] sending lines to `out`.
    pub fn new(out: std::sync::mpsc::Sender<Line>) -> Serial {
        Serial {
            out: LineBuffer::new("serial", out),
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 0x0c,
            dlm: 0,
            accesses: 0,
        }
    }

    /// What it claims: its eight registers.
    pub fn claims() -> [Claim; 1] {
        [Claim::Ports(BASE..=BASE + 7)]
    }

    fn read_reg(&mut self, reg: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            0 if dlab => self.dll,
            0 => 0, // nothing received
            1 if dlab => self.dlm,
            1 => self.ier,
            // IIR: with THR-empty interrupts enabled one is pending (the transmitter is
            // always empty); FIFOs reported enabled.
            2 if self.ier & IER_THRI != 0 => 0xc2,
            2 => 0xc1,
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_IDLE,
            6 => 0xb0, // DCD, DSR, CTS
            _ => self.scr,
        }
    }

    fn write_reg(&mut self, reg: u16, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            0 if dlab => self.dll = v,
            0 => self.out.push(v),
            1 if dlab => self.dlm = v,
            1 => self.ier = v & 0x0f,
            2 => {} // FCR
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1f,
            7 => self.scr = v,
            _ => {}
        }
    }
}

impl Device for Serial {
    // A wide access is one per register, lowest first. Whatever `port` and `size` arrive
    // (the runtime sends 1, 2 or 4 for ports, but a device should not trust that), at most
    // the value's 4 bytes are used and the register index wraps: no overflow, no panic.
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        self.accesses += 1;
        let mut b = [0u8; 4];
        for (i, x) in (0u16..).zip(b.iter_mut().take(usize::from(size))) {
            *x = self.read_reg(port.wrapping_sub(BASE).wrapping_add(i) & 7);
        }
        u32::from_le_bytes(b)
    }

    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        self.accesses += 1;
        for (i, &x) in (0u16..).zip(value.to_le_bytes().iter().take(usize::from(size))) {
            self.write_reg(port.wrapping_sub(BASE).wrapping_add(i) & 7, x);
        }
    }
}
