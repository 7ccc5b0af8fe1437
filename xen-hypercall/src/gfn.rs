//! [`Gfn`]: a guest frame number.

use core::fmt;

/// A guest frame number: a page of a guest's physical address space (`xen_pfn_t` in the
/// hypercalls that take one, "gfn" or "pfn" in Xen's names), in units of Xen's 4096-byte
/// pages.
///
/// A transparent `u64`, so a `&[Gfn]` goes to the kernel as the frame list it expects without
/// copying ([`Gfn::as_raw_slice`]). Like `vm_memory::GuestAddress` for addresses, it keeps
/// frame numbers apart from counts, byte addresses and offsets in signatures.
///
/// ```
/// use xen_hypercall::Gfn;
///
/// let g = Gfn::new(0x100);
/// assert_eq!(g.get(), 0x100);
/// assert_eq!(g.addr(), Some(0x10_0000));
/// assert_eq!(Gfn::containing(0x10_0abc), g);
/// assert_eq!(g.checked_add(2), Some(Gfn::new(0x102)));
/// assert_eq!(format!("{g}"), "0x100");
/// assert_eq!(Gfn::as_raw_slice(&[g, Gfn::new(7)]), &[0x100, 7]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Gfn(u64);

impl Gfn {
    /// The size of the frames numbered, in bytes.
    pub const PAGE_SIZE: u64 = 4096;
    const SHIFT: u32 = 12;

    /// The frame with this number.
    pub const fn new(raw: u64) -> Gfn {
        Gfn(raw)
    }

    /// The frame number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The frame that holds guest-physical byte address `addr`.
    pub const fn containing(addr: u64) -> Gfn {
        Gfn(addr >> Gfn::SHIFT)
    }

    /// The guest-physical address of the frame's first byte (`None` past 2^64).
    pub const fn addr(self) -> Option<u64> {
        if self.0 > u64::MAX >> Gfn::SHIFT {
            None
        } else {
            Some(self.0 << Gfn::SHIFT)
        }
    }

    /// The frame `n` frames further on (`None` on overflow).
    pub const fn checked_add(self, n: u64) -> Option<Gfn> {
        match self.0.checked_add(n) {
            Some(g) => Some(Gfn(g)),
            None => None,
        }
    }

    /// Frame numbers as the `xen_pfn_t` list the kernel takes (no copy).
    pub const fn as_raw_slice(gfns: &[Gfn]) -> &[u64] {
        // SAFETY: `Gfn` is a transparent `u64`: same size, alignment and validity.
        #[allow(unsafe_code)]
        unsafe {
            core::slice::from_raw_parts(gfns.as_ptr().cast::<u64>(), gfns.len())
        }
    }

    /// Frame numbers as a mutable `xen_pfn_t` list (for calls where Xen writes frames back).
    pub fn as_raw_slice_mut(gfns: &mut [Gfn]) -> &mut [u64] {
        // SAFETY: as for `as_raw_slice`; every `u64` written is a valid `Gfn`.
        #[allow(unsafe_code)]
        unsafe {
            core::slice::from_raw_parts_mut(gfns.as_mut_ptr().cast::<u64>(), gfns.len())
        }
    }
}

impl fmt::Debug for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gfn({:#x})", self.0)
    }
}

impl fmt::Display for Gfn {
    /// In hexadecimal, as Xen and Linux print frame numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl From<Gfn> for u64 {
    fn from(g: Gfn) -> u64 {
        g.0
    }
}
