//! The few raw syscalls on `/dev/xen/evtchn`, each retried on `EINTR`.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use xen_hypercall::Errno;

use crate::Port;

/// Most ports one `read`/`write` moves: the kernel handles at most a page per call.
pub(crate) const MAX_PORTS_PER_CALL: usize = 4096 / core::mem::size_of::<Port>();

/// Runs `call` (a raw syscall returning a negative value on failure) again while it fails
/// with `EINTR`; returns its non-negative result or its `errno`.
fn retry_eintr<T: Default + PartialOrd>(mut call: impl FnMut() -> T) -> Result<T, Errno> {
    loop {
        let r = call();
        if r >= T::default() {
            return Ok(r);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Opens the device at `path` read-write and close-on-exec, non-blocking if asked.
pub(crate) fn open_rdwr_cloexec(path: &CStr, nonblocking: bool) -> Result<OwnedFd, Errno> {
    let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    // SAFETY: a NUL-terminated path and plain flags.
    let raw = retry_eintr(|| unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: `open` just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Issues ioctl `request` with argument `arg`; returns its non-negative result.
///
/// # Safety
/// `arg` must point to a live value of the type the kernel expects for `request`
/// (every evtchn ioctl only reads its argument), or be null for ioctls without one.
pub(crate) unsafe fn ioctl<T>(
    fd: BorrowedFd<'_>,
    request: u32,
    arg: *const T,
) -> Result<libc::c_int, Errno> {
    // SAFETY: the fd is open (borrowed); `arg` is valid for `request` (our contract).
    retry_eintr(|| unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) })
}

/// One `ioctl` attempt: the raw result (`-1` with `errno` set on failure), for hot paths that
/// handle failure (and `EINTR`) out of line.
///
/// # Safety
/// As for [`ioctl`].
#[inline(always)]
pub(crate) unsafe fn ioctl_once<T>(
    fd: BorrowedFd<'_>,
    request: u32,
    arg: *const T,
) -> libc::c_long {
    // SAFETY: the fd is open (borrowed); `arg` is valid for `request` (our contract). Through
    // `syscall()`, which is a shorter path in glibc than its `ioctl()` wrapper; every
    // argument is passed as a full 64-bit value.
    unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            libc::c_long::from(fd.as_raw_fd()),
            libc::c_ulong::from(request),
            arg,
        )
    }
}

/// One `read` of exactly one port into `port`: `true` when it came; `false` for anything
/// else (nothing there, `EINTR`, end of file, an error), which the caller redoes on its
/// general path. `port` is left unspecified on `false`.
#[inline(always)]
pub(crate) fn read_one(fd: BorrowedFd<'_>, port: &mut Port) -> bool {
    // SAFETY: `port` is valid for writes of 4 bytes; `Port` is a transparent `u32`, valid for
    // every bit pattern.
    let r = unsafe { libc::read(fd.as_raw_fd(), (port as *mut Port).cast(), 4) };
    r == 4
}

/// One `write` of exactly one port: `true` when the kernel took it; `false` otherwise (the
/// caller redoes it on its general path, which reports errors).
#[inline(always)]
pub(crate) fn write_one(fd: BorrowedFd<'_>, port: &Port) -> bool {
    // SAFETY: `port` is valid for reads of 4 bytes.
    let r = unsafe { libc::write(fd.as_raw_fd(), (port as *const Port).cast(), 4) };
    r == 4
}

/// One `read` of at most `buf.len()` (and at most a page of) ports; returns how many came.
/// `EAGAIN` (non-blocking, nothing pending) is returned as an error.
pub(crate) fn read_ports(fd: BorrowedFd<'_>, buf: &mut [Port]) -> Result<usize, Errno> {
    let n = buf.len().min(MAX_PORTS_PER_CALL);
    // SAFETY: `buf` is valid for writes of `n * 4` bytes and `Port` is a transparent `u32`,
    // for which every bit pattern is valid. The kernel copies whole ports only.
    let r = retry_eintr(|| unsafe {
        libc::read(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            n * core::mem::size_of::<Port>(),
        )
    })?;
    // The driver rounds every read down to whole ports, so there is no remainder to lose;
    // divide rather than trust it blindly.
    Ok(r as usize / core::mem::size_of::<Port>())
}

/// One `write` of at most a page of ports (unmask); returns how many the kernel took.
pub(crate) fn write_ports(fd: BorrowedFd<'_>, ports: &[Port]) -> Result<usize, Errno> {
    let n = ports.len().min(MAX_PORTS_PER_CALL);
    // SAFETY: `ports` is valid for reads of `n * 4` bytes.
    let r = retry_eintr(|| unsafe {
        libc::write(
            fd.as_raw_fd(),
            ports.as_ptr().cast(),
            n * core::mem::size_of::<Port>(),
        )
    })?;
    Ok(r as usize / core::mem::size_of::<Port>())
}

/// Waits until the fd is readable (or in error), or until `deadline`; `None` waits forever.
/// Returns `false` on timeout.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool, Errno> {
    loop {
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we never wake early and spin on a zero timeout.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 {
            if deadline.is_some_and(|d| Instant::now() < d) {
                continue; // woke early (clock granularity): wait the rest
            }
            return Ok(false);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// `O_NONBLOCK` of the fd's open file description.
pub(crate) fn is_nonblocking(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    // SAFETY: F_GETFL takes no argument.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(r & libc::O_NONBLOCK != 0)
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(Errno::last());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL takes an int of flags.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The deadline `timeout` from now; `None` (wait forever) if that is beyond what `Instant`
/// can represent.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
