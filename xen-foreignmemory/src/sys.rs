//! The syscalls this crate makes itself (the privcmd ioctls go through `xen-hypercall`, except
//! the old `IOCTL_PRIVCMD_MMAPBATCH`, which it does not offer).
//!
//! Under `cfg(test)` each bumps a per-thread counter, so unit tests can show how many
//! syscalls a map call makes.

use core::ffi::c_int;
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
#[inline(always)]
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
    let p = unsafe { raw::mmap(addr, len, prot, libc::MAP_SHARED | flags, fd.as_raw_fd()) };
    // The kernel answers an address or -errno (-4095 ..= -1).
    if p > usize::MAX - 4095 {
        return Err(mmap_failed(p));
    }
    NonNull::new(p as *mut u8).ok_or(Errno::ENOMEM)
}

/// Decodes a failed `mmap` (out of line: the map paths stay small).
#[cold]
#[inline(never)]
fn mmap_failed(ret: usize) -> Errno {
    Errno::from_raw(ret.wrapping_neg() as c_int)
}

/// Unmaps a range.
///
/// # Safety
/// The range must be a whole mapping this crate created, no longer referenced by anything.
#[inline(always)]
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    count();
    // SAFETY: the caller guarantees nothing uses the range any more. A failure (only for
    // invalid arguments) would leave the mapping in place, which is safe.
    unsafe { raw::munmap(ptr.as_ptr() as usize, len) };
}

/// `mmap` and `munmap` as direct system calls where the crate knows the calling convention
/// (libc's wrappers add a call, errno handling and, for `mmap`, argument checks the callers
/// here have already made), through libc elsewhere and under Miri. `mmap` returns the address
/// or `-errno` as the kernel does.
mod raw {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    #[inline(always)]
    pub(super) unsafe fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32) -> usize {
        let ret: usize;
        // SAFETY: the Linux x86_64 system-call convention: number in rax, arguments in rdi,
        // rsi, rdx, r10, r8, r9; the kernel returns in rax and clobbers rcx and r11. The call
        // reads no user memory; the caller vouches for the range it may replace.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_mmap as usize => ret,
                in("rdi") addr,
                in("rsi") len,
                in("rdx") prot as isize,
                in("r10") flags as isize,
                in("r8") fd as isize,
                in("r9") 0usize,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(all(target_arch = "x86_64", not(miri)))]
    #[inline(always)]
    pub(super) unsafe fn munmap(addr: usize, len: usize) {
        // SAFETY: as for `mmap`; the caller guarantees nothing uses the range any more.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_munmap as usize => _,
                in("rdi") addr,
                in("rsi") len,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
    }

    #[cfg(all(target_arch = "aarch64", not(miri)))]
    #[inline(always)]
    pub(super) unsafe fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32) -> usize {
        let ret: usize;
        // SAFETY: the Linux aarch64 system-call convention: number in x8, arguments in
        // x0..x5, `svc #0`, result in x0; nothing else is clobbered. The call reads no user
        // memory; the caller vouches for the range it may replace.
        unsafe {
            core::arch::asm!(
                "svc #0",
                in("x8") libc::SYS_mmap as usize,
                inlateout("x0") addr => ret,
                in("x1") len,
                in("x2") prot as isize,
                in("x3") flags as isize,
                in("x4") fd as isize,
                in("x5") 0usize,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(all(target_arch = "aarch64", not(miri)))]
    #[inline(always)]
    pub(super) unsafe fn munmap(addr: usize, len: usize) {
        // SAFETY: as for `mmap`; the caller guarantees nothing uses the range any more.
        unsafe {
            core::arch::asm!(
                "svc #0",
                in("x8") libc::SYS_munmap as usize,
                inlateout("x0") addr => _,
                in("x1") len,
                options(nostack),
            );
        }
    }

    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    #[inline(always)]
    pub(super) unsafe fn mmap(addr: usize, len: usize, prot: i32, flags: i32, fd: i32) -> usize {
        // SAFETY: forwarded from the caller.
        let p = unsafe { libc::mmap(addr as *mut libc::c_void, len, prot, flags, fd, 0) };
        if p == libc::MAP_FAILED {
            (super::Errno::last().raw() as usize).wrapping_neg()
        } else {
            p as usize
        }
    }

    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    #[inline(always)]
    pub(super) unsafe fn munmap(addr: usize, len: usize) {
        // SAFETY: forwarded from the caller.
        let _ = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    }
}
