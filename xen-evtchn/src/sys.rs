//! The syscalls on `/dev/xen/evtchn`, through `xen-hypercall`'s syscall layer and its `EINTR`
//! policy: everything is retried on `EINTR` except the hot paths' single attempts, whose
//! callers redo a failure through the retrying form.

// Unsafe: forwards the ioctls' pointer contracts.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use xen_hypercall::{sys, Errno};

use crate::Port;

/// Most ports one `read`/`write` moves: the kernel handles at most a page per call.
pub(crate) const MAX_PORTS_PER_CALL: usize = 4096 / core::mem::size_of::<Port>();

/// Opens the device at `path` read-write and close-on-exec, non-blocking if asked.
pub(crate) fn open_rdwr_cloexec(path: &CStr, nonblocking: bool) -> Result<OwnedFd, Errno> {
    sys::open(path, nonblocking)
}

/// Issues ioctl `request` with argument `arg` (retried on `EINTR`); returns its non-negative
/// result.
///
/// # Safety
/// `arg` must point to a live value of the type the kernel expects for `request`
/// (every evtchn ioctl only reads its argument), or be null for ioctls without one.
pub(crate) unsafe fn ioctl<T>(
    fd: BorrowedFd<'_>,
    request: u32,
    arg: *const T,
) -> Result<libc::c_long, Errno> {
    // SAFETY: forwarded to the caller; the driver only reads the argument.
    unsafe { sys::ioctl_restartable(fd, libc::c_ulong::from(request), arg.cast_mut().cast()) }
}

/// One `ioctl` attempt: the raw result (`-errno` on failure, see
/// [`xen_hypercall::sys::errno_of`]), for hot paths that handle failure (and `EINTR`) out of
/// line.
///
/// # Safety
/// As for [`ioctl`].
#[inline(always)]
pub(crate) unsafe fn ioctl_once<T>(
    fd: BorrowedFd<'_>,
    request: u32,
    arg: *const T,
) -> libc::c_long {
    // SAFETY: forwarded to the caller; the driver only reads the argument.
    unsafe { sys::ioctl_raw(fd, libc::c_ulong::from(request), arg.cast_mut().cast()) }
}

/// One `read` of exactly one port into `port`: `true` when it came; `false` for anything
/// else (nothing there, `EINTR`, end of file, an error), which the caller redoes on its
/// general path. `port` is left unspecified on `false`.
#[inline(always)]
pub(crate) fn read_one(fd: BorrowedFd<'_>, port: &mut Port) -> bool {
    sys::read_once(fd, core::slice::from_mut(port)) == 4
}

/// One `write` of exactly one port: `true` when the kernel took it; `false` otherwise (the
/// caller redoes it on its general path, which reports errors).
#[inline(always)]
pub(crate) fn write_one(fd: BorrowedFd<'_>, port: &Port) -> bool {
    sys::write_once(fd, core::slice::from_ref(port)) == 4
}

/// One `read` of at most `buf.len()` (and at most a page of) ports; returns how many came.
/// `EAGAIN` (non-blocking, nothing pending) is returned as an error.
pub(crate) fn read_ports(fd: BorrowedFd<'_>, buf: &mut [Port]) -> Result<usize, Errno> {
    let n = buf.len().min(MAX_PORTS_PER_CALL);
    // The driver rounds every read down to whole ports, so there is no remainder to lose;
    // divide rather than trust it blindly.
    Ok(sys::read(fd, &mut buf[..n])? / core::mem::size_of::<Port>())
}

/// One `write` of at most a page of ports (unmask); returns how many the kernel took.
pub(crate) fn write_ports(fd: BorrowedFd<'_>, ports: &[Port]) -> Result<usize, Errno> {
    let n = ports.len().min(MAX_PORTS_PER_CALL);
    Ok(sys::write(fd, &ports[..n])? / core::mem::size_of::<Port>())
}

/// Waits until the fd is readable (or in error), or until `deadline`; `None` waits forever.
/// Returns `false` on timeout.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<bool, Errno> {
    sys::wait_readable([fd], deadline)
}

/// `O_NONBLOCK` of the fd's open file description.
pub(crate) fn is_nonblocking(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    sys::is_nonblocking(fd)
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    sys::set_nonblocking(fd, on)
}

/// The deadline `timeout` from now; `None` (wait forever) if that is beyond what `Instant`
/// can represent.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
