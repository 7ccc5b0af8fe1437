//! The crate's error type: the workspace's [`xen_hypercall::Error`], plus the failures only a
//! foreign mapping has (a frame that did not map, an access outside the mapping).

use core::fmt;

use xen_hypercall::{DomId, Errno};

/// Why one frame of a batch did not map: its position in the list, its number, and the error
/// Xen or the kernel reported for it.
///
/// ```
/// use xen_foreignmemory::{Errno, FrameError};
///
/// let e = FrameError { index: 3, gfn: 0x1_0000_0000, errno: Errno::EINVAL };
/// assert_eq!(e.to_string(), "frame 3 (gfn 0x100000000): Invalid argument");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    /// Position of the frame in the list passed to the map call (0-based).
    pub index: usize,
    /// The frame number that was asked for.
    pub gfn: u64,
    /// What went wrong: `ENOENT` paged out (still, after the retries), `EINVAL` no such frame
    /// in the guest, `ESRCH` no such domain, `EPERM` not allowed, ...
    pub errno: Errno,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame {} (gfn {:#x}): {}",
            self.index,
            self.gfn,
            self.errno.desc()
        )
    }
}

/// An error of this crate.
///
/// Every variant maps to an errno ([`Error::errno`]) and answers the same questions as the
/// workspace error ([`Error::is_not_supported`], [`Error::is_permission_denied`], ...), so
/// callers can treat them alike. The type is `Copy` and allocation-free.
///
/// ```
/// use xen_foreignmemory::{DomId, Errno, Error, FrameError};
///
/// let e = Error::Frame {
///     op: "foreignmemory map",
///     domain: DomId::new(5),
///     frame: FrameError { index: 1, gfn: 0x9999_9999, errno: Errno::EINVAL },
///     failed: 1,
///     count: 4,
/// };
/// assert_eq!(
///     e.to_string(),
///     "foreignmemory map on domain 5: frame 1 (gfn 0x99999999): Invalid argument \
///      (1 of 4 frames failed; nothing is mapped)"
/// );
/// assert_eq!(e.errno(), Errno::EINVAL);
/// assert_eq!(e.frame().map(|f| f.index), Some(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel or Xen refused the operation as a whole, or an argument was refused before
    /// any syscall: the workspace error, with its operation, domain and errno.
    #[error(transparent)]
    Xen(#[from] xen_hypercall::Error),
    /// A frame of a batch did not map, and the call wanted all of them (or none mapped at
    /// all): nothing is left mapped.
    #[error(
        "{op} on domain {domain}: {frame} ({failed} of {count} frames failed; nothing is mapped)"
    )]
    Frame {
        /// The operation.
        op: &'static str,
        /// The domain whose frames were mapped.
        domain: DomId,
        /// The first frame that failed, and why.
        frame: FrameError,
        /// How many frames failed.
        failed: usize,
        /// How many frames were asked for.
        count: usize,
    },
    /// An access reached outside the mapping (errno `EFAULT`).
    #[error("{op}: {len} bytes at offset {offset:#x} are outside the mapping of {size} bytes")]
    OutOfBounds {
        /// The access.
        op: &'static str,
        /// Its byte offset in the mapping.
        offset: usize,
        /// Its length in bytes.
        len: usize,
        /// The mapping's length in bytes.
        size: usize,
    },
    /// An access touched a frame of a partial mapping that did not map (errno `EFAULT`).
    #[error("{op}: {frame} is not mapped")]
    NotMapped {
        /// The access.
        op: &'static str,
        /// The frame, and why it did not map.
        frame: FrameError,
    },
    /// A typed view was asked for at an offset not aligned for its type (errno `EINVAL`).
    #[error("{op}: offset {offset:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// The access.
        op: &'static str,
        /// The offset asked for.
        offset: usize,
        /// The alignment the type needs.
        align: usize,
    },
}

/// The crate's result type.
///
/// ```
/// fn frames(m: &xen_foreignmemory::Mapping) -> xen_foreignmemory::Result<usize> {
///     Ok(m.frames())
/// }
/// # let _ = frames;
/// ```
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// An [`Error::Xen`] with [`xen_hypercall::Error::InvalidArgument`]: refused before any
    /// syscall.
    pub(crate) const fn invalid(
        op: &'static str,
        domain: Option<DomId>,
        reason: &'static str,
    ) -> Error {
        Error::Xen(xen_hypercall::Error::InvalidArgument { op, domain, reason })
    }

    /// An [`Error::Xen`] with [`xen_hypercall::Error::Os`].
    pub(crate) const fn os(op: &'static str, domain: Option<DomId>, errno: Errno) -> Error {
        Error::Xen(xen_hypercall::Error::os(op, domain, errno))
    }

    /// The errno: the reported one for kernel and Xen failures (a failed frame's own code for
    /// [`Error::Frame`]), `EINVAL` for arguments refused up front and misaligned views,
    /// `EFAULT` for accesses outside the mapping or into a frame that did not map.
    ///
    /// ```
    /// use xen_foreignmemory::{Errno, Error};
    ///
    /// let e = Error::OutOfBounds { op: "read", offset: 4096, len: 4, size: 4096 };
    /// assert_eq!(e.errno(), Errno::EFAULT);
    /// ```
    pub const fn errno(&self) -> Errno {
        match self {
            Error::Xen(e) => e.errno(),
            Error::Frame { frame, .. } => frame.errno,
            Error::OutOfBounds { .. } | Error::NotMapped { .. } => Errno::EFAULT,
            Error::Misaligned { .. } => Errno::EINVAL,
        }
    }

    /// The operation that failed.
    ///
    /// ```
    /// use xen_foreignmemory::Error;
    ///
    /// let e = Error::Misaligned { op: "view", offset: 3, align: 8 };
    /// assert_eq!(e.op(), "view");
    /// ```
    pub const fn op(&self) -> &'static str {
        match self {
            Error::Xen(e) => e.op(),
            Error::Frame { op, .. }
            | Error::OutOfBounds { op, .. }
            | Error::NotMapped { op, .. }
            | Error::Misaligned { op, .. } => op,
        }
    }

    /// The domain the operation acted on, if any.
    ///
    /// ```
    /// use xen_foreignmemory::{DomId, Errno, Error};
    ///
    /// let e: Error = xen_hypercall::Error::os("x", Some(DomId::new(3)), Errno::EPERM).into();
    /// assert_eq!(e.domain(), Some(DomId::new(3)));
    /// ```
    pub const fn domain(&self) -> Option<DomId> {
        match self {
            Error::Xen(e) => e.domain(),
            Error::Frame { domain, .. } => Some(*domain),
            _ => None,
        }
    }

    /// The first frame that failed, for [`Error::Frame`] (and the unmapped frame an access
    /// touched, for [`Error::NotMapped`]).
    ///
    /// ```
    /// use xen_foreignmemory::{Errno, Error, FrameError};
    ///
    /// let frame = FrameError { index: 0, gfn: 7, errno: Errno::ENOENT };
    /// assert_eq!(Error::NotMapped { op: "read", frame }.frame(), Some(frame));
    /// ```
    pub const fn frame(&self) -> Option<FrameError> {
        match self {
            Error::Frame { frame, .. } | Error::NotMapped { frame, .. } => Some(*frame),
            _ => None,
        }
    }

    /// `true` when the kernel or Xen does not offer the operation (`ENOSYS`, `EOPNOTSUPP`,
    /// `ENOTTY`): e.g. [`map_resource`](crate::ForeignMemory::map_resource) on a Xen or kernel
    /// without resource mapping, or of a resource the domain does not have. Device models
    /// then fall back to mapping frames by number.
    ///
    /// ```
    /// use xen_foreignmemory::{DomId, Errno, Error};
    ///
    /// let e: Error = xen_hypercall::Error::os("m", Some(DomId::new(1)), Errno::EOPNOTSUPP).into();
    /// assert!(e.is_not_supported());
    /// ```
    pub const fn is_not_supported(&self) -> bool {
        matches!(
            self.errno(),
            Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::ENOTTY
        ) && !matches!(self, Error::OutOfBounds { .. } | Error::NotMapped { .. })
    }

    /// `true` for `EPERM` and `EACCES`: not allowed (a handle restricted to another domain,
    /// resources of dom0, XSM policy).
    ///
    /// ```
    /// use xen_foreignmemory::{DomId, Errno, Error};
    ///
    /// let e: Error = xen_hypercall::Error::os("m", Some(DomId::new(1)), Errno::EPERM).into();
    /// assert!(e.is_permission_denied());
    /// ```
    pub const fn is_permission_denied(&self) -> bool {
        matches!(self.errno(), Errno::EPERM | Errno::EACCES)
    }

    /// `true` for `ESRCH`: the domain does not exist.
    ///
    /// ```
    /// use xen_foreignmemory::{DomId, Errno, Error};
    ///
    /// let e: Error = xen_hypercall::Error::os("m", Some(DomId::new(1)), Errno::ESRCH).into();
    /// assert!(e.is_no_such_domain());
    /// ```
    pub const fn is_no_such_domain(&self) -> bool {
        matches!(self.errno(), Errno::ESRCH)
    }

    /// `true` for `EINVAL`: a bad argument, refused up front or by the kernel or Xen (which
    /// is also what a frame number the guest does not have gives).
    ///
    /// ```
    /// use xen_foreignmemory::Error;
    ///
    /// assert!(Error::Misaligned { op: "view", offset: 1, align: 4 }.is_invalid_argument());
    /// ```
    pub const fn is_invalid_argument(&self) -> bool {
        match self {
            Error::Xen(e) => e.is_invalid_argument(),
            _ => matches!(self.errno(), Errno::EINVAL),
        }
    }
}

impl From<Error> for std::io::Error {
    /// Keeps the errno as the raw OS error (log the [`Error`] first if you need its message).
    fn from(e: Error) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.errno() as i32)
    }
}
