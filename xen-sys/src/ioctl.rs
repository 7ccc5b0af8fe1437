//! Linux's ioctl request encoding (`_IOC` of `asm-generic/ioctl.h`), used to compute the
//! `IOCTL_PRIVCMD_*` and `IOCTL_EVTCHN_*` numbers, which are function-like C macros that bindgen
//! cannot evaluate.
//!
//! x86_64 and aarch64 both use the generic layout: from the low bit up, 8 bits of number, 8 bits
//! of type (the driver's letter), 14 bits of argument size and 2 bits of direction. The generated
//! `abi.rs` of each architecture proves every number computed with it equal to the C compiler's.
#![allow(non_snake_case)]

use static_assertions::const_assert_eq;

/// Bits of the command number.
pub const _IOC_NRBITS: u32 = 8;
/// Bits of the type (the driver's letter).
pub const _IOC_TYPEBITS: u32 = 8;
/// Bits of the argument size.
pub const _IOC_SIZEBITS: u32 = 14;
/// Bits of the direction.
pub const _IOC_DIRBITS: u32 = 2;

/// Where the command number starts.
pub const _IOC_NRSHIFT: u32 = 0;
/// Where the type starts.
pub const _IOC_TYPESHIFT: u32 = _IOC_NRSHIFT + _IOC_NRBITS;
/// Where the size starts.
pub const _IOC_SIZESHIFT: u32 = _IOC_TYPESHIFT + _IOC_TYPEBITS;
/// Where the direction starts.
pub const _IOC_DIRSHIFT: u32 = _IOC_SIZESHIFT + _IOC_SIZEBITS;

/// Direction: no data transfer declared (what privcmd and evtchn use for all their ioctls).
pub const _IOC_NONE: u32 = 0;
/// Direction: userspace writes (the kernel reads the argument).
pub const _IOC_WRITE: u32 = 1;
/// Direction: userspace reads (the kernel writes the argument).
pub const _IOC_READ: u32 = 2;

/// Encodes an ioctl request number like C's `_IOC(dir, type, nr, size)`.
///
/// Out-of-range parts are masked to their field width, as the C macro's shifts would mix them
/// into neighbouring fields instead; sizes used here are all far below the 16 KiB limit.
pub const fn _IOC(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    const fn mask(bits: u32) -> u32 {
        (1u32 << bits) - 1
    }
    ((dir & mask(_IOC_DIRBITS)) << _IOC_DIRSHIFT)
        | (((size as u32) & mask(_IOC_SIZEBITS)) << _IOC_SIZESHIFT)
        | ((ty & mask(_IOC_TYPEBITS)) << _IOC_TYPESHIFT)
        | ((nr & mask(_IOC_NRBITS)) << _IOC_NRSHIFT)
}

// The layout is the 32-bit word Linux documents: 2 + 14 + 8 + 8 bits.
const_assert_eq!(_IOC_DIRSHIFT + _IOC_DIRBITS, 32);
// A worked example, independent of any header: direction none, type 'P', number 0, 48 bytes.
const_assert_eq!(_IOC(_IOC_NONE, b'P' as u32, 0, 48), 0x0030_5000);
