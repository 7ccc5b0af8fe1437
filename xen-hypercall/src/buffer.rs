//! Hypercall buffers: memory Xen may read and write during a hypercall.

// Unsafe: hypercall buffers: pages mapped for Xen, and the `Plain` marker.
#![allow(unsafe_code)]

use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::{sys, Error};

/// Types whose every byte is initialised and whose every bit pattern is a valid value, so
/// their bytes may be copied anywhere (to Xen, to guest memory) and Xen (or the kernel) may
/// write any bytes into them: integers, arrays of them, and `#[repr(C)]` ABI structs made only
/// of such fields **with no padding** (raw pointers included; references, `bool`, `char`,
/// enums and padded structs excluded).
///
/// Implemented here for the integer types, arrays of `Plain`, and the `xen-sys` structs the
/// workspace hands to Xen or reads from shared pages: `xen_dm_op` and every `xen_dm_op_*`
/// struct, `xen_hvm_param`, and the ioreq-page types `ioreq`, `shared_iopage`, `buf_ioreq`,
/// `buffered_iopage`. Each of those impls is checked at compile time: the struct's size must
/// equal the sum of its fields' sizes, so a struct with padding does not build. Structs of
/// `xen-sys` that have padding (`sched_remote_shutdown`, `xen_memory_reservation`) are not
/// `Plain`: this crate passes them to Xen through padding-free private mirrors. Other crates
/// implement `Plain` for their own `#[repr(C)]` types (the orphan rule keeps them from doing
/// so for `xen-sys` types: ask here).
///
/// `xen_dm_op` holds a union: its bytes are all initialised when it is made with
/// [`Plain::zeroed`] and then filled in field by field, which is how the workspace builds
/// every request. A union literal naming a smaller member leaves the union's other bytes
/// uninitialised: build requests from `zeroed()`.
///
/// ```compile_fail
/// // Padding (2 bytes after `domain_id`): not Plain.
/// fn needs_plain<T: xen_hypercall::Plain>() {}
/// needs_plain::<xen_sys::sched::sched_remote_shutdown>();
/// ```
///
/// # Safety
/// Every byte of every value of `Self` must be initialised (no padding, no uninitialised
/// union bytes), every bit pattern of `size_of::<Self>()` bytes (all-zero included) must be a
/// valid `Self`, and `Self` must hold no references or owned resources.
pub unsafe trait Plain: Copy + 'static {
    /// The all-zero value (valid for every `Plain` type): a blank request struct.
    fn zeroed() -> Self {
        // SAFETY: `Plain` guarantees that every bit pattern, all-zero included, is valid.
        unsafe { core::mem::zeroed() }
    }
}

macro_rules! plain {
    ($($t:ty),* $(,)?) => {
        // SAFETY: integers are valid for every bit pattern and have no padding.
        $(unsafe impl Plain for $t {})*
    };
}
plain!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);
// SAFETY: a transparent `u64`, valid for every bit pattern.
unsafe impl Plain for crate::Gfn {}
// SAFETY: an array of `Plain` is a sequence of `Plain` values with no padding between them
// (an array's size is exactly `N * size_of::<T>()`).
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// The size of the field a projection closure names (for the no-padding checks).
// Used only in `const _` assertions, which Rust 1.85's dead-code lint does not count as a use.
#[allow(dead_code)]
const fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

macro_rules! plain_abi {
    ($($t:path { $($f:ident),+ $(,)? }),* $(,)?) => {
        $(
            const _: () = assert!(
                size_of::<$t>() == 0 $(+ field_size(|s: &$t| &s.$f))+,
                concat!(stringify!($t), " has padding (or a field is not listed): not Plain"),
            );
            // SAFETY: a generated `#[repr(C)]` ABI struct whose fields (all listed above)
            // are integers, raw pointers (guest handles), bitfield storage bytes, arrays and
            // other `Plain` structs, or a union of such structs; its size equals the sum of
            // its fields' sizes (asserted just above), so it has no padding.
            unsafe impl Plain for $t {}
        )*
    };
}
plain_abi!(
    xen_sys::hvm::xen_hvm_param {
        domid,
        pad,
        index,
        value
    },
    xen_sys::dm_op::xen_dm_op { op, pad, u },
    xen_sys::dm_op::xen_dm_op_buf { h, size },
    xen_sys::dm_op::xen_dm_op_create_ioreq_server {
        handle_bufioreq,
        pad,
        id
    },
    xen_sys::dm_op::xen_dm_op_get_ioreq_server_info {
        id,
        flags,
        bufioreq_port,
        ioreq_gfn,
        bufioreq_gfn
    },
    xen_sys::dm_op::xen_dm_op_ioreq_server_range {
        id,
        pad,
        type_,
        start,
        end
    },
    xen_sys::dm_op::xen_dm_op_set_ioreq_server_state { id, enabled, pad },
    xen_sys::dm_op::xen_dm_op_destroy_ioreq_server { id, pad },
    xen_sys::dm_op::xen_dm_op_track_dirty_vram { nr, pad, first_pfn },
    xen_sys::dm_op::xen_dm_op_set_pci_intx_level {
        domain,
        bus,
        device,
        intx,
        level
    },
    xen_sys::dm_op::xen_dm_op_set_isa_irq_level { isa_irq, level },
    xen_sys::dm_op::xen_dm_op_set_pci_link_route { link, isa_irq },
    xen_sys::dm_op::xen_dm_op_modified_memory { nr_extents, opaque },
    xen_sys::dm_op::xen_dm_op_modified_memory_extent { nr, pad, first_pfn },
    xen_sys::dm_op::xen_dm_op_set_mem_type {
        nr,
        mem_type,
        pad,
        first_pfn
    },
    xen_sys::dm_op::xen_dm_op_inject_event {
        vcpuid,
        vector,
        type_,
        insn_len,
        pad0,
        error_code,
        pad1,
        cr2
    },
    xen_sys::dm_op::xen_dm_op_inject_msi { data, pad, addr },
    xen_sys::dm_op::xen_dm_op_map_mem_type_to_ioreq_server {
        id,
        type_,
        flags,
        opaque
    },
    xen_sys::dm_op::xen_dm_op_remote_shutdown { reason },
    xen_sys::dm_op::xen_dm_op_relocate_memory {
        size,
        pad,
        src_gfn,
        dst_gfn
    },
    xen_sys::dm_op::xen_dm_op_pin_memory_cacheattr {
        start,
        end,
        type_,
        pad
    },
    xen_sys::dm_op::xen_dm_op_set_irq_level { irq, level, pad },
    xen_sys::dm_op::xen_dm_op_nr_vcpus { vcpus },
    // The ioreq-server pages (`hvm/ioreq.h`), for typed volatile access to mapped pages in
    // `xen-foreignmemory` and the device-model runtime; the bitfield units are plain bytes.
    xen_sys::hvm::ioreq {
        addr,
        data,
        count,
        size,
        vp_eport,
        _pad0,
        _bitfield_1,
        type_
    },
    xen_sys::hvm::shared_iopage { vcpu_ioreq },
    xen_sys::hvm::buf_ioreq {
        type_,
        _bitfield_1,
        data
    },
    xen_sys::hvm::buffered_iopage {
        read_pointer,
        write_pointer,
        buf_ioreq
    },
);

/// How many mappings a pool keeps for reuse.
const CACHE_SLOTS: usize = 4;

/// A range of pages mapped by a [`BufferPool`]. A plain descriptor: ownership is tracked by
/// whoever holds it (the cache, or one buffer).
#[derive(Clone, Copy)]
struct Pages {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Pages` describes memory mapped into the process; whoever holds the descriptor owns
// the mapping exclusively, from any thread.
unsafe impl Send for Pages {}

/// Counters of a [`BufferPool`] (for tests and tuning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferStats {
    /// Mappings created (`mmap` calls).
    pub maps: u64,
    /// Mappings destroyed (`munmap` calls).
    pub unmaps: u64,
    /// Buffers served from the cache without any syscall.
    pub reuses: u64,
}

/// Where a pool gets its pages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferSource {
    /// `/dev/xen/hypercall`: pages the kernel allocates for hypercalls and never moves.
    HypercallDevice,
    /// Private anonymous memory, locked (`MAP_LOCKED`) and excluded from `fork` children
    /// (`MADV_DONTFORK`): the fallback for kernels without `/dev/xen/hypercall`.
    LockedAnonymous,
}

/// The per-handle allocator of hypercall buffers, with a small cache.
///
/// Pages come from `/dev/xen/hypercall` (opened on first use), or locked anonymous memory when
/// that device does not exist ([`BufferSource`]). A dropped buffer's mapping goes back into a
/// cache of [`BufferPool::CACHE_SLOTS`] mappings and is reused by the next request that fits
/// (cleared as far as that request reaches, not the whole mapping), so a repeated call maps nothing and allocates nothing ([`BufferStats`] shows it).
///
/// Each [`Privcmd`](crate::Privcmd) has one ([`Privcmd::buffers`](crate::Privcmd::buffers)).
pub struct BufferPool {
    device: OnceLock<Option<OwnedFd>>,
    cache: Mutex<[Option<Pages>; CACHE_SLOTS]>,
    maps: AtomicU64,
    unmaps: AtomicU64,
    reuses: AtomicU64,
}

impl BufferPool {
    /// How many mappings the cache keeps.
    pub const CACHE_SLOTS: usize = CACHE_SLOTS;

    /// A pool using `/dev/xen/hypercall` when it exists (decided on first allocation).
    pub fn new() -> BufferPool {
        BufferPool::with_device(OnceLock::new())
    }

    /// A pool that always uses locked anonymous memory (what happens on kernels without
    /// `/dev/xen/hypercall`; also what host tests use).
    pub fn anonymous() -> BufferPool {
        BufferPool::with_device(OnceLock::from(None))
    }

    fn with_device(device: OnceLock<Option<OwnedFd>>) -> BufferPool {
        BufferPool {
            device,
            cache: Mutex::new([None; CACHE_SLOTS]),
            maps: AtomicU64::new(0),
            unmaps: AtomicU64::new(0),
            reuses: AtomicU64::new(0),
        }
    }

    fn device(&self) -> Option<&OwnedFd> {
        self.device
            .get_or_init(|| sys::open(c"/dev/xen/hypercall", false).ok())
            .as_ref()
    }

    /// Where this pool's pages come from (opens `/dev/xen/hypercall` if not yet tried).
    pub fn source(&self) -> BufferSource {
        match self.device() {
            Some(_) => BufferSource::HypercallDevice,
            None => BufferSource::LockedAnonymous,
        }
    }

    /// The pool's counters.
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            maps: self.maps.load(Ordering::Relaxed),
            unmaps: self.unmaps.load(Ordering::Relaxed),
            reuses: self.reuses.load(Ordering::Relaxed),
        }
    }

    fn cache(&self) -> MutexGuard<'_, [Option<Pages>; CACHE_SLOTS]> {
        // The cache is an array of descriptors, consistent after any panic.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pages for at least `bytes` bytes (at least one page), the first `zero` bytes zeroed
    /// (fresh mappings are all zero; a cached one is cleared only as far as it will be used).
    fn acquire(&self, bytes: usize, zero: usize) -> Result<Pages, Error> {
        let page = sys::page_size();
        let len = bytes
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or(Error::InvalidArgument {
                op: "hypercall buffer",
                domain: None,
                reason: "size overflows",
            })?;
        {
            let mut cache = self.cache();
            // Smallest cached mapping that fits.
            let best = cache
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| slot.filter(|p| p.len >= len).map(|p| (i, p.len)))
                .min_by_key(|&(_, l)| l)
                .map(|(i, _)| i);
            if let Some(pages) = best.and_then(|i| cache[i].take()) {
                drop(cache);
                // SAFETY: the mapping is ours (just taken from the cache, so nothing else
                // references it), writable, and `pages.len >= len >= bytes >= zero`.
                unsafe { core::ptr::write_bytes(pages.ptr.as_ptr(), 0, zero.min(pages.len)) };
                self.reuses.fetch_add(1, Ordering::Relaxed);
                return Ok(pages);
            }
        }
        self.map(len)
    }

    fn map(&self, len: usize) -> Result<Pages, Error> {
        let op = "hypercall buffer mmap";
        let ptr = match self.device() {
            Some(dev) => {
                let ptr =
                    sys::mmap_shared_rw(dev.as_fd(), len).map_err(|e| Error::os(op, None, e))?;
                // Best effort: keeps a fork child from sharing the buffer. Pages from the
                // device are never copied-on-write, so failure here is harmless.
                let _ = sys::madvise_dontfork(ptr, len);
                ptr
            }
            None => {
                let ptr = sys::mmap_anon_locked(len).map_err(|e| Error::os(op, None, e))?;
                let pages = Pages { ptr, len };
                if let Err(e) = sys::madvise_dontfork(ptr, len) {
                    self.unmap(pages);
                    return Err(Error::os("hypercall buffer madvise", None, e));
                }
                // Touch every page once more, so none is left copy-on-write by a fork in
                // another thread between the mmap and the madvise.
                for off in (0..len).step_by(sys::page_size()) {
                    // SAFETY: `off < len`, inside our fresh writable mapping.
                    unsafe { ptr.as_ptr().add(off).write_volatile(0) };
                }
                ptr
            }
        };
        self.maps.fetch_add(1, Ordering::Relaxed);
        Ok(Pages { ptr, len })
    }

    fn unmap(&self, pages: Pages) {
        self.unmaps.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `pages` is a whole mapping made by `map`, owned by the caller and referenced
        // by nothing else.
        unsafe { sys::munmap(pages.ptr, pages.len) };
    }

    /// Takes a mapping back: into a free cache slot, or in place of a smaller cached one, or
    /// unmapped.
    fn release(&self, pages: Pages) {
        let evicted = {
            let mut cache = self.cache();
            if let Some(slot) = cache.iter_mut().find(|s| s.is_none()) {
                *slot = Some(pages);
                None
            } else {
                match cache.iter_mut().flatten().min_by_key(|p| p.len) {
                    Some(smallest) if smallest.len < pages.len => {
                        Some(core::mem::replace(smallest, pages))
                    }
                    _ => Some(pages),
                }
            }
        };
        if let Some(p) = evicted {
            self.unmap(p);
        }
    }

    fn check_layout<T>(len: usize) -> Result<usize, Error> {
        let op = "hypercall buffer";
        if align_of::<T>() > sys::page_size() {
            return Err(Error::InvalidArgument {
                op,
                domain: None,
                reason: "type alignment exceeds a page",
            });
        }
        size_of::<T>()
            .checked_mul(len)
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or(Error::InvalidArgument {
                op,
                domain: None,
                reason: "size overflows",
            })
    }

    /// A buffer holding `value`.
    pub fn alloc<T: Plain>(&self, value: T) -> Result<HypercallBuffer<'_, T>, Error> {
        let bytes = Self::check_layout::<T>(1)?;
        // The value is written over all its bytes: nothing to clear.
        let pages = self.acquire(bytes, 0)?;
        // SAFETY: the pages are ours, page-aligned (>= align_of::<T>(), checked) and at least
        // size_of::<T>() bytes.
        unsafe { pages.ptr.as_ptr().cast::<T>().write(value) };
        Ok(HypercallBuffer {
            pool: self,
            pages,
            _t: PhantomData,
        })
    }

    /// A zeroed buffer of `len` values.
    pub fn alloc_slice<T: Plain>(&self, len: usize) -> Result<HypercallSlice<'_, T>, Error> {
        let bytes = Self::check_layout::<T>(len)?;
        let pages = self.acquire(bytes, bytes)?;
        Ok(HypercallSlice {
            pool: self,
            pages,
            len,
            _t: PhantomData,
        })
    }

    /// A buffer holding a copy of `values`.
    pub fn alloc_copy<T: Plain>(&self, values: &[T]) -> Result<HypercallSlice<'_, T>, Error> {
        let mut buf = self.alloc_slice(values.len())?;
        buf.copy_from_slice(values);
        Ok(buf)
    }
}

impl Default for BufferPool {
    fn default() -> BufferPool {
        BufferPool::new()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // Every buffer borrows the pool, so only cached mappings are left.
        let cached = core::mem::replace(&mut *self.cache(), [None; CACHE_SLOTS]);
        for pages in cached.into_iter().flatten() {
            self.unmap(pages);
        }
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("device", &self.device.get())
            .field("stats", &self.stats())
            .finish()
    }
}

/// One `T` in hypercall-safe memory, owned; returned to its pool's cache on drop.
///
/// Pass [`HypercallBuffer::as_arg`] to a hypercall and read the result through `Deref`.
///
/// Why handing out `&T` / `&mut T` is sound although Xen writes this memory: Xen (or the
/// kernel on its behalf) touches a hypercall buffer only *during* a hypercall that was given
/// its address. The safe calls of this crate take the buffer by `&mut` for the duration of the
/// (synchronous) ioctl, so no Rust reference to the contents exists while Xen writes, and the
/// syscall is an opaque call the compiler cannot move reads across. Nobody else can reach the
/// pages: they are mapped for this buffer alone, excluded from `fork` children, and not
/// registered with Xen for later asynchronous writes (the `unsafe` raw
/// [`Privcmd::hypercall`](crate::Privcmd::hypercall) makes its caller promise that). `T:
/// Plain` makes whatever bytes Xen wrote a valid `T`.
pub struct HypercallBuffer<'p, T: Plain> {
    pool: &'p BufferPool,
    pages: Pages,
    _t: PhantomData<T>,
}

impl<T: Plain> HypercallBuffer<'_, T> {
    /// The buffer's address as a hypercall argument.
    ///
    /// Takes `&mut self`: the hypercall may write, so the address must come from an exclusive
    /// borrow.
    pub fn as_arg(&mut self) -> u64 {
        self.pages.ptr.as_ptr() as u64
    }

    /// A raw pointer to the value, for ABI structs that embed the address.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.pages.ptr.as_ptr().cast()
    }
}

impl<T: Plain> Deref for HypercallBuffer<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the pages are owned by this buffer, aligned and large enough for T, hold an
        // initialised T (written at allocation, any bytes valid for `Plain`), and are not
        // written by Xen while this shared borrow lives (see the type's docs).
        unsafe { &*self.pages.ptr.as_ptr().cast::<T>() }
    }
}

impl<T: Plain> DerefMut for HypercallBuffer<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow exclusive.
        unsafe { &mut *self.pages.ptr.as_ptr().cast::<T>() }
    }
}

impl<T: Plain> Drop for HypercallBuffer<'_, T> {
    fn drop(&mut self) {
        self.pool.release(self.pages);
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for HypercallBuffer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HypercallBuffer").field(&**self).finish()
    }
}

/// A slice of `T` in hypercall-safe memory, owned; returned to its pool's cache on drop.
///
/// The same rules as [`HypercallBuffer`] make its `Deref` to `[T]` sound.
pub struct HypercallSlice<'p, T: Plain> {
    pool: &'p BufferPool,
    pages: Pages,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Plain> HypercallSlice<'_, T> {
    /// The buffer's address as a hypercall argument (from an exclusive borrow: the hypercall
    /// may write).
    pub fn as_arg(&mut self) -> u64 {
        self.pages.ptr.as_ptr() as u64
    }

    /// A raw pointer to the first element, for ABI structs that embed the address.
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.pages.ptr.as_ptr().cast()
    }

    /// The mapping's size in bytes (whole pages; at least `len * size_of::<T>()`).
    pub fn capacity_bytes(&self) -> usize {
        self.pages.len
    }
}

impl<T: Plain> Deref for HypercallSlice<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: owned, aligned pages of at least len * size_of::<T>() bytes, zeroed or
        // written at allocation (valid for `Plain`), not written by Xen while borrowed.
        unsafe { core::slice::from_raw_parts(self.pages.ptr.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> DerefMut for HypercallSlice<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, made exclusive by `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.pages.ptr.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> Drop for HypercallSlice<'_, T> {
    fn drop(&mut self) {
        self.pool.release(self.pages);
    }
}

impl<T: Plain + fmt::Debug> fmt::Debug for HypercallSlice<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HypercallSlice").field(&&**self).finish()
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn second_allocation_maps_nothing() {
        let pool = BufferPool::anonymous();
        assert_eq!(pool.source(), BufferSource::LockedAnonymous);
        {
            let mut b = pool.alloc(0x1234_5678u64).unwrap();
            assert_eq!(*b, 0x1234_5678);
            *b = 7;
            assert_ne!(b.as_arg(), 0);
        }
        assert_eq!(
            pool.stats(),
            BufferStats {
                maps: 1,
                unmaps: 0,
                reuses: 0
            }
        );
        let before = sys::syscalls();
        {
            // Reused and zeroed: no syscall at all.
            let b = pool.alloc_slice::<u64>(4).unwrap();
            assert_eq!(&*b, &[0, 0, 0, 0]);
        }
        assert_eq!(sys::syscalls(), before);
        assert_eq!(
            pool.stats(),
            BufferStats {
                maps: 1,
                unmaps: 0,
                reuses: 1
            }
        );
    }

    #[test]
    fn cache_keeps_a_few_and_prefers_the_smallest_fit() {
        let pool = BufferPool::anonymous();
        let page = sys::page_size();
        {
            let _a = pool.alloc_slice::<u8>(1).unwrap();
            let _b = pool.alloc_slice::<u8>(3 * page).unwrap();
            let _c = pool.alloc_slice::<u8>(1).unwrap();
            let _d = pool.alloc_slice::<u8>(1).unwrap();
            let _e = pool.alloc_slice::<u8>(1).unwrap();
        }
        // Five mappings, four slots: the extra one-page mapping was unmapped.
        assert_eq!(
            pool.stats(),
            BufferStats {
                maps: 5,
                unmaps: 1,
                reuses: 0
            }
        );
        {
            let small = pool.alloc_slice::<u8>(10).unwrap();
            assert_eq!(small.capacity_bytes(), page);
            let big = pool.alloc_slice::<u8>(2 * page).unwrap();
            assert_eq!(big.capacity_bytes(), 3 * page);
            assert!(big.iter().all(|&b| b == 0));
        }
        assert_eq!(pool.stats().reuses, 2);
        drop(pool); // unmaps the cached ones; nothing to observe but no crash/leak
    }

    #[test]
    fn copies_and_bad_layouts() {
        let pool = BufferPool::anonymous();
        let b = pool.alloc_copy(&[1u32, 2, 3]).unwrap();
        assert_eq!(&*b, &[1, 2, 3]);
        let e = pool.alloc_slice::<u64>(usize::MAX / 4).unwrap_err();
        assert!(e.is_invalid_argument());
        // Large but fine: several pages.
        let big = pool.alloc_slice::<[u8; 4096]>(3).unwrap();
        assert_eq!(big.len(), 3);
        assert!(big.capacity_bytes() >= 3 * 4096);
    }
}

/// Runs under Miri too: reading every byte of a `Plain` value, as a copy into guest memory
/// does, must never read uninitialised memory.
#[cfg(test)]
mod plain_tests {
    use super::Plain;
    use crate::abi;

    /// Reads every byte of `v`, as `Mapping::write` or a hypercall-buffer copy does (Miri
    /// reports "using uninitialized data" here for a type with padding).
    fn byte_sum<T: Plain>(v: &T) -> u64 {
        // SAFETY: `v` is a live `T`; reading its bytes is sound exactly when `T` has no
        // padding, which is what `Plain` promises and this test checks under Miri.
        let bytes = unsafe {
            core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>())
        };
        bytes.iter().map(|&b| u64::from(b)).sum()
    }

    #[test]
    fn padding_free_mirrors_are_fully_initialised() {
        // Built as struct literals, with no zeroing: the explicit pad fields are the only
        // thing that makes every byte initialised.
        let s = abi::RemoteShutdown {
            domain_id: 7,
            _pad: [0; abi::SHUTDOWN_PAD],
            reason: 2,
        };
        assert_eq!(byte_sum(&s), 9);
        let r = abi::MemoryReservation {
            extent_start: 0x100,
            nr_extents: 3,
            extent_order: 0,
            mem_flags: 0,
            domid: 5,
            _pad: [0; abi::RESERVATION_PAD],
        };
        assert_eq!(byte_sum(&r), 1 + 3 + 5);
        assert_eq!(abi::SHUTDOWN_PAD, 2);
        assert_eq!(abi::RESERVATION_PAD, 6);
    }

    #[test]
    fn plain_abi_structs_read_back_whole() {
        let mut p = xen_sys::hvm::xen_hvm_param {
            domid: 1,
            pad: 0,
            index: 2,
            value: 3,
        };
        assert_eq!(byte_sum(&p), 6);
        p.value = 0;
        assert_eq!(byte_sum(&p), 3);
        let mut op = xen_sys::dm_op::xen_dm_op::zeroed();
        op.op = 4;
        op.u.nr_vcpus.vcpus = 1;
        assert_eq!(byte_sum(&op), 5);
        let msi = xen_sys::dm_op::xen_dm_op_inject_msi {
            data: 1,
            pad: 0,
            addr: 1,
        };
        assert_eq!(byte_sum(&msi), 2);
    }
}
