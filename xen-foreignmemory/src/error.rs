//! The crate's error type is the workspace's [`xen_hypercall::Error`]: one `Copy` enum whose
//! foreign-memory variants ([`Error::Frame`], [`Error::OutOfBounds`], [`Error::NotMapped`],
//! [`Error::Misaligned`]) carry the frame detail, so `?` carries it unchanged into any crate
//! of the workspace.

/// The error of every call of this crate (the workspace's, re-exported).
///
/// ```
/// use xen_foreignmemory::{DomId, Errno, Error, FrameError, Gfn};
///
/// let e = Error::Frame {
///     op: "foreignmemory map",
///     domain: DomId::new(5),
///     frame: FrameError { index: 1, gfn: Gfn::new(0x9999_9999), errno: Errno::EINVAL },
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
pub use xen_hypercall::Error;
/// Why one frame of a batch did not map (the workspace's, re-exported).
pub use xen_hypercall::FrameError;
/// The crate's result type.
///
/// ```
/// fn frames(m: &xen_foreignmemory::Mapping) -> xen_foreignmemory::Result<usize> {
///     Ok(m.frames())
/// }
/// # let _ = frames;
/// ```
pub use xen_hypercall::Result;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DomId, Errno};

    #[test]
    fn mapping_errors_answer_like_the_others() {
        let e = Error::OutOfBounds {
            op: "read",
            offset: 4096,
            len: 4,
            size: 4096,
        };
        assert_eq!(e.errno(), Errno::EFAULT);
        assert_eq!((e.domain(), e.is_invalid_argument()), (None, false));
        let e = Error::Misaligned {
            op: "view",
            offset: 3,
            align: 8,
        };
        assert_eq!(e.op(), "view");
        assert!(e.is_invalid_argument());
        let frame = FrameError {
            index: 0,
            gfn: crate::Gfn::new(7),
            errno: Errno::ENOENT,
        };
        assert_eq!(Error::NotMapped { op: "read", frame }.frame(), Some(frame));
        let d = Some(DomId::new(1));
        assert!(Error::os("m", d, Errno::EOPNOTSUPP).is_not_supported());
        assert!(Error::os("m", d, Errno::EPERM).is_permission_denied());
        assert!(Error::os("m", d, Errno::ESRCH).is_no_such_domain());
        let batch = |errno| Error::Frame {
            op: "foreignmemory map",
            domain: DomId::new(5),
            frame: FrameError {
                index: 1,
                gfn: crate::Gfn::new(9),
                errno,
            },
            failed: 1,
            count: 4,
        };
        assert!(batch(Errno::EPERM).is_permission_denied());
        assert!(batch(Errno::ESRCH).is_no_such_domain());
        assert!(batch(Errno::EINVAL).is_invalid_argument());
        assert_eq!(batch(Errno::EINVAL).domain(), Some(DomId::new(5)));
        let io: std::io::Error = batch(Errno::EPERM).into();
        assert_eq!(io.raw_os_error(), Some(libc::EPERM));
    }
}
