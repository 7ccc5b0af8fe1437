//! A debug console at I/O port 0x402, like QEMU's `isa-debugcon`: every byte the guest
//! writes is output; reads answer 0xe9, which is how firmware (SeaBIOS) knows one is there.

use xen_devicemodel::server::{Claim, Device};

use crate::console::{Line, LineBuffer};

/// The port SeaBIOS (Xen builds) writes its log to.
pub const PORT: u16 = 0x402;

/// The debug console.
#[derive(Debug)]
pub struct DebugCon {
    out: LineBuffer,
    /// Bytes written so far.
    pub bytes: u64,
}

impl DebugCon {
    /// A console at [`PORT`] sending lines to `out`.
    pub fn new(out: std::sync::mpsc::Sender<Line>) -> DebugCon {
        DebugCon {
            out: LineBuffer::new("debugcon", out),
            bytes: 0,
        }
    }

    /// What it claims.
    pub fn claims() -> [Claim; 1] {
        [Claim::Ports(PORT..=PORT)]
    }
}

impl Device for DebugCon {
    fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
        0xe9
    }

    fn port_write(&mut self, _port: u16, size: u8, value: u32) {
        for b in value.to_le_bytes().iter().take(usize::from(size)) {
            self.bytes += 1;
            self.out.push(*b);
        }
    }
}
