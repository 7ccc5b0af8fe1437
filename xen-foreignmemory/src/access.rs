//! Protections, as types: a [`Mapping<ReadOnly>`](crate::Mapping) has no write methods at all.

use core::ffi::c_int;

use crate::{Error, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ReadOnly {}
    impl Sealed for super::ReadWrite {}
}

/// How a mapping may be accessed: [`ReadOnly`] or [`ReadWrite`], chosen when mapping and
/// carried in the [`Mapping`](crate::Mapping)'s type.
///
/// Sealed: these two are the only protections a foreign mapping can have (no execute, no
/// write-only), so a bad protection cannot even be expressed. [`Protection`] is the value
/// form, for protections that arrive at run time.
///
/// ```
/// use xen_foreignmemory::{Access, Protection, ReadOnly, ReadWrite};
///
/// assert_eq!(ReadOnly::PROTECTION, Protection::Read);
/// assert_eq!(ReadWrite::PROTECTION, Protection::ReadWrite);
/// ```
pub trait Access:
    sealed::Sealed + Copy + Default + Send + Sync + core::fmt::Debug + 'static
{
    /// The protection as a value.
    ///
    /// ```
    /// use xen_foreignmemory::{Access, Protection, ReadOnly};
    /// assert_eq!(<ReadOnly as Access>::PROTECTION, Protection::Read);
    /// ```
    const PROTECTION: Protection;
}

/// Read-only access: the mapping is made `PROT_READ` and its type offers no way to write, so
/// the kernel's fault on a write can never be reached from safe code.
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::{DomId, ForeignMemory, Mapping, ReadOnly};
///
/// let fm = ForeignMemory::open()?;
/// let m: Mapping<ReadOnly> = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
/// let magic: u32 = m.read(0)?;
/// // m.write(0, 1u32); // does not compile: no `write` on Mapping<ReadOnly>
/// # let _ = magic;
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
///
/// Writing through a read-only mapping is a compile error, not a crash:
///
/// ```compile_fail
/// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
///
/// let fm = ForeignMemory::open()?;
/// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
/// m.write(0, 1u32)?; // error[E0599]: no method named `write` found for `Mapping<ReadOnly>`
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
/// # use xen_foreignmemory::Gfn;
///
/// ```compile_fail
/// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
///
/// let fm = ForeignMemory::open()?;
/// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
/// m.view::<u64>(0)?.write(1); // no `write` on a View of a read-only mapping either
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ReadOnly;

/// Read-write access: `PROT_READ | PROT_WRITE`.
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
///
/// let fm = ForeignMemory::open()?;
/// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
/// m.write(0x10, 0xdead_beef_u32)?;
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ReadWrite;

impl Access for ReadOnly {
    const PROTECTION: Protection = Protection::Read;
}

impl Access for ReadWrite {
    const PROTECTION: Protection = Protection::ReadWrite;
}

/// A mapping protection as a value: what `prot` may be in libxenforeignmemory.
///
/// [`Protection::from_prot`] turns a C `PROT_*` mask into one, refusing everything a foreign
/// mapping cannot be (execute, write-only, none) with a typed error.
///
/// ```
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::Protection;
///
/// assert_eq!(Protection::from_prot(libc::PROT_READ)?, Protection::Read);
/// assert_eq!(
///     Protection::from_prot(libc::PROT_READ | libc::PROT_WRITE)?,
///     Protection::ReadWrite
/// );
/// assert!(Protection::from_prot(libc::PROT_WRITE).unwrap_err().is_invalid_argument());
/// assert!(Protection::from_prot(libc::PROT_READ | libc::PROT_EXEC).is_err());
/// assert_eq!(Protection::ReadWrite.prot(), libc::PROT_READ | libc::PROT_WRITE);
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
///
/// A protection known only at run time picks the mapping's type by matching:
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::{DomId, ForeignMemory, Protection, ReadOnly, ReadWrite};
///
/// # let prot = libc::PROT_READ;
/// let fm = ForeignMemory::open()?;
/// match Protection::from_prot(prot)? {
///     Protection::Read => {
///         let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
///         println!("{:#x}", m.read::<u32>(0)?);
///     }
///     Protection::ReadWrite => {
///         let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
///         m.write(0, 0u32)?;
///     }
/// }
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl Protection {
    /// The `PROT_*` mask for `mmap`.
    ///
    /// ```
    /// assert_eq!(xen_foreignmemory::Protection::Read.prot(), libc::PROT_READ);
    /// ```
    pub const fn prot(self) -> c_int {
        match self {
            Protection::Read => libc::PROT_READ,
            Protection::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }

    /// Reads a C `PROT_*` mask: only `PROT_READ` and `PROT_READ | PROT_WRITE` are foreign
    /// mapping protections; anything else is refused with an invalid-argument error.
    ///
    /// ```
    /// use xen_foreignmemory::Protection;
    /// assert!(Protection::from_prot(libc::PROT_NONE).is_err());
    /// assert_eq!(Protection::from_prot(libc::PROT_READ).ok(), Some(Protection::Read));
    /// ```
    pub const fn from_prot(prot: c_int) -> Result<Protection> {
        if prot == libc::PROT_READ {
            Ok(Protection::Read)
        } else if prot == libc::PROT_READ | libc::PROT_WRITE {
            Ok(Protection::ReadWrite)
        } else {
            Err(Error::invalid(
                "foreignmemory protection",
                None,
                "only PROT_READ and PROT_READ | PROT_WRITE can map foreign memory",
            ))
        }
    }
}
