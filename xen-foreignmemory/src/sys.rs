//! The syscalls this crate makes, through `xen-hypercall`'s syscall layer (which owns every
//! privcmd ioctl and the `mmap`/`munmap` forms used here).
//!
//! Under `cfg(test)` each bumps a per-thread counter, so unit tests can show how many
//! syscalls a map call makes.

// Unsafe: mmap and munmap.
#![allow(unsafe_code)]

use core::ffi::c_int;
use core::ptr::NonNull;
use std::os::fd::BorrowedFd;

use xen_hypercall::sys;
pub(crate) use xen_hypercall::sys::MapAt as Where;
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

/// The kernel's page size (cached; never below Xen's 4096).
#[inline]
pub(crate) fn page_size() -> usize {
    sys::page_size()
}

/// `mmap(addr, len, prot, MAP_SHARED | flags, fd, 0)` of the privcmd device: an empty privcmd
/// range the map ioctls then fill.
///
/// # Safety
/// With [`Where::Replace`], the caller guarantees nothing in the program uses the range.
#[inline(always)]
pub(crate) unsafe fn mmap_privcmd(
    fd: BorrowedFd<'_>,
    at: Where,
    len: usize,
    prot: c_int,
) -> Result<NonNull<u8>, Errno> {
    count();
    // SAFETY: forwarded to the caller.
    unsafe { sys::mmap(fd, at, len, prot) }
}

/// Unmaps a range.
///
/// # Safety
/// The range must be a whole mapping this crate created, no longer referenced by anything.
#[inline(always)]
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    count();
    // SAFETY: forwarded to the caller.
    unsafe { sys::munmap(ptr, len) };
}
