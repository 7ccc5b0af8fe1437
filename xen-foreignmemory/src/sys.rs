//! The syscalls this crate makes itself (the privcmd ioctls go through `xen-hypercall`, except
//! the old `IOCTL_PRIVCMD_MMAPBATCH`, which it does not offer).
//!
//! Under `cfg(test)` each bumps a per-thread counter, so unit tests can show how many
//! syscalls a map call makes.

use core::ffi::{c_int, c_void};
use core::ptr::NonNull;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use xen_hypercall::Errno;

#[cfg(test)]
thread_local! {
    static SYSCALLS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Syscalls made by this thread through this module (tests only).
#[cfg(test)]
pub(crate) fn syscalls() -> u64 {
    SYSCALLS.with(|c| c.get())
}

#[inline(always)]
fn count() {
    #[cfg(test)]
    SYSCALLS.with(|c| c.set(c.get() + 1));
}

/// The kernel's page size (cached; glibc answers from the auxiliary vector, no syscall).
#[inline]
pub(crate) fn page_size() -> usize {
    match PAGE.load(Ordering::Relaxed) {
        0 => first_page_size(),
        size => size,
    }
}

/// The cached page size of [`page_size`].
static PAGE: AtomicUsize = AtomicUsize::new(0);

/// Asks for the page size once (out of line: it keeps the map paths' registers free).
#[cold]
#[inline(never)]
fn first_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = usize::try_from(raw)
        .ok()
        .filter(|s| s.is_power_of_two() && *s >= crate::PAGE_SIZE)
        .unwrap_or(crate::PAGE_SIZE);
    PAGE.store(size, Ordering::Relaxed);
    size
}

/// Where `mmap` may put a mapping.
#[derive(Clone, Copy)]
pub(crate) enum Where {
    /// Anywhere (optionally near a hint).
    Hint(usize),
    /// Exactly there, failing if anything is mapped there (`MAP_FIXED_NOREPLACE`).
    NoReplace(usize),
    /// Exactly there, replacing whatever was mapped (`MAP_FIXED`).
    Replace(usize),
}

/// `mmap(addr, len, prot, MAP_SHARED | flags, fd, 0)` of the privcmd device: an empty privcmd
/// range the map ioctls then fill.
///
/// # Safety
/// With [`Where::Replace`], the caller guarantees nothing in the program uses the range.
#[inline]
pub(crate) unsafe fn mmap_privcmd(
    fd: BorrowedFd<'_>,
    at: Where,
    len: usize,
    prot: c_int,
) -> Result<NonNull<u8>, Errno> {
    count();
    let (addr, flags) = match at {
        Where::Hint(a) => (a, 0),
        Where::NoReplace(a) => (a, libc::MAP_FIXED_NOREPLACE),
        Where::Replace(a) => (a, libc::MAP_FIXED),
    };
    // SAFETY: without MAP_FIXED the kernel picks (or checks) a free range, aliasing nothing;
    // with it, the caller vouches for the range. Nothing is dereferenced.
    let p = unsafe {
        libc::mmap(
            addr as *mut c_void,
            len,
            prot,
            libc::MAP_SHARED | flags,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    NonNull::new(p.cast()).ok_or(Errno::ENOMEM)
}

/// Unmaps a range.
///
/// # Safety
/// The range must be a whole mapping this crate created, no longer referenced by anything.
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    count();
    // SAFETY: the caller guarantees nothing uses the range any more. A failure (only for
    // invalid arguments) would leave the mapping in place, which is safe.
    let _ = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}
