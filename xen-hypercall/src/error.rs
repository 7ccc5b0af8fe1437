//! The error type shared by every crate of the workspace.

use core::fmt;

use crate::{DomId, Errno, Gfn};

/// Shorthand for `Result<T, xen_hypercall::Error>`.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What went wrong in a Xen operation: one type for the whole workspace.
///
/// Every error names the operation (`op`, e.g. `"dm_op set_isa_irq_level"`) and, where there is
/// one, the domain it acted on. Failures reported by the kernel or by Xen carry their
/// [`Errno`] ([`Error::Os`]); arguments that could never work are refused *before* any syscall
/// with the other variants, which map to an errno too ([`Error::errno`]) so callers can treat
/// both alike.
///
/// `Display` reads like `dm_op set_isa_irq_level on domain 7: Operation not permitted`.
///
/// Other crates build errors with the variants directly, or with [`Error::os`] /
/// [`Error::last_os_error`] right after a failed syscall. The type is `Copy` and allocation-free
/// (operation names and reasons are `&'static str`), so error paths never touch the heap.
///
/// ```
/// use xen_hypercall::{DomId, Errno, Error};
///
/// let e = Error::os("dm_op set_isa_irq_level", Some(DomId::new(7)), Errno::EPERM);
/// assert_eq!(e.to_string(), "dm_op set_isa_irq_level on domain 7: Operation not permitted");
/// assert!(e.is_permission_denied());
/// assert_eq!(e.errno(), Errno::EPERM);
/// assert_eq!(e.domain(), Some(DomId::new(7)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel or the hypervisor refused or failed the operation.
    ///
    /// Through privcmd, Xen's own negative error codes arrive as the ioctl's errno unchanged;
    /// on the supported targets they mean the same as Linux's (see [`errno_from_xen`]).
    #[error("{op}{}: {}", OnDomain(*.domain), .errno)]
    Os {
        /// The operation, e.g. `"xen_version"` or `"dm_op set_isa_irq_level"`.
        op: &'static str,
        /// The domain acted on, when the operation has one.
        domain: Option<DomId>,
        /// The error number reported by the kernel or by Xen.
        errno: Errno,
    },
    /// An argument was refused before any syscall because it could never work (errno
    /// `EINVAL` in [`Error::errno`]).
    #[error("{op}{}: invalid argument: {reason}", OnDomain(*.domain))]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// The domain, when the operation has one.
        domain: Option<DomId>,
        /// Why the argument was refused.
        reason: &'static str,
    },
    /// The running kernel does not offer the operation: its privcmd driver predates the ioctl
    /// (`ENOTTY`, or `EINVAL` from old drivers) or was built without it (`EOPNOTSUPP`). Use the
    /// fallback (e.g. serve the event in user space); `errno` is what the kernel answered.
    #[error("{op}{}: not supported by this kernel ({})", OnDomain(*.domain), .errno)]
    NotSupported {
        /// The operation.
        op: &'static str,
        /// The domain, when the operation has one.
        domain: Option<DomId>,
        /// What the kernel answered.
        errno: Errno,
    },
    /// More buffers than the kernel accepts in one call (privcmd's `dm_op_max_nr_bufs`,
    /// 16 by default); refused before the syscall (errno `E2BIG` in [`Error::errno`]).
    #[error("{op}{}: {count} buffers, more than the limit of {max} per call", OnDomain(*.domain))]
    TooManyBuffers {
        /// The operation.
        op: &'static str,
        /// The domain, when the operation has one.
        domain: Option<DomId>,
        /// How many buffers were passed.
        count: usize,
        /// The most the kernel accepts.
        max: usize,
    },
    /// A buffer larger than the kernel accepts (privcmd's `dm_op_buf_max_size`, 4096 bytes by
    /// default); refused before the syscall (errno `E2BIG` in [`Error::errno`]).
    #[error(
        "{op}{}: buffer {index} is {size} bytes, more than the limit of {max}",
        OnDomain(*.domain)
    )]
    BufferTooLarge {
        /// The operation.
        op: &'static str,
        /// The domain, when the operation has one.
        domain: Option<DomId>,
        /// Which buffer (0-based).
        index: usize,
        /// Its size in bytes.
        size: usize,
        /// The largest size the kernel accepts.
        max: usize,
    },
    /// A frame of a foreign-memory batch did not map, and the call wanted all of them (or
    /// none mapped at all): nothing is left mapped. The errno is the frame's own.
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
    /// An access reached outside a mapping (errno `EFAULT`).
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

/// Why one frame of a foreign-memory batch did not map: its position in the list, its
/// number, and the error Xen or the kernel reported for it.
///
/// ```
/// use xen_hypercall::{Errno, FrameError, Gfn};
///
/// let e = FrameError { index: 3, gfn: Gfn::new(0x1_0000_0000), errno: Errno::EINVAL };
/// assert_eq!(e.to_string(), "frame 3 (gfn 0x100000000): Invalid argument");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    /// Position of the frame in the list passed to the map call (0-based).
    pub index: usize,
    /// The frame number that was asked for.
    pub gfn: Gfn,
    /// What went wrong: `ENOENT` paged out (still, after the retries), `EINVAL` no such frame
    /// in the guest, `ESRCH` no such domain, `EPERM` not allowed, ...
    pub errno: Errno,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {} (gfn {}): {}", self.index, self.gfn, self.errno)
    }
}

/// Formats `" on domain 7"`, or nothing without a domain.
struct OnDomain(Option<DomId>);

impl fmt::Display for OnDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, " on domain {d}"),
            None => Ok(()),
        }
    }
}

impl Error {
    /// An [`Error::Os`] from an errno.
    pub const fn os(op: &'static str, domain: Option<DomId>, errno: Errno) -> Error {
        Error::Os { op, domain, errno }
    }

    /// An [`Error::Os`] from the calling thread's current `errno`; call it right after the
    /// failed syscall.
    #[cold]
    #[inline(never)]
    pub fn last_os_error(op: &'static str, domain: Option<DomId>) -> Error {
        Error::Os {
            op,
            domain,
            errno: Errno::last(),
        }
    }

    /// An [`Error::Os`] from a Xen error code found in memory (positive or negative, e.g. a
    /// per-frame code of `MMAPBATCH_V2`), translated with [`errno_from_xen`].
    pub fn from_xen(op: &'static str, domain: Option<DomId>, code: i64) -> Error {
        Error::Os {
            op,
            domain,
            errno: errno_from_xen(code),
        }
    }

    /// The operation that failed.
    /// ```
    /// use xen_hypercall::Error;
    ///
    /// let e = Error::Misaligned { op: "view", offset: 3, align: 8 };
    /// assert_eq!(e.op(), "view");
    /// ```
    pub const fn op(&self) -> &'static str {
        match *self {
            Error::Os { op, .. }
            | Error::NotSupported { op, .. }
            | Error::InvalidArgument { op, .. }
            | Error::TooManyBuffers { op, .. }
            | Error::BufferTooLarge { op, .. }
            | Error::Frame { op, .. }
            | Error::OutOfBounds { op, .. }
            | Error::NotMapped { op, .. }
            | Error::Misaligned { op, .. } => op,
        }
    }

    /// The domain the operation acted on, if any.
    /// ```
    /// use xen_hypercall::{DomId, Errno, Error};
    ///
    /// let e = Error::os("x", Some(DomId::new(3)), Errno::EPERM);
    /// assert_eq!(e.domain(), Some(DomId::new(3)));
    /// let e = Error::OutOfBounds { op: "read", offset: 0, len: 8, size: 4 };
    /// assert_eq!(e.domain(), None); // an access to a mapping names no domain
    /// ```
    pub const fn domain(&self) -> Option<DomId> {
        match *self {
            Error::Os { domain, .. }
            | Error::NotSupported { domain, .. }
            | Error::InvalidArgument { domain, .. }
            | Error::TooManyBuffers { domain, .. }
            | Error::BufferTooLarge { domain, .. } => domain,
            Error::Frame { domain, .. } => Some(domain),
            Error::OutOfBounds { .. } | Error::NotMapped { .. } | Error::Misaligned { .. } => None,
        }
    }

    /// The same error, naming another operation (for a crate that wraps a lower call, e.g.
    /// `xen-devicemodel` naming `"dm_op set_isa_irq_level"`).
    pub const fn with_op(mut self, new_op: &'static str) -> Error {
        match &mut self {
            Error::Os { op, .. }
            | Error::NotSupported { op, .. }
            | Error::InvalidArgument { op, .. }
            | Error::TooManyBuffers { op, .. }
            | Error::BufferTooLarge { op, .. }
            | Error::Frame { op, .. }
            | Error::OutOfBounds { op, .. }
            | Error::NotMapped { op, .. }
            | Error::Misaligned { op, .. } => *op = new_op,
        }
        self
    }

    /// The same error, naming the domain.
    pub const fn with_domain(mut self, new_domain: DomId) -> Error {
        match &mut self {
            Error::Os { domain, .. }
            | Error::NotSupported { domain, .. }
            | Error::InvalidArgument { domain, .. }
            | Error::TooManyBuffers { domain, .. }
            | Error::BufferTooLarge { domain, .. } => *domain = Some(new_domain),
            Error::Frame { domain, .. } => *domain = new_domain,
            // Accesses to a mapping name no domain.
            Error::OutOfBounds { .. } | Error::NotMapped { .. } | Error::Misaligned { .. } => {}
        }
        self
    }

    /// The errno: the reported one for [`Error::Os`] (a failed frame's own code for
    /// [`Error::Frame`]), `EINVAL` for [`Error::InvalidArgument`] and misaligned views,
    /// `E2BIG` for the buffer limits (what the kernel would have said), `EFAULT` for accesses
    /// outside a mapping or into a frame that did not map.
    /// ```
    /// use xen_hypercall::{Errno, Error};
    ///
    /// let e = Error::OutOfBounds { op: "read", offset: 4096, len: 4, size: 4096 };
    /// assert_eq!(e.errno(), Errno::EFAULT);
    /// ```
    pub const fn errno(&self) -> Errno {
        match *self {
            Error::Os { errno, .. } | Error::NotSupported { errno, .. } => errno,
            Error::InvalidArgument { .. } | Error::Misaligned { .. } => Errno::EINVAL,
            Error::TooManyBuffers { .. } | Error::BufferTooLarge { .. } => Errno::E2BIG,
            Error::Frame { frame, .. } => frame.errno,
            Error::OutOfBounds { .. } | Error::NotMapped { .. } => Errno::EFAULT,
        }
    }

    /// The first frame that failed, for [`Error::Frame`] (and the unmapped frame an access
    /// touched, for [`Error::NotMapped`]).
    /// ```
    /// use xen_hypercall::{Errno, Error, FrameError, Gfn};
    ///
    /// let frame = FrameError { index: 0, gfn: Gfn::new(7), errno: Errno::ENOENT };
    /// assert_eq!(Error::NotMapped { op: "read", frame }.frame(), Some(frame));
    /// ```
    pub const fn frame(&self) -> Option<FrameError> {
        match *self {
            Error::Frame { frame, .. } | Error::NotMapped { frame, .. } => Some(frame),
            _ => None,
        }
    }

    /// An [`Error::InvalidArgument`]: refused before any syscall.
    /// ```
    /// use xen_hypercall::{DomId, Error};
    ///
    /// let e = Error::invalid("map", Some(DomId::new(1)), "no frames");
    /// assert!(e.is_invalid_argument() && !e.is_os());
    /// ```
    pub const fn invalid(op: &'static str, domain: Option<DomId>, reason: &'static str) -> Error {
        Error::InvalidArgument { op, domain, reason }
    }

    /// `true` when the error came from the kernel or Xen ([`Error::Os`],
    /// [`Error::NotSupported`], [`Error::Frame`]), `false` when the arguments were refused
    /// before any syscall or an access missed a mapping.
    pub const fn is_os(&self) -> bool {
        matches!(
            self,
            Error::Os { .. } | Error::NotSupported { .. } | Error::Frame { .. }
        )
    }

    /// The errno Xen or the kernel reported, for the variants that carry one.
    const fn reported(&self) -> Option<Errno> {
        match *self {
            Error::Os { errno, .. } => Some(errno),
            Error::Frame { frame, .. } => Some(frame.errno),
            _ => None,
        }
    }

    /// `true` when the kernel or Xen does not offer the operation: `ENOSYS` (Xen lacks the
    /// hypercall or sub-op), `EOPNOTSUPP` (not supported for this domain or resource), or
    /// `ENOTTY` (the kernel driver lacks the ioctl); and always for [`Error::NotSupported`].
    /// ```
    /// use xen_hypercall::{DomId, Errno, Error};
    ///
    /// assert!(Error::os("m", Some(DomId::new(1)), Errno::EOPNOTSUPP).is_not_supported());
    /// ```
    pub const fn is_not_supported(&self) -> bool {
        matches!(self, Error::NotSupported { .. })
            || matches!(
                self.reported(),
                Some(Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::ENOTTY)
            )
    }

    /// `true` for `EPERM` and `EACCES`: the caller may not do this (not privileged, XSM
    /// policy, a handle restricted to another domain, dm_op on a PV dom0).
    /// ```
    /// use xen_hypercall::{DomId, Errno, Error, FrameError, Gfn};
    ///
    /// let frame = FrameError { index: 0, gfn: Gfn::new(9), errno: Errno::EPERM };
    /// let e = Error::Frame { op: "map", domain: DomId::new(1), frame, failed: 1, count: 1 };
    /// assert!(e.is_permission_denied());
    /// ```
    pub const fn is_permission_denied(&self) -> bool {
        matches!(self.reported(), Some(Errno::EPERM | Errno::EACCES))
    }

    /// `true` for `ESRCH`: the domain does not exist (any more).
    /// ```
    /// use xen_hypercall::{DomId, Errno, Error};
    ///
    /// assert!(Error::os("m", Some(DomId::new(1)), Errno::ESRCH).is_no_such_domain());
    /// ```
    pub const fn is_no_such_domain(&self) -> bool {
        matches!(self.reported(), Some(Errno::ESRCH))
    }

    /// `true` for `EINVAL` from the kernel or Xen (which is also what a frame number the
    /// guest does not have gives), and for every argument refused up front.
    /// ```
    /// use xen_hypercall::Error;
    ///
    /// assert!(Error::Misaligned { op: "view", offset: 1, align: 4 }.is_invalid_argument());
    /// ```
    pub const fn is_invalid_argument(&self) -> bool {
        match *self {
            Error::Os { errno, .. } => matches!(errno, Errno::EINVAL),
            Error::Frame { frame, .. } => matches!(frame.errno, Errno::EINVAL),
            Error::NotSupported { .. } | Error::OutOfBounds { .. } | Error::NotMapped { .. } => {
                false
            }
            Error::InvalidArgument { .. }
            | Error::TooManyBuffers { .. }
            | Error::BufferTooLarge { .. }
            | Error::Misaligned { .. } => true,
        }
    }
}

impl From<Error> for std::io::Error {
    /// Keeps the errno as the raw OS error; the message is lost, so log the [`Error`] first if
    /// you need it.
    fn from(e: Error) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.errno().raw())
    }
}

/// Every error code of Xen 4.17's `xen/include/public/errno.h`, with the Linux errno of the
/// same meaning.
const XEN_ERRNOS: &[(i32, Errno)] = &[
    (1, Errno::EPERM),
    (2, Errno::ENOENT),
    (3, Errno::ESRCH),
    (4, Errno::EINTR),
    (5, Errno::EIO),
    (6, Errno::ENXIO),
    (7, Errno::E2BIG),
    (8, Errno::ENOEXEC),
    (9, Errno::EBADF),
    (10, Errno::ECHILD),
    (11, Errno::EAGAIN),
    (12, Errno::ENOMEM),
    (13, Errno::EACCES),
    (14, Errno::EFAULT),
    (16, Errno::EBUSY),
    (17, Errno::EEXIST),
    (18, Errno::EXDEV),
    (19, Errno::ENODEV),
    (20, Errno::ENOTDIR),
    (21, Errno::EISDIR),
    (22, Errno::EINVAL),
    (23, Errno::ENFILE),
    (24, Errno::EMFILE),
    (28, Errno::ENOSPC),
    (30, Errno::EROFS),
    (31, Errno::EMLINK),
    (33, Errno::EDOM),
    (34, Errno::ERANGE),
    (35, Errno::EDEADLK),
    (36, Errno::ENAMETOOLONG),
    (37, Errno::ENOLCK),
    (38, Errno::ENOSYS),
    (39, Errno::ENOTEMPTY),
    (61, Errno::ENODATA),
    (62, Errno::ETIME),
    (74, Errno::EBADMSG),
    (75, Errno::EOVERFLOW),
    (84, Errno::EILSEQ),
    (85, Errno::ERESTART),
    (88, Errno::ENOTSOCK),
    (90, Errno::EMSGSIZE),
    (95, Errno::EOPNOTSUPP),
    (98, Errno::EADDRINUSE),
    (99, Errno::EADDRNOTAVAIL),
    (105, Errno::ENOBUFS),
    (106, Errno::EISCONN),
    (107, Errno::ENOTCONN),
    (110, Errno::ETIMEDOUT),
    (111, Errno::ECONNREFUSED),
];

// Privcmd hands Xen's codes to user space unchanged as errno. That is only right where Linux
// numbers its errnos as Xen does, which holds on x86 and Arm (asm-generic numbering): check
// every code at compile time, so a target where they differ fails to build instead of
// misreporting errors.
const _: () = {
    let mut i = 0;
    while i < XEN_ERRNOS.len() {
        assert!(XEN_ERRNOS[i].0 == XEN_ERRNOS[i].1.raw());
        i += 1;
    }
};

/// Translates a Xen error code (`XEN_EPERM` … from `xen/include/public/errno.h`; the sign is
/// ignored, Xen returns them negated) into the errno of the same meaning.
///
/// Codes outside Xen's list give [`Errno::UNKNOWN`]. Use it for codes Xen writes into
/// memory, such as `MMAPBATCH_V2`'s per-frame errors; codes returned by a privcmd ioctl are
/// already errnos. On x86_64 and aarch64 every Xen code equals the Linux errno of the same
/// name (checked at compile time), so the translation is the identity on the listed codes.
///
/// ```
/// use xen_hypercall::{errno_from_xen, Errno};
///
/// assert_eq!(errno_from_xen(-1), Errno::EPERM);
/// assert_eq!(errno_from_xen(-95), Errno::EOPNOTSUPP);
/// assert_eq!(errno_from_xen(-27), Errno::UNKNOWN); // not a Xen code (EFBIG in Linux)
/// ```
pub fn errno_from_xen(code: i64) -> Errno {
    let code = code.unsigned_abs();
    XEN_ERRNOS
        .iter()
        .find(|&&(xen, _)| u64::from(xen.unsigned_abs()) == code)
        .map_or(Errno::UNKNOWN, |&(_, errno)| errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message, without the " (os error N)" that Miri's `strerror_r` (std's text) adds.
    fn text(e: &Error) -> String {
        let s = e.to_string();
        match s.find(" (os error ") {
            Some(i) if cfg!(miri) => s[..i].to_string(),
            _ => s,
        }
    }

    #[test]
    fn display_reads_naturally() {
        let e = Error::os("dm_op set_isa_irq_level", Some(DomId::new(7)), Errno::EPERM);
        assert_eq!(
            text(&e),
            "dm_op set_isa_irq_level on domain 7: Operation not permitted"
        );
        let e = Error::os("xen_version", None, Errno::ENOSYS);
        assert_eq!(text(&e), "xen_version: Function not implemented");
        let e = Error::TooManyBuffers {
            op: "dm_op",
            domain: Some(DomId::new(3)),
            count: 17,
            max: 16,
        };
        assert_eq!(
            e.to_string(),
            "dm_op on domain 3: 17 buffers, more than the limit of 16 per call"
        );
        let e = Error::BufferTooLarge {
            op: "dm_op",
            domain: None,
            index: 1,
            size: 5000,
            max: 4096,
        };
        assert_eq!(
            e.to_string(),
            "dm_op: buffer 1 is 5000 bytes, more than the limit of 4096"
        );
        let e = Error::InvalidArgument {
            op: "privcmd restrict",
            domain: Some(DomId::SELF),
            reason: "x",
        };
        assert_eq!(
            e.to_string(),
            "privcmd restrict on domain DOMID_SELF: invalid argument: x"
        );
    }

    #[test]
    fn helpers() {
        let d = Some(DomId::new(1));
        assert!(Error::os("a", d, Errno::ENOSYS).is_not_supported());
        assert!(Error::os("a", d, Errno::EOPNOTSUPP).is_not_supported());
        assert!(Error::os("a", d, Errno::ENOTTY).is_not_supported());
        assert!(!Error::os("a", d, Errno::EPERM).is_not_supported());
        assert!(Error::os("a", d, Errno::EPERM).is_permission_denied());
        assert!(Error::os("a", d, Errno::EACCES).is_permission_denied());
        assert!(!Error::os("a", d, Errno::EINVAL).is_permission_denied());
        assert!(Error::os("a", d, Errno::ESRCH).is_no_such_domain());
        assert!(Error::os("a", d, Errno::EINVAL).is_invalid_argument());
        assert!(!Error::os("a", d, Errno::E2BIG).is_invalid_argument());
        let limit = Error::TooManyBuffers {
            op: "a",
            domain: d,
            count: 20,
            max: 16,
        };
        assert!(limit.is_invalid_argument());
        assert_eq!(limit.errno(), Errno::E2BIG);
        assert!(!limit.is_os());
        let e = Error::os("a", None, Errno::EIO)
            .with_op("b")
            .with_domain(DomId::new(4));
        assert_eq!((e.op(), e.domain()), ("b", Some(DomId::new(4))));
        let io: std::io::Error = Error::os("a", None, Errno::EPERM).into();
        assert_eq!(io.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn xen_codes_map_faithfully() {
        for &(xen, errno) in XEN_ERRNOS {
            assert_eq!(errno_from_xen(-i64::from(xen)), errno);
            assert_eq!(errno_from_xen(i64::from(xen)), errno);
            assert_eq!(errno.raw(), xen, "{errno:?}");
        }
        // Aliases in errno.h: EWOULDBLOCK = EAGAIN, EDEADLOCK = EDEADLK.
        assert_eq!(errno_from_xen(-11), Errno::EWOULDBLOCK);
        assert_eq!(errno_from_xen(-35), Errno::EDEADLOCK);
        // Not Xen codes.
        assert_eq!(errno_from_xen(0), Errno::UNKNOWN);
        assert_eq!(errno_from_xen(-15), Errno::UNKNOWN);
        assert_eq!(errno_from_xen(i64::MIN), Errno::UNKNOWN);
        assert_eq!(Error::from_xen("m", None, -3).errno(), Errno::ESRCH);
    }
}
