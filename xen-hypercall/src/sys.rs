//! Every syscall this crate makes, each in one small function.
//!
//! Keeping them here means (a) the `unsafe` that talks to the kernel lives in one file, and
//! (b) unit tests can count syscalls: under `cfg(test)` each function bumps a per-thread counter
//! ([`syscalls`]), which is how the tests show that a dm_op is exactly one syscall.

use core::ffi::{c_long, c_ulong, c_void, CStr};
use core::ptr::NonNull;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Errno;

#[cfg(test)]
thread_local! {
    static SYSCALLS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// How many syscalls this thread made through this module (tests only).
#[cfg(test)]
#[cfg_attr(miri, allow(dead_code))]
pub(crate) fn syscalls() -> u64 {
    SYSCALLS.with(|c| c.get())
}

#[inline(always)]
fn count() {
    #[cfg(test)]
    SYSCALLS.with(|c| c.set(c.get() + 1));
}

/// Opens a device read-write and close-on-exec.
pub(crate) fn open_rdwr_cloexec(path: &CStr) -> Result<OwnedFd, Errno> {
    loop {
        count();
        // SAFETY: a NUL-terminated path and plain flags.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: `open` just returned this fd; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Calls `f` with the C library's message for `errno` (`None` if it has none), formatted into
/// a stack buffer: no allocation, and thread-safe (`strerror_r`, not `strerror`).
pub(crate) fn strerror<R>(errno: i32, f: impl FnOnce(Option<&str>) -> R) -> R {
    let mut buf = [0u8; 128];
    // SAFETY: `buf` is valid for writes of its length; the XSI `strerror_r` (what the libc
    // crate binds on glibc and musl) writes a NUL-terminated message within it.
    let r = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) };
    let msg = if r == 0 {
        CStr::from_bytes_until_nul(&buf)
            .ok()
            .and_then(|c| c.to_str().ok())
    } else {
        None
    };
    f(msg)
}

/// A stand-in for the kernel driver in unit tests: when set, [`ioctl`] and [`ioctl_raw`]
/// answer with it instead of making the syscall (still counted). Lets the tests play an old
/// privcmd driver that answers unknown ioctls with `EINVAL`.
#[cfg(test)]
pub(crate) type FakeIoctl = fn(c_ulong, *mut c_void) -> Result<c_long, Errno>;

#[cfg(test)]
thread_local! {
    static FAKE: core::cell::Cell<Option<FakeIoctl>> = const { core::cell::Cell::new(None) };
}

/// Installs (or with `None` removes) this thread's [`FakeIoctl`].
#[cfg(test)]
#[cfg_attr(miri, allow(dead_code))]
pub(crate) fn set_fake_ioctl(fake: Option<FakeIoctl>) {
    FAKE.with(|f| f.set(fake));
}

/// `ioctl(fd, request, arg)` returning the kernel's raw result: non-negative on success,
/// `-errno` on failure (`errno` itself is not touched). The hot-path form: one `syscall`
/// instruction on x86_64 and aarch64 (no libc wrapper, no thread-local `errno`); the caller
/// decodes a failure on its (cold) error path.
///
/// # Safety
/// As for [`ioctl`].
#[inline(always)]
pub(crate) unsafe fn ioctl_raw(fd: BorrowedFd<'_>, request: c_ulong, arg: *mut c_void) -> c_long {
    count();
    #[cfg(test)]
    if let Some(fake) = FAKE.with(|f| f.get()) {
        return match fake(request, arg) {
            Ok(r) => r,
            Err(e) => -c_long::from(e.raw()),
        };
    }
    // SAFETY: the caller guarantees `arg` is valid for `request`; `fd` is open for the
    // duration of the call because it is borrowed.
    unsafe {
        raw_syscall3(
            libc::SYS_ioctl,
            c_long::from(fd.as_raw_fd()),
            request as c_long,
            arg as c_long,
        )
    }
}

/// A three-argument system call, returning the kernel's raw result (`-errno` on failure).
///
/// # Safety
/// The arguments must be valid for the system call `nr`; any memory it reads or writes must be
/// valid for that access (the asm declares that it may read and write memory).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn raw_syscall3(nr: c_long, a: c_long, b: c_long, c: c_long) -> c_long {
    let ret: c_long;
    // SAFETY: the Linux x86_64 system-call convention: number in rax, arguments in rdi, rsi,
    // rdx; the kernel returns in rax and clobbers rcx and r11. Memory may be read or written
    // (the default for asm without `nomem`/`readonly`), the stack is not used.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A three-argument system call, returning the kernel's raw result (`-errno` on failure).
///
/// # Safety
/// As for the x86_64 version.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn raw_syscall3(nr: c_long, a: c_long, b: c_long, c: c_long) -> c_long {
    let ret: c_long;
    // SAFETY: the Linux aarch64 system-call convention: number in x8, arguments in x0..x2,
    // `svc #0`, result in x0; nothing else is clobbered. Memory may be read or written.
    unsafe {
        core::arch::asm!(
            "svc #0",
            in("x8") nr,
            inlateout("x0") a => ret,
            in("x1") b,
            in("x2") c,
            options(nostack),
        );
    }
    ret
}

/// A three-argument system call through libc, as a raw result (`-errno` on failure).
///
/// # Safety
/// As for the x86_64 version.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
unsafe fn raw_syscall3(nr: c_long, a: c_long, b: c_long, c: c_long) -> c_long {
    // SAFETY: forwarded to the caller.
    let r = unsafe { libc::syscall(nr, a, b, c) };
    if r == -1 {
        -c_long::from(Errno::last().raw())
    } else {
        r
    }
}

/// Decodes a failed [`ioctl_raw`] result.
#[cold]
#[inline(never)]
pub(crate) fn errno_of(ret: c_long) -> Errno {
    Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL))
}

/// `ioctl(fd, request, arg)`, returning the kernel's full `long` result.
///
/// Goes through the raw system call ([`ioctl_raw`]) rather than libc's `ioctl()`, whose
/// `int` return would truncate a hypercall's 64-bit result.
///
/// # Safety
/// `arg` must be what the driver behind `fd` expects for `request`: for privcmd, a pointer to
/// the request's struct, every pointer in it valid for the access the kernel and Xen make
/// during the call.
#[inline]
pub(crate) unsafe fn ioctl(
    fd: BorrowedFd<'_>,
    request: c_ulong,
    arg: *mut c_void,
) -> Result<c_long, Errno> {
    // SAFETY: forwarded to the caller.
    let ret = unsafe { ioctl_raw(fd, request, arg) };
    // The kernel's error range, as libc's wrappers read it: a hypercall may return a large
    // value that only looks negative.
    if (-4095..0).contains(&ret) {
        Err(errno_of(ret))
    } else {
        Ok(ret)
    }
}

/// The system page size (cached after the first call; not counted as a syscall because glibc
/// answers it from the auxiliary vector).
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no memory-safety preconditions.
            let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let size = usize::try_from(raw)
                .ok()
                .filter(|s| s.is_power_of_two())
                .unwrap_or(4096);
            PAGE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

/// Maps `len` bytes of `fd` shared and read-write at an address the kernel picks.
///
/// Safe: a new mapping at a fresh address aliases nothing the program already uses.
pub(crate) fn mmap_shared(fd: BorrowedFd<'_>, len: usize) -> Result<NonNull<u8>, Errno> {
    mmap_rw(len, libc::MAP_SHARED, fd.as_raw_fd())
}

/// Maps `len` bytes of private anonymous read-write memory, locked in RAM, at an address the
/// kernel picks.
pub(crate) fn mmap_anon_locked(len: usize) -> Result<NonNull<u8>, Errno> {
    mmap_rw(
        len,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED,
        -1,
    )
}

/// `mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0)`: a fresh read-write mapping at an
/// address the kernel picks.
fn mmap_rw(len: usize, flags: libc::c_int, fd: libc::c_int) -> Result<NonNull<u8>, Errno> {
    count();
    // SAFETY: no MAP_FIXED, so the kernel picks an unused range that aliases nothing the
    // program uses; nothing is dereferenced here.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    NonNull::new(p.cast()).ok_or(Errno::ENOMEM)
}

/// `madvise(ptr, len, MADV_DONTFORK)`: children created by `fork` do not inherit the range, so
/// the parent's pages are never made copy-on-write behind Xen's back.
pub(crate) fn madvise_dontfork(ptr: NonNull<u8>, len: usize) -> Result<(), Errno> {
    count();
    // SAFETY: MADV_DONTFORK only changes what a future child inherits; it never changes the
    // contents or accessibility of the range in this process.
    let r = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTFORK) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Unmaps a range.
///
/// # Safety
/// The range must be a whole mapping this crate created, no longer referenced by anything.
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    count();
    // SAFETY: the caller guarantees nothing uses the range any more. A failure (only possible
    // for invalid arguments) would leave the mapping in place, which is safe.
    let _ = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// Reads a small sysfs/proc file as an unsigned number (module parameters).
pub(crate) fn read_number(path: &str) -> Option<usize> {
    count();
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
