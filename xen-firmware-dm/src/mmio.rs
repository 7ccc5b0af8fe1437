//! Memory windows that firmware probes but where this machine has nothing: the TPM TIS
//! registers (0xfed40000, hvmloader and SeaBIOS read the TPM's id there) and the legacy VGA
//! window (0xa0000-0xbffff). Reads answer all-ones ("no device"), writes are dropped; the
//! first accesses are remembered, so the demo can show which real MMIO the firmware did.

use std::ops::RangeInclusive;

use xen_devicemodel::server::{Claim, Device};

/// The TPM TIS window (locality 0-4).
pub const TPM_TIS: RangeInclusive<u64> = 0xfed4_0000..=0xfed4_4fff;
/// The legacy VGA memory window.
pub const VGA_WINDOW: RangeInclusive<u64> = 0xa_0000..=0xb_ffff;

/// One access: address, size, write (and the value written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Guest-physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u8,
    /// The value, for writes.
    pub write: Option<u64>,
}

/// An empty MMIO window that records its first accesses.
#[derive(Debug, Default)]
pub struct EmptyWindows {
    /// The first accesses (at most [`EmptyWindows::KEEP`]).
    pub first: Vec<Access>,
    /// Every access so far.
    pub accesses: u64,
}

impl EmptyWindows {
    /// How many accesses are remembered.
    pub const KEEP: usize = 32;

    /// What it claims.
    pub fn claims() -> [Claim; 2] {
        [Claim::Mmio(TPM_TIS), Claim::Mmio(VGA_WINDOW)]
    }

    fn record(&mut self, addr: u64, size: u8, write: Option<u64>) {
        self.accesses += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(Access { addr, size, write });
        }
    }
}

impl Device for EmptyWindows {
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        self.record(addr, size, None);
        u64::MAX
    }

    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        self.record(addr, size, Some(value));
    }
}
