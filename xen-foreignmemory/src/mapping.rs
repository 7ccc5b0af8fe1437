//! [`Mapping`]: foreign frames mapped into this process, and [`View`]: a typed window on them.

// Unsafe: owns a mapping and accesses it volatilely.
#![allow(unsafe_code)]

use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use xen_hypercall::{DomId, Plain};

use crate::{volatile, Access, Error, FrameError, ReadOnly, ReadWrite, Result};

/// Size of a Xen page, the unit of foreign mappings (4 KiB on x86 and Arm, whatever the
/// kernel's own page size).
///
/// ```
/// assert_eq!(xen_foreignmemory::PAGE_SIZE, 4096);
/// ```
pub const PAGE_SIZE: usize = 4096;

/// Foreign frames (guest RAM, or a resource such as an ioreq server's pages) mapped into this
/// process; unmapped when dropped.
///
/// The memory is shared with a running guest (and with Xen), which may change it at any
/// moment, so a Mapping never hands out `&[u8]` or `&T` into it: that would let the compiler
/// assume the bytes stay put, which is undefined behaviour. Every access is a *volatile* one,
/// bounds-checked against the mapping, at a byte offset:
///
/// - [`read`](Mapping::read) / [`write`](Mapping::write) a plain value (any [`Plain`] type:
///   integers, arrays, `#[repr(C)]` ABI structs),
/// - [`read_bytes`](Mapping::read_bytes) / [`write_bytes`](Mapping::write_bytes) /
///   [`fill`](Mapping::fill) to copy in and out of buffers,
/// - [`view`](Mapping::view): a typed [`View`] of a struct in the mapping, with volatile
///   access to the whole struct or, through [`field!`](crate::field), to one field.
///
/// Values wider than the CPU's natural word may be seen half-updated ("torn") if the guest
/// writes them concurrently; aligned accesses of 1, 2, 4 and 8 bytes are single accesses.
/// Order accesses against the guest with [`std::sync::atomic::fence`] where a protocol needs
/// it (e.g. read an ioreq's state, fence `Acquire`, then its data).
///
/// # Protection
/// The type parameter says how the mapping may be used: a `Mapping<ReadOnly>` is mapped
/// `PROT_READ` and has no write method, so the fault a write would raise cannot be reached
/// from safe code. A `Mapping<ReadWrite>` can be narrowed with
/// [`into_read_only`](Mapping::into_read_only).
///
/// # Partial mappings
/// A mapping made with [`FailurePolicy::PerFrame`](crate::FailurePolicy) may have frames that
/// did not map ([`frame_errors`](Mapping::frame_errors)); touching them would kill the
/// process with `SIGBUS`, so every access that touches one fails with
/// [`Error::NotMapped`] instead.
///
/// # Lifetime, threads, fork
/// The Mapping owns its address range: it does not borrow the
/// [`ForeignMemory`](crate::ForeignMemory) that made it (the kernel keeps the device open for
/// as long as the mapping exists), views borrow the Mapping, and nothing can reach the range
/// once it is dropped. `Mapping` is `Send` and `Sync`: all access is volatile and
/// bounds-checked, exactly as if another vCPU of the guest were touching the memory, and
/// unmapping needs ownership. Privcmd mappings are not inherited by child processes (the
/// kernel marks them `VM_DONTCOPY`): a child created by `fork` must not use them.
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
///
/// let fm = ForeignMemory::open()?;
/// let m = fm.map(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0x101)], ReadWrite)?;
/// assert_eq!(m.len(), 2 * 4096);
/// let first: u64 = m.read(0)?;
/// m.write(4096, first)?; // second frame, same value
/// let mut buf = [0u8; 16];
/// m.read_bytes(4096 - 8, &mut buf)?; // spans both frames
/// assert!(m.read::<u8>(2 * 4096).is_err()); // out of bounds: an error, not a crash
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
pub struct Mapping<A: Access = ReadWrite> {
    ptr: NonNull<u8>,
    /// Bytes that may be accessed: frames * PAGE_SIZE.
    len: usize,
    /// Bytes mapped: `len` rounded up to the kernel's page size.
    vma_len: usize,
    domain: DomId,
    /// The frames that did not map (by ascending index), for partial mappings.
    holes: Option<Box<[FrameError]>>,
    access: PhantomData<A>,
}

// SAFETY: the Mapping is the sole owner of its address range (unmapped on drop, which needs
// ownership); every access is volatile and bounds-checked against mapped frames, which is the
// same kind of concurrent access the guest's own vCPUs make. No references into the range are
// ever created, so there is nothing thread-local about it.
unsafe impl<A: Access> Send for Mapping<A> {}
// SAFETY: as above: `&Mapping` allows only volatile, bounds-checked accesses.
unsafe impl<A: Access> Sync for Mapping<A> {}

impl<A: Access> Mapping<A> {
    /// Takes ownership of a mapped range.
    ///
    /// # Safety
    /// `ptr .. ptr + vma_len` must be a whole mapping made by this crate with `A`'s protection
    /// (or more), owned by nobody else; `len <= vma_len`; every frame not listed in `holes`
    /// must be mapped.
    pub(crate) unsafe fn from_raw(
        ptr: NonNull<u8>,
        len: usize,
        vma_len: usize,
        domain: DomId,
    ) -> Mapping<A> {
        Mapping {
            ptr,
            len,
            vma_len,
            domain,
            holes: None,
            access: PhantomData,
        }
    }

    /// Records the frames that did not map (sorted by index).
    pub(crate) fn set_holes(&mut self, holes: Box<[FrameError]>) {
        self.holes = if holes.is_empty() { None } else { Some(holes) };
    }

    /// The start of the range, for the map calls.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes (frames × [`PAGE_SIZE`]).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0x200), Gfn::new(0x300)], ReadOnly)?;
    /// assert_eq!(m.len(), 3 * 4096);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a mapping has at least one frame.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// assert!(!fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?.is_empty());
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of frames.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// assert_eq!(fm.map(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0x200)], ReadOnly)?.frames(), 2);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn frames(&self) -> usize {
        self.len / PAGE_SIZE
    }

    /// The domain whose memory this is.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::{DomId, ForeignMemory, Gfn, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// assert_eq!(fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?.domid(), DomId::new(1));
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn domid(&self) -> DomId {
        self.domain
    }

    /// The address of the first byte, for FFI and for placing other mappings; dereferencing
    /// it is up to the caller's `unsafe` code (and must be volatile, and stay within
    /// [`len`](Mapping::len) and the mapped frames).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// assert_eq!(m.as_ptr() as usize % 4096, 0);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// `true` when every frame mapped (always, unless the mapping was made with
    /// [`FailurePolicy::PerFrame`](crate::FailurePolicy) and some failed).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map_partial(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0xfff_ffff)], ReadOnly)?;
    /// if !m.is_complete() {
    ///     for e in m.frame_errors() {
    ///         eprintln!("{e}"); // frame 1 (gfn 0xfffffff): Invalid argument
    ///     }
    /// }
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn is_complete(&self) -> bool {
        self.holes.is_none()
    }

    /// The frames that did not map, by ascending index (empty for a complete mapping).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map_partial(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0xfff_ffff)], ReadOnly)?;
    /// assert_eq!(m.frame_errors().iter().map(|e| e.index).collect::<Vec<_>>(), [1]);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn frame_errors(&self) -> &[FrameError] {
        self.holes.as_deref().unwrap_or(&[])
    }

    /// Whether frame `index` is mapped: `Ok(())`, or why not (`None` if out of range).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map_partial(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0xfff_ffff)], ReadOnly)?;
    /// assert_eq!(m.frame_status(0), Some(Ok(())));
    /// assert!(matches!(m.frame_status(1), Some(Err(_))));
    /// assert_eq!(m.frame_status(2), None);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn frame_status(&self, index: usize) -> Option<core::result::Result<(), FrameError>> {
        if index >= self.frames() {
            return None;
        }
        let holes = self.frame_errors();
        match holes.binary_search_by_key(&index, |h| h.index) {
            Ok(i) => Some(Err(holes[i])),
            Err(_) => Some(Ok(())),
        }
    }

    /// Checks that `len` bytes at `offset` are inside the mapping and on mapped frames, and
    /// returns their address.
    fn check(&self, op: &'static str, offset: usize, len: usize) -> Result<*mut u8> {
        let end = offset.checked_add(len);
        match end {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(Error::OutOfBounds {
                    op,
                    offset,
                    len,
                    size: self.len,
                })
            }
        }
        if let (Some(holes), Some(end)) = (&self.holes, end) {
            if len > 0 {
                let first = offset / PAGE_SIZE;
                let last = (end - 1) / PAGE_SIZE;
                let i = holes.partition_point(|h| h.index < first);
                if let Some(h) = holes.get(i).filter(|h| h.index <= last) {
                    return Err(Error::NotMapped { op, frame: *h });
                }
            }
        }
        // SAFETY: offset <= len <= vma_len: inside (or one past) the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(offset) })
    }

    /// Reads a plain value at byte `offset` (volatile; one access when `offset` is aligned
    /// for `T` and `T` is at most 8 bytes).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let magic: u32 = m.read(0)?;
    /// let pair: [u64; 2] = m.read(8)?;
    /// # let _ = (magic, pair);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn read<T: Plain>(&self, offset: usize) -> Result<T> {
        let p = self.check("foreignmemory read", offset, core::mem::size_of::<T>())?;
        // SAFETY: checked: inside the mapping, on mapped frames, readable for every Access;
        // `Plain` makes any bits a valid T.
        Ok(unsafe { volatile::read(p) })
    }

    /// Copies `buf.len()` bytes at byte `offset` into `buf`.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let mut page = vec![0u8; 4096];
    /// m.read_bytes(0, &mut page)?;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let p = self.check("foreignmemory read_bytes", offset, buf.len())?;
        // SAFETY: checked as in `read`; `buf` is ours.
        unsafe { volatile::copy_from(p, buf) };
        Ok(())
    }

    /// A typed view of the `T` at byte `offset`, which must be aligned for `T`.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use xen_foreignmemory::{field, DomId, ForeignMemory, ReadOnly};
    /// # #[derive(Clone, Copy)]
    /// # #[repr(C)]
    /// # struct Ioreq { addr: u64, data: u64, count: u32, size: u32, vp_eport: u32, pad: u16, state: u8, kind: u8 }
    /// # // SAFETY: integers only.
    /// # unsafe impl xen_foreignmemory::Plain for Ioreq {}
    ///
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0xfeff0)], ReadOnly)?;
    /// let vcpu0 = m.view::<Ioreq>(0)?;
    /// let whole: Ioreq = vcpu0.read();
    /// let addr: u64 = field!(vcpu0, addr)?.read();
    /// # let _ = (whole, addr);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn view<T: Plain>(&self, offset: usize) -> Result<View<'_, T, A>> {
        const OP: &str = "foreignmemory view";
        let align = core::mem::align_of::<T>();
        if offset % align != 0 {
            return Err(Error::Misaligned {
                op: OP,
                offset,
                align,
            });
        }
        let p = self.check(OP, offset, core::mem::size_of::<T>())?;
        Ok(View {
            // SAFETY: derived from the non-null mapping base plus an in-bounds offset.
            ptr: unsafe { NonNull::new_unchecked(p.cast()) },
            life: PhantomData,
        })
    }
}

impl Mapping<ReadWrite> {
    /// Writes a plain value at byte `offset` (volatile; one access when aligned and at most
    /// 8 bytes).
    ///
    /// The guest sees every byte of `T`. That is sound because [`Plain`]'s contract (in
    /// `xen-hypercall`) requires every byte of a `Plain` type to be initialised, i.e. no
    /// padding (the ABI structs spell theirs out as fields), so no uninitialised byte (stack
    /// garbage) is ever read or copied into guest memory, at aligned or misaligned offsets.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// m.write(0x20, 0x1234_u16)?;
    /// m.write(0x28, [1u32, 2, 3])?;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn write<T: Plain>(&self, offset: usize, value: T) -> Result<()> {
        let p = self.check("foreignmemory write", offset, core::mem::size_of::<T>())?;
        // SAFETY: checked: inside the mapping, on mapped frames; mapped writable (ReadWrite).
        unsafe { volatile::write(p, value) };
        Ok(())
    }

    /// Copies `data` to byte `offset`.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// m.write_bytes(0x100, b"hello, guest")?;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        let p = self.check("foreignmemory write_bytes", offset, data.len())?;
        // SAFETY: checked as in `write`.
        unsafe { volatile::copy_to(p, data) };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// m.fill(0, 4096, 0)?; // zero the page
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        let p = self.check("foreignmemory fill", offset, len)?;
        // SAFETY: checked as in `write`.
        unsafe { volatile::fill(p, len, byte) };
        Ok(())
    }

    /// The address of the first byte, writable (see [`Mapping::as_ptr`]).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// let p: *mut u8 = m.as_mut_ptr();
    /// # let _ = p;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The same mapping, from now on without write access (the pages stay mapped as they are;
    /// the type forbids writes).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, Mapping, ReadOnly, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// let ro: Mapping<ReadOnly> = m.into_read_only();
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn into_read_only(self) -> Mapping<ReadOnly> {
        let this = core::mem::ManuallyDrop::new(self);
        Mapping {
            ptr: this.ptr,
            len: this.len,
            vma_len: this.vma_len,
            domain: this.domain,
            // SAFETY: `this` is never dropped, so the box moves out exactly once.
            holes: unsafe { core::ptr::read(&this.holes) },
            access: PhantomData,
        }
    }
}

impl<A: Access> Drop for Mapping<A> {
    fn drop(&mut self) {
        // SAFETY: we own the whole range; views borrow `self`, so none is alive.
        unsafe { crate::sys::munmap(self.ptr, self.vma_len) };
    }
}

impl<A: Access> fmt::Debug for Mapping<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .field("domain", &self.domain)
            .field("access", &A::PROTECTION)
            .field("frame_errors", &self.frame_errors())
            .finish()
    }
}

/// A typed window on a `T` inside a [`Mapping`]: volatile reads (and, for read-write
/// mappings, writes) of the whole value, and views of its fields.
///
/// A View borrows its Mapping, so it cannot outlive the mapped memory; it is `Copy`, and
/// `Send`/`Sync` like the Mapping. Fields are reached with [`field!`](crate::field) (checked
/// at compile time to be a field of `T`) or by offset with [`View::at`]; elements of an
/// array with [`View::get`].
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use std::sync::atomic::{fence, Ordering};
/// use xen_foreignmemory::{field, DomId, ForeignMemory, ReadWrite};
/// # #[derive(Clone, Copy)]
/// # #[repr(C)]
/// # struct Ioreq { addr: u64, data: u64, count: u32, size: u32, vp_eport: u32, pad: u16, state: u8, kind: u8 }
/// # // SAFETY: integers only.
/// # unsafe impl xen_foreignmemory::Plain for Ioreq {}
///
/// let fm = ForeignMemory::open()?;
/// let page = fm.map(DomId::new(1), &[Gfn::new(0xfeff0)], ReadWrite)?;
/// let req = page.view::<Ioreq>(0)?; // vCPU 0's slot of a shared_iopage
/// let data = field!(req, data)?;
/// data.write(0x42);
/// fence(Ordering::Release);
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
pub struct View<'m, T, A: Access> {
    ptr: NonNull<T>,
    life: PhantomData<(&'m Mapping<A>, A)>,
}

// SAFETY: a View is a checked pointer into a Mapping it borrows; see Mapping's Send/Sync.
unsafe impl<T, A: Access> Send for View<'_, T, A> {}
// SAFETY: as above.
unsafe impl<T, A: Access> Sync for View<'_, T, A> {}

impl<T, A: Access> Clone for View<'_, T, A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, A: Access> Copy for View<'_, T, A> {}

impl<'m, T: Plain, A: Access> View<'m, T, A> {
    /// Reads the whole value (volatile).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let counters: [u32; 4] = m.view::<[u32; 4]>(0x400)?.read();
    /// # let _ = counters;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn read(&self) -> T {
        // SAFETY: checked at creation: aligned, inside mapped frames of a live mapping
        // (borrowed for 'm); `Plain` makes any bits valid.
        unsafe { self.ptr.as_ptr().read_volatile() }
    }

    /// The address of the value (see [`Mapping::as_ptr`]).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let v = m.view::<u64>(8)?;
    /// assert_eq!(v.as_ptr() as usize, m.as_ptr() as usize + 8);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }

    /// A view of the `F` at byte `offset` inside this `T` (bounds and alignment checked).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let pair = m.view::<[u64; 2]>(0)?;
    /// let second: u64 = pair.at::<u64>(8)?.read();
    /// assert!(pair.at::<u64>(16).is_err());
    /// # let _ = second;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn at<F: Plain>(&self, offset: usize) -> Result<View<'m, F, A>> {
        const OP: &str = "foreignmemory view field";
        let size = core::mem::size_of::<F>();
        match offset.checked_add(size) {
            Some(end) if end <= core::mem::size_of::<T>() => {}
            _ => {
                return Err(Error::OutOfBounds {
                    op: OP,
                    offset,
                    len: size,
                    size: core::mem::size_of::<T>(),
                })
            }
        }
        // SAFETY: offset + size_of::<F>() <= size_of::<T>(): inside the value.
        let p = unsafe { self.ptr.as_ptr().cast::<u8>().add(offset) };
        let align = core::mem::align_of::<F>();
        if (p as usize) % align != 0 {
            return Err(Error::Misaligned {
                op: OP,
                offset,
                align,
            });
        }
        Ok(View {
            // SAFETY: non-null: derived from a non-null pointer by an in-bounds offset.
            ptr: unsafe { NonNull::new_unchecked(p.cast()) },
            life: PhantomData,
        })
    }

    /// A view of a part of `T` located by `locate`, which gets the value's address and returns
    /// the part's (typically `|p| unsafe { &raw const (*p).field }`; [`field!`](crate::field)
    /// writes that for you). The result is checked to lie inside `T`, aligned, so a wrong
    /// pointer is an error, never a wild access.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # #[derive(Clone, Copy)]
    /// # #[repr(C)]
    /// # struct Ioreq { addr: u64, data: u64, count: u32, size: u32, vp_eport: u32, pad: u16, state: u8, kind: u8 }
    /// # // SAFETY: integers only.
    /// # unsafe impl xen_foreignmemory::Plain for Ioreq {}
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0xfeff0)], ReadOnly)?;
    /// let req = m.view::<Ioreq>(0)?;
    /// // SAFETY: `p` points at a live ioreq; taking a field's address reads nothing.
    /// let size = req.project(|p| unsafe { &raw const (*p).size })?;
    /// let bytes: u32 = size.read();
    /// # let _ = bytes;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn project<F: Plain>(
        &self,
        locate: impl FnOnce(*const T) -> *const F,
    ) -> Result<View<'m, F, A>> {
        let base = self.ptr.as_ptr().cast_const();
        let p = locate(base);
        match (p as usize).checked_sub(base as usize) {
            Some(offset) => self.at(offset),
            None => Err(Error::OutOfBounds {
                op: "foreignmemory view field",
                offset: 0,
                len: core::mem::size_of::<F>(),
                size: core::mem::size_of::<T>(),
            }),
        }
    }
}

impl<'m, T: Plain, const N: usize, A: Access> View<'m, [T; N], A> {
    /// A view of element `index` of an array, or `None` past its end.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// let counters = m.view::<[u32; 256]>(0x400)?;
    /// let timer = counters.get(0xf0).map(|c| c.read());
    /// assert!(counters.get(256).is_none());
    /// # let _ = timer;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Option<View<'m, T, A>> {
        if index >= N {
            return None;
        }
        Some(View {
            // SAFETY: index < N: inside the array, aligned like it.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().cast::<T>().add(index)) },
            life: PhantomData,
        })
    }

    /// The number of elements, `N`.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// assert_eq!(m.view::<[u32; 8]>(0)?.len(), 8);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        N
    }

    /// `true` for a zero-length array.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadOnly};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadOnly)?;
    /// assert!(!m.view::<[u32; 8]>(0)?.is_empty());
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        N == 0
    }
}

impl<T: Plain> View<'_, T, ReadWrite> {
    /// Writes the whole value (volatile).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// m.view::<u64>(0x18)?.write(7);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn write(&self, value: T) {
        // SAFETY: checked at creation: aligned, inside mapped frames of a live read-write
        // mapping borrowed for the view's lifetime.
        unsafe { self.ptr.as_ptr().write_volatile(value) }
    }

    /// The address of the value, writable.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let m = fm.map(DomId::new(1), &[Gfn::new(0x100)], ReadWrite)?;
    /// let p: *mut u64 = m.view::<u64>(0)?.as_mut_ptr();
    /// # let _ = p;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn as_mut_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T, A: Access> fmt::Debug for View<'_, T, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("addr", &self.ptr)
            .field("type", &core::any::type_name::<T>())
            .finish()
    }
}

/// A [`View`] of one field of the struct a view shows: `field!(view, name)` (nested:
/// `field!(view, outer.inner)`), as a `Result<View<..>>`.
///
/// The field's type is the new view's type, and the compiler checks that the field exists.
/// The result comes from [`View::project`], which checks that the field lies inside the struct
/// and is aligned for its type: always true for a real field, except in `#[repr(packed)]`
/// structs, whose misaligned fields give [`Error::Misaligned`](crate::Error::Misaligned).
///
/// The macro expands to a small `unsafe` block (taking the field's address); crates that
/// forbid `unsafe_code` can write `view.at::<F>(core::mem::offset_of!(T, field))` instead.
/// That block is sound only because the closure is handed to this crate's
/// [`View::project`], which calls it with the address of a live value: the macro names that
/// function by its path, so `$view` must be a [`View`] (not a reference to one, nor any
/// other type with a method called `project`, whose closure argument could be anything).
///
/// ```no_run
/// # use xen_foreignmemory::Gfn;
/// use xen_foreignmemory::{field, DomId, ForeignMemory, ReadWrite};
/// # #[derive(Clone, Copy)]
/// # #[repr(C)]
/// # struct Ioreq { addr: u64, data: u64, count: u32, size: u32, vp_eport: u32, pad: u16, state: u8, kind: u8 }
/// # // SAFETY: integers only.
/// # unsafe impl xen_foreignmemory::Plain for Ioreq {}
///
/// let fm = ForeignMemory::open()?;
/// let page = fm.map(DomId::new(1), &[Gfn::new(0xfeff0)], ReadWrite)?;
/// let req = page.view::<Ioreq>(0)?;
/// let (addr, size) = (field!(req, addr)?.read(), field!(req, size)?.read());
/// field!(req, data)?.write(0xffff_ffff);
/// # let _ = (addr, size);
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
///
/// A look-alike type with a `project` method of its own does not compile (it would get the
/// closure and could call it with a dangling pointer, reaching undefined behaviour through
/// the macro's `unsafe` block without writing `unsafe`):
///
/// ```compile_fail
/// use xen_foreignmemory::field;
///
/// struct Target {
///     x: u64,
/// }
/// struct LookAlike;
/// impl LookAlike {
///     fn project<F>(&self, locate: impl FnOnce(*const Target) -> *const F) -> *const F {
///         locate(core::ptr::dangling())
///     }
/// }
/// let _ = field!(LookAlike, x); // error[E0308]: expected `&View<'_, _, _>`
/// ```
/// # use xen_foreignmemory::Gfn;
#[macro_export]
macro_rules! field {
    ($view:expr, $($field:ident).+) => {
        $crate::View::project(&$view, |p| {
            // SAFETY: `p` is the address of a live value inside a mapping; `&raw const`
            // computes the field's address without reading or making a reference.
            unsafe { &raw const (*p).$($field).+ }
        })
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_hypercall::Errno;
    use xen_hypercall::Gfn;

    /// A Mapping over anonymous memory: the same checks as over guest memory.
    fn anon<A: Access>(frames: usize) -> Mapping<A> {
        let len = frames * PAGE_SIZE;
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: ours alone, len bytes, all mapped read-write.
        unsafe { Mapping::from_raw(NonNull::new(p.cast()).unwrap(), len, len, DomId::new(9)) }
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Pair {
        a: u32,
        b: u16,
        c: [u8; 2],
        d: u64,
    }
    // SAFETY: integers, no padding.
    unsafe impl Plain for Pair {}

    #[test]
    fn reads_writes_and_bounds() {
        let m = anon::<ReadWrite>(2);
        assert_eq!((m.len(), m.frames(), m.domid()), (8192, 2, DomId::new(9)));
        assert!(m.is_complete() && !m.is_empty());
        assert_eq!(
            m.write(8190, 0xabcd_u32).unwrap_err().errno(),
            Errno::EFAULT
        );
        assert_eq!(m.read::<u32>(8190).unwrap_err().errno(), Errno::EFAULT);
        m.write(4094, 0x1122_3344_u32).unwrap(); // spans the two pages, unaligned
        assert_eq!(m.read::<u32>(4094).unwrap(), 0x1122_3344);
        m.write_bytes(10, b"hello").unwrap();
        let mut b = [0u8; 5];
        m.read_bytes(10, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        let v = m.view::<u32>(64).unwrap();
        v.store_release(5);
        assert_eq!(v.load_acquire(), 5);
        assert_eq!(v.swap(6), 5);
        assert_eq!(v.compare_exchange(6, 7), Ok(6));
        assert_eq!(v.compare_exchange(6, 8), Err(7));
        assert_eq!(v.fetch_add(u32::MAX), 7);
        assert_eq!(v.load_relaxed(), 6);
        let b = m.view::<u8>(65).unwrap();
        b.store_relaxed(1);
        assert_eq!(m.read::<u32>(64).unwrap(), 6 | 1 << 8);
        let w = m.view::<u64>(72).unwrap();
        w.store_release(u64::MAX);
        assert_eq!(w.fetch_add(2), u64::MAX);
        assert_eq!(m.view::<u16>(72).unwrap().load_acquire(), 1);
        m.fill(0, 4, 0xee).unwrap();
        assert_eq!(m.read::<u32>(0).unwrap(), 0xeeee_eeee);
        // Empty accesses at the very end are fine; one byte further is not.
        m.read_bytes(8192, &mut []).unwrap();
        assert!(matches!(
            m.read_bytes(8192, &mut [0]).unwrap_err(),
            Error::OutOfBounds {
                offset: 8192,
                len: 1,
                size: 8192,
                ..
            }
        ));
        assert!(m.write_bytes(usize::MAX, &[1]).is_err());
        assert!(m.fill(1, usize::MAX, 0).is_err());
        assert!(format!("{m:?}").contains("Mapping"));
    }

    #[test]
    fn views_and_fields() {
        let m = anon::<ReadWrite>(1);
        let v = m.view::<Pair>(16).unwrap();
        v.write(Pair {
            a: 1,
            b: 2,
            c: [3, 4],
            d: 5,
        });
        assert_eq!(field!(v, a).unwrap().read(), 1);
        assert_eq!(field!(v, c).unwrap().get(1).unwrap().read(), 4);
        assert!(field!(v, c).unwrap().get(2).is_none());
        field!(v, d).unwrap().write(0x55);
        assert_eq!(m.read::<u64>(24).unwrap(), 0x55);
        assert_eq!(v.at::<u16>(4).unwrap().read(), 2);
        assert!(matches!(v.at::<u64>(12), Err(Error::OutOfBounds { .. })));
        assert!(matches!(v.at::<u32>(6), Err(Error::Misaligned { .. })));
        // A projection pointing outside the struct is refused, not followed.
        assert!(v.project(|p| p.cast::<u8>().wrapping_add(100)).is_err());
        assert!(v.project(|p| p.cast::<u8>().wrapping_sub(1)).is_err());
        assert!(matches!(
            m.view::<Pair>(4),
            Err(Error::Misaligned { align: 8, .. })
        ));
        assert!(m.view::<Pair>(4096 - 8).is_err());
        let ro = m.into_read_only();
        let v = ro.view::<Pair>(16).unwrap();
        assert_eq!(v.read().d, 0x55);
        assert!(format!("{v:?}").contains("Pair"));
        let arr = ro.view::<[u32; 4]>(0).unwrap();
        assert_eq!((arr.len(), arr.is_empty()), (4, false));
    }

    #[test]
    fn holes_refuse_access() {
        let mut m = anon::<ReadOnly>(4);
        let hole = |index| FrameError {
            index,
            gfn: Gfn::new(0x1000 + index as u64),
            errno: Errno::EINVAL,
        };
        m.set_holes(vec![hole(1), hole(3)].into_boxed_slice());
        assert!(!m.is_complete());
        assert_eq!(m.frame_errors().len(), 2);
        assert_eq!(m.frame_status(0), Some(Ok(())));
        assert_eq!(m.frame_status(1), Some(Err(hole(1))));
        assert_eq!(m.frame_status(4), None);
        m.read::<u64>(0).unwrap();
        m.read::<u64>(2 * PAGE_SIZE).unwrap();
        let e = m.read::<u8>(PAGE_SIZE).unwrap_err();
        assert_eq!(e.frame(), Some(hole(1)));
        assert_eq!(e.errno(), Errno::EFAULT);
        // Spanning 0..2 touches the hole at 1.
        let mut buf = vec![0u8; 2 * PAGE_SIZE];
        assert!(m.read_bytes(PAGE_SIZE - 1, &mut buf).is_err());
        assert!(m.read::<u8>(4 * PAGE_SIZE - 1).is_err());
        assert!(m.view::<u64>(3 * PAGE_SIZE).is_err());
        // Empty access inside a hole touches nothing.
        m.read_bytes(PAGE_SIZE, &mut []).unwrap();
        m.set_holes(Box::new([]));
        assert!(m.is_complete());
    }

    /// A page of memory the test owns, aligned like a mapping.
    #[repr(C, align(4096))]
    struct Page([u8; PAGE_SIZE]);

    /// A Mapping over memory that is not a real mapping (so it must never drop: dropping
    /// unmaps). Works under Miri, which has no foreign memory.
    ///
    /// # Safety
    /// `p` is a page that outlives every use of the result, accessed only through it.
    unsafe fn borrowed<A: Access>(p: *mut Page) -> core::mem::ManuallyDrop<Mapping<A>> {
        // SAFETY: one page, owned by the caller for as long as the result is used; never
        // unmapped (ManuallyDrop).
        core::mem::ManuallyDrop::new(unsafe {
            Mapping::from_raw(
                NonNull::new(p.cast()).unwrap(),
                PAGE_SIZE,
                PAGE_SIZE,
                DomId::new(9),
            )
        })
    }

    /// Writing a padding-free `Plain` value copies only initialised bytes, at aligned and
    /// misaligned offsets (run under Miri, which reports any read of uninitialised memory).
    #[test]
    fn writes_of_padding_free_plain_values_are_clean() {
        let mut page = Box::new(Page([0xaa; PAGE_SIZE]));
        // SAFETY: `page` outlives `m`, and is only reached through `m` until then.
        let m = unsafe { borrowed::<ReadWrite>(&mut *page) };
        let v = Pair {
            a: 0x0403_0201,
            b: 0x0605,
            c: [7, 8],
            d: 0x100f_0e0d_0c0b_0a09,
        };
        let want: Vec<u8> = (1..=16).collect();
        for off in [0, 8, 16, 1, 3, 7, 4093 - 16] {
            m.write(off, v).unwrap();
            assert_eq!(m.read::<Pair>(off).unwrap(), v, "offset {off}");
            let mut back = [0u8; 16];
            m.read_bytes(off, &mut back).unwrap();
            assert_eq!(back[..], want[..], "offset {off}");
        }
        m.view::<Pair>(32).unwrap().write(v);
        let mut back = [0u8; 16];
        m.read_bytes(32, &mut back).unwrap();
        assert_eq!(back[..], want[..]);
        let _ = m; // never dropped (ManuallyDrop): `page` is freed, not unmapped
        drop(page);
    }

    /// Read-only memory (an immutable static: read-only for Miri, in `.rodata` natively)
    /// answers atomic loads of every width and ordering.
    #[test]
    fn atomic_loads_work_on_read_only_memory() {
        static RO: Page = {
            let mut b = [0u8; PAGE_SIZE];
            b[0] = 1;
            b[8] = 2;
            Page(b)
        };
        // SAFETY: the static lives forever and is only read (ReadOnly offers no writes).
        let m = unsafe { borrowed::<ReadOnly>(core::ptr::addr_of!(RO).cast_mut()) };
        assert_eq!(m.view::<u8>(0).unwrap().load_acquire(), 1);
        assert_eq!(m.view::<u16>(0).unwrap().load_acquire(), 1);
        assert_eq!(m.view::<u32>(0).unwrap().load_relaxed(), 1);
        assert_eq!(m.view::<u64>(8).unwrap().load_acquire(), 2);
        assert_eq!(m.view::<u64>(8).unwrap().load_relaxed(), 2);
    }

    #[test]
    fn mapping_and_views_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Mapping<ReadOnly>>();
        check::<Mapping<ReadWrite>>();
        check::<View<'static, u64, ReadWrite>>();
    }
}
