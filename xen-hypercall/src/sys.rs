//! The workspace's syscall layer: every system call the xen-rs crates make on Xen's devices
//! (privcmd, evtchn) and on the descriptors around them (eventfds, polls, mappings), each in
//! one small function.
//!
//! It is our own thin layer over the raw system call and libc rather than `rustix`: the
//! privcmd ioctl must return the kernel's full 64-bit result (a hypercall's return value),
//! which `ioctl(2)` wrappers truncate to `int`; the hot paths (a dm_op, a map, notify) are
//! one inlined `syscall` instruction each, counted by the instruction gates; and the errno
//! type stays ours ([`Errno`]). The layer is small enough to read in one sitting.
//!
//! # EINTR
//! One policy, applied here and nowhere else:
//! - **Calls that a signal interrupts before they do anything are retried inside the layer**
//!   until they answer something else: [`open`], [`ioctl_restartable`] (event channels),
//!   [`read()`], [`write()`], [`eventfd`], the `fcntl`s, and [`poll`] / [`wait_readable`]
//!   (which wait only for the time left before their deadline). Callers never see `EINTR`
//!   from them.
//! - **privcmd ioctls ([`ioctl`], [`ioctl_raw`]) are never retried.** Their errno may be
//!   Xen's own answer passed through unchanged (`XEN_EINTR` equals `EINTR`), and the kernel
//!   runs hypercalls preemptibly rather than failing them on a signal; an `EINTR` there is
//!   the operation's result and goes to the caller like any other error.
//! - **Single attempts for hot paths** ([`ioctl_raw`], [`read_once`], [`write_once`]) return
//!   the raw result; their callers redo any failure through the general (retrying) form, out
//!   of line.
//! - `mmap` and `munmap` do not fail with `EINTR`.
//!
//! Under `cfg(test)` each function bumps a per-thread counter, so this crate's unit tests can
//! show how many syscalls an operation makes; crates above keep their own counters around the
//! calls they make through this module.

#![allow(unsafe_code)]

use core::ffi::{c_int, c_long, c_ulong, c_void, CStr};
use core::ptr::NonNull;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::{Errno, Plain};

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

/// Opens a device read-write and close-on-exec, non-blocking if asked (`EINTR` retried).
pub fn open(path: &CStr, nonblocking: bool) -> Result<OwnedFd, Errno> {
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    loop {
        count();
        // SAFETY: a NUL-terminated path and plain flags.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
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
/// `-errno` on failure (`errno` itself is not touched; decode with [`errno_of`]). The
/// hot-path form: one `syscall` instruction on x86_64 and aarch64 (no libc wrapper, no
/// thread-local `errno`); the caller decodes a failure on its (cold) error path. Not retried
/// on `EINTR` (see the module docs).
///
/// # Safety
/// As for [`ioctl`].
#[inline(always)]
pub unsafe fn ioctl_raw(fd: BorrowedFd<'_>, request: c_ulong, arg: *mut c_void) -> c_long {
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
pub fn errno_of(ret: c_long) -> Errno {
    Errno::from_raw(i32::try_from(-ret).unwrap_or(libc::EINVAL))
}

/// `ioctl(fd, request, arg)`, returning the kernel's full `long` result; not retried on
/// `EINTR` (the privcmd form, see the module docs).
///
/// Goes through the raw system call ([`ioctl_raw`]) rather than libc's `ioctl()`, whose
/// `int` return would truncate a hypercall's 64-bit result.
///
/// # Safety
/// `arg` must be what the driver behind `fd` expects for `request`: for privcmd, a pointer to
/// the request's struct, every pointer in it valid for the access the kernel and Xen make
/// during the call.
#[inline]
pub unsafe fn ioctl(
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

/// [`ioctl`] retried while it fails with `EINTR`: for drivers (such as `/dev/xen/evtchn`)
/// whose `EINTR` means a signal came before the call did anything.
///
/// # Safety
/// As for [`ioctl`].
pub unsafe fn ioctl_restartable(
    fd: BorrowedFd<'_>,
    request: c_ulong,
    arg: *mut c_void,
) -> Result<c_long, Errno> {
    loop {
        // SAFETY: forwarded to the caller.
        match unsafe { ioctl(fd, request, arg) } {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// The kernel's page size (cached after the first call; not counted as a syscall because the
/// C library answers it from the auxiliary vector). Never below 4096, Xen's page size.
#[inline]
pub fn page_size() -> usize {
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
        .filter(|s| s.is_power_of_two() && *s >= 4096)
        .unwrap_or(4096);
    PAGE.store(size, Ordering::Relaxed);
    size
}

/// Maps `len` bytes of `fd` shared and read-write at an address the kernel picks.
///
/// Safe: a new mapping at a fresh address aliases nothing the program already uses.
pub(crate) fn mmap_shared_rw(fd: BorrowedFd<'_>, len: usize) -> Result<NonNull<u8>, Errno> {
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
/// The range must be a whole mapping the caller created, no longer referenced by anything.
#[inline(always)]
pub unsafe fn munmap(ptr: NonNull<u8>, len: usize) {
    count();
    // SAFETY: the caller guarantees nothing uses the range any more. A failure (only for
    // invalid arguments) would leave the mapping in place, which is safe.
    unsafe { raw::munmap(ptr.as_ptr() as usize, len) };
}

/// Reads a small sysfs/proc file as an unsigned number (module parameters).
pub(crate) fn read_number(path: &str) -> Option<usize> {
    count();
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Where [`mmap`] may put a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAt {
    /// Anywhere (optionally near a hint; 0 for none).
    Hint(usize),
    /// Exactly there, failing if anything is mapped there (`MAP_FIXED_NOREPLACE`).
    NoReplace(usize),
    /// Exactly there, replacing whatever was mapped (`MAP_FIXED`).
    Replace(usize),
}

/// `mmap(addr, len, prot, MAP_SHARED | flags, fd, 0)`: for privcmd, an empty range the map
/// ioctls then fill. `prot` is `PROT_*` bits. One inlined `syscall` instruction on x86_64 and
/// aarch64.
///
/// # Safety
/// With [`MapAt::Replace`], the caller guarantees nothing in the program uses the range.
#[inline(always)]
pub unsafe fn mmap(
    fd: BorrowedFd<'_>,
    at: MapAt,
    len: usize,
    prot: c_int,
) -> Result<NonNull<u8>, Errno> {
    count();
    let (addr, flags) = match at {
        MapAt::Hint(a) => (a, 0),
        MapAt::NoReplace(a) => (a, libc::MAP_FIXED_NOREPLACE),
        MapAt::Replace(a) => (a, libc::MAP_FIXED),
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

/// A new eventfd with a zero counter, close-on-exec, non-blocking if asked.
pub fn eventfd(nonblocking: bool) -> Result<OwnedFd, Errno> {
    let mut flags = libc::EFD_CLOEXEC;
    if nonblocking {
        flags |= libc::EFD_NONBLOCK;
    }
    loop {
        count();
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor.
        let fd = unsafe { libc::eventfd(0, flags) };
        if fd >= 0 {
            // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// The bytes of a slice of plain values.
fn bytes_mut<T: Plain>(buf: &mut [T]) -> (*mut c_void, usize) {
    (buf.as_mut_ptr().cast(), core::mem::size_of_val(buf))
}

/// One `read` into `buf`: the raw result (bytes read, or -1 with `errno` set). The hot-path
/// form: no retry; the caller redoes a failure with [`read()`].
#[inline(always)]
pub fn read_once<T: Plain>(fd: BorrowedFd<'_>, buf: &mut [T]) -> isize {
    count();
    let (ptr, len) = bytes_mut(buf);
    // SAFETY: `buf` is valid for writes of `len` bytes and `T: Plain` is valid for every bit
    // pattern the kernel may write.
    unsafe { libc::read(fd.as_raw_fd(), ptr, len) }
}

/// One `write` of `buf`: the raw result (bytes written, or -1 with `errno` set). The hot-path
/// form: no retry; the caller redoes a failure with [`write()`].
#[inline(always)]
pub fn write_once<T: Plain>(fd: BorrowedFd<'_>, buf: &[T]) -> isize {
    count();
    // SAFETY: `buf` is valid for reads of its size in bytes; `T: Plain` has no padding.
    unsafe {
        libc::write(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            core::mem::size_of_val(buf),
        )
    }
}

/// `read` into `buf`, retried on `EINTR`: how many bytes came (`EAGAIN` on a non-blocking
/// descriptor with nothing to read is an error).
pub fn read<T: Plain>(fd: BorrowedFd<'_>, buf: &mut [T]) -> Result<usize, Errno> {
    loop {
        let r = read_once(fd, buf);
        if let Ok(n) = usize::try_from(r) {
            return Ok(n);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// `write` of `buf`, retried on `EINTR`: how many bytes the kernel took.
pub fn write<T: Plain>(fd: BorrowedFd<'_>, buf: &[T]) -> Result<usize, Errno> {
    loop {
        let r = write_once(fd, buf);
        if let Ok(n) = usize::try_from(r) {
            return Ok(n);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Waits until one of `fds` is readable (or in error or hung up), or until `deadline`
/// (`None`: no limit). Returns `false` on timeout. `EINTR` waits again for the time left; a
/// wake-up before the deadline with nothing ready (clock granularity) does too.
pub fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    deadline: Option<Instant>,
) -> Result<bool, Errno> {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        let timeout_ms: c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we never wake early and spin on a zero timeout.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(c_int::MAX as u128) as c_int
            }
        };
        count();
        // SAFETY: `pfds` is N valid pollfds on the stack, alive across the call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 {
            if deadline.is_some_and(|d| Instant::now() < d) {
                continue;
            }
            return Ok(false);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// One descriptor of a [`poll`] set, waiting to be readable; after the call,
/// [`PollFd::is_ready`] says whether it is (readable, in error or hung up).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct PollFd<'fd> {
    raw: libc::pollfd,
    _fd: core::marker::PhantomData<BorrowedFd<'fd>>,
}

impl<'fd> PollFd<'fd> {
    /// Waits for `fd` to be readable.
    pub fn readable(fd: BorrowedFd<'fd>) -> PollFd<'fd> {
        PollFd {
            raw: libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            _fd: core::marker::PhantomData,
        }
    }

    /// An unused entry (the kernel skips it): for fixed-size sets only partly filled.
    pub const fn unused() -> PollFd<'static> {
        PollFd {
            raw: libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            },
            _fd: core::marker::PhantomData,
        }
    }

    /// Whether the last [`poll`] found the descriptor readable, in error or hung up.
    pub fn is_ready(&self) -> bool {
        self.raw.revents != 0
    }

    /// The descriptor's number (-1 for an [`unused`](PollFd::unused) entry).
    pub fn raw_fd(&self) -> RawFd {
        self.raw.fd
    }
}

impl core::fmt::Debug for PollFd<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PollFd")
            .field("fd", &self.raw.fd)
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// `poll` over `fds` until one is ready or `deadline` passes (`None`: no limit; a deadline
/// already past polls without waiting). Returns how many are ready, 0 on timeout; each
/// entry's [`PollFd::is_ready`] says which. `EINTR` waits again for the time left.
pub fn poll(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> Result<usize, Errno> {
    loop {
        let timeout_ms: c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we never wake early and spin on a zero timeout.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(c_int::MAX as u128) as c_int
            }
        };
        count();
        // SAFETY: `PollFd` is a transparent `pollfd`; `fds` is valid for reads and writes of
        // `fds.len()` of them for the call, and the descriptors in it are borrowed (open).
        let r = unsafe {
            libc::poll(
                fds.as_mut_ptr().cast::<libc::pollfd>(),
                fds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if let Ok(n) = usize::try_from(r) {
            if n == 0 && deadline.is_some_and(|d| Instant::now() < d) {
                continue; // woke early (clock granularity): wait the rest
            }
            return Ok(n);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// The descriptor's file status flags (`fcntl(F_GETFL)`, `EINTR` retried).
fn status_flags(fd: BorrowedFd<'_>) -> Result<c_int, Errno> {
    loop {
        count();
        // SAFETY: F_GETFL takes no argument.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        if r >= 0 {
            return Ok(r);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Whether `O_NONBLOCK` is set on the descriptor's open file description.
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    Ok(status_flags(fd)? & libc::O_NONBLOCK != 0)
}

/// Sets or clears `O_NONBLOCK` on the descriptor's open file description.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    let flags = status_flags(fd)?;
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    loop {
        count();
        // SAFETY: F_SETFL takes an int of flags.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) } >= 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
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

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn poll_reports_which_descriptor_is_ready() {
        let (a, b) = (eventfd(true).unwrap(), eventfd(true).unwrap());
        let soon = Some(Instant::now() + Duration::from_millis(1));
        let mut set = [
            PollFd::readable(a.as_fd()),
            PollFd::unused(),
            PollFd::readable(b.as_fd()),
        ];
        assert_eq!(poll(&mut set, soon), Ok(0), "nothing yet: a timeout");
        assert_eq!(write(b.as_fd(), &[1u64]), Ok(8));
        assert_eq!(poll(&mut set, None), Ok(1));
        let ready: Vec<bool> = set.iter().map(PollFd::is_ready).collect();
        assert_eq!(ready, [false, false, true]);
        assert_eq!(set[1].raw_fd(), -1);
        assert!(wait_readable([a.as_fd(), b.as_fd()], soon).unwrap());
        let mut v = [0u64];
        assert_eq!(read(b.as_fd(), &mut v), Ok(8));
        assert_eq!(v, [1]);
        assert_eq!(read(b.as_fd(), &mut v), Err(Errno::EAGAIN));
        assert!(!wait_readable([a.as_fd(), b.as_fd()], soon).unwrap());
        assert!(format!("{:?}", set[0]).contains("PollFd"));
    }
}
