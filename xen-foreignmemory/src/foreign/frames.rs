//! Mapping guest frames by number: [`ForeignMemory::map`], [`ForeignMemory::map_partial`],
//! [`ForeignMemory::map_with`], with the retry of paged-out frames and the fallback to the
//! old `MMAPBATCH` ioctl.

use core::ffi::{c_int, c_void};
use core::ptr::NonNull;
use std::time::Duration;

use xen_hypercall::{DomId, Errno, PrivcmdIoctl};

use super::{
    check_domain, sizes, BatchIoctl, FailurePolicy, ForeignMemory, MapOptions, RetryPolicy,
};
use crate::sys;
use crate::{Access, Error, FrameError, Mapping, Result, PAGE_SIZE};

const MAP_OP: &str = "foreignmemory map";

/// The per-frame error array: on the stack up to [`ErrBuf::INLINE`] frames (32 bytes to
/// clear), beyond that the handle's kept array (already zero: no allocation, no
/// clearing), or a fresh one when another thread holds it or the map is very large.
enum ErrBuf<'a> {
    Inline([c_int; ErrBuf::INLINE], usize),
    Kept(std::sync::MutexGuard<'a, Vec<c_int>>, usize),
    Heap(Vec<c_int>),
}

impl<'a> ErrBuf<'a> {
    const INLINE: usize = 8;
    /// The most frames the kept array grows to (256 KiB).
    const KEPT_MAX: usize = 65536;

    #[inline(always)]
    fn new(kept: &'a std::sync::Mutex<Vec<c_int>>, n: usize) -> ErrBuf<'a> {
        if n <= Self::INLINE {
            return ErrBuf::Inline([0; Self::INLINE], n);
        }
        Self::large(kept, n)
    }

    #[inline]
    fn large(kept: &'a std::sync::Mutex<Vec<c_int>>, n: usize) -> ErrBuf<'a> {
        if n <= Self::KEPT_MAX {
            if let Ok(mut v) = kept.try_lock() {
                if v.len() < n {
                    v.resize(n, 0);
                }
                return ErrBuf::Kept(v, n);
            }
        }
        ErrBuf::Heap(vec![0; n])
    }

    #[inline(always)]
    fn as_mut(&mut self) -> &mut [c_int] {
        match self {
            ErrBuf::Inline(a, n) => &mut a[..*n],
            ErrBuf::Kept(v, n) => &mut v[..*n],
            ErrBuf::Heap(v) => v,
        }
    }
}

/// `true` if any frame failed: an OR over all outcomes, which compiles to wide vector
/// operations (the success path reads each outcome once and branches once).
#[inline(always)]
fn any_failed(errs: &[c_int]) -> bool {
    if errs.len() < 32 {
        return errs.iter().fold(0, |a, &e| a | e) != 0;
    }
    // Blocks of 32 outcomes into 32 lanes (eight vector registers), then the rest.
    let mut lanes = [0 as c_int; 32];
    let blocks = errs.chunks_exact(32);
    let rest = blocks.remainder();
    for block in blocks {
        for (l, &e) in lanes.iter_mut().zip(block) {
            *l |= e;
        }
    }
    let mut acc = lanes.iter().fold(0, |a, &l| a | l);
    for &e in rest {
        acc |= e;
    }
    acc != 0
}

const ENOENT: c_int = -(Errno::ENOENT as c_int);

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
        let mut errs = ErrBuf::new(&self.errs, gfns.len());
        let errs = errs.as_mut();
        // SAFETY: `mapping` is a whole, empty privcmd mapping of exactly gfns.len() pages,
        // referenced by nothing yet.
        let r = unsafe { self.batch_once(domid, mapping.base().as_ptr(), gfns, errs) };
        if r.is_ok() && !any_failed(errs) {
            return Ok(mapping);
        }
        self.map_failures(r, mapping, domid, gfns, errs, opts)
    }

    /// Some frames failed: retry the paged-out ones, then apply the failure policy.
    #[cold]
    #[inline(never)]
    fn map_failures<A: Access>(
        &self,
        first: Result<()>,
        mapping: Mapping<A>,
        domid: DomId,
        gfns: &[u64],
        errs: &mut [c_int],
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        let result = first
            .and_then(|()| self.retry(domid, mapping.base(), gfns, errs, opts.retry_policy()))
            .and_then(|()| finish(mapping, domid, gfns, errs, opts.failure));
        // The kept array goes back all zero.
        errs.fill(0);
        result
    }

    /// Retries the paged-out frames of a map at `base` (a privcmd mapping of gfns.len()
    /// pages, filled by one attempt).
    fn retry(
        &self,
        domid: DomId,
        base: NonNull<u8>,
        gfns: &[u64],
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
            },
        )
    }

    /// One map ioctl; per-frame outcomes land in `errs` (0 or a negative errno). Fails only
    /// when the call as a whole failed.
    ///
    /// # Safety
    /// `addr` is a whole, empty privcmd mapping of this handle exactly `gfns.len()` pages
    /// long, or a hole of one left by an earlier call; nothing references it.
    #[inline]
    unsafe fn batch_once(
        &self,
        domid: DomId,
        addr: *mut u8,
        gfns: &[u64],
        errs: &mut [c_int],
    ) -> Result<()> {
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
            Err(e) => v2_failed(e),
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
        gfns: &[u64],
        errs: &mut [c_int],
    ) -> Result<()> {
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
        gfns: &[u64],
        errs: &mut [c_int],
    ) -> Result<()> {
        let mut arr = gfns.to_vec();
        // SAFETY: forwarded from our caller.
        match unsafe { self.privcmd.mmapbatch_v1(domid, addr.cast(), &mut arr) } {
            Ok(()) => {}
            Err(e) if e.errno() == Errno::ENOENT => {}
            Err(e) => return Err(e.with_op(MAP_OP).into()),
        }
        for ((err, &now), &asked) in errs.iter_mut().zip(&arr).zip(gfns) {
            *err = v1_outcome(asked, now);
        }
        Ok(())
    }
}

/// A failed `MMAPBATCH_V2`: `ENOENT` as a whole means "some frames are paged out" (they
/// are marked, the call goes on); anything else fails the call.
#[cold]
#[inline(never)]
fn v2_failed(e: xen_hypercall::Error) -> Result<()> {
    if e.errno() == Errno::ENOENT {
        Ok(())
    } else {
        Err(e.with_op(MAP_OP).into())
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

#[cfg(all(test, not(miri)))]
mod tests {
    use super::super::tests::old_kernel;
    use super::*;

    #[test]
    fn missing_v2_falls_back_to_the_old_ioctl_and_unmaps_on_failure() {
        let fm = old_kernel();
        let d = DomId::new(4);
        let s0 = sys::syscalls();
        let e = fm.map(d, &[1, 2, 3], crate::ReadWrite).unwrap_err();
        // mmap, (the probe and V1 through xen-hypercall: not counted here), munmap.
        assert_eq!(sys::syscalls() - s0, 2);
        assert_eq!((e.op(), e.errno()), ("foreignmemory map", Errno::ENOTTY));
        assert_eq!(fm.batch_ioctl(), BatchIoctl::V1, "remembered");
        // Next time straight to V1.
        let s0 = sys::syscalls();
        assert!(fm.map(d, &[1], crate::ReadOnly).is_err());
        assert_eq!(sys::syscalls() - s0, 2);
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
    fn error_buffer_is_inline_then_kept_then_fresh() {
        let kept = std::sync::Mutex::new(Vec::new());
        assert!(matches!(ErrBuf::new(&kept, 8), ErrBuf::Inline(..)));
        assert_eq!(ErrBuf::new(&kept, 8).as_mut(), &[0; 8]);
        {
            let mut b = ErrBuf::new(&kept, 1000);
            assert!(matches!(b, ErrBuf::Kept(..)));
            assert_eq!(b.as_mut().len(), 1000);
            // Held by this call: another one gets a fresh array.
            assert!(matches!(ErrBuf::new(&kept, 9), ErrBuf::Heap(_)));
        }
        // Kept again (its capacity already there: no allocation), sized per call.
        let cap = kept.lock().unwrap().capacity();
        let mut b = ErrBuf::new(&kept, 9);
        assert!(matches!(b, ErrBuf::Kept(..)));
        assert_eq!(b.as_mut(), &[0; 9]);
        drop(b);
        assert_eq!(kept.lock().unwrap().capacity(), cap);
        assert!(matches!(
            ErrBuf::new(&kept, ErrBuf::KEPT_MAX + 1),
            ErrBuf::Heap(_)
        ));
    }

    #[test]
    fn any_failed_sees_every_position() {
        for n in [1, 7, 31, 32, 33, 64, 1000] {
            let mut errs = vec![0; n];
            assert!(!any_failed(&errs));
            for i in 0..n {
                errs[i] = ENOENT;
                assert!(any_failed(&errs), "{n} {i}");
                errs[i] = 0;
            }
        }
    }
}
