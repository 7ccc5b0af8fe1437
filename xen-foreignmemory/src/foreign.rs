//! [`ForeignMemory`]: the handle, and the map calls.

use core::ffi::{c_int, c_void};
use core::fmt;
use core::ptr::NonNull;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use xen_hypercall::{DomId, Errno, Privcmd};

use crate::sys::{self, Where};
use crate::{Access, Error, FrameError, Mapping, Resource, Result, PAGE_SIZE};

const MAP_OP: &str = "foreignmemory map";

/// An open handle for mapping other domains' memory: an owned
/// [`Privcmd`](xen_hypercall::Privcmd) (close-on-exec, closed on drop, `AsFd`), which takes
/// part in the process-wide [`restrict_all`](xen_hypercall::restrict_all).
///
/// - [`map`](ForeignMemory::map) / [`map_partial`](ForeignMemory::map_partial) /
///   [`map_with`](ForeignMemory::map_with): guest frames by number
///   (`IOCTL_PRIVCMD_MMAPBATCH_V2`), all-or-nothing or with per-frame errors.
/// - [`resource_size`](ForeignMemory::resource_size) /
///   [`map_resource`](ForeignMemory::map_resource): ioreq server pages, grant tables,
///   vmtrace buffers (`IOCTL_PRIVCMD_MMAP_RESOURCE`).
///
/// Each returns a [`Mapping`] that owns its address range and does not borrow the handle.
/// `ForeignMemory` is `Send + Sync`; every method takes `&self`.
///
/// ```no_run
/// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
///
/// let fm = ForeignMemory::open()?;
/// let guest = DomId::new(1);
/// let m = fm.map(guest, &[0x100, 0x101], ReadOnly)?;
/// println!("first word of gfn 0x100: {:#x}", m.read::<u64>(0)?);
///
/// fm.restrict(guest)?; // from now on, this handle maps domain 1 only
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
pub struct ForeignMemory {
    privcmd: Privcmd,
    batch: AtomicU8,
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
    /// Not known yet: the first map call tries `IOCTL_PRIVCMD_MMAPBATCH_V2` and falls back
    /// to the old ioctl if the kernel lacks it (`ENOTTY`), remembering the answer.
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
    /// [`Mapping::frame_errors`] and refuse access. When *no* frame mapped (for instance
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
/// use xen_foreignmemory::{DomId, FailurePolicy, ForeignMemory, MapOptions, ReadOnly};
///
/// let fm = ForeignMemory::open()?;
/// let opts = MapOptions::new()
///     .failure(FailurePolicy::PerFrame)
///     .near(0x7f00_0000_0000);
/// let m = fm.map_with(DomId::new(1), &[0x100, 0x200], ReadOnly, &opts)?;
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
    /// use xen_foreignmemory::{DomId, ForeignMemory, MapOptions, ReadOnly};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let reserved = 0x7f00_0000_0000; // e.g. a PROT_NONE range we reserved and own
    /// // SAFETY: the range is our own reservation, used by nothing else.
    /// let opts = unsafe { MapOptions::new().at_replacing(reserved) };
    /// let m = fm.map_with(DomId::new(1), &[0x100], ReadOnly, &opts)?;
    /// assert_eq!(m.as_ptr() as usize, reserved);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub unsafe fn at_replacing(mut self, addr: usize) -> MapOptions {
        self.placement = Placement::Replacing(addr);
        self
    }

    /// The requested address, checked for alignment.
    fn placement(&self, op: &'static str, domid: DomId) -> Result<Where> {
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

/// The per-frame error array: on the stack for small batches, on the heap beyond.
// Deliberately large: it lives on the stack for one call, to spare small batches an allocation.
#[allow(clippy::large_enum_variant)]
enum ErrBuf {
    Inline([c_int; ErrBuf::INLINE], usize),
    Heap(Vec<c_int>),
}

impl ErrBuf {
    const INLINE: usize = 64;

    fn new(n: usize) -> ErrBuf {
        if n <= Self::INLINE {
            ErrBuf::Inline([0; Self::INLINE], n)
        } else {
            ErrBuf::Heap(vec![0; n])
        }
    }

    fn as_mut(&mut self) -> &mut [c_int] {
        match self {
            ErrBuf::Inline(a, n) => &mut a[..*n],
            ErrBuf::Heap(v) => v,
        }
    }
}

const ENOENT: c_int = -(Errno::ENOENT as c_int);

/// Refuses ids that can never name another domain's memory. `DOMID_SELF` in particular would
/// let Xen map this domain's own frames, aliasing memory the program uses.
fn check_domain(op: &'static str, domid: DomId) -> Result<()> {
    if domid.is_domain() || domid == DomId::XEN || domid == DomId::IO {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            Some(domid),
            "not a domain whose memory can be mapped (DOMID_SELF and other reserved ids are refused)",
        ))
    }
}

/// Bytes of `count` Xen pages, and of the kernel mapping holding them.
fn sizes(op: &'static str, domid: DomId, count: u64) -> Result<(usize, usize)> {
    const REASON: &str = "the byte size of this many frames overflows";
    if count == 0 {
        return Err(Error::invalid(op, Some(domid), "needs at least one frame"));
    }
    // The kernel counts frames in an int (old ioctl) and pages in a long: stay below both.
    if count > i32::MAX as u64 {
        return Err(Error::invalid(op, Some(domid), REASON));
    }
    let len = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(PAGE_SIZE))
        .filter(|&l| l <= isize::MAX as usize)
        .ok_or(Error::invalid(op, Some(domid), REASON))?;
    let page = sys::page_size();
    let vma_len =
        len.checked_next_multiple_of(page)
            .ok_or(Error::invalid(op, Some(domid), REASON))?;
    Ok((len, vma_len))
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

    /// Uses an already-open privcmd handle.
    ///
    /// ```no_run
    /// use xen_foreignmemory::ForeignMemory;
    /// let fm = ForeignMemory::from_privcmd(xen_hypercall::Privcmd::open()?);
    /// # let _ = fm;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn from_privcmd(privcmd: Privcmd) -> ForeignMemory {
        ForeignMemory {
            privcmd,
            batch: AtomicU8::new(BatchIoctl::Probe as u8),
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
    /// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    ///
    /// let fm = ForeignMemory::open()?;
    /// fm.restrict(DomId::new(1))?;
    /// let e = fm.map(DomId::new(2), &[0x100], ReadOnly).unwrap_err();
    /// assert!(e.is_permission_denied());
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn restrict(&self, domid: DomId) -> Result<()> {
        Ok(self.privcmd.restrict(domid)?)
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
    /// use xen_foreignmemory::{BatchIoctl, DomId, ForeignMemory, ReadOnly};
    /// let fm = ForeignMemory::open()?;
    /// fm.map(DomId::new(1), &[0x100], ReadOnly)?;
    /// assert_eq!(fm.batch_ioctl(), BatchIoctl::V2); // on any kernel since 3.x
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
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

    /// Maps the frames `gfns` of `domid`, in order, all or nothing: if any frame fails, the
    /// call fails with [`Error::Frame`] naming the first one and why, and nothing stays
    /// mapped. Frames paged out by Xen are retried ([`RetryPolicy::default`]).
    ///
    /// `access` is [`ReadOnly`](crate::ReadOnly) or [`ReadWrite`](crate::ReadWrite) and
    /// becomes the mapping's type. One `mmap` and one ioctl, whatever the number of frames
    /// (plus retries of paged-out frames only); no allocation up to 64 frames, one array of
    /// error codes beyond.
    ///
    /// Refused before any syscall: an empty list, a byte size that overflows, reserved
    /// domain ids such as `DOMID_SELF`. A domain that does not exist gives `ESRCH`
    /// ([`Error::is_no_such_domain`]); a frame the guest does not have, `EINVAL`.
    ///
    /// ```no_run
    /// use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    ///
    /// let fm = ForeignMemory::open()?;
    /// match fm.map(DomId::new(1), &[0x100, 0x1_0000_0000], ReadWrite) {
    ///     Ok(m) => println!("mapped {} bytes", m.len()),
    ///     Err(e) => println!("{e}"), // ... frame 1 (gfn 0x100000000): Invalid argument ...
    /// }
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn map<A: Access>(&self, domid: DomId, gfns: &[u64], access: A) -> Result<Mapping<A>> {
        self.map_with(domid, gfns, access, &MapOptions::new())
    }

    /// Like [`map`](ForeignMemory::map), but frames that fail leave holes instead of failing
    /// the call ([`FailurePolicy::PerFrame`]): inspect [`Mapping::frame_errors`]. Fails
    /// only when no frame at all mapped.
    ///
    /// ```no_run
    /// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let m = fm.map_partial(DomId::new(1), &[0x100, 0x1_0000_0000], ReadOnly)?;
    /// for e in m.frame_errors() {
    ///     println!("{e}"); // frame 1 (gfn 0x100000000): Invalid argument
    /// }
    /// assert!(m.read::<u8>(4096).unwrap_err().frame().is_some()); // the hole refuses access
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn map_partial<A: Access>(
        &self,
        domid: DomId,
        gfns: &[u64],
        access: A,
    ) -> Result<Mapping<A>> {
        let opts = MapOptions::new().failure(FailurePolicy::PerFrame);
        self.map_with(domid, gfns, access, &opts)
    }

    /// Maps the frames `gfns` of `domid` with `opts`: placement (libxenforeignmemory's
    /// `map2`), failure policy, retries. See [`map`](ForeignMemory::map).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{DomId, ForeignMemory, MapOptions, ReadOnly, RetryPolicy};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let opts = MapOptions::new().retry(RetryPolicy::NEVER);
    /// let m = fm.map_with(DomId::new(1), &[0x100], ReadOnly, &opts)?;
    /// # let _ = m;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn map_with<A: Access>(
        &self,
        domid: DomId,
        gfns: &[u64],
        _access: A,
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        check_domain(MAP_OP, domid)?;
        let (len, vma_len) = sizes(MAP_OP, domid, gfns.len() as u64)?;
        let at = opts.placement(MAP_OP, domid)?;
        let mapping = self.mmap::<A>(MAP_OP, domid, at, len, vma_len)?;
        let mut errs = ErrBuf::new(gfns.len());
        let errs = errs.as_mut();
        self.batch(domid, mapping.base(), gfns, errs, opts.retry_policy())?;
        finish(mapping, domid, gfns, errs, opts.failure)
    }

    /// Makes the empty privcmd mapping the map calls fill; unmapped again if they fail.
    fn mmap<A: Access>(
        &self,
        op: &'static str,
        domid: DomId,
        at: Where,
        len: usize,
        vma_len: usize,
    ) -> Result<Mapping<A>> {
        // SAFETY: `Where::Replace` only comes from `MapOptions::at_replacing`, whose caller
        // vouched for the range.
        let ptr =
            unsafe { sys::mmap_privcmd(self.privcmd.as_fd(), at, vma_len, A::PROTECTION.prot()) }
                .map_err(|e| Error::os(op, Some(domid), e))?;
        // SAFETY: a fresh privcmd mapping of `vma_len` bytes with A's protection, owned by
        // nobody else. Its frames are not mapped yet: it is only handed out after the map
        // ioctl succeeded, with its failed frames recorded as holes.
        let mapping = unsafe { Mapping::from_raw(ptr, len, vma_len, domid) };
        if let Where::NoReplace(a) = at {
            if ptr.as_ptr() as usize != a {
                // An old kernel took MAP_FIXED_NOREPLACE as a hint and put it elsewhere.
                return Err(Error::os(op, Some(domid), Errno::EEXIST));
            }
        }
        Ok(mapping)
    }

    /// Maps `gfns` at `base` (a fresh privcmd mapping), then retries the paged-out frames.
    fn batch(
        &self,
        domid: DomId,
        base: NonNull<u8>,
        gfns: &[u64],
        errs: &mut [c_int],
        retry: RetryPolicy,
    ) -> Result<()> {
        // SAFETY: `base` is a whole, empty privcmd mapping of exactly gfns.len() pages,
        // referenced by nothing yet.
        unsafe { self.batch_once(domid, base.as_ptr(), gfns, errs)? };
        if sys::page_size() != PAGE_SIZE {
            // With kernel pages larger than Xen's, a run of frames may start inside a kernel
            // page whose other frames mapped, which the kernel cannot refill: no retries.
            return Ok(());
        }
        retry_paged(
            gfns,
            errs,
            retry,
            std::thread::sleep,
            |start, gfns, errs| {
                // SAFETY: frames start..start+len failed with ENOENT, so the kernel left their
                // pages unmapped: a hole of the mapping at `base`, which the kernel lets us fill.
                // `start < gfns.len()`, so the offset stays inside the mapping.
                unsafe {
                    let addr = base.as_ptr().add(start * PAGE_SIZE);
                    self.batch_once(domid, addr, gfns, errs)
                }
            },
        )
    }

    /// One map ioctl; per-frame outcomes land in `errs` (0 or a negative errno). Fails only
    /// when the call as a whole failed.
    ///
    /// # Safety
    /// `addr` is a whole, empty privcmd mapping of this handle exactly `gfns.len()` pages
    /// long, or a hole of one left by an earlier call; nothing references it.
    unsafe fn batch_once(
        &self,
        domid: DomId,
        addr: *mut u8,
        gfns: &[u64],
        errs: &mut [c_int],
    ) -> Result<()> {
        let which = self.batch_ioctl();
        if which != BatchIoctl::V1 {
            // SAFETY: forwarded from our caller.
            let r = unsafe {
                self.privcmd
                    .mmapbatch_v2(domid, addr.cast::<c_void>(), gfns, errs)
            };
            match r {
                // ENOENT as a whole means "some frames are paged out": they are marked.
                Err(e) if e.errno() == Errno::ENOENT => {}
                Err(e) if e.errno() == Errno::ENOTTY && which == BatchIoctl::Probe => {
                    self.set_batch_ioctl(BatchIoctl::V1);
                    // SAFETY: ENOTTY: the kernel did nothing; same range.
                    return unsafe { self.batch_v1(domid, addr, gfns, errs) };
                }
                Err(e) => return Err(e.with_op(MAP_OP).into()),
                Ok(()) => {}
            }
            if which == BatchIoctl::Probe {
                self.set_batch_ioctl(BatchIoctl::V2);
            }
            Ok(())
        } else {
            // SAFETY: forwarded from our caller.
            unsafe { self.batch_v1(domid, addr, gfns, errs) }
        }
    }

    /// [`batch_once`](Self::batch_once) with the old ioctl.
    ///
    /// # Safety
    /// As for `batch_once`.
    unsafe fn batch_v1(
        &self,
        domid: DomId,
        addr: *mut u8,
        gfns: &[u64],
        errs: &mut [c_int],
    ) -> Result<()> {
        let mut arr = gfns.to_vec();
        // SAFETY: forwarded from our caller.
        match unsafe { sys::mmapbatch_v1(self.privcmd.as_fd(), domid.get(), addr, &mut arr) } {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::os(MAP_OP, Some(domid), e)),
        }
        for ((err, &now), &asked) in errs.iter_mut().zip(&arr).zip(gfns) {
            *err = v1_outcome(asked, now);
        }
        Ok(())
    }

    /// The size in frames of `resource` of `domid` (`IOCTL_PRIVCMD_MMAP_RESOURCE` with no
    /// address): e.g. 2 for an ioreq server with buffered ioreqs (the buffered page and one
    /// ioreq page), the grant table's frame count.
    ///
    /// A resource the domain does not have, or a Xen or kernel without resource mapping,
    /// gives an error with [`Error::is_not_supported`]; resources of dom0 are refused by Xen
    /// ([`Error::is_permission_denied`]).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{DomId, ForeignMemory, GrantTable, Resource};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let frames = fm.resource_size(DomId::new(1), Resource::GrantTable(GrantTable::Shared))?;
    /// println!("grant table: {frames} frames");
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn resource_size(&self, domid: DomId, resource: Resource) -> Result<u64> {
        let op = resource.size_op();
        check_domain(op, domid)?;
        let frames = self
            .privcmd
            .resource_size(domid, resource.kind(), resource.id())
            .map_err(|e| e.with_op(op))?;
        resource_size_result(op, domid, frames)
    }

    /// Maps `count` frames of `resource` of `domid`, starting at frame `frame`
    /// (`IOCTL_PRIVCMD_MMAP_RESOURCE`): all or nothing.
    ///
    /// "Not supported" (the Xen or kernel cannot map resources, or not this one) is an error
    /// with [`Error::is_not_supported`]: device models then fall back to mapping the frames
    /// by number with [`map`](ForeignMemory::map).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{field, DomId, ForeignMemory, ReadWrite, Resource};
    /// # #[derive(Clone, Copy)]
    /// # #[repr(C)]
    /// # struct Ioreq { addr: u64, data: u64, count: u32, size: u32, vp_eport: u32, pad: u16, state: u8, kind: u8 }
    /// # // SAFETY: integers only.
    /// # unsafe impl xen_foreignmemory::Plain for Ioreq {}
    ///
    /// let fm = ForeignMemory::open()?;
    /// let server = Resource::IoreqServer { id: 0 };
    /// let ioreq_page = Resource::ioreq_server_ioreq_frame(0);
    /// let page = fm.map_resource(DomId::new(1), server, ioreq_page, 1, ReadWrite)?;
    /// let vcpu0 = page.view::<Ioreq>(0)?;
    /// println!("vCPU 0 ioreq at {:#x}", field!(vcpu0, addr)?.read());
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn map_resource<A: Access>(
        &self,
        domid: DomId,
        resource: Resource,
        frame: u32,
        count: usize,
        access: A,
    ) -> Result<Mapping<A>> {
        self.map_resource_with(domid, resource, frame, count, access, &MapOptions::new())
    }

    /// [`map_resource`](ForeignMemory::map_resource) with a placement from `opts` (its
    /// failure and retry policies do not apply: resources map whole or not at all).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{DomId, ForeignMemory, GrantTable, MapOptions, ReadOnly, Resource};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let opts = MapOptions::new().near(0x7e00_0000_0000);
    /// let gt = Resource::GrantTable(GrantTable::Shared);
    /// let m = fm.map_resource_with(DomId::new(1), gt, 0, 1, ReadOnly, &opts)?;
    /// # let _ = m;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn map_resource_with<A: Access>(
        &self,
        domid: DomId,
        resource: Resource,
        frame: u32,
        count: usize,
        _access: A,
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        let op = resource.map_op();
        check_domain(op, domid)?;
        let (len, vma_len) = sizes(op, domid, count as u64)?;
        if u32::try_from(count).is_err() || frame.checked_add(count as u32).is_none() {
            return Err(Error::invalid(op, Some(domid), "the frame range overflows"));
        }
        let at = opts.placement(op, domid)?;
        let mapping = self.mmap::<A>(op, domid, at, len, vma_len)?;
        // SAFETY: a whole, fresh privcmd mapping of this handle, `count` pages long,
        // referenced by nothing; on failure it is unmapped when `mapping` drops.
        unsafe {
            self.privcmd.mmap_resource(
                domid,
                resource.kind(),
                resource.id(),
                frame,
                count as u64,
                mapping.base().as_ptr().cast(),
            )
        }
        .map_err(|e| e.with_op(op))?;
        Ok(mapping)
    }
}

/// Retries the frames marked paged out (`ENOENT`) in `errs`: after each `sleep` (growing as
/// `policy` says), one `remap(start, gfns, errs)` per run of consecutive such frames, which
/// updates their outcomes. Stops when none is left or the attempts are spent.
fn retry_paged(
    gfns: &[u64],
    errs: &mut [c_int],
    policy: RetryPolicy,
    mut sleep: impl FnMut(Duration),
    mut remap: impl FnMut(usize, &[u64], &mut [c_int]) -> Result<()>,
) -> Result<()> {
    let mut delay = policy.first_delay;
    for _ in 0..policy.attempts {
        if !errs.contains(&ENOENT) {
            break;
        }
        sleep(delay.min(policy.max_delay));
        delay = delay.saturating_mul(2);
        let mut i = 0;
        while i < gfns.len() {
            if errs[i] != ENOENT {
                i += 1;
                continue;
            }
            let start = i;
            while i < gfns.len() && errs[i] == ENOENT {
                i += 1;
            }
            remap(start, &gfns[start..i], &mut errs[start..i])?;
        }
    }
    Ok(())
}

/// A frame's outcome under the old ioctl, which flags failures in the frame number itself:
/// `PRIVCMD_MMAPBATCH_PAGED_ERROR` (bit 31) for paged out, `PRIVCMD_MMAPBATCH_MFN_ERROR`
/// (bits 28 to 31) for any other failure.
fn v1_outcome(asked: u64, now: u64) -> c_int {
    use xen_sys::privcmd::{PRIVCMD_MMAPBATCH_MFN_ERROR, PRIVCMD_MMAPBATCH_PAGED_ERROR};
    let other = u64::from(PRIVCMD_MMAPBATCH_MFN_ERROR & !PRIVCMD_MMAPBATCH_PAGED_ERROR);
    let added = now & !asked;
    if added == 0 {
        0
    } else if added & other != 0 {
        -(Errno::EINVAL as c_int)
    } else {
        ENOENT
    }
}

/// Reads the frame count of a size query. Xen (4.17 at least) answers a query for a resource
/// type it does not know with success and a frame count of `(uint32_t)-EOPNOTSUPP`: such
/// counts (a negative error code in 32 bits) are turned back into that error.
fn resource_size_result(op: &'static str, domid: DomId, frames: u64) -> Result<u64> {
    match u32::try_from(frames) {
        Ok(n) if n > u32::MAX - 4095 => Err(Error::os(
            op,
            Some(domid),
            xen_hypercall::errno_from_xen(i64::from(n as i32)),
        )),
        _ => Ok(frames),
    }
}

/// Turns the per-frame outcomes into the result the policy asks for.
fn finish<A: Access>(
    mut mapping: Mapping<A>,
    domid: DomId,
    gfns: &[u64],
    errs: &[c_int],
    policy: FailurePolicy,
) -> Result<Mapping<A>> {
    let failed = errs.iter().filter(|&&e| e != 0).count();
    if failed == 0 {
        return Ok(mapping);
    }
    let frame = |index: usize| FrameError {
        index,
        gfn: gfns[index],
        errno: xen_hypercall::errno_from_xen(i64::from(errs[index])),
    };
    if policy == FailurePolicy::AllOrNothing || failed == gfns.len() {
        let first = errs.iter().position(|&e| e != 0).unwrap_or(0);
        return Err(Error::Frame {
            op: MAP_OP,
            domain: domid,
            frame: frame(first),
            failed,
            count: gfns.len(),
        });
    }
    let holes: Box<[FrameError]> = errs
        .iter()
        .enumerate()
        .filter(|(_, &e)| e != 0)
        .map(|(i, _)| frame(i))
        .collect();
    mapping.set_holes(holes);
    Ok(mapping)
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

impl From<ForeignMemory> for OwnedFd {
    fn from(fm: ForeignMemory) -> OwnedFd {
        fm.privcmd.into()
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
            let e = fm.map(bad, &[1], crate::ReadWrite).unwrap_err();
            assert!(e.is_invalid_argument(), "{e}");
        }
        let opts = MapOptions::new().at(0x1001);
        assert!(fm
            .map_with(d, &[1], crate::ReadOnly, &opts)
            .unwrap_err()
            .is_invalid_argument());
        let opts = MapOptions::new().near(0x10);
        assert!(fm
            .map_with(d, &[1], crate::ReadOnly, &opts)
            .unwrap_err()
            .is_invalid_argument());
        let opts = MapOptions::new().at(0);
        assert!(fm
            .map_with(d, &[1], crate::ReadOnly, &opts)
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
        let e = fm.map(d, &[1, 2], crate::ReadOnly).unwrap_err();
        assert_eq!((e.op(), e.errno()), ("foreignmemory map", Errno::ENODEV));
        assert_eq!(sys::syscalls(), s0 + 1, "exactly the mmap");
    }

    /// Stands in for a kernel without the map ioctls: /dev/zero can be mmapped (shared) and
    /// answers every ioctl with ENOTTY.
    fn old_kernel() -> ForeignMemory {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/zero")
            .unwrap();
        ForeignMemory::from(Privcmd::from(OwnedFd::from(f)))
    }

    #[test]
    fn missing_v2_falls_back_to_the_old_ioctl_and_unmaps_on_failure() {
        let fm = old_kernel();
        let d = DomId::new(4);
        let s0 = sys::syscalls();
        let e = fm.map(d, &[1, 2, 3], crate::ReadWrite).unwrap_err();
        // mmap, (V2 through xen-hypercall: not counted here), V1, munmap.
        assert_eq!(sys::syscalls() - s0, 3);
        assert_eq!((e.op(), e.errno()), ("foreignmemory map", Errno::ENOTTY));
        assert_eq!(fm.batch_ioctl(), BatchIoctl::V1, "remembered");
        // Next time straight to V1.
        let s0 = sys::syscalls();
        assert!(fm.map(d, &[1], crate::ReadOnly).is_err());
        assert_eq!(sys::syscalls() - s0, 3);
    }

    #[test]
    fn kernels_without_resource_mapping_say_not_supported() {
        let fm = old_kernel();
        let d = DomId::new(4);
        let r = Resource::IoreqServer { id: 1 };
        let e = fm.map_resource(d, r, 0, 2, crate::ReadWrite).unwrap_err();
        assert!(e.is_not_supported(), "{e}");
        assert_eq!(e.op(), "foreignmemory map_resource ioreq_server");
        assert_eq!(e.domain(), Some(d));
        let e = fm.resource_size(d, r).unwrap_err();
        assert!(e.is_not_supported(), "{e}");
        assert_eq!(e.op(), "foreignmemory resource_size ioreq_server");
    }

    #[test]
    fn sizes_and_overflow() {
        let d = DomId::new(1);
        assert_eq!(sizes("t", d, 1).unwrap().0, PAGE_SIZE);
        assert_eq!(sizes("t", d, 1024).unwrap().0, 1024 * PAGE_SIZE);
        assert!(sizes("t", d, 0).is_err());
        assert!(sizes("t", d, u64::MAX).is_err());
        assert!(sizes("t", d, 1 << 31).is_err());
        let (len, vma) = sizes("t", d, 3).unwrap();
        assert!(vma >= len && vma % sys::page_size() == 0);
    }

    #[test]
    fn only_paged_out_frames_are_retried_with_backoff() {
        // Frames 1, 2 and 5 are paged out; frame 2 comes back on the second retry, frame 5
        // never; frame 3 failed for another reason and is left alone.
        let gfns: Vec<u64> = (100..107).collect();
        let einval = -(Errno::EINVAL as c_int);
        let mut errs = [0, ENOENT, ENOENT, einval, 0, ENOENT, 0];
        let mut tries = [0u32; 7];
        let mut calls = Vec::new();
        let mut sleeps = Vec::new();
        let policy = RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(3),
        };
        retry_paged(
            &gfns,
            &mut errs,
            policy,
            |d| sleeps.push(d),
            |start, g, e| {
                calls.push((start, g.to_vec()));
                for (k, err) in e.iter_mut().enumerate() {
                    let i = start + k;
                    tries[i] += 1;
                    *err = match i {
                        1 => 0,
                        2 if tries[i] >= 2 => 0,
                        _ => ENOENT,
                    };
                }
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(errs, [0, 0, 0, einval, 0, ENOENT, 0]);
        assert_eq!(
            calls,
            [
                (1, vec![101, 102]),
                (5, vec![105]),
                (2, vec![102]),
                (5, vec![105]),
                (5, vec![105]),
                (5, vec![105]),
            ]
        );
        let ms = Duration::from_millis;
        assert_eq!(sleeps, [ms(1), ms(2), ms(3), ms(3)]);
        // Nothing paged out: no sleep, no call.
        let mut errs = [0, einval];
        retry_paged(
            &gfns[..2],
            &mut errs,
            policy,
            |_| panic!("slept"),
            |_, _, _| panic!("called"),
        )
        .unwrap();
        // A whole-call failure during a retry ends it.
        let mut errs = [ENOENT];
        let e = Error::os("t", None, Errno::EPERM);
        assert_eq!(
            retry_paged(&gfns[..1], &mut errs, policy, |_| {}, |_, _, _| Err(e)),
            Err(e)
        );
    }

    #[test]
    fn old_ioctl_outcomes() {
        assert_eq!(v1_outcome(0x100, 0x100), 0);
        assert_eq!(v1_outcome(0x100, 0x100 | 0x8000_0000), ENOENT);
        assert_eq!(
            v1_outcome(0x100, 0x100 | 0xf000_0000),
            -(Errno::EINVAL as c_int)
        );
    }

    #[test]
    fn resource_sizes_that_are_errors() {
        let d = DomId::new(2);
        assert_eq!(resource_size_result("t", d, 64).unwrap(), 64);
        assert_eq!(resource_size_result("t", d, 0).unwrap(), 0);
        let e = resource_size_result("t", d, 0xffff_ffa1).unwrap_err();
        assert!(e.is_not_supported(), "{e}");
        assert_eq!(e.errno(), Errno::EOPNOTSUPP);
        assert_eq!(resource_size_result("t", d, 1 << 33).unwrap(), 1 << 33);
    }

    #[test]
    fn error_buffer_is_inline_for_small_batches() {
        assert!(matches!(ErrBuf::new(64), ErrBuf::Inline(..)));
        assert_eq!(ErrBuf::new(64).as_mut().len(), 64);
        assert!(matches!(ErrBuf::new(65), ErrBuf::Heap(_)));
        assert_eq!(ErrBuf::new(1000).as_mut().len(), 1000);
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
