//! The `/dev/xen/privcmd` handle.

// Unsafe: privcmd ioctls and hypercalls that take pointers.
#![allow(unsafe_code)]

use core::ffi::{c_int, c_void};
use core::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::Errno;

use crate::restrict::{RegisteredFd, RestrictRegistry};
use crate::{abi, sys, BufferPool, DmOpBuf, DmOpLimits, DmOpPath, DomId, Error, Gfn};

/// An open handle on Xen's privcmd driver: hypercalls, dm_ops, foreign mappings, restriction.
///
/// One `open` per handle, close-on-exec. `Privcmd` is a cheap clonable handle: clones share
/// the open file (an `Arc` inside), which is closed when the last clone drops, and every
/// method takes `&self`; it is `Send + Sync`. Crates built on it (`xen-devicemodel`,
/// `xen-foreignmemory`) hold a clone, so one privcmd file can serve them all. Each open file
/// has its own [`BufferPool`] of hypercall buffers, and joins the process-wide
/// [restrict registry](crate::restrict_all) for as long as it is open.
///
/// ```no_run
/// use xen_hypercall::Privcmd;
///
/// let xen = Privcmd::open()?;
/// let v = xen.xen_version()?;
/// println!("Xen {}.{}{}", v.major, v.minor, xen.xen_extraversion()?);
/// # Ok::<(), xen_hypercall::Error>(())
/// ```
#[derive(Clone)]
pub struct Privcmd {
    inner: Arc<Inner>,
}

/// What the clones of a [`Privcmd`] share.
struct Inner {
    fd: RegisteredFd<'static>,
    buffers: BufferPool,
    dm_op_path: AtomicU8,
    /// `dm_op_limits.max_bufs` while the path is [`DmOpPath::Ioctl`], else 0: one comparison
    /// on the fast path checks both the buffer count and the path.
    dm_op_fast_bufs: AtomicUsize,
    dm_op_limits: DmOpLimits,
}

/// The privcmd ioctls whose presence [`Privcmd::has_ioctl`] can probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PrivcmdIoctl {
    /// `IOCTL_PRIVCMD_HYPERCALL`.
    Hypercall,
    /// `IOCTL_PRIVCMD_MMAPBATCH` (the old batch map).
    MmapBatch,
    /// `IOCTL_PRIVCMD_MMAPBATCH_V2` (Linux 3.5).
    MmapBatchV2,
    /// `IOCTL_PRIVCMD_DM_OP` (Linux 4.11).
    DmOp,
    /// `IOCTL_PRIVCMD_RESTRICT` (Linux 4.11).
    Restrict,
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE` (Linux 4.18).
    MmapResource,
}

impl PrivcmdIoctl {
    fn request(self) -> core::ffi::c_ulong {
        match self {
            PrivcmdIoctl::Hypercall => abi::IOCTL_PRIVCMD_HYPERCALL,
            PrivcmdIoctl::MmapBatch => abi::IOCTL_PRIVCMD_MMAPBATCH,
            PrivcmdIoctl::MmapBatchV2 => abi::IOCTL_PRIVCMD_MMAPBATCH_V2,
            PrivcmdIoctl::DmOp => abi::IOCTL_PRIVCMD_DM_OP,
            PrivcmdIoctl::Restrict => abi::IOCTL_PRIVCMD_RESTRICT,
            PrivcmdIoctl::MmapResource => abi::IOCTL_PRIVCMD_MMAP_RESOURCE,
        }
    }
}

/// The registry kind of privcmd handles.
const KIND: &str = "privcmd";

/// Restricts a privcmd fd (the [`RestrictFn`](crate::RestrictFn) privcmd handles register).
pub fn restrict_privcmd_fd(fd: BorrowedFd<'_>, domid: DomId) -> Result<(), Error> {
    let mut dom: abi::domid_t = domid.get();
    // SAFETY: IOCTL_PRIVCMD_RESTRICT reads one domid_t from the pointer, which points to a
    // live local.
    unsafe { sys::ioctl(fd, abi::IOCTL_PRIVCMD_RESTRICT, (&raw mut dom).cast()) }
        .map(drop)
        .map_err(|e| Error::os("privcmd restrict", Some(domid), e))
}

/// The refusal of a frame list `mmapbatch_v2` cannot take.
#[cold]
#[inline(never)]
fn mmapbatch_refused(op: &'static str, domid: DomId, frames: usize) -> Error {
    Error::InvalidArgument {
        op,
        domain: Some(domid),
        reason: if frames > u32::MAX as usize {
            "too many frames"
        } else {
            "needs as many error slots as frames, and at least one frame"
        },
    }
}

/// The refusal of a resource map `mmap_resource` cannot take.
#[cold]
#[inline(never)]
fn mmap_resource_refused(domid: DomId) -> Error {
    Error::InvalidArgument {
        op: "privcmd mmap_resource",
        domain: Some(domid),
        reason: "needs a non-null address and at least one frame",
    }
}

/// A friendly name of a hypercall number, for error messages.
pub(crate) fn hypercall_name(op: u64) -> &'static str {
    match op {
        abi::__HYPERVISOR_memory_op => "hypercall memory_op",
        abi::__HYPERVISOR_xen_version => "hypercall xen_version",
        abi::__HYPERVISOR_sched_op => "hypercall sched_op",
        abi::__HYPERVISOR_hvm_op => "hypercall hvm_op",
        abi::__HYPERVISOR_dm_op => "hypercall dm_op",
        _ => "hypercall",
    }
}

impl Privcmd {
    /// The device node, tried first.
    pub const DEVICE: &'static str = "/dev/xen/privcmd";
    /// The older xenfs node, tried when [`Privcmd::DEVICE`] does not exist.
    pub const XENFS_NODE: &'static str = "/proc/xen/privcmd";

    /// Opens `/dev/xen/privcmd` (or `/proc/xen/privcmd` where only xenfs provides it),
    /// close-on-exec.
    ///
    /// Fails with `ENOENT` when neither exists (not running on Xen, or the `xen-privcmd` module
    /// is not loaded) and `EACCES` without permission.
    pub fn open() -> Result<Privcmd, Error> {
        let fd = match sys::open(c"/dev/xen/privcmd", false) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => sys::open(c"/proc/xen/privcmd", false)
                .map_err(|e| Error::os("open /proc/xen/privcmd", None, e))?,
            Err(e) => return Err(Error::os("open /dev/xen/privcmd", None, e)),
        };
        Ok(Privcmd::from_fd(fd, DmOpLimits::from_kernel()))
    }

    fn from_fd(fd: OwnedFd, dm_op_limits: DmOpLimits) -> Privcmd {
        Privcmd {
            inner: Arc::new(Inner {
                fd: RestrictRegistry::global().register(KIND, fd, restrict_privcmd_fd),
                buffers: BufferPool::new(),
                dm_op_path: AtomicU8::new(DmOpPath::Probe as u8),
                dm_op_fast_bufs: AtomicUsize::new(0),
                dm_op_limits,
            }),
        }
    }

    /// This handle's hypercall buffers.
    pub fn buffers(&self) -> &BufferPool {
        &self.inner.buffers
    }

    /// Issues a raw hypercall through `IOCTL_PRIVCMD_HYPERCALL` and returns Xen's
    /// (non-negative) result; a negative result comes back as [`Error::Os`] with its errno.
    ///
    /// # Safety
    /// Xen acts on the arguments with the caller's privilege: every address among them must
    /// point into memory valid for what that hypercall reads and writes — in practice
    /// [hypercall buffers](BufferPool) held by exclusive borrow for the duration of the call —
    /// and the hypercall must not make Xen keep an address to write later (such as
    /// registering a shared page), since nothing here could keep that memory alive. The
    /// hypercall must not break the process's or the system's integrity in other ways (e.g.
    /// changing this domain's own memory map).
    pub unsafe fn hypercall(&self, op: u64, args: [u64; 5]) -> Result<i64, Error> {
        // SAFETY: forwarded to the caller.
        unsafe { self.hypercall_named(hypercall_name(op), None, op, args) }
    }

    /// [`Privcmd::hypercall`] with a name and domain for the error.
    ///
    /// # Safety
    /// As for [`Privcmd::hypercall`].
    pub(crate) unsafe fn hypercall_named(
        &self,
        name: &'static str,
        domain: Option<DomId>,
        op: u64,
        args: [u64; 5],
    ) -> Result<i64, Error> {
        let mut call = abi::privcmd_hypercall { op, arg: args };
        // SAFETY: `call` is a live privcmd_hypercall; the caller vouches for the addresses
        // inside `args`.
        unsafe {
            sys::ioctl(
                self.as_fd(),
                abi::IOCTL_PRIVCMD_HYPERCALL,
                (&raw mut call).cast(),
            )
        }
        .map_err(|e| Error::os(name, domain, e))
    }

    /// The dm_op limits checked before each call (the kernel's, read at [`Privcmd::open`]).
    pub fn dm_op_limits(&self) -> DmOpLimits {
        self.inner.dm_op_limits
    }

    /// How dm_ops are currently issued ([`DmOpPath::Probe`] until the first one).
    pub fn dm_op_path(&self) -> DmOpPath {
        DmOpPath::from_u8(self.inner.dm_op_path.load(Ordering::Relaxed))
    }

    /// Forces how dm_ops are issued, skipping (or re-arming, with [`DmOpPath::Probe`]) the
    /// probe. For tests, benchmarks with stand-in devices, and callers who know their kernel.
    pub fn set_dm_op_path(&self, path: DmOpPath) {
        self.inner.dm_op_path.store(path as u8, Ordering::Relaxed);
        let fast = match path {
            DmOpPath::Ioctl => self.inner.dm_op_limits.max_bufs,
            _ => 0,
        };
        self.inner.dm_op_fast_bufs.store(fast, Ordering::Relaxed);
    }

    /// Issues a device-model operation on `domid` with `bufs` (the first holds the
    /// `xen_dm_op` request); `op` names it in errors (e.g. `"dm_op set_isa_irq_level"`).
    ///
    /// Checked first, with typed errors and no syscall: `domid` must name a real domain (a
    /// dm_op acts on a guest: `DOMID_SELF` and the other reserved ids are refused), and the
    /// buffer list must hold at least one buffer and fit [`Privcmd::dm_op_limits`]. Then:
    /// exactly one `IOCTL_PRIVCMD_DM_OP` syscall and no heap allocation. Whether the kernel
    /// has that ioctl is probed once per handle, before the first dm_op, the way that works
    /// on old and new kernels alike ([`Privcmd::has_ioctl`]); without it, the
    /// `__HYPERVISOR_dm_op` hypercall is used instead, with the buffers copied through
    /// hypercall buffers and back ([`DmOpPath`]).
    ///
    /// Xen answers `EPERM` for a PV dom0 target and `EINVAL` for PV guests (dm_ops are for
    /// HVM/PVH); after [`Privcmd::restrict`], the kernel answers `EPERM` for other domains.
    #[inline]
    pub fn dm_op(&self, op: &'static str, domid: DomId, bufs: &[DmOpBuf<'_>]) -> Result<(), Error> {
        // One pass for the common case: a real domain, the ioctl path, 1..=max_bufs buffers
        // (`dm_op_fast_bufs` is 0 on the other paths), each within the size limit.
        let mut fast = domid.is_domain()
            & !bufs.is_empty()
            & (bufs.len() <= self.inner.dm_op_fast_bufs.load(Ordering::Relaxed));
        for b in bufs {
            fast &= b.len() <= self.inner.dm_op_limits.max_buf_size;
        }
        if !fast {
            return self.dm_op_slow(op, domid, bufs);
        }
        let mut req = abi::privcmd_dm_op {
            dom: domid.get(),
            // `fits` checked the count against the limits, which never exceed u16::MAX.
            num: bufs.len() as u16,
            ubufs: bufs.as_ptr().cast(),
        };
        // SAFETY: `req` is a live privcmd_dm_op; `ubufs` points to `num` DmOpBufs, which have
        // privcmd_dm_op_buf's layout (asserted), each describing memory mutably borrowed for
        // the duration of the call.
        let r = unsafe {
            sys::ioctl_raw(
                self.as_fd(),
                abi::IOCTL_PRIVCMD_DM_OP,
                (&raw mut req).cast(),
            )
        };
        if r < 0 {
            return Err(Error::os(op, Some(domid), sys::errno_of(r)));
        }
        Ok(())
    }

    /// Everything but the fast path: the typed refusals (reserved domain, buffer limits),
    /// then the probe or the hypercall path.
    #[cold]
    #[inline(never)]
    fn dm_op_slow(
        &self,
        op: &'static str,
        domid: DomId,
        bufs: &[DmOpBuf<'_>],
    ) -> Result<(), Error> {
        domid.require_domain(op)?;
        self.inner.dm_op_limits.check(op, domid, bufs)?;
        if self.dm_op_path() == DmOpPath::Probe {
            let path = if self.has_ioctl(PrivcmdIoctl::DmOp) {
                DmOpPath::Ioctl
            } else {
                DmOpPath::Hypercall
            };
            self.set_dm_op_path(path);
        }
        match self.dm_op_path() {
            DmOpPath::Hypercall => self.dm_op_hypercall(op, domid, bufs),
            _ => self.dm_op(op, domid, bufs),
        }
    }

    /// Whether this handle's kernel driver knows `ioctl`.
    ///
    /// Asked with a null argument: a privcmd driver that knows the ioctl reads its argument
    /// first and answers `EFAULT` (before any restriction check or any effect), while one
    /// that does not answers `ENOTTY` (Linux 4.6 and later) or `EINVAL` (older drivers, which
    /// is why keying on `ENOTTY` alone misses them). One syscall, no side effect; callers
    /// remember the answer.
    pub fn has_ioctl(&self, ioctl: PrivcmdIoctl) -> bool {
        // SAFETY: every privcmd ioctl copies its argument from user space first; a null
        // pointer makes that copy fail with EFAULT before the driver does anything else.
        let r = unsafe { sys::ioctl(self.as_fd(), ioctl.request(), core::ptr::null_mut()) };
        r == Err(Errno::EFAULT)
    }

    fn dm_op_hypercall(
        &self,
        op: &'static str,
        domid: DomId,
        bufs: &[DmOpBuf<'_>],
    ) -> Result<(), Error> {
        // One bounce mapping: the xen_dm_op_buf array, then each buffer's bytes (8-aligned).
        let header = core::mem::size_of::<abi::xen_dm_op_buf>() * bufs.len();
        let mut total = header;
        for b in bufs {
            total = total.saturating_add(b.len().next_multiple_of(8));
        }
        let mut bounce = self.inner.buffers.alloc_slice::<u64>(total.div_ceil(8))?;
        let base = bounce.as_mut_ptr().cast::<u8>();
        let mut off = header;
        for (i, b) in bufs.iter().enumerate() {
            // SAFETY: `bounce` holds `total` bytes: the array fits in `header`, and buffer i
            // at `off` fits because `total` sums every rounded size. The source is the
            // caller's live borrowed buffer, which does not overlap our mapping.
            unsafe {
                let data = base.add(off);
                core::ptr::copy_nonoverlapping(b.as_ptr(), data, b.len());
                base.cast::<abi::xen_dm_op_buf>()
                    .add(i)
                    .write(abi::xen_dm_op_buf {
                        h: abi::VoidHandle { p: data.cast() },
                        size: b.len() as abi::xen_ulong_t,
                    });
            }
            off += b.len().next_multiple_of(8);
        }
        let args = [u64::from(domid.get()), bufs.len() as u64, base as u64, 0, 0];
        // SAFETY: the array and every buffer it names live in `bounce`, a hypercall buffer
        // held exclusively for the call; dm_op does not retain the addresses.
        let result =
            unsafe { self.hypercall_named(op, Some(domid), abi::__HYPERVISOR_dm_op, args) };
        // Copy back: Xen may have written any buffer (results, bitmaps), even on failure.
        let mut off = header;
        for b in bufs {
            // SAFETY: same ranges as above, in the other direction.
            unsafe { core::ptr::copy_nonoverlapping(base.add(off), b.as_ptr(), b.len()) };
            off += b.len().next_multiple_of(8);
        }
        result.map(drop)
    }

    /// Restricts this handle to `domid` (`IOCTL_PRIVCMD_RESTRICT`): from now on the kernel
    /// refuses raw hypercalls entirely and dm_ops / foreign mappings on any other domain
    /// (`EPERM`). Irreversible; restricting again to the same domain is a no-op, to another
    /// one fails with `EINVAL`.
    ///
    /// Reserved ids are refused before the syscall: the kernel would take `DOMID_INVALID` as
    /// "no restriction".
    pub fn restrict(&self, domid: DomId) -> Result<(), Error> {
        self.inner.fd.restrict(domid)
    }

    /// The domain this handle was restricted to, through [`Privcmd::restrict`] or
    /// [`restrict_all`](crate::restrict_all), if any.
    pub fn restricted_to(&self) -> Option<DomId> {
        self.inner.fd.restricted_to()
    }

    /// `IOCTL_PRIVCMD_MMAPBATCH_V2`: maps the frames `gfns` of `domid` at `addr`, one page
    /// each, writing each frame's outcome (0, or a negative Xen/kernel error code such as
    /// `-ENOENT` for a paged-out frame) into `errs`. Plumbing for `xen-foreignmemory`, which
    /// owns the mapping semantics.
    ///
    /// The ioctl's own result is `Ok(())` even when some frames failed: **check `errs`**
    /// (decode with [`errno_from_xen`](crate::errno_from_xen)). It is `Err` with `ENOENT` when
    /// some frames are paged out (retry those), and `Err` for failures of the whole call
    /// (`EPERM` on a restricted handle, `EINVAL` for a bad address).
    /// `gfns` and `errs` must have the same non-zero length (checked before the syscall).
    ///
    /// # Safety
    /// `addr` must be the start of a mapping made with `mmap` of this handle's fd (from
    /// [`AsFd`]) that is exactly `gfns.len()` pages long, or lie within such a mapping whose
    /// earlier map attempt left holes (the retry case); the mapping's previous contents are
    /// replaced by guest memory, so nothing may hold references into it.
    #[inline]
    pub unsafe fn mmapbatch_v2(
        &self,
        domid: DomId,
        addr: *mut c_void,
        gfns: &[Gfn],
        errs: &mut [c_int],
    ) -> Result<(), Error> {
        const OP: &str = "privcmd mmapbatch_v2";
        if gfns.is_empty() || gfns.len() != errs.len() || gfns.len() > u32::MAX as usize {
            return Err(mmapbatch_refused(OP, domid, gfns.len()));
        }
        let mut req = abi::privcmd_mmapbatch_v2 {
            num: gfns.len() as u32,
            dom: domid.get(),
            addr: addr as u64,
            arr: gfns.as_ptr().cast(),
            err: errs.as_mut_ptr(),
        };
        // SAFETY: `req` is live; `arr` and `err` point to `num` readable / writable elements;
        // the caller vouches for `addr`.
        let r = unsafe {
            sys::ioctl_raw(
                self.as_fd(),
                abi::IOCTL_PRIVCMD_MMAPBATCH_V2,
                (&raw mut req).cast(),
            )
        };
        if r < 0 {
            return Err(Error::os(OP, Some(domid), sys::errno_of(r)));
        }
        Ok(())
    }

    /// `IOCTL_PRIVCMD_MMAPBATCH`, the old form of [`Privcmd::mmapbatch_v2`] for kernels without
    /// it ([`Privcmd::has_ioctl`]): maps the frames in `arr` of `domid` at `addr`; the kernel
    /// marks each frame that failed in `arr` itself (the top nibble of the entry:
    /// `0x8000_0000` paged out, `0xf000_0000` other failures, on 64-bit kernels in the
    /// upper bits as well), so pass a copy of the frame list. `Err` with `ENOENT` means some
    /// frames are paged out.
    ///
    /// # Safety
    /// As for [`Privcmd::mmapbatch_v2`], with `arr.len()` pages.
    pub unsafe fn mmapbatch_v1(
        &self,
        domid: DomId,
        addr: *mut c_void,
        arr: &mut [u64],
    ) -> Result<(), Error> {
        const OP: &str = "privcmd mmapbatch";
        let domain = Some(domid);
        let num =
            c_int::try_from(arr.len())
                .ok()
                .filter(|&n| n > 0)
                .ok_or(Error::InvalidArgument {
                    op: OP,
                    domain,
                    reason: "needs between 1 and i32::MAX frames",
                })?;
        let mut req = abi::privcmd_mmapbatch {
            num,
            dom: domid.get(),
            addr: addr as u64,
            arr: arr.as_mut_ptr(),
        };
        // SAFETY: `req` is live; `arr` points to `num` writable frame numbers; the caller
        // vouches for `addr`.
        unsafe {
            sys::ioctl(
                self.as_fd(),
                abi::IOCTL_PRIVCMD_MMAPBATCH,
                (&raw mut req).cast(),
            )
        }
        .map(drop)
        .map_err(|e| Error::os(OP, domain, e))
    }

    /// The size in frames of a resource of `domid` (`IOCTL_PRIVCMD_MMAP_RESOURCE` with no
    /// address): e.g. an ioreq server's pages or the grant table. `kind` and `id` are
    /// `XENMEM_resource_*` and its id (ioreq server id, grant table id).
    ///
    /// Unsupported resources fail with `EOPNOTSUPP` ([`Error::is_not_supported`]).
    pub fn resource_size(&self, domid: DomId, kind: u32, id: u32) -> Result<u64, Error> {
        let mut req = abi::privcmd_mmap_resource {
            dom: domid.get(),
            type_: kind,
            id,
            ..Default::default()
        };
        // SAFETY: `req` is live; with `addr` and `num` zero the kernel only queries and writes
        // back `num`.
        unsafe {
            sys::ioctl(
                self.as_fd(),
                abi::IOCTL_PRIVCMD_MMAP_RESOURCE,
                (&raw mut req).cast(),
            )
        }
        .map_err(|e| Error::os("privcmd mmap_resource size", Some(domid), e))?;
        Ok(req.num)
    }

    /// `IOCTL_PRIVCMD_MMAP_RESOURCE`: maps `num` frames of a resource of `domid`, starting at
    /// frame `idx`, at `addr`. Plumbing for `xen-foreignmemory`.
    ///
    /// # Safety
    /// `addr` must be the start of a mapping made with `mmap` of this handle's fd, at least
    /// `num` pages long (Xen pages: 4 KiB), with nothing holding references into it.
    #[inline]
    pub unsafe fn mmap_resource(
        &self,
        domid: DomId,
        kind: u32,
        id: u32,
        idx: u32,
        num: u64,
        addr: *mut c_void,
    ) -> Result<(), Error> {
        const OP: &str = "privcmd mmap_resource";
        if num == 0 || addr.is_null() {
            return Err(mmap_resource_refused(domid));
        }
        let mut req = abi::privcmd_mmap_resource {
            dom: domid.get(),
            type_: kind,
            id,
            idx,
            num,
            addr: addr as u64,
        };
        // SAFETY: `req` is live; the caller vouches for `addr`.
        let r = unsafe {
            sys::ioctl_raw(
                self.as_fd(),
                abi::IOCTL_PRIVCMD_MMAP_RESOURCE,
                (&raw mut req).cast(),
            )
        };
        if r < 0 {
            return Err(Error::os(OP, Some(domid), sys::errno_of(r)));
        }
        Ok(())
    }
}

impl AsFd for Privcmd {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for Privcmd {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

impl From<OwnedFd> for Privcmd {
    /// Adopts an already-open privcmd fd (e.g. inherited, or from a sandbox broker). The dm_op
    /// limits are the kernel defaults ([`DmOpLimits::DEFAULT`]).
    fn from(fd: OwnedFd) -> Privcmd {
        Privcmd::from_fd(fd, DmOpLimits::DEFAULT)
    }
}

impl Privcmd {
    /// How many clones of this handle exist (this one included).
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Whether `other` is a clone of this handle (the same open file).
    pub fn same_handle(&self, other: &Privcmd) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Gives up the handle and returns its fd, open, when this is the last clone (otherwise
    /// the handle comes back unchanged); the fd leaves the restrict registry, so a later
    /// [`restrict_all`](crate::restrict_all) does not restrict it (a restriction made before
    /// stays: it belongs to the open file).
    pub fn into_owned_fd(self) -> Result<OwnedFd, Privcmd> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => Ok(inner.fd.into_owned_fd()),
            Err(inner) => Err(Privcmd { inner }),
        }
    }
}

impl fmt::Debug for Privcmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Privcmd")
            .field("fd", &self.inner.fd.as_raw_fd())
            .field("restricted_to", &self.restricted_to())
            .field("dm_op_path", &self.dm_op_path())
            .field("buffers", &self.inner.buffers)
            .finish()
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::sys::syscalls;
    use crate::test_alloc::allocations;

    /// A stand-in privcmd: /dev/null answers every ioctl with ENOTTY after a full trip
    /// through the kernel's ioctl dispatch.
    fn stand_in() -> Privcmd {
        let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        Privcmd::from(fd)
    }

    #[test]
    fn dm_op_is_one_syscall_and_no_allocation() {
        let p = stand_in();
        p.set_dm_op_path(DmOpPath::Ioctl);
        let mut header = [0u8; 40];
        let mut extra = [0u64; 4];
        // Warm up (first-use effects such as thread-locals), then measure.
        let _ = p.dm_op(
            "dm_op test",
            DomId::new(7),
            &[DmOpBuf::from_bytes(&mut header)],
        );
        let (s0, a0) = (syscalls(), allocations());
        let bufs = [
            DmOpBuf::from_bytes(&mut header),
            DmOpBuf::from_slice_mut(&mut extra),
        ];
        let r = p.dm_op("dm_op set_isa_irq_level", DomId::new(7), &bufs);
        let (s1, a1) = (syscalls(), allocations());
        assert_eq!(s1 - s0, 1, "exactly one syscall");
        assert_eq!(a1 - a0, 0, "no heap allocation");
        let e = r.unwrap_err();
        assert_eq!(
            e,
            Error::os(
                "dm_op set_isa_irq_level",
                Some(DomId::new(7)),
                Errno::ENOTTY
            )
        );
        assert_eq!(
            e.to_string(),
            "dm_op set_isa_irq_level on domain 7: Inappropriate ioctl for device"
        );
    }

    #[test]
    fn limits_are_refused_without_a_syscall() {
        let p = stand_in();
        let mut big = [0u8; 4097];
        let s0 = syscalls();
        let e = p
            .dm_op("dm_op x", DomId::new(2), &[DmOpBuf::from_bytes(&mut big)])
            .unwrap_err();
        assert!(matches!(
            e,
            Error::BufferTooLarge {
                index: 0,
                size: 4097,
                max: 4096,
                ..
            }
        ));
        assert!(p
            .dm_op("dm_op x", DomId::new(2), &[])
            .unwrap_err()
            .is_invalid_argument());
        assert_eq!(syscalls(), s0);
        assert_eq!(p.dm_op_path(), DmOpPath::Probe, "nothing probed yet");
    }

    #[test]
    fn enotty_switches_to_the_hypercall_once() {
        let p = stand_in();
        let mut header = [1u8; 24];
        let r = p.dm_op(
            "dm_op x",
            DomId::new(3),
            &[DmOpBuf::from_bytes(&mut header)],
        );
        // The stand-in refuses the hypercall too, but the path is now remembered.
        assert_eq!(r.unwrap_err().errno(), Errno::ENOTTY);
        assert_eq!(p.dm_op_path(), DmOpPath::Hypercall);
        assert_eq!(header, [1u8; 24], "bounced contents are copied back");
        // Second call: one syscall (the hypercall), the bounce buffer comes from the cache.
        let maps = p.buffers().stats().maps;
        let s0 = syscalls();
        let r = p.dm_op(
            "dm_op x",
            DomId::new(3),
            &[DmOpBuf::from_bytes(&mut header)],
        );
        assert_eq!(syscalls() - s0, 1);
        assert_eq!(p.buffers().stats().maps, maps);
        assert_eq!(r.unwrap_err().op(), "dm_op x");
    }

    #[test]
    fn reserved_domain_ids_are_refused_before_any_syscall() {
        let p = stand_in();
        p.set_dm_op_path(DmOpPath::Ioctl);
        let mut header = [0u8; 16];
        for d in [
            DomId::SELF,
            DomId::IO,
            DomId::XEN,
            DomId::INVALID,
            DomId::IDLE,
        ] {
            let s0 = syscalls();
            let bufs = [DmOpBuf::from_bytes(&mut header)];
            let e = p.dm_op("dm_op x", d, &bufs).unwrap_err();
            assert!(e.is_invalid_argument() && !e.is_os(), "{e}");
            assert_eq!(e.domain(), Some(d));
            let e = p
                .populate_physmap(d, 0, 0, &mut [Gfn::new(0x1000)])
                .unwrap_err();
            assert_eq!((e.op(), e.is_os()), ("memory_op populate_physmap", false));
            assert!(p.populate_physmap(d, 0, 0, &mut []).is_err());
            let e = p.hvm_set_param(d, 2, 1).unwrap_err();
            assert_eq!((e.op(), e.is_os()), ("hvm_op set_param", false));
            let e = p
                .remote_shutdown(d, crate::ShutdownReason::Poweroff)
                .unwrap_err();
            assert_eq!((e.op(), e.is_os()), ("sched_op remote_shutdown", false));
            assert_eq!(syscalls(), s0, "{d}: refused before any syscall");
        }
    }

    /// An old privcmd driver: no DM_OP, no MMAPBATCH_V2, and unknown ioctls answer EINVAL.
    fn old_driver(request: core::ffi::c_ulong, _arg: *mut c_void) -> Result<i64, Errno> {
        match request {
            abi::IOCTL_PRIVCMD_HYPERCALL | abi::IOCTL_PRIVCMD_MMAPBATCH => Err(Errno::ESRCH),
            _ => Err(Errno::EINVAL),
        }
    }

    /// A current driver: every ioctl exists and reads its argument (EFAULT on null).
    fn new_driver(_request: core::ffi::c_ulong, arg: *mut c_void) -> Result<i64, Errno> {
        if arg.is_null() {
            Err(Errno::EFAULT)
        } else {
            Ok(0)
        }
    }

    /// A driver without DM_OP that answers unknown ioctls with ENOTTY (Linux 4.6 to 4.10).
    fn enotty_driver(request: core::ffi::c_ulong, arg: *mut c_void) -> Result<i64, Errno> {
        match request {
            abi::IOCTL_PRIVCMD_DM_OP => Err(Errno::ENOTTY),
            _ => new_driver(request, arg),
        }
    }

    #[test]
    fn probes_tell_missing_ioctls_whether_the_driver_answers_einval_or_enotty() {
        let p = stand_in();
        let mut header = [0u8; 16];
        // (driver, has DM_OP, has MMAPBATCH_V2, has HYPERCALL, the dm_op's answer)
        type Case = (crate::sys::FakeIoctl, bool, bool, bool, Result<(), Errno>);
        let cases: [Case; 3] = [
            // The old driver's hypercall answers ESRCH: the hypercall path was taken.
            (old_driver, false, false, false, Err(Errno::ESRCH)),
            (enotty_driver, false, true, true, Ok(())),
            (new_driver, true, true, true, Ok(())),
        ];
        for (driver, dm_op, v2, hypercall, answer) in cases {
            crate::sys::set_fake_ioctl(Some(driver));
            assert_eq!(p.has_ioctl(PrivcmdIoctl::DmOp), dm_op);
            assert_eq!(p.has_ioctl(PrivcmdIoctl::MmapBatchV2), v2);
            assert_eq!(p.has_ioctl(PrivcmdIoctl::Hypercall), hypercall);
            p.set_dm_op_path(DmOpPath::Probe);
            let r = p.dm_op(
                "dm_op x",
                DomId::new(3),
                &[DmOpBuf::from_bytes(&mut header)],
            );
            let path = if dm_op {
                DmOpPath::Ioctl
            } else {
                DmOpPath::Hypercall
            };
            assert_eq!(p.dm_op_path(), path);
            assert_eq!(r.map_err(|e| e.errno()), answer);
        }
        crate::sys::set_fake_ioctl(None);
        // The real kernel answers ENOTTY for /dev/null: not a privcmd driver at all.
        assert!(!p.has_ioctl(PrivcmdIoctl::DmOp));
    }

    #[test]
    fn registration_and_restrict_errors() {
        let p = stand_in();
        let raw = p.as_raw_fd();
        assert!(RestrictRegistry::global()
            .handles()
            .iter()
            .any(|(k, _)| *k == "privcmd"));
        let s0 = syscalls();
        let e = p.restrict(DomId::INVALID).unwrap_err();
        assert!(e.is_invalid_argument() && !e.is_os());
        assert_eq!(syscalls(), s0);
        let e = p.restrict(DomId::new(5)).unwrap_err();
        assert_eq!(
            e,
            Error::os("privcmd restrict", Some(DomId::new(5)), Errno::ENOTTY)
        );
        assert_eq!(p.restricted_to(), None);
        assert!(format!("{p:?}").contains("Privcmd"));
        // Clones share the open file; only the last one gives its fd up.
        let q = p.clone();
        assert_eq!((q.as_raw_fd(), p.handle_count()), (raw, 2));
        let p = p.into_owned_fd().unwrap_err();
        drop(q);
        assert_eq!(p.handle_count(), 1);
        let fd: OwnedFd = p.into_owned_fd().unwrap();
        assert_eq!(fd.as_raw_fd(), raw);
    }

    #[test]
    fn raw_hypercall_errors_name_the_call() {
        let p = stand_in();
        // SAFETY: the stand-in never reaches Xen; no addresses are passed.
        let e = unsafe { p.hypercall(abi::__HYPERVISOR_xen_version, [0; 5]) }.unwrap_err();
        assert_eq!(e.op(), "hypercall xen_version");
        assert_eq!(p.xen_version().unwrap_err().op(), "xen_version");
        assert_eq!(
            p.xen_extraversion().unwrap_err().op(),
            "xen_version extraversion"
        );
        let e = p.hvm_get_param(DomId::new(4), 2).unwrap_err();
        assert_eq!(
            (e.op(), e.domain()),
            ("hvm_op get_param", Some(DomId::new(4)))
        );
        let mut gfns = [Gfn::new(0x1000), Gfn::new(0x1001)];
        let e = p
            .populate_physmap(DomId::new(4), 0, 0, &mut gfns)
            .unwrap_err();
        assert_eq!(e.op(), "memory_op populate_physmap");
        assert_eq!(p.populate_physmap(DomId::new(4), 0, 0, &mut []), Ok(0));
        let e = p
            .remote_shutdown(DomId::new(4), crate::ShutdownReason::Poweroff)
            .unwrap_err();
        assert_eq!(e.op(), "sched_op remote_shutdown");
        // Three buffers of different sizes came and went: the pool kept them.
        let st = p.buffers().stats();
        assert!(st.reuses >= 3 && st.unmaps == 0, "{st:?}");
    }

    #[test]
    fn mapping_plumbing_checks_arguments() {
        let p = stand_in();
        let mut errs = [0i32; 1];
        // SAFETY: refused before the syscall, nothing is mapped.
        let e = unsafe {
            p.mmapbatch_v2(
                DomId::new(1),
                core::ptr::null_mut(),
                &[Gfn::new(1), Gfn::new(2)],
                &mut errs,
            )
        };
        assert!(e.unwrap_err().is_invalid_argument());
        // SAFETY: as above.
        let e = unsafe { p.mmap_resource(DomId::new(1), 0, 0, 0, 0, core::ptr::null_mut()) };
        assert!(e.unwrap_err().is_invalid_argument());
        let e = p.resource_size(DomId::new(1), 0, 0).unwrap_err();
        assert_eq!(e.op(), "privcmd mmap_resource size");
        assert!(e.is_not_supported());
    }

    #[test]
    fn privcmd_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Privcmd>();
        check::<BufferPool>();
    }
}
