//! DM_OP plumbing: the borrowed buffer list and the kernel's limits.

use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use core::mem::size_of;

use crate::{abi, sys, DomId, Error, Plain};

/// One buffer of a dm_op, borrowed mutably from the caller (Xen may write any of them).
///
/// Laid out exactly like the kernel's `struct privcmd_dm_op_buf` (pointer, size), so a
/// `&[DmOpBuf]` is handed to `IOCTL_PRIVCMD_DM_OP` as it is: no copy, no allocation. Build them
/// on the stack:
///
/// ```
/// use xen_hypercall::DmOpBuf;
///
/// let mut header = [0u8; 16];
/// let mut bitmap = [0u64; 8];
/// let bufs = [DmOpBuf::from_bytes(&mut header), DmOpBuf::from_slice_mut(&mut bitmap)];
/// assert_eq!(bufs[1].len(), 64);
/// ```
#[repr(C)]
pub struct DmOpBuf<'a> {
    ptr: *mut c_void,
    size: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

static_assertions::assert_eq_size!(DmOpBuf<'static>, abi::privcmd_dm_op_buf);
static_assertions::assert_eq_align!(DmOpBuf<'static>, abi::privcmd_dm_op_buf);
static_assertions::const_assert_eq!(
    core::mem::offset_of!(DmOpBuf<'static>, size),
    core::mem::offset_of!(abi::privcmd_dm_op_buf, size)
);

impl<'a> DmOpBuf<'a> {
    /// A buffer over bytes.
    #[inline]
    pub fn from_bytes(bytes: &'a mut [u8]) -> DmOpBuf<'a> {
        DmOpBuf {
            ptr: bytes.as_mut_ptr().cast(),
            size: bytes.len(),
            _borrow: PhantomData,
        }
    }

    /// A buffer over one value (typically the `xen_dm_op` request struct).
    #[inline]
    pub fn from_mut<T: Plain>(value: &'a mut T) -> DmOpBuf<'a> {
        DmOpBuf {
            ptr: (value as *mut T).cast(),
            size: size_of::<T>(),
            _borrow: PhantomData,
        }
    }

    /// A buffer over a slice of values (extents, bitmaps).
    #[inline]
    pub fn from_slice_mut<T: Plain>(values: &'a mut [T]) -> DmOpBuf<'a> {
        DmOpBuf {
            ptr: values.as_mut_ptr().cast(),
            size: core::mem::size_of_val(values),
            _borrow: PhantomData,
        }
    }

    /// The buffer's size in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.size
    }

    /// `true` for an empty buffer.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.cast()
    }
}

impl fmt::Debug for DmOpBuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmOpBuf")
            .field("ptr", &self.ptr)
            .field("size", &self.size)
            .finish()
    }
}

/// The kernel's per-call dm_op limits (privcmd module parameters `dm_op_max_nr_bufs` and
/// `dm_op_buf_max_size`), checked before any syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmOpLimits {
    /// Most buffers in one dm_op (kernel default 16).
    pub max_bufs: usize,
    /// Largest buffer in bytes (kernel default 4096).
    pub max_buf_size: usize,
}

impl DmOpLimits {
    /// The kernel's defaults: 16 buffers of at most 4096 bytes.
    pub const DEFAULT: DmOpLimits = DmOpLimits {
        max_bufs: 16,
        max_buf_size: 4096,
    };

    /// The running kernel's limits, read from
    /// `/sys/module/xen_privcmd/parameters/dm_op_{max_nr_bufs,buf_max_size}`; the defaults
    /// where those cannot be read. Never more buffers than the ioctl's `u16` count holds.
    pub fn from_kernel() -> DmOpLimits {
        const DIR: &str = "/sys/module/xen_privcmd/parameters/";
        let max_bufs = sys::read_number(&format!("{DIR}dm_op_max_nr_bufs"))
            .unwrap_or(Self::DEFAULT.max_bufs)
            .min(usize::from(u16::MAX));
        let max_buf_size = sys::read_number(&format!("{DIR}dm_op_buf_max_size"))
            .unwrap_or(Self::DEFAULT.max_buf_size);
        DmOpLimits {
            max_bufs,
            max_buf_size,
        }
    }

    /// `true` when [`DmOpLimits::check`] would accept `bufs`: the fast test of the dm_op path
    /// (one comparison per buffer), with `check` giving the typed error when it fails.
    #[inline]
    pub fn fits(&self, bufs: &[DmOpBuf<'_>]) -> bool {
        let mut ok = !bufs.is_empty() & (bufs.len() <= self.max_bufs);
        for b in bufs {
            ok &= b.size <= self.max_buf_size;
        }
        ok
    }

    /// Checks a buffer list: at least one buffer (the request header), at most `max_bufs`,
    /// each at most `max_buf_size` bytes. Errors are typed and name `op` and `domid`.
    pub fn check(&self, op: &'static str, domid: DomId, bufs: &[DmOpBuf<'_>]) -> Result<(), Error> {
        let domain = Some(domid);
        if bufs.is_empty() {
            return Err(Error::InvalidArgument {
                op,
                domain,
                reason: "a dm_op needs at least one buffer",
            });
        }
        if bufs.len() > self.max_bufs {
            return Err(Error::TooManyBuffers {
                op,
                domain,
                count: bufs.len(),
                max: self.max_bufs,
            });
        }
        match bufs.iter().position(|b| b.len() > self.max_buf_size) {
            Some(index) => Err(Error::BufferTooLarge {
                op,
                domain,
                index,
                size: bufs[index].len(),
                max: self.max_buf_size,
            }),
            None => Ok(()),
        }
    }
}

impl Default for DmOpLimits {
    fn default() -> DmOpLimits {
        DmOpLimits::DEFAULT
    }
}

/// How a [`Privcmd`](crate::Privcmd) issues dm_ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DmOpPath {
    /// Not known yet: the next dm_op tries the ioctl and remembers the outcome.
    Probe = 0,
    /// `IOCTL_PRIVCMD_DM_OP` (Linux 4.11 and later): the kernel pins the caller's buffers;
    /// works on a restricted handle.
    Ioctl = 1,
    /// The `__HYPERVISOR_dm_op` hypercall through `IOCTL_PRIVCMD_HYPERCALL`, the buffers
    /// bounced through hypercall buffers: for kernels without the ioctl (`ENOTTY`). Refused
    /// by the kernel on a restricted handle, like every raw hypercall.
    Hypercall = 2,
}

impl DmOpPath {
    pub(crate) fn from_u8(v: u8) -> DmOpPath {
        match v {
            1 => DmOpPath::Ioctl,
            2 => DmOpPath::Hypercall,
            _ => DmOpPath::Probe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_up_front() {
        let l = DmOpLimits::DEFAULT;
        let d = DomId::new(9);
        let mut big = [0u8; 4097];
        let mut ok = [0u8; 4096];
        assert!(l
            .check("dm_op x", d, &[])
            .unwrap_err()
            .is_invalid_argument());
        assert_eq!(
            l.check("dm_op x", d, &[DmOpBuf::from_bytes(&mut ok)]),
            Ok(())
        );
        let e = l.check(
            "dm_op x",
            d,
            &[DmOpBuf::from_bytes(&mut ok), DmOpBuf::from_bytes(&mut big)],
        );
        assert_eq!(
            e,
            Err(Error::BufferTooLarge {
                op: "dm_op x",
                domain: Some(d),
                index: 1,
                size: 4097,
                max: 4096
            })
        );
        let mut small = [[0u8; 1]; 17];
        let mut it = small.iter_mut();
        let bufs: [DmOpBuf<'_>; 17] =
            core::array::from_fn(|_| DmOpBuf::from_bytes(it.next().unwrap()));
        assert_eq!(
            l.check("dm_op x", d, &bufs),
            Err(Error::TooManyBuffers {
                op: "dm_op x",
                domain: Some(d),
                count: 17,
                max: 16
            })
        );
        assert_eq!(l.check("dm_op x", d, &bufs[..16]), Ok(()));
    }

    #[test]
    #[allow(unsafe_code)]
    fn buf_encoding_matches_the_kernel_struct() {
        let mut v = 0u64;
        let p = &mut v as *mut u64 as usize;
        let b = DmOpBuf::from_mut(&mut v);
        // SAFETY: DmOpBuf is repr(C) with the same size, alignment and field offsets as
        // privcmd_dm_op_buf (asserted at compile time above).
        let k: abi::privcmd_dm_op_buf = unsafe { core::mem::transmute(b) };
        assert_eq!((k.uptr as usize, k.size), (p, 8));
        let mut words = [0u32; 5];
        assert_eq!(DmOpBuf::from_slice_mut(&mut words).len(), 20);
        assert!(DmOpBuf::from_bytes(&mut []).is_empty());
    }
}
