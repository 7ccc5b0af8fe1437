//! Atomic access to integers in guest memory, for the protocols shared with a guest or with
//! Xen (an ioreq's state, a buffered-ioreq ring's pointers, a ring's producer index).

// Unsafe: atomics on guest memory.
#![allow(unsafe_code)]

use core::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use xen_hypercall::Plain;

use crate::{Access, ReadWrite, View};

mod sealed {
    pub trait Sealed {}
}

/// The integer types with atomic access in guest memory: `u8`, `u16`, `u32`, `u64`.
///
/// Sealed; used through [`View`]'s atomic methods ([`View::load_acquire`],
/// [`View::compare_exchange`], ...).
///
/// ```
/// fn f<T: xen_foreignmemory::AtomicInt>() {}
/// f::<u32>();
/// ```
pub trait AtomicInt: Plain + sealed::Sealed {
    /// A `Relaxed` atomic load that is sound on read-only memory (see [`load_shared`]).
    #[doc(hidden)]
    unsafe fn load_relaxed(p: *const Self) -> Self;
    #[doc(hidden)]
    unsafe fn store(p: *mut Self, v: Self, order: Ordering);
    #[doc(hidden)]
    unsafe fn swap(p: *mut Self, v: Self, order: Ordering) -> Self;
    #[doc(hidden)]
    unsafe fn compare_exchange(p: *mut Self, current: Self, new: Self) -> Result<Self, Self>;
    #[doc(hidden)]
    unsafe fn fetch_add(p: *mut Self, v: Self, order: Ordering) -> Self;
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicInt for $t {
            unsafe fn load_relaxed(p: *const Self) -> Self {
                // SAFETY: the caller passes an aligned pointer into a live, readable mapping.
                // The atomic type has the size, alignment and bit validity of the integer.
                // The reference is a shared one made by a cast, not `from_ptr` (whose
                // contract asks for writable memory): it is only used for one `Relaxed`
                // load, which std documents as sound on read-only memory for the sizes
                // `load_shared` sends here.
                unsafe { &*p.cast::<$a>() }.load(Ordering::Relaxed)
            }
            unsafe fn store(p: *mut Self, v: Self, order: Ordering) {
                // SAFETY: as in `load`, and the mapping is writable.
                unsafe { <$a>::from_ptr(p) }.store(v, order)
            }
            unsafe fn swap(p: *mut Self, v: Self, order: Ordering) -> Self {
                // SAFETY: as in `store`.
                unsafe { <$a>::from_ptr(p) }.swap(v, order)
            }
            unsafe fn compare_exchange(p: *mut Self, current: Self, new: Self) -> Result<Self, Self> {
                // SAFETY: as in `store`.
                unsafe { <$a>::from_ptr(p) }.compare_exchange(
                    current,
                    new,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
            }
            unsafe fn fetch_add(p: *mut Self, v: Self, order: Ordering) -> Self {
                // SAFETY: as in `store`.
                unsafe { <$a>::from_ptr(p) }.fetch_add(v, order)
            }
        }
    )*};
}

atomic_int!(u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64);

/// An atomic load of the `T` at `p`, sound on read-only memory (a [`ReadOnly`](crate::ReadOnly)
/// mapping is `PROT_READ`).
///
/// std's rule ("Atomic accesses to read-only memory" in `core::sync::atomic`): atomic
/// operations on read-only memory are undefined behaviour in general (a load may be built
/// from a compare-exchange, which faults), except `Relaxed` loads no wider than the target's
/// limit: 8 bytes on x86_64 and aarch64 (and the other 64-bit targets listed there), 4 bytes
/// on the 32-bit ones. So the value is read with a `Relaxed` load, and `Acquire` comes from an
/// acquire fence after it, which gives the same guarantee (a relaxed load that reads a
/// release store, followed by an acquire fence, synchronises with that store). Where the
/// size is over the limit (a `u64` on a 32-bit target), the value is read with one volatile
/// read and the fence: the read is not atomic, but the guest's protocols never rely on a
/// torn-free `u64` there (no such target is supported yet).
///
/// # Safety
/// `p` is aligned for `T` and points into a live, readable mapping.
unsafe fn load_shared<T: AtomicInt>(p: *const T, order: Ordering) -> T {
    let limit = if cfg!(target_pointer_width = "64") {
        8
    } else {
        4
    };
    let v = if core::mem::size_of::<T>() <= limit {
        // SAFETY: forwarded from our caller; within std's size limit for read-only memory.
        unsafe { T::load_relaxed(p) }
    } else {
        // SAFETY: forwarded from our caller: aligned and readable; any bits are a valid T.
        unsafe { p.read_volatile() }
    };
    if order != Ordering::Relaxed {
        fence(Ordering::Acquire);
    }
    v
}

impl<T: AtomicInt, A: Access> View<'_, T, A> {
    /// Loads the value atomically with `Acquire` ordering: later reads see at least what was
    /// written before the matching release (e.g. the guest's or Xen's request data once its
    /// state says "ready").
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let page = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let write_pointer = page.view::<u32>(4)?.load_acquire();
    /// # let _ = write_pointer;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    ///
    /// Sound on [`ReadOnly`](crate::ReadOnly) mappings (`PROT_READ` pages): it is a `Relaxed`
    /// load followed by an acquire fence, which gives the same ordering, and is the form std
    /// documents as sound on read-only memory ("Atomic accesses to read-only memory" in
    /// `core::sync::atomic`: only `Relaxed` loads up to 8 bytes on 64-bit targets).
    pub fn load_acquire(&self) -> T {
        // SAFETY: views are aligned for T (checked at creation) and inside a live mapping.
        unsafe { load_shared(self.as_ptr(), Ordering::Acquire) }
    }

    /// Loads the value atomically with `Relaxed` ordering.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let page = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let counter = page.view::<u64>(8)?.load_relaxed();
    /// # let _ = counter;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn load_relaxed(&self) -> T {
        // SAFETY: as in `load_acquire`.
        unsafe { load_shared(self.as_ptr(), Ordering::Relaxed) }
    }
}

impl<T: AtomicInt> View<'_, T, ReadWrite> {
    /// Stores `value` atomically with `Release` ordering: everything written before becomes
    /// visible to whoever loads this value with acquire (e.g. write an ioreq's response data,
    /// then its state).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let page = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// page.view::<u32>(0)?.store_release(1);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn store_release(&self, value: T) {
        // SAFETY: aligned, inside a live read-write mapping.
        unsafe { T::store(self.as_mut_ptr(), value, Ordering::Release) }
    }

    /// Stores `value` atomically with `Relaxed` ordering.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let page = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// page.view::<u8>(3)?.store_relaxed(0);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn store_relaxed(&self, value: T) {
        // SAFETY: as in `store_release`.
        unsafe { T::store(self.as_mut_ptr(), value, Ordering::Relaxed) }
    }

    /// Swaps in `value` atomically (`AcqRel`), returning the old value.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let page = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// let old = page.view::<u32>(0)?.swap(0);
    /// # let _ = old;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn swap(&self, value: T) -> T {
        // SAFETY: as in `store_release`.
        unsafe { T::swap(self.as_mut_ptr(), value, Ordering::AcqRel) }
    }

    /// Replaces `current` by `new` atomically if the value is `current` (`AcqRel` on success,
    /// `Acquire` on failure): `Ok(current)`, or `Err(the value found)`.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let page = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// let claimed = page.view::<u32>(0)?.compare_exchange(0, 1).is_ok();
    /// # let _ = claimed;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        // SAFETY: as in `store_release`.
        unsafe { T::compare_exchange(self.as_mut_ptr(), current, new) }
    }

    /// Adds `value` atomically (`AcqRel`, wrapping), returning the old value.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let page = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// let read_pointer = page.view::<u32>(0)?.fetch_add(1);
    /// # let _ = read_pointer;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn fetch_add(&self, value: T) -> T {
        // SAFETY: as in `store_release`.
        unsafe { T::fetch_add(self.as_mut_ptr(), value, Ordering::AcqRel) }
    }
}
