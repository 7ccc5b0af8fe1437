//! [`ForeignMemory`]: the handle, its options, and what the map calls share.
//!
//! - [`frames`]: mapping guest frames by number (`map`, `map_partial`, `map_with`), with the
//!   retry of paged-out frames and the fallback to the old `MMAPBATCH` ioctl.
//! - [`resource`]: mapping resources (`resource_size`, `map_resource`, `map_resource_with`).

// Unsafe: creates and fills privcmd mappings.
#![allow(unsafe_code)]

use core::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use xen_hypercall::{DomId, Errno, Privcmd};

use crate::sys::{self, Where};
use crate::{Access, Error, Result, PAGE_SIZE};

mod frames;
mod resource;

/// A handle for mapping other domains' memory, over a clone of a
/// [`Privcmd`](xen_hypercall::Privcmd) handle (close-on-exec, closed when its last clone
/// drops, `AsFd`), which takes part in the process-wide
/// [`restrict_all`](xen_hypercall::restrict_all). Build it from the [`Privcmd`] your device
/// model already holds ([`ForeignMemory::from_privcmd`] with a clone) to use one privcmd file
/// for both. `clone()` is cheap: the clone shares the open file.
///
/// - [`map`](ForeignMemory::map) / [`map_partial`](ForeignMemory::map_partial) /
///   [`map_with`](ForeignMemory::map_with): guest frames by number
///   (`IOCTL_PRIVCMD_MMAPBATCH_V2`), all-or-nothing or with per-frame errors.
/// - [`resource_size`](ForeignMemory::resource_size) /
///   [`map_resource`](ForeignMemory::map_resource): ioreq server pages, grant tables,
///   vmtrace buffers (`IOCTL_PRIVCMD_MMAP_RESOURCE`).
///
/// Each returns a [`Mapping`](crate::Mapping) that owns its address range and does not borrow the handle.
/// `ForeignMemory` is `Send + Sync`; every method takes `&self`.
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
///
/// let fm = ForeignMemory::open()?;
/// let guest = DomId::new(1);
/// let m = fm.map(guest, &[Gfn::new(0x100), Gfn::new(0x101)], ReadOnly)?;
/// println!("first word of gfn 0x100: {:#x}", m.read::<u64>(0)?);
///
/// fm.restrict(guest)?; // from now on, this handle maps domain 1 only
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
pub struct ForeignMemory {
    privcmd: Privcmd,
    batch: AtomicU8,
    /// The per-frame outcome array of large maps, kept between calls: all zero whenever it is
    /// not in use (the kernel writes zeros for frames that mapped, and a call that saw
    /// failures zeroes it again), so a large map neither allocates nor clears it.
    errs: frames::KeptErrs,
    /// The kernel's page size, looked up once.
    page: usize,
}

/// Which ioctl maps frames by number.
///
/// ```
/// use xen_foreignmemory::BatchIoctl;
/// assert_ne!(BatchIoctl::Probe, BatchIoctl::V2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BatchIoctl {
    /// Not known yet: the first map call probes for `IOCTL_PRIVCMD_MMAPBATCH_V2` (reliable
    /// whether the driver answers unknown ioctls with `ENOTTY` or `EINVAL`) and uses the old
    /// ioctl if the kernel lacks it, remembering the answer.
    Probe = 0,
    /// `IOCTL_PRIVCMD_MMAPBATCH_V2`: per-frame error codes in a separate array.
    V2 = 1,
    /// `IOCTL_PRIVCMD_MMAPBATCH` (kernels before 3.x): failures are flagged in the frame
    /// list itself, so the frame numbers are copied first (one allocation), and a failure
    /// other than "paged out" is only known as "failed" (reported as `EINVAL`). Frame numbers
    /// with bits 28 to 31 set cannot be told from failures and count as mapped.
    V1 = 2,
}

impl BatchIoctl {
    fn from_u8(v: u8) -> BatchIoctl {
        match v {
            1 => BatchIoctl::V2,
            2 => BatchIoctl::V1,
            _ => BatchIoctl::Probe,
        }
    }
}

/// What a map call does when some frames fail.
///
/// ```
/// use xen_foreignmemory::{FailurePolicy, MapOptions};
/// let opts = MapOptions::new().failure(FailurePolicy::PerFrame);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailurePolicy {
    /// Any failed frame fails the call with [`Error::Frame`] naming the first one and why;
    /// nothing is left mapped. (libxenforeignmemory's `map` without an error array.)
    #[default]
    AllOrNothing,
    /// The call succeeds when at least one frame mapped; the others are listed by
    /// [`Mapping::frame_errors`](crate::Mapping::frame_errors) and refuse access. When *no* frame mapped (for instance
    /// the domain does not exist) the call fails with [`Error::Frame`] as above.
    PerFrame,
}

/// How long to keep retrying frames Xen reports as paged out (`ENOENT`): after the first
/// attempt, up to `attempts` more rounds, sleeping `first_delay` before the first and
/// doubling up to `max_delay`. Each round re-maps only the frames still paged out (one ioctl
/// per run of consecutive such frames). Frames still paged out after the last round fail
/// with `ENOENT`.
///
/// ```
/// use std::time::Duration;
/// use xen_foreignmemory::RetryPolicy;
///
/// let p = RetryPolicy::default();
/// assert_eq!(p.attempts, 16);
/// assert!(p.worst_case() < Duration::from_secs(2));
/// assert_eq!(RetryPolicy::NEVER.worst_case(), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    /// Rounds after the first attempt.
    pub attempts: u32,
    /// Sleep before the first retry.
    pub first_delay: Duration,
    /// Longest sleep between rounds.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// No retries: paged-out frames fail at once with `ENOENT`.
    ///
    /// ```
    /// use xen_foreignmemory::{MapOptions, RetryPolicy};
    /// let opts = MapOptions::new().retry(RetryPolicy::NEVER);
    /// # let _ = opts;
    /// ```
    pub const NEVER: RetryPolicy = RetryPolicy {
        attempts: 0,
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The longest time the retries can sleep in total.
    ///
    /// ```
    /// use std::time::Duration;
    /// use xen_foreignmemory::RetryPolicy;
    /// let p = RetryPolicy {
    ///     attempts: 3,
    ///     first_delay: Duration::from_millis(1),
    ///     max_delay: Duration::from_millis(3),
    /// };
    /// assert_eq!(p.worst_case(), Duration::from_millis(1 + 2 + 3));
    /// ```
    pub fn worst_case(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut d = self.first_delay;
        for _ in 0..self.attempts {
            total = total.saturating_add(d.min(self.max_delay));
            d = d.saturating_mul(2);
        }
        total
    }
}

impl Default for RetryPolicy {
    /// 16 retries, from 100 µs doubling up to 100 ms: 0.7 s of sleep at worst.
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 16,
            first_delay: Duration::from_micros(100),
            max_delay: Duration::from_millis(100),
        }
    }
}

/// Options of [`ForeignMemory::map_with`] and [`ForeignMemory::map_resource_with`]: where
/// to map, what to do with failed frames, how to retry paged-out ones.
///
/// By default the kernel picks the address, any failed frame fails the call, and paged-out
/// frames are retried with [`RetryPolicy::default`].
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::{DomId, FailurePolicy, ForeignMemory, MapOptions, ReadOnly};
///
/// let fm = ForeignMemory::open()?;
/// let opts = MapOptions::new()
///     .failure(FailurePolicy::PerFrame)
///     .near(0x7f00_0000_0000);
/// let m = fm.map_with(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0x200)], ReadOnly, &opts)?;
/// # let _ = m;
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapOptions {
    placement: Placement,
    failure: FailurePolicy,
    retry: Option<RetryPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Placement {
    #[default]
    Anywhere,
    Near(usize),
    At(usize),
    Replacing(usize),
}

impl MapOptions {
    /// The defaults.
    ///
    /// ```
    /// assert_eq!(xen_foreignmemory::MapOptions::new(), Default::default());
    /// ```
    pub fn new() -> MapOptions {
        MapOptions::default()
    }

    /// What to do when some frames fail.
    ///
    /// ```
    /// use xen_foreignmemory::{FailurePolicy, MapOptions};
    /// let o = MapOptions::new().failure(FailurePolicy::PerFrame);
    /// assert_eq!(o.failure_policy(), FailurePolicy::PerFrame);
    /// ```
    pub fn failure(mut self, policy: FailurePolicy) -> MapOptions {
        self.failure = policy;
        self
    }

    /// The failure policy set.
    ///
    /// ```
    /// use xen_foreignmemory::{FailurePolicy, MapOptions};
    /// assert_eq!(MapOptions::new().failure_policy(), FailurePolicy::AllOrNothing);
    /// ```
    pub fn failure_policy(&self) -> FailurePolicy {
        self.failure
    }

    /// How to retry paged-out frames.
    ///
    /// ```
    /// use xen_foreignmemory::{MapOptions, RetryPolicy};
    /// let o = MapOptions::new().retry(RetryPolicy::NEVER);
    /// assert_eq!(o.retry_policy(), RetryPolicy::NEVER);
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> MapOptions {
        self.retry = Some(policy);
        self
    }

    /// The retry policy set ([`RetryPolicy::default`] unless changed).
    ///
    /// ```
    /// use xen_foreignmemory::{MapOptions, RetryPolicy};
    /// assert_eq!(MapOptions::new().retry_policy(), RetryPolicy::default());
    /// ```
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.unwrap_or_default()
    }

    /// Map near `addr` if the kernel can (a hint, as `mmap` without `MAP_FIXED`); the
    /// mapping may land elsewhere. `addr` must be page-aligned.
    ///
    /// ```
    /// let o = xen_foreignmemory::MapOptions::new().near(0x7f00_0000_0000);
    /// # let _ = o;
    /// ```
    pub fn near(mut self, addr: usize) -> MapOptions {
        self.placement = Placement::Near(addr);
        self
    }

    /// Map exactly at `addr`, failing with `EEXIST` if anything is mapped anywhere in the
    /// range (`MAP_FIXED_NOREPLACE`; on kernels before 4.17, which ignore that flag, a
    /// mapping that lands elsewhere is undone and fails the same way). `addr` must be
    /// page-aligned.
    ///
    /// ```
    /// let o = xen_foreignmemory::MapOptions::new().at(0x7f00_0000_0000);
    /// # let _ = o;
    /// ```
    pub fn at(mut self, addr: usize) -> MapOptions {
        self.placement = Placement::At(addr);
        self
    }

    /// Map exactly at `addr`, replacing whatever is mapped there (`MAP_FIXED`, as
    /// libxenforeignmemory's `map2` with `MAP_FIXED`). `addr` must be page-aligned.
    ///
    /// # Safety
    /// Nothing in the program may use any byte of the range `addr .. addr + len` (the map
    /// call's frames × 4 KiB, rounded up to the kernel's page size) any more: its old
    /// contents vanish. Typically the range is a reservation this code made itself.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use xen_foreignmemory::{DomId, ForeignMemory, MapOptions, ReadOnly};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let reserved = 0x7f00_0000_0000; // e.g. a PROT_NONE range we reserved and own
    /// // SAFETY: the range is our own reservation, used by nothing else.
    /// let opts = unsafe { MapOptions::new().at_replacing(reserved) };
    /// let m = fm.map_with(DomId::new(1), &[Gfn::new(0x100)], ReadOnly, &opts)?;
    /// assert_eq!(m.as_ptr() as usize, reserved);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub unsafe fn at_replacing(mut self, addr: usize) -> MapOptions {
        self.placement = Placement::Replacing(addr);
        self
    }

    /// `true` when the kernel picks the address (the default).
    #[inline(always)]
    fn is_anywhere(&self) -> bool {
        matches!(self.placement, Placement::Anywhere)
    }

    /// The requested address, checked for alignment (out of line: the default placement
    /// never comes here).
    #[inline(never)]
    fn placement_at(&self, op: &'static str, domid: DomId) -> Result<Where> {
        let (addr, at) = match self.placement {
            Placement::Anywhere => return Ok(Where::Hint(0)),
            Placement::Near(a) => (a, Where::Hint(a)),
            Placement::At(a) => (a, Where::NoReplace(a)),
            Placement::Replacing(a) => (a, Where::Replace(a)),
        };
        if addr % sys::page_size() != 0 {
            return Err(Error::invalid(
                op,
                Some(domid),
                "the requested address is not page-aligned",
            ));
        }
        if addr == 0 && !matches!(at, Where::Hint(_)) {
            return Err(Error::invalid(op, Some(domid), "cannot map at address 0"));
        }
        Ok(at)
    }
}

/// Refuses ids that can never name another domain's memory. `DOMID_SELF` in particular would
/// let Xen map this domain's own frames, aliasing memory the program uses.
#[inline(always)]
fn check_domain(op: &'static str, domid: DomId) -> Result<()> {
    // Real domains, then DOMID_SELF (the first reserved id, refused) followed by DOMID_IO and
    // DOMID_XEN (allowed): one range test and one equality.
    const _: () = assert!(
        DomId::SELF.get() == DomId::FIRST_RESERVED.get()
            && DomId::SELF.get() + 1 == DomId::IO.get()
            && DomId::IO.get() + 1 == DomId::XEN.get()
    );
    if domain_ok(domid) {
        Ok(())
    } else {
        Err(domain_refused(op, domid))
    }
}

/// The test of [`check_domain`].
#[inline(always)]
fn domain_ok(domid: DomId) -> bool {
    let d = domid.get();
    d <= DomId::XEN.get() && d != DomId::SELF.get()
}

/// The refusal of [`check_domain`] (out of line).
#[cold]
#[inline(never)]
fn domain_refused(op: &'static str, domid: DomId) -> Error {
    Error::invalid(
        op,
        Some(domid),
        "not a domain whose memory can be mapped (DOMID_SELF and other reserved ids are refused)",
    )
}

/// Bytes of `count` Xen pages, and of the kernel mapping holding them.
#[inline(always)]
fn sizes(op: &'static str, domid: DomId, count: u64, page: usize) -> Result<(usize, usize)> {
    // The kernel counts frames in an int (old ioctl) and pages in a long: stay below both
    // (which also keeps the byte size far from overflowing).
    if count == 0 || count > i32::MAX as u64 {
        return Err(sizes_refused(op, domid, count));
    }
    let Some(len) = (count as usize).checked_mul(PAGE_SIZE) else {
        return Err(sizes_refused(op, domid, count));
    };
    // Kernel pages are powers of two of at least PAGE_SIZE: round up without overflow, as
    // `len` is at most 2^43 here.
    let vma_len = (len + page - 1) & !(page - 1);
    Ok((len, vma_len))
}

#[cold]
#[inline(never)]
fn sizes_refused(op: &'static str, domid: DomId, count: u64) -> Error {
    if count == 0 {
        Error::invalid(op, Some(domid), "needs at least one frame")
    } else {
        Error::invalid(
            op,
            Some(domid),
            "the byte size of this many frames overflows",
        )
    }
}

impl ForeignMemory {
    /// Opens `/dev/xen/privcmd` (see [`Privcmd::open`](xen_hypercall::Privcmd::open)).
    ///
    /// ```no_run
    /// let fm = xen_foreignmemory::ForeignMemory::open()?;
    /// # let _ = fm;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn open() -> Result<ForeignMemory> {
        Ok(ForeignMemory::from_privcmd(Privcmd::open()?))
    }

    /// Uses an already-open privcmd handle; pass a clone to share it (one open file, one
    /// restriction) with the other handles built from it.
    ///
    /// ```no_run
    /// use xen_foreignmemory::ForeignMemory;
    /// let xen = xen_hypercall::Privcmd::open()?;
    /// let fm = ForeignMemory::from_privcmd(xen.clone());
    /// assert_eq!(xen.handle_count(), 2); // one open file for both
    /// # let _ = fm;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn from_privcmd(privcmd: Privcmd) -> ForeignMemory {
        ForeignMemory {
            privcmd,
            batch: AtomicU8::new(BatchIoctl::Probe as u8),
            errs: frames::KeptErrs::new(),
            page: sys::page_size(),
        }
    }

    /// The privcmd handle underneath (for hypercalls and dm_ops on the same handle).
    ///
    /// ```no_run
    /// let fm = xen_foreignmemory::ForeignMemory::open()?;
    /// let v = fm.privcmd().xen_version()?;
    /// # let _ = v;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn privcmd(&self) -> &Privcmd {
        &self.privcmd
    }

    /// Gives the privcmd handle back (existing mappings stay valid).
    ///
    /// ```no_run
    /// let fm = xen_foreignmemory::ForeignMemory::open()?;
    /// let privcmd: xen_hypercall::Privcmd = fm.into_privcmd();
    /// # let _ = privcmd;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn into_privcmd(self) -> Privcmd {
        self.privcmd
    }

    /// Restricts this handle to `domid`: from now on the kernel refuses to map any other
    /// domain's memory (`EPERM`). Irreversible; see
    /// [`Privcmd::restrict`](xen_hypercall::Privcmd::restrict). Mappings made before stay.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    ///
    /// let fm = ForeignMemory::open()?;
    /// fm.restrict(DomId::new(1))?;
    /// let e = fm.map(DomId::new(2), &[Gfn::new(0x100)], ReadOnly).unwrap_err();
    /// assert!(e.is_permission_denied());
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn restrict(&self, domid: DomId) -> Result<()> {
        self.privcmd.restrict(domid)
    }

    /// The domain this handle is restricted to, if any.
    ///
    /// ```no_run
    /// let fm = xen_foreignmemory::ForeignMemory::open()?;
    /// assert_eq!(fm.restricted_to(), None);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn restricted_to(&self) -> Option<DomId> {
        self.privcmd.restricted_to()
    }

    /// Which ioctl maps frames ([`BatchIoctl::Probe`] until the first map call).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use xen_foreignmemory::{BatchIoctl, DomId, ForeignMemory, ReadOnly};
    /// let fm = ForeignMemory::open()?;
    /// fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// assert_eq!(fm.batch_ioctl(), BatchIoctl::V2); // on any kernel since 3.x
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    #[inline]
    pub fn batch_ioctl(&self) -> BatchIoctl {
        BatchIoctl::from_u8(self.batch.load(Ordering::Relaxed))
    }

    /// Forces which ioctl maps frames (tests, and callers who know their kernel).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{BatchIoctl, ForeignMemory};
    /// let fm = ForeignMemory::open()?;
    /// fm.set_batch_ioctl(BatchIoctl::V1); // exercise the old ioctl
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn set_batch_ioctl(&self, which: BatchIoctl) {
        self.batch.store(which as u8, Ordering::Relaxed);
    }

    /// Makes an empty privcmd mapping of `vma_len` bytes with A's protection, owned by the
    /// caller (who must unmap it). `op` names the operation in errors (only computed for
    /// one).
    ///
    /// # Safety
    /// With [`Where::Replace`], nothing in the program may use the range.
    #[inline(always)]
    unsafe fn mmap_empty<A: Access>(
        &self,
        op: impl FnOnce() -> &'static str,
        domid: DomId,
        at: Where,
        vma_len: usize,
    ) -> Result<core::ptr::NonNull<u8>> {
        // SAFETY: forwarded from our caller.
        let ptr = match unsafe {
            sys::mmap_privcmd(self.privcmd.as_fd(), at, vma_len, A::PROTECTION.prot())
        } {
            Ok(p) => p,
            Err(e) => return Err(mmap_refused(op(), domid, e)),
        };
        if let Where::NoReplace(a) = at {
            if ptr.as_ptr() as usize != a {
                return Err(misplaced(op(), domid, ptr, vma_len));
            }
        }
        Ok(ptr)
    }
}

impl ForeignMemory {
    /// [`mmap_empty`](Self::mmap_empty) where `opts` asks for an address (out of line: the
    /// default placement stays on the short path).
    #[inline(never)]
    fn mmap_placed<A: Access>(
        &self,
        op: &'static str,
        domid: DomId,
        opts: &MapOptions,
        vma_len: usize,
    ) -> Result<core::ptr::NonNull<u8>> {
        let at = opts.placement_at(op, domid)?;
        // SAFETY: `Where::Replace` only comes from `MapOptions::at_replacing`, whose caller
        // vouched for the range.
        unsafe { self.mmap_empty::<A>(|| op, domid, at, vma_len) }
    }
}

/// A failed `mmap` of the privcmd device (out of line).
#[cold]
#[inline(never)]
fn mmap_refused(op: &'static str, domid: DomId, e: Errno) -> Error {
    Error::os(op, Some(domid), e)
}

/// An old kernel took `MAP_FIXED_NOREPLACE` as a hint and put the mapping elsewhere: undone,
/// and refused as if the range were taken.
#[cold]
#[inline(never)]
fn misplaced(op: &'static str, domid: DomId, ptr: core::ptr::NonNull<u8>, vma_len: usize) -> Error {
    // SAFETY: the mapping was just made by the caller and nothing references it.
    unsafe { sys::munmap(ptr, vma_len) };
    Error::os(op, Some(domid), Errno::EEXIST)
}

impl AsFd for ForeignMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.privcmd.as_fd()
    }
}

impl AsRawFd for ForeignMemory {
    fn as_raw_fd(&self) -> RawFd {
        self.privcmd.as_raw_fd()
    }
}

impl From<Privcmd> for ForeignMemory {
    fn from(p: Privcmd) -> ForeignMemory {
        ForeignMemory::from_privcmd(p)
    }
}

impl Clone for ForeignMemory {
    /// Another handle on the same open privcmd file (and restriction), with the batch ioctl
    /// already probed and its own scratch space for large maps.
    fn clone(&self) -> ForeignMemory {
        ForeignMemory {
            privcmd: self.privcmd.clone(),
            batch: AtomicU8::new(self.batch.load(Ordering::Relaxed)),
            errs: frames::KeptErrs::new(),
            page: self.page,
        }
    }
}

impl fmt::Debug for ForeignMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForeignMemory")
            .field("privcmd", &self.privcmd)
            .field("batch_ioctl", &self.batch_ioctl())
            .finish()
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::Resource;
    use std::os::fd::OwnedFd;
    use xen_hypercall::Gfn;

    /// A stand-in privcmd: /dev/null refuses mmap and every ioctl.
    fn stand_in() -> ForeignMemory {
        let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        ForeignMemory::from(Privcmd::from(fd))
    }

    #[test]
    fn bad_input_is_refused_before_any_syscall() {
        let fm = stand_in();
        let d = DomId::new(3);
        let s0 = sys::syscalls();
        let e = fm.map(d, &[], crate::ReadOnly).unwrap_err();
        assert!(e.is_invalid_argument() && e.domain() == Some(d), "{e}");
        assert_eq!(e.op(), "foreignmemory map");
        for bad in [DomId::SELF, DomId::INVALID, DomId::IDLE, DomId::COW] {
            let e = fm.map(bad, &[Gfn::new(1)], crate::ReadWrite).unwrap_err();
            assert!(e.is_invalid_argument(), "{e}");
        }
        let opts = MapOptions::new().at(0x1001);
        assert!(fm
            .map_with(d, &[Gfn::new(1)], crate::ReadOnly, &opts)
            .unwrap_err()
            .is_invalid_argument());
        let opts = MapOptions::new().near(0x10);
        assert!(fm
            .map_with(d, &[Gfn::new(1)], crate::ReadOnly, &opts)
            .unwrap_err()
            .is_invalid_argument());
        let opts = MapOptions::new().at(0);
        assert!(fm
            .map_with(d, &[Gfn::new(1)], crate::ReadOnly, &opts)
            .unwrap_err()
            .is_invalid_argument());
        let gt = Resource::GrantTable(crate::GrantTable::Shared);
        for (frame, count) in [(0, 0), (0, usize::MAX), (u32::MAX, 1), (1, 1 << 40)] {
            let e = fm
                .map_resource(d, gt, frame, count, crate::ReadOnly)
                .unwrap_err();
            assert!(e.is_invalid_argument(), "{frame} {count}: {e}");
        }
        assert!(fm
            .resource_size(DomId::SELF, gt)
            .unwrap_err()
            .is_invalid_argument());
        assert_eq!(sys::syscalls(), s0, "no syscall");
        // Past the checks, the stand-in refuses the mmap: a typed OS error, nothing mapped.
        let e = fm
            .map(d, &[Gfn::new(1), Gfn::new(2)], crate::ReadOnly)
            .unwrap_err();
        assert_eq!((e.op(), e.errno()), ("foreignmemory map", Errno::ENODEV));
        assert_eq!(sys::syscalls(), s0 + 1, "exactly the mmap");
    }

    /// Stands in for a kernel without the map ioctls: /dev/zero can be mmapped (shared) and
    /// answers every ioctl with ENOTTY.
    pub(super) fn old_kernel() -> ForeignMemory {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/zero")
            .unwrap();
        ForeignMemory::from(Privcmd::from(OwnedFd::from(f)))
    }

    #[test]
    fn sizes_and_overflow() {
        let d = DomId::new(1);
        let pg = sys::page_size();
        assert_eq!(sizes("t", d, 1, pg).unwrap().0, PAGE_SIZE);
        assert_eq!(sizes("t", d, 1024, pg).unwrap().0, 1024 * PAGE_SIZE);
        assert!(sizes("t", d, 0, pg).is_err());
        assert!(sizes("t", d, u64::MAX, pg).is_err());
        assert!(sizes("t", d, 1 << 31, pg).is_err());
        let (len, vma) = sizes("t", d, 3, pg).unwrap();
        assert!(vma >= len && vma % sys::page_size() == 0);
    }

    #[test]
    fn policies_and_debug() {
        assert_eq!(
            RetryPolicy::default().worst_case(),
            Duration::from_micros(702_300)
        );
        let fm = stand_in();
        assert_eq!(fm.batch_ioctl(), BatchIoctl::Probe);
        fm.set_batch_ioctl(BatchIoctl::V1);
        assert_eq!(fm.batch_ioctl(), BatchIoctl::V1);
        assert!(format!("{fm:?}").contains("ForeignMemory"));
        fn check<T: Send + Sync>() {}
        check::<ForeignMemory>();
    }
}
