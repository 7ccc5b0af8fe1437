//! Mapping guest frames by number: [`ForeignMemory::map`], [`ForeignMemory::map_partial`],
//! [`ForeignMemory::map_with`], with the retry of paged-out frames and the fallback to the
//! old `MMAPBATCH` ioctl.

// Unsafe: map ioctls into our own mappings.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::ffi::{c_int, c_void};
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use xen_hypercall::{DomId, Errno, Gfn, PrivcmdIoctl};

use super::{
    check_domain, sizes, BatchIoctl, FailurePolicy, ForeignMemory, MapOptions, RetryPolicy, Where,
};
use crate::sys;
use crate::{Access, Error, FrameError, Mapping, Result, PAGE_SIZE};

const MAP_OP: &str = "foreignmemory map";

/// Per-frame outcomes in blocks of 32, aligned so that a scan reads them with aligned vector
/// loads (which x86 folds into the OR itself).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct ErrBlock([c_int; ErrBlock::LEN]);

impl ErrBlock {
    const LEN: usize = 32;
    pub(super) const ZERO: ErrBlock = ErrBlock([0; ErrBlock::LEN]);
}

/// The outcomes of a small map (up to [`SMALL`] frames), on the stack: 32 bytes to clear.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct SmallErrs([c_int; SMALL]);

/// The most frames whose outcomes go to the stack.
const SMALL: usize = 8;

/// The most frames whose outcomes go to the stack in [`MediumErrs`] (256 bytes, which
/// `MMAPBATCH_V2` clears itself: cheaper than taking and releasing the handle's kept blocks).
const MEDIUM: usize = 64;

/// The outcomes of a medium map, aligned for 16-byte vector loads only (a larger alignment
/// would cost the function a realigned stack frame).
#[repr(C, align(16))]
struct MediumErrs([c_int; MEDIUM]);

impl MediumErrs {
    /// `true` if any outcome is not zero: sixteen aligned 16-byte ORs on x86-64.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn any_failed(&self) -> bool {
        use core::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_load_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_setzero_si128,
        };
        // SAFETY: SSE2 is part of x86-64. The array is 16-byte aligned and 256 bytes long,
        // so its sixteen 16-byte loads are aligned and in bounds.
        #[allow(unused_unsafe)]
        unsafe {
            let p = self.0.as_ptr().cast::<__m128i>();
            let mut all = _mm_setzero_si128();
            for i in 0..MEDIUM / 4 {
                all = _mm_or_si128(all, _mm_load_si128(p.add(i)));
            }
            _mm_movemask_epi8(_mm_cmpeq_epi8(all, _mm_setzero_si128())) != 0xffff
        }
    }

    /// `true` if any outcome is not zero.
    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn any_failed(&self) -> bool {
        self.0.iter().fold(0, |a, &e| a | e) != 0
    }
}

/// The per-frame outcome blocks a handle keeps for its large maps: all zero whenever they are
/// not in use (the kernel writes zeros for frames that mapped, and a call that saw failures
/// zeroes them again), so a large map neither allocates nor clears them. One map at a time
/// uses them (a flag, taken without waiting); a map made meanwhile gets fresh blocks.
pub(super) struct KeptErrs {
    busy: AtomicBool,
    blocks: UnsafeCell<Vec<ErrBlock>>,
}

// SAFETY: `blocks` is only reached through a `KeptGuard`, of which at most one exists at a
// time (the `busy` flag, taken with acquire and released with release ordering).
unsafe impl Sync for KeptErrs {}

impl KeptErrs {
    pub(super) const fn new() -> KeptErrs {
        KeptErrs {
            busy: AtomicBool::new(false),
            blocks: UnsafeCell::new(Vec::new()),
        }
    }

    /// The blocks, unless another map holds them.
    #[inline(always)]
    fn try_take(&self) -> Option<KeptGuard<'_>> {
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(KeptGuard(self))
    }
}

/// Exclusive use of a handle's [`KeptErrs`] until dropped.
struct KeptGuard<'a>(&'a KeptErrs);

impl KeptGuard<'_> {
    #[inline(always)]
    fn blocks(&mut self) -> &mut Vec<ErrBlock> {
        // SAFETY: this guard is the only one (see `KeptErrs`), and the returned borrow ends
        // before the guard does.
        unsafe { &mut *self.0.blocks.get() }
    }
}

impl Drop for KeptGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// The per-frame error array of a large map: the handle's kept blocks (already zero: no
/// allocation, no clearing), or fresh ones when another thread holds them or the map is
/// very large. Either way the blocks past the map's frames are zero.
enum ErrBuf<'a> {
    Kept(KeptGuard<'a>),
    Heap(Vec<ErrBlock>),
}

impl<'a> ErrBuf<'a> {
    /// The most frames the kept array grows to (256 KiB).
    const KEPT_MAX: usize = 65536;

    #[inline(always)]
    fn new(kept: &'a KeptErrs, n: usize) -> ErrBuf<'a> {
        let blocks = n.div_ceil(ErrBlock::LEN);
        if n <= Self::KEPT_MAX {
            if let Some(mut g) = kept.try_take() {
                if g.blocks().len() < blocks {
                    grow(g.blocks(), blocks);
                }
                return ErrBuf::Kept(g);
            }
        }
        ErrBuf::Heap(vec![ErrBlock::ZERO; blocks])
    }

    #[inline(always)]
    fn vec(&mut self) -> &mut Vec<ErrBlock> {
        match self {
            ErrBuf::Kept(g) => g.blocks(),
            ErrBuf::Heap(v) => v,
        }
    }
}

/// Grows the kept blocks (the first large map of a handle, or a larger one than before).
#[cold]
#[inline(never)]
fn grow(v: &mut Vec<ErrBlock>, blocks: usize) {
    v.resize(blocks, ErrBlock::ZERO);
}

/// The first `n` outcomes held by `blocks` (at least `n` of them).
#[inline(always)]
fn ints(blocks: &mut [ErrBlock], n: usize) -> &mut [c_int] {
    let len = blocks.len() * ErrBlock::LEN;
    // SAFETY: `ErrBlock` is `repr(C)` over `[c_int; LEN]` with no padding (its size, 128
    // bytes, is a multiple of its alignment), so `blocks` is `len` initialised `c_int`s,
    // borrowed mutably for the returned lifetime.
    let all = unsafe { core::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<c_int>(), len) };
    &mut all[..n.min(len)]
}

/// `true` if any frame failed: an OR over whole blocks (zero past the frames), as eight
/// aligned 16-byte ORs per 32 frames on x86-64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn any_failed(blocks: &[ErrBlock]) -> bool {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_load_si128, _mm_movemask_epi8, _mm_or_si128, _mm_setzero_si128,
    };
    // SAFETY: SSE2 is part of x86-64. Each block is 64-byte aligned and 128 bytes long, so
    // its eight 16-byte loads are aligned and in bounds.
    #[allow(unused_unsafe)]
    unsafe {
        let mut lanes = [_mm_setzero_si128(); 8];
        for b in blocks {
            let p = b.0.as_ptr().cast::<__m128i>();
            for (i, l) in lanes.iter_mut().enumerate() {
                *l = _mm_or_si128(*l, _mm_load_si128(p.add(i)));
            }
        }
        let [a, b, c, d, e, f, g, h] = lanes;
        let all = _mm_or_si128(
            _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)),
            _mm_or_si128(_mm_or_si128(e, f), _mm_or_si128(g, h)),
        );
        _mm_movemask_epi8(_mm_cmpeq_epi8(all, _mm_setzero_si128())) != 0xffff
    }
}

/// `true` if any frame failed: an OR over whole blocks (zero past the frames).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn any_failed(blocks: &[ErrBlock]) -> bool {
    let mut lanes = [0 as c_int; ErrBlock::LEN];
    for b in blocks {
        for (l, &e) in lanes.iter_mut().zip(&b.0) {
            *l |= e;
        }
    }
    lanes.iter().fold(0, |a, &l| a | l) != 0
}

const ENOENT: c_int = -Errno::ENOENT.raw();

impl ForeignMemory {
    /// Maps the frames `gfns` of `domid`, in order, all or nothing: if any frame fails, the
    /// call fails with [`Error::Frame`] naming the first one and why, and nothing stays
    /// mapped. Frames paged out by Xen are retried ([`RetryPolicy::default`]).
    ///
    /// `access` is [`ReadOnly`](crate::ReadOnly) or [`ReadWrite`](crate::ReadWrite) and
    /// becomes the mapping's type. One `mmap` and one ioctl, whatever the number of frames
    /// (plus retries of paged-out frames only). No allocation: the per-frame outcomes go to
    /// the stack up to 8 frames and beyond that to an array the handle keeps (allocated by
    /// its first large map; a map made while another thread holds it gets a fresh one).
    ///
    /// Refused before any syscall: an empty list, a byte size that overflows, reserved
    /// domain ids such as `DOMID_SELF`. A domain that does not exist gives `ESRCH`
    /// ([`Error::is_no_such_domain`]); a frame the guest does not have, `EINVAL`.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    ///
    /// let fm = ForeignMemory::open()?;
    /// match fm.map(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0x1_0000_0000)], ReadWrite) {
    ///     Ok(m) => println!("mapped {} bytes", m.len()),
    ///     Err(e) => println!("{e}"), // ... frame 1 (gfn 0x100000000): Invalid argument ...
    /// }
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    #[inline(always)]
    pub fn map<A: Access>(&self, domid: DomId, gfns: &[Gfn], access: A) -> Result<Mapping<A>> {
        self.map_with(domid, gfns, access, &MapOptions::new())
    }

    /// Like [`map`](ForeignMemory::map), but frames that fail leave holes instead of failing
    /// the call ([`FailurePolicy::PerFrame`]): inspect [`Mapping::frame_errors`]. Fails
    /// only when no frame at all mapped.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let m = fm.map_partial(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0x1_0000_0000)], ReadOnly)?;
    /// for e in m.frame_errors() {
    ///     println!("{e}"); // frame 1 (gfn 0x100000000): Invalid argument
    /// }
    /// assert!(m.read::<u8>(4096).unwrap_err().frame().is_some()); // the hole refuses access
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn map_partial<A: Access>(
        &self,
        domid: DomId,
        gfns: &[Gfn],
        access: A,
    ) -> Result<Mapping<A>> {
        let opts = MapOptions::new().failure(FailurePolicy::PerFrame);
        self.map_with(domid, gfns, access, &opts)
    }

    /// Maps the frames `gfns` of `domid` with `opts`: placement (libxenforeignmemory's
    /// `map2`), failure policy, retries. See [`map`](ForeignMemory::map).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use xen_foreignmemory::{DomId, ForeignMemory, MapOptions, ReadOnly, RetryPolicy};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let opts = MapOptions::new().retry(RetryPolicy::NEVER);
    /// let m = fm.map_with(DomId::new(1), &[Gfn::new(0x100)], ReadOnly, &opts)?;
    /// # let _ = m;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    #[inline(always)]
    pub fn map_with<A: Access>(
        &self,
        domid: DomId,
        gfns: &[Gfn],
        _access: A,
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        if gfns.len() > SMALL {
            if gfns.len() <= MEDIUM {
                return self.map_medium(domid, gfns, opts);
            }
            return self.map_large(domid, gfns, opts);
        }
        let (base, len, vma_len) = self.map_prepare::<A>(domid, gfns.len(), opts)?;
        let mut small = SmallErrs([0; SMALL]);
        // SAFETY: `base` is a whole, empty privcmd mapping of exactly gfns.len() pages,
        // referenced by nothing yet.
        let r = unsafe { self.batch_once(domid, base.as_ptr(), gfns, &mut small.0[..gfns.len()]) };
        // The whole (zeroed) array at once: branch-free, whatever the count.
        if r.is_ok() && small.0.iter().fold(0, |a, &e| a | e) == 0 {
            // SAFETY: a fresh privcmd mapping of `vma_len` bytes with A's protection, owned by
            // nobody else, every frame of which mapped.
            return Ok(unsafe { Mapping::from_raw(base, len, vma_len, domid) });
        }
        // SAFETY: as above, with failed frames: `map_failures` records them as holes or
        // unmaps it.
        let mapping = unsafe { Mapping::from_raw(base, len, vma_len, domid) };
        self.map_failures(r, mapping, domid, gfns, &mut small.0[..gfns.len()], opts)
    }

    /// What every map by frame number does first: the checks, and the empty mapping of
    /// `count` pages. Returns it with its length in bytes and its length rounded up to the
    /// kernel's pages; the caller owns it.
    #[inline(always)]
    fn map_prepare<A: Access>(
        &self,
        domid: DomId,
        count: usize,
        opts: &MapOptions,
    ) -> Result<(NonNull<u8>, usize, usize)> {
        check_domain(MAP_OP, domid)?;
        let (len, vma_len) = sizes(MAP_OP, domid, count as u64, self.page)?;
        let base = if opts.is_anywhere() {
            // SAFETY: not `Where::Replace`.
            unsafe { self.mmap_empty::<A>(|| MAP_OP, domid, Where::Hint(0), vma_len)? }
        } else {
            self.mmap_placed::<A>(MAP_OP, domid, opts, vma_len)?
        };
        Ok((base, len, vma_len))
    }

    /// [`map_with`](Self::map_with) for [`SMALL`] to [`MEDIUM`] frames: the outcomes in
    /// blocks on the stack, scanned whole (a fixed count: no loop). With `MMAPBATCH_V2` the
    /// kernel itself zeroes the frames' outcomes before mapping, so they are not cleared
    /// here: only the outcomes past the frames are (none for 64 frames).
    #[inline(never)]
    fn map_medium<A: Access>(
        &self,
        domid: DomId,
        gfns: &[Gfn],
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        let (base, len, vma_len) = self.map_prepare::<A>(domid, gfns.len(), opts)?;
        let n = gfns.len();
        let mut raw = MaybeUninit::<MediumErrs>::uninit();
        let all = raw.as_mut_ptr().cast::<c_int>();
        if n < MEDIUM {
            // SAFETY: `n < MEDIUM`, and `raw` holds `MEDIUM` outcomes (`repr(C)`): in
            // bounds, aligned, ours.
            unsafe { all.add(n).write_bytes(0, MEDIUM - n) };
        }
        let r = if self.batch_ioctl() == BatchIoctl::V2 {
            // SAFETY: `n <= MEDIUM` outcomes of `raw`, not read before the kernel writes
            // them: the slice only carries their address to the ioctl. The mapping as in
            // `map_with`.
            unsafe {
                let errs = core::slice::from_raw_parts_mut(all, n);
                self.privcmd
                    .mmapbatch_v2(domid, base.as_ptr().cast::<c_void>(), gfns, errs)
            }
            .or_else(|e| v2_failed(e.errno()))
        } else {
            self.medium_other(domid, base, all, gfns)
        };
        if let Err(e) = r {
            // SAFETY: as in `map_with`; dropped, it is unmapped.
            drop(unsafe { Mapping::<A>::from_raw(base, len, vma_len, domid) });
            // The outcomes may be unwritten: a refused call is reported without them.
            return Err(batch_error(domid, e));
        }
        // SAFETY: every outcome is written: the first `n` by the kernel, which for
        // `MMAPBATCH_V2` zeroes all `n` (`clear_user`) before mapping anything and then
        // writes each failed frame's errno, on any call that gets that far, and it only
        // answers 0 or `ENOENT` after that; or, on the other paths, zeroed first
        // (`medium_other`). Those past `n` were zeroed above.
        let errs = unsafe { raw.assume_init_mut() };
        // SAFETY: as in `map_with`.
        let mapping = unsafe { Mapping::from_raw(base, len, vma_len, domid) };
        if !errs.any_failed() {
            return Ok(mapping);
        }
        self.map_failures(Ok(()), mapping, domid, gfns, &mut errs.0[..n], opts)
    }

    /// [`map_medium`](Self::map_medium) before the probe or with the old ioctl, which does
    /// not clear the outcomes: zeroed first, then [`batch_once`](Self::batch_once).
    #[cold]
    #[inline(never)]
    fn medium_other(
        &self,
        domid: DomId,
        base: NonNull<u8>,
        all: *mut c_int,
        gfns: &[Gfn],
    ) -> core::result::Result<(), Errno> {
        // SAFETY: `all` holds at least `gfns.len()` outcomes (see `map_medium`), ours;
        // zeroed, they are initialised for the slice.
        let errs = unsafe {
            all.write_bytes(0, gfns.len());
            core::slice::from_raw_parts_mut(all, gfns.len())
        };
        // SAFETY: `base` is a whole, empty privcmd mapping of exactly gfns.len() pages,
        // referenced by nothing yet.
        unsafe { self.batch_once(domid, base.as_ptr(), gfns, errs) }
    }

    /// [`map_with`](Self::map_with) past [`MEDIUM`] frames, the outcomes in the kept blocks.
    #[inline(never)]
    fn map_large<A: Access>(
        &self,
        domid: DomId,
        gfns: &[Gfn],
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        let (base, len, vma_len) = self.map_prepare::<A>(domid, gfns.len(), opts)?;
        let n = gfns.len();
        let mut buf = ErrBuf::new(&self.errs, n);
        let blocks = &mut buf.vec()[..n.div_ceil(ErrBlock::LEN)];
        // SAFETY: as in `map_with`.
        let r = unsafe { self.batch_once(domid, base.as_ptr(), gfns, ints(blocks, n)) };
        // SAFETY: as in `map_with`.
        let mapping = unsafe { Mapping::from_raw(base, len, vma_len, domid) };
        if r.is_ok() && !any_failed(blocks) {
            return Ok(mapping);
        }
        self.map_failures(r, mapping, domid, gfns, ints(blocks, n), opts)
    }

    /// Some frames failed: retry the paged-out ones, then apply the failure policy.
    #[cold]
    #[inline(never)]
    fn map_failures<A: Access>(
        &self,
        first: core::result::Result<(), Errno>,
        mapping: Mapping<A>,
        domid: DomId,
        gfns: &[Gfn],
        errs: &mut [c_int],
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        let result = first
            .map_err(|e| batch_error(domid, e))
            .and_then(|()| self.retry(domid, mapping.base(), gfns, errs, opts.retry_policy()))
            .and_then(|()| finish(mapping, domid, gfns, errs, opts.failure));
        // The kept array goes back all zero (and the small one need not).
        errs.fill(0);
        result
    }

    /// Retries the paged-out frames of a map at `base` (a privcmd mapping of gfns.len()
    /// pages, filled by one attempt).
    fn retry(
        &self,
        domid: DomId,
        base: NonNull<u8>,
        gfns: &[Gfn],
        errs: &mut [c_int],
        retry: RetryPolicy,
    ) -> Result<()> {
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
                .map_err(|e| batch_error(domid, e))
            },
        )
    }

    /// One map ioctl; per-frame outcomes land in `errs` (0 or a negative errno). Fails only
    /// when the call as a whole failed, with the kernel's errno (see [`batch_error`]; an
    /// errno alone fits in a register, which keeps the success path free of spills).
    ///
    /// # Safety
    /// `addr` is a whole, empty privcmd mapping of this handle exactly `gfns.len()` pages
    /// long, or a hole of one left by an earlier call; nothing references it.
    #[inline(always)]
    unsafe fn batch_once(
        &self,
        domid: DomId,
        addr: *mut u8,
        gfns: &[Gfn],
        errs: &mut [c_int],
    ) -> core::result::Result<(), Errno> {
        if self.batch_ioctl() != BatchIoctl::V2 {
            // SAFETY: forwarded from our caller.
            return unsafe { self.batch_other(domid, addr, gfns, errs) };
        }
        // SAFETY: forwarded from our caller.
        let r = unsafe {
            self.privcmd
                .mmapbatch_v2(domid, addr.cast::<c_void>(), gfns, errs)
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) => v2_failed(e.errno()),
        }
    }

    /// [`batch_once`](Self::batch_once) before the probe, or with the old ioctl.
    ///
    /// # Safety
    /// As for `batch_once`.
    #[cold]
    #[inline(never)]
    unsafe fn batch_other(
        &self,
        domid: DomId,
        addr: *mut u8,
        gfns: &[Gfn],
        errs: &mut [c_int],
    ) -> core::result::Result<(), Errno> {
        let which = match self.batch_ioctl() {
            BatchIoctl::Probe => self.probe_batch_ioctl(),
            which => which,
        };
        if which == BatchIoctl::V1 {
            // SAFETY: forwarded from our caller.
            unsafe { self.batch_v1(domid, addr, gfns, errs) }
        } else {
            // SAFETY: forwarded from our caller; the path is now V2, so no recursion here.
            unsafe { self.batch_once(domid, addr, gfns, errs) }
        }
    }

    /// Finds out, once per handle, whether the kernel has `IOCTL_PRIVCMD_MMAPBATCH_V2`, with
    /// a probe that tells a missing ioctl whether the driver answers `ENOTTY` or (older
    /// drivers) `EINVAL` ([`Privcmd::has_ioctl`](xen_hypercall::Privcmd::has_ioctl)).
    #[cold]
    #[inline(never)]
    fn probe_batch_ioctl(&self) -> BatchIoctl {
        let which = if self.privcmd.has_ioctl(PrivcmdIoctl::MmapBatchV2) {
            BatchIoctl::V2
        } else {
            BatchIoctl::V1
        };
        self.set_batch_ioctl(which);
        which
    }

    /// [`batch_once`](Self::batch_once) with the old ioctl.
    ///
    /// # Safety
    /// As for `batch_once`.
    unsafe fn batch_v1(
        &self,
        domid: DomId,
        addr: *mut u8,
        gfns: &[Gfn],
        errs: &mut [c_int],
    ) -> core::result::Result<(), Errno> {
        // The old ioctl flags failures in the list itself: give it a copy.
        let mut arr = Gfn::as_raw_slice(gfns).to_vec();
        // SAFETY: forwarded from our caller.
        match unsafe { self.privcmd.mmapbatch_v1(domid, addr.cast(), &mut arr) } {
            Ok(()) => {}
            Err(e) if e.errno() == Errno::ENOENT => {}
            Err(e) => return Err(e.errno()),
        }
        for ((err, &now), &asked) in errs.iter_mut().zip(&arr).zip(gfns) {
            *err = v1_outcome(asked.get(), now);
        }
        Ok(())
    }
}

/// A failed `MMAPBATCH_V2`: `ENOENT` as a whole means "some frames are paged out" (they
/// are marked, the call goes on); anything else fails the call.
#[cold]
#[inline(never)]
fn v2_failed(e: Errno) -> core::result::Result<(), Errno> {
    if e == Errno::ENOENT {
        Ok(())
    } else {
        Err(e)
    }
}

/// A map ioctl that failed as a whole: the kernel's errno with the operation and domain.
/// (The frame list was checked before the call, so the ioctls' own refusals of bad
/// arguments cannot occur; only the kernel's answer is left.)
#[cold]
#[inline(never)]
fn batch_error(domid: DomId, e: Errno) -> Error {
    Error::os(MAP_OP, Some(domid), e)
}

/// Retries the frames marked paged out (`ENOENT`) in `errs`: after each `sleep` (growing as
/// `policy` says), one `remap(start, gfns, errs)` per run of consecutive such frames, which
/// updates their outcomes. Stops when none is left or the attempts are spent.
fn retry_paged(
    gfns: &[Gfn],
    errs: &mut [c_int],
    policy: RetryPolicy,
    mut sleep: impl FnMut(Duration),
    mut remap: impl FnMut(usize, &[Gfn], &mut [c_int]) -> Result<()>,
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
        -Errno::EINVAL.raw()
    } else {
        ENOENT
    }
}

/// Turns the per-frame outcomes into the result the policy asks for.
fn finish<A: Access>(
    mut mapping: Mapping<A>,
    domid: DomId,
    gfns: &[Gfn],
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

#[cfg(all(test, not(miri)))]
mod tests {
    use super::super::tests::old_kernel;
    use super::*;

    #[test]
    fn missing_v2_falls_back_to_the_old_ioctl_and_unmaps_on_failure() {
        let fm = old_kernel();
        let d = DomId::new(4);
        let s0 = sys::syscalls();
        let e = fm
            .map(
                d,
                &[Gfn::new(1), Gfn::new(2), Gfn::new(3)],
                crate::ReadWrite,
            )
            .unwrap_err();
        // mmap, (the probe and V1 through xen-hypercall: not counted here), munmap.
        assert_eq!(sys::syscalls() - s0, 2);
        assert_eq!((e.op(), e.errno()), ("foreignmemory map", Errno::ENOTTY));
        assert_eq!(fm.batch_ioctl(), BatchIoctl::V1, "remembered");
        // Next time straight to V1.
        let s0 = sys::syscalls();
        assert!(fm.map(d, &[Gfn::new(1)], crate::ReadOnly).is_err());
        assert_eq!(sys::syscalls() - s0, 2);
    }

    #[test]
    fn only_paged_out_frames_are_retried_with_backoff() {
        // Frames 1, 2 and 5 are paged out; frame 2 comes back on the second retry, frame 5
        // never; frame 3 failed for another reason and is left alone.
        let gfns: Vec<Gfn> = (100..107).map(Gfn::new).collect();
        let einval = -Errno::EINVAL.raw();
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
                calls.push((start, Gfn::as_raw_slice(g).to_vec()));
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
        assert_eq!(v1_outcome(0x100, 0x100 | 0xf000_0000), -Errno::EINVAL.raw());
    }

    #[test]
    fn error_blocks_are_kept_then_fresh() {
        let kept = KeptErrs::new();
        let blocks = |b: &mut ErrBuf<'_>| b.vec().len();
        {
            let mut b = ErrBuf::new(&kept, 1000);
            assert!(matches!(b, ErrBuf::Kept(_)));
            assert_eq!(blocks(&mut b), 1000usize.div_ceil(ErrBlock::LEN));
            let v = b.vec();
            assert_eq!(ints(v, 1000), &[0; 1000][..]);
            // Held by this call: another one gets fresh blocks.
            assert!(matches!(ErrBuf::new(&kept, 9), ErrBuf::Heap(_)));
        }
        // Kept again (already large enough: no allocation), still all zero.
        let mut b = ErrBuf::new(&kept, 9);
        assert!(matches!(b, ErrBuf::Kept(_)));
        let v = b.vec();
        assert_eq!(v.len(), 1000usize.div_ceil(ErrBlock::LEN));
        assert_eq!(ints(v, 9), &[0; 9][..]);
        drop(b);
        assert!(matches!(
            ErrBuf::new(&kept, ErrBuf::KEPT_MAX + 1),
            ErrBuf::Heap(_)
        ));
    }

    #[test]
    fn any_failed_sees_every_position() {
        for n in [1usize, 7, 31, 32, 33, 64, 1000] {
            let mut blocks = vec![ErrBlock::ZERO; n.div_ceil(ErrBlock::LEN)];
            assert!(!any_failed(&blocks));
            for i in 0..n {
                ints(&mut blocks, n)[i] = ENOENT;
                assert!(any_failed(&blocks), "{n} {i}");
                ints(&mut blocks, n)[i] = 0;
            }
        }
        // Every byte of an outcome counts.
        let mut blocks = [ErrBlock::ZERO];
        for v in [1, 0x100, 0x1_0000, 0x100_0000, -1] {
            ints(&mut blocks, 32)[5] = v;
            assert!(any_failed(&blocks), "{v:#x}");
        }
    }
}
