//! [`Errno`]: the error number type of the workspace, owned here so that no other crate's
//! version is part of any public API.

use core::fmt;

/// An error number as the kernel reports it (`EPERM`, `ENOENT`, ...): a positive `errno`.
///
/// The constants carry Linux's names and values for the target. `Display` gives the C
/// library's message (`"Operation not permitted"`) without allocating; `Debug` gives the name
/// (`EPERM`) where the crate knows it.
///
/// ```
/// use xen_hypercall::Errno;
///
/// let e = Errno::from_raw(1);
/// assert_eq!(e, Errno::EPERM);
/// assert_eq!(e.raw(), 1);
/// assert_eq!(e.to_string(), "Operation not permitted");
/// assert_eq!(format!("{e:?}"), "EPERM");
/// let io: std::io::Error = e.into();
/// assert_eq!(io.raw_os_error(), Some(1));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($name:ident)*) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub const $name: Errno = Errno(libc::$name);
            )*
        }

        /// The name of a known errno, for `Debug`.
        fn name(raw: i32) -> Option<&'static str> {
            // Aliases (EWOULDBLOCK, EDEADLOCK) come after the names they alias, so the first
            // match is the usual name.
            $(if raw == libc::$name { return Some(stringify!($name)); })*
            None
        }
    };
}

errnos! {
    EPERM ENOENT ESRCH EINTR EIO ENXIO E2BIG ENOEXEC EBADF ECHILD EAGAIN ENOMEM EACCES EFAULT
    EBUSY EEXIST EXDEV ENODEV ENOTDIR EISDIR EINVAL ENFILE EMFILE ENOTTY EFBIG ENOSPC EROFS
    EMLINK EDOM ERANGE EDEADLK ENAMETOOLONG ENOLCK ENOSYS ENOTEMPTY ENODATA ETIME EBADMSG
    EOVERFLOW EILSEQ ERESTART ENOTSOCK EMSGSIZE EOPNOTSUPP EADDRINUSE EADDRNOTAVAIL ENOBUFS
    EISCONN ENOTCONN ETIMEDOUT ECONNREFUSED EWOULDBLOCK EDEADLOCK
}

impl Errno {
    /// No error number: what [`errno_from_xen`](crate::errno_from_xen) gives for a code Xen
    /// does not define (raw value 0).
    pub const UNKNOWN: Errno = Errno(0);

    /// The errno with this raw value.
    pub const fn from_raw(raw: i32) -> Errno {
        Errno(raw)
    }

    /// The raw value, as C's `errno` holds it.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The calling thread's current `errno`; read it right after the failed call.
    #[cold]
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// The errno of an I/O error, when it has one.
    pub fn from_io_error(e: &std::io::Error) -> Option<Errno> {
        e.raw_os_error().map(Errno)
    }

    /// Decodes a raw system-call result: `-4095..=-1` is `-errno`, anything else the value.
    #[inline(always)]
    pub const fn from_ret(ret: isize) -> Result<usize, Errno> {
        if ret < 0 && ret >= -4095 {
            Err(Errno(-ret as i32))
        } else {
            Ok(ret as usize)
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match name(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    /// The C library's message for the errno, copied into a stack buffer (no allocation).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("Unknown errno");
        }
        crate::sys::strerror(self.0, |msg| match msg {
            Some(m) => f.write_str(m),
            None => write!(f, "Unknown error {}", self.0),
        })
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.0)
    }
}
