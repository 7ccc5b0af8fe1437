//! Typed Xen domain ids.

use core::fmt;

use crate::Error;

/// A Xen domain id (`domid_t`): which domain an operation acts on.
///
/// Ids below [`DomId::FIRST_RESERVED`] (`0x7ff0`) name real domains: `0` is dom0, guests get
/// ids from `1` upwards. The reserved values above it are magic names understood by some
/// hypercalls ([`DomId::SELF`], [`DomId::IO`], …); [`DomId::INVALID`] is also what the kernel
/// uses internally for "no restriction", so [`Privcmd::restrict`](crate::Privcmd::restrict)
/// refuses it (and every other reserved id) with a typed error.
///
/// `DomId` is a plain `u16` underneath (`#[repr(transparent)]`), so it costs nothing to pass
/// around and can be placed directly in ABI structs with [`DomId::get`].
///
/// ```
/// use xen_hypercall::DomId;
///
/// let d = DomId::new(7);
/// assert_eq!(d.get(), 7);
/// assert!(d.is_domain());
/// assert!(!DomId::SELF.is_domain());
/// assert_eq!(DomId::try_from(0x1_0000u32).is_err(), true);
/// assert_eq!(format!("{d}"), "7");
/// assert_eq!(format!("{}", DomId::SELF), "DOMID_SELF");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct DomId(u16);

impl DomId {
    /// The control domain, dom0.
    pub const DOM0: DomId = DomId(0);
    /// The first reserved id (`DOMID_FIRST_RESERVED`, `0x7ff0`): every id at or above it is
    /// not a real domain.
    pub const FIRST_RESERVED: DomId = DomId(0x7ff0);
    /// `DOMID_SELF` (`0x7ff0`): the calling domain, where a hypercall accepts it.
    pub const SELF: DomId = DomId(0x7ff0);
    /// `DOMID_IO` (`0x7ff1`): the owner of I/O memory, for some memory hypercalls.
    pub const IO: DomId = DomId(0x7ff1);
    /// `DOMID_XEN` (`0x7ff2`): the hypervisor itself, as the owner of its pages.
    pub const XEN: DomId = DomId(0x7ff2);
    /// `DOMID_COW` (`0x7ff3`): the owner of copy-on-write shared pages.
    pub const COW: DomId = DomId(0x7ff3);
    /// `DOMID_INVALID` (`0x7ff4`): no domain. The kernel's privcmd driver also uses it to mean
    /// "this handle is not restricted".
    pub const INVALID: DomId = DomId(0x7ff4);
    /// `DOMID_IDLE` (`0x7fff`): the idle domain.
    pub const IDLE: DomId = DomId(0x7fff);

    /// A domain id from its raw number. Any `u16` is accepted: hypercalls that need a real
    /// domain check it themselves (see [`DomId::is_domain`]).
    pub const fn new(raw: u16) -> DomId {
        DomId(raw)
    }

    /// The raw `domid_t` value.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// `true` for ids of real domains (below [`DomId::FIRST_RESERVED`]), `false` for the
    /// reserved magic values and for out-of-range numbers.
    pub const fn is_domain(self) -> bool {
        self.0 < Self::FIRST_RESERVED.0
    }

    /// The id if it names a real domain, or [`Error::InvalidArgument`] naming `op` otherwise.
    /// Used before a syscall where a magic id would be wrong (e.g. restriction).
    pub fn require_domain(self, op: &'static str) -> Result<DomId, Error> {
        if self.is_domain() {
            Ok(self)
        } else {
            Err(Error::InvalidArgument {
                op,
                domain: Some(self),
                reason:
                    "needs a real domain id, not a reserved one (DOMID_SELF, DOMID_INVALID, ...)",
            })
        }
    }

    fn special_name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x7ff0 => "DOMID_SELF",
            0x7ff1 => "DOMID_IO",
            0x7ff2 => "DOMID_XEN",
            0x7ff3 => "DOMID_COW",
            0x7ff4 => "DOMID_INVALID",
            0x7fff => "DOMID_IDLE",
            _ => return None,
        })
    }
}

// The reserved ids are Xen's (`xen/include/public/xen.h`, generated into xen-sys).
const _: () = {
    use xen_sys::xen as x;
    assert!(DomId::FIRST_RESERVED.0 == x::DOMID_FIRST_RESERVED);
    assert!(DomId::SELF.0 == x::DOMID_SELF);
    assert!(DomId::IO.0 == x::DOMID_IO);
    assert!(DomId::XEN.0 == x::DOMID_XEN);
    assert!(DomId::COW.0 == x::DOMID_COW);
    assert!(DomId::INVALID.0 == x::DOMID_INVALID);
    assert!(DomId::IDLE.0 == x::DOMID_IDLE);
};

impl fmt::Debug for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.special_name() {
            Some(name) => write!(f, "DomId({name})"),
            None => write!(f, "DomId({})", self.0),
        }
    }
}

impl fmt::Display for DomId {
    /// Real domains print as their number (`7`), reserved ids by name (`DOMID_SELF`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.special_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl From<u16> for DomId {
    fn from(raw: u16) -> DomId {
        DomId(raw)
    }
}

impl From<DomId> for u16 {
    fn from(d: DomId) -> u16 {
        d.0
    }
}

impl From<DomId> for u32 {
    fn from(d: DomId) -> u32 {
        u32::from(d.0)
    }
}

impl TryFrom<u32> for DomId {
    type Error = Error;
    /// Fails with [`Error::InvalidArgument`] when the number does not fit `domid_t`.
    fn try_from(raw: u32) -> Result<DomId, Error> {
        u16::try_from(raw)
            .map(DomId)
            .map_err(|_| Error::InvalidArgument {
                op: "domain id",
                domain: None,
                reason: "does not fit in domid_t (16 bits)",
            })
    }
}

impl core::str::FromStr for DomId {
    type Err = Error;
    /// Parses a decimal domain number (`"7"`), as found in xenstore and `xl list`.
    fn from_str(s: &str) -> Result<DomId, Error> {
        s.trim()
            .parse::<u16>()
            .map(DomId)
            .map_err(|_| Error::InvalidArgument {
                op: "domain id",
                domain: None,
                reason: "not a decimal number that fits in domid_t",
            })
    }
}
