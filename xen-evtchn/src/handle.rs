//! The owned handle on `/dev/xen/evtchn`.

// Unsafe: evtchn ioctls that take pointers.
#![allow(unsafe_code)]

use core::fmt;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_hypercall::{DomId, Errno, Error, RegisteredFd, RestrictRegistry};
use xen_sys::evtchn::{
    ioctl_evtchn_bind_interdomain, ioctl_evtchn_bind_unbound_port, ioctl_evtchn_bind_virq,
    ioctl_evtchn_notify, ioctl_evtchn_restrict_domid, ioctl_evtchn_unbind,
    IOCTL_EVTCHN_BIND_INTERDOMAIN, IOCTL_EVTCHN_BIND_UNBOUND_PORT, IOCTL_EVTCHN_BIND_VIRQ,
    IOCTL_EVTCHN_NOTIFY, IOCTL_EVTCHN_RESET, IOCTL_EVTCHN_RESTRICT_DOMID, IOCTL_EVTCHN_UNBIND,
};

use crate::sys;
use crate::{BoundPort, Port, Virq};

/// Path of the Linux event-channel device.
///
/// ```
/// if std::path::Path::new(xen_evtchn::EVTCHN_DEVICE).exists() {
///     println!("event channels available");
/// }
/// ```
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";

const EVTCHN_DEVICE_C: &CStr = c"/dev/xen/evtchn";

/// What the registry calls these handles.
const KIND: &str = "evtchn";

/// An open `/dev/xen/evtchn`: the Rust counterpart of a `xenevtchn_handle`.
///
/// Ports are bound through the handle ([`bind_unbound_port`](Self::bind_unbound_port),
/// [`bind_interdomain`](Self::bind_interdomain), [`bind_virq`](Self::bind_virq)) and come back
/// as [`BoundPort`]s that unbind when dropped. Events on the handle's ports are read with the
/// `pending*` methods; a port that fired is *masked* (the kernel will not report it again)
/// until you [`unmask`](Self::unmask) it. Closing the handle unbinds every port it still has.
///
/// The handle is a cheap clonable handle: clones share the open file (an `Arc` inside), which
/// closes when the last clone drops, and each [`BoundPort`] holds a clone, so a port never
/// outlives its handle and can move into another thread or task as it is. The handle is
/// `Send + Sync`: binding, notifying and unmasking from several threads is fine (the kernel
/// serializes them). Several threads may read pending events; each event goes to exactly one
/// reader.
///
/// # Blocking and non-blocking handles
/// [`open`](Self::open) gives a *blocking* handle: [`pending`](Self::pending) is one blocking
/// `read`, the cheapest way for a thread that does nothing but wait. The `try_*` and `*_timeout`
/// forms `poll` first; if another thread reads the same handle and takes the event between
/// that `poll` and the `read`, they block until the next event.
/// [`open_nonblocking`](Self::open_nonblocking) gives a handle whose reads never block: every form is exact with
/// concurrent readers, and `pending()` waits with `poll` when nothing is there (an event loop,
/// or `AsyncEventChannels` of feature `tokio`, wants this one).
///
/// # Errors
/// Errors name the operation (`"evtchn notify"`) and, for binds, the remote domain. Numbers
/// that can never work (port 0, ports ≥ 2^17, reserved domain ids, undefined VIRQs) are refused
/// before any syscall with [`Error::InvalidArgument`]. The kernel's answers keep their errno:
///
/// | errno | meaning |
/// |---|---|
/// | `ENOTCONN` | the port is not bound through this handle (never was, or already unbound) |
/// | `EACCES` | the handle is [restricted](Self::restrict) and the operation is not for its domain ([`Error::is_permission_denied`]) |
/// | `EEXIST` | the VIRQ is already bound in this domain (e.g. `VIRQ_DOM_EXC` by xenstored) |
/// | `EINVAL` | Xen refused the port or domain (e.g. the remote port is not unbound for us) |
/// | `ESRCH` | no such domain ([`Error::is_no_such_domain`]) |
/// | `EFBIG` | the handle's ring of pending events overflowed; [`reset`](Self::reset) clears it |
///
/// Binds that fail leave nothing bound: the kernel closes the port it got before returning
/// the error, and a successful bind is a [`BoundPort`] at once.
///
/// ```no_run
/// use xen_evtchn::{DomId, EventChannels};
///
/// // A loopback pair in dom0: an unbound port, and a second port bound to it.
/// let a = EventChannels::open()?;
/// let b = EventChannels::open()?;
/// let pa = a.bind_unbound_port(DomId::SELF)?;
/// let pb = b.bind_interdomain(DomId::SELF, pa.port())?;
///
/// pb.notify()?;                      // one ioctl
/// let port = a.pending()?;           // one read (blocks until the event)
/// assert_eq!(port, pa.port());
/// a.unmask(port)?;                   // one write: the port may fire again
/// # Ok::<(), xen_hypercall::Error>(())
/// ```
#[derive(Clone)]
pub struct EventChannels {
    inner: Arc<Inner>,
}

/// What the clones of an [`EventChannels`] share.
struct Inner {
    fd: RegisteredFd<'static>,
    /// `O_NONBLOCK` of the open file (shared by every clone, as the flag is).
    nonblocking: AtomicBool,
}

/// How long a read may wait.
#[derive(Clone, Copy)]
enum Wait {
    Never,
    Forever,
    Until(Option<Instant>),
}

impl EventChannels {
    /// Opens `/dev/xen/evtchn` (read-write, close-on-exec) as a blocking handle.
    ///
    /// The handle joins the process-wide restrict registry, so
    /// [`xen_hypercall::restrict_all`] restricts it too.
    ///
    /// ```no_run
    /// let ch = xen_evtchn::EventChannels::open()?;
    /// assert!(!ch.is_nonblocking());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn open() -> Result<EventChannels, Error> {
        Self::open_flags(false)
    }

    /// Opens `/dev/xen/evtchn` (read-write, close-on-exec) as a non-blocking handle.
    ///
    /// ```no_run
    /// let ch = xen_evtchn::EventChannels::open_nonblocking()?;
    /// assert_eq!(ch.try_pending()?, None); // nothing bound, nothing pending
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn open_nonblocking() -> Result<EventChannels, Error> {
        Self::open_flags(true)
    }

    fn open_flags(nonblocking: bool) -> Result<EventChannels, Error> {
        let fd = sys::open_rdwr_cloexec(EVTCHN_DEVICE_C, nonblocking)
            .map_err(|e| Error::os("evtchn open", None, e))?;
        Ok(EventChannels::with_fd(fd, nonblocking))
    }

    /// Adopts an already-open `/dev/xen/evtchn` fd (the counterpart of `xenevtchn_fdopen`),
    /// e.g. one inherited across `exec` with its ports still bound. Its blocking mode is read
    /// from the fd; it joins the restrict registry like an opened handle.
    ///
    /// Nothing checks that the fd really is the evtchn device: operations on another file
    /// just fail with its errors. Ports bound on it before are not owned by any
    /// [`BoundPort`]; wrap them with [`BoundPort::from_raw_parts`] if you want that.
    ///
    /// ```no_run
    /// use std::os::fd::OwnedFd;
    /// use xen_evtchn::EventChannels;
    ///
    /// let fd: OwnedFd = std::fs::OpenOptions::new()
    ///     .read(true).write(true).open("/dev/xen/evtchn").unwrap().into();
    /// let ch = EventChannels::from_fd(fd);
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> EventChannels {
        // An fd whose flags cannot be read is not usable anyway; its errors surface on use.
        let nonblocking = sys::is_nonblocking(fd.as_fd()).unwrap_or(false);
        EventChannels::with_fd(fd, nonblocking)
    }

    fn with_fd(fd: OwnedFd, nonblocking: bool) -> EventChannels {
        EventChannels {
            inner: Arc::new(Inner {
                fd: RestrictRegistry::global().register(KIND, fd, restrict_evtchn_fd),
                nonblocking: AtomicBool::new(nonblocking),
            }),
        }
    }

    /// Whether `other` is a clone of this handle (the same open file).
    pub fn same_handle(&self, other: &EventChannels) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// How many clones of this handle exist (this one included; each [`BoundPort`] holds one).
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Gives up the handle and returns its fd, open, its ports still bound, when this is the
    /// last clone (otherwise the handle comes back unchanged). The fd leaves the restrict
    /// registry.
    pub fn into_owned_fd(self) -> Result<OwnedFd, EventChannels> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => Ok(inner.fd.into_owned_fd()),
            Err(inner) => Err(EventChannels { inner }),
        }
    }

    /// `true` if reads on this handle never block (opened with
    /// [`open_nonblocking`](Self::open_nonblocking), or set so).
    ///
    /// ```no_run
    /// let ch = xen_evtchn::EventChannels::open_nonblocking()?;
    /// assert!(ch.is_nonblocking());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn is_nonblocking(&self) -> bool {
        self.inner.nonblocking.load(Ordering::Relaxed)
    }

    /// Switches the handle between blocking and non-blocking reads (`O_NONBLOCK`; it applies
    /// to the open file, so to every duplicate of the fd too).
    ///
    /// ```no_run
    /// let mut ch = xen_evtchn::EventChannels::open()?;
    /// ch.set_nonblocking(true)?;
    /// assert!(ch.is_nonblocking());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn set_nonblocking(&mut self, nonblocking: bool) -> Result<(), Error> {
        sys::set_nonblocking(self.inner.fd.as_fd(), nonblocking)
            .map_err(|e| Error::os("evtchn set_nonblocking", None, e))?;
        self.inner.nonblocking.store(nonblocking, Ordering::Relaxed);
        Ok(())
    }

    /// Allocates a port that domain `remote` may bind to with its own `bind_interdomain`
    /// (`EVTCHNOP_alloc_unbound`), and binds it to this handle.
    ///
    /// `remote` is a real domain or [`DomId::SELF`]; other reserved ids are refused before any
    /// syscall. A [restricted](Self::restrict) handle gets `EACCES`.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let port = ch.bind_unbound_port(DomId::new(5))?;
    /// println!("tell domain 5 to bind to port {}", port.port());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn bind_unbound_port(&self, remote: DomId) -> Result<BoundPort, Error> {
        const OP: &str = "evtchn bind_unbound_port";
        let remote = require_remote(OP, remote)?;
        let arg = ioctl_evtchn_bind_unbound_port {
            remote_domain: remote.get().into(),
        };
        // SAFETY: the argument type of IOCTL_EVTCHN_BIND_UNBOUND_PORT, alive for the call.
        let port =
            unsafe { sys::ioctl(self.inner.fd.as_fd(), IOCTL_EVTCHN_BIND_UNBOUND_PORT, &arg) }
                .map_err(|e| Error::os(OP, Some(remote), e))?;
        Ok(BoundPort::from_raw_parts(
            self.clone(),
            Port::new(port as u32),
        ))
    }

    /// Binds a local port to port `remote_port` of domain `remote`, which that domain
    /// allocated for us with its `bind_unbound_port` (`EVTCHNOP_bind_interdomain`).
    ///
    /// `remote` may be [`DomId::SELF`] (a loopback within this domain). On a
    /// [restricted](Self::restrict) handle `remote` must be its domain (else `EACCES`).
    ///
    /// Xen raises the new local port once at bind time (in case the remote end notified
    /// before we were bound), so expect one event on it right away; handle it like any other
    /// (a device model just finds no new request).
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// // An ioreq server's per-vCPU port, read from the shared ioreq page:
    /// let (guest, vcpu_port) = (DomId::new(5), 42u32);
    /// let port = ch.bind_interdomain(guest, vcpu_port)?;
    /// port.notify()?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: impl Into<Port>,
    ) -> Result<BoundPort, Error> {
        const OP: &str = "evtchn bind_interdomain";
        let remote = require_remote(OP, remote)?;
        let remote_port = remote_port
            .into()
            .require_valid(OP)
            .map_err(|e| e.with_domain(remote))?;
        let arg = ioctl_evtchn_bind_interdomain {
            remote_domain: remote.get().into(),
            remote_port: remote_port.get(),
        };
        // SAFETY: the argument type of IOCTL_EVTCHN_BIND_INTERDOMAIN, alive for the call.
        let port =
            unsafe { sys::ioctl(self.inner.fd.as_fd(), IOCTL_EVTCHN_BIND_INTERDOMAIN, &arg) }
                .map_err(|e| Error::os(OP, Some(remote), e))?;
        Ok(BoundPort::from_raw_parts(
            self.clone(),
            Port::new(port as u32),
        ))
    }

    /// Binds a port to virtual IRQ `virq` (`EVTCHNOP_bind_virq`, on vCPU 0).
    ///
    /// A global VIRQ can be bound once per domain: `EEXIST` when someone has it (in dom0,
    /// xenstored binds [`Virq::DOM_EXC`]). A [restricted](Self::restrict) handle gets `EACCES`.
    ///
    /// ```no_run
    /// use xen_evtchn::{EventChannels, Virq};
    /// let ch = EventChannels::open()?;
    /// let port = ch.bind_virq(Virq::CON_RING)?; // Xen's console ring has new text
    /// assert_eq!(ch.pending()?, port.port());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn bind_virq(&self, virq: Virq) -> Result<BoundPort, Error> {
        let arg = ioctl_evtchn_bind_virq { virq: virq.get() };
        // SAFETY: the argument type of IOCTL_EVTCHN_BIND_VIRQ, alive for the call.
        let port = unsafe { sys::ioctl(self.inner.fd.as_fd(), IOCTL_EVTCHN_BIND_VIRQ, &arg) }
            .map_err(|e| Error::os("evtchn bind_virq", None, e))?;
        Ok(BoundPort::from_raw_parts(
            self.clone(),
            Port::new(port as u32),
        ))
    }

    /// Unbinds `port` (the C API's `xenevtchn_unbind`). Prefer dropping the [`BoundPort`] (or
    /// [`BoundPort::unbind`]); this form is for ports you [released](BoundPort::release).
    ///
    /// Unbinding a port a `BoundPort` still owns is a logic error: Xen reuses port numbers, so
    /// that `BoundPort`'s drop could later unbind someone else's new port of the same number.
    /// Events the port raised before it was unbound may still be in the handle's queue and
    /// come out of a later `pending` call.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let raw = ch.bind_unbound_port(DomId::SELF)?.release(); // a plain number now
    /// ch.unbind(raw)?;
    /// assert!(ch.unbind(raw).is_err()); // ENOTCONN: not bound any more
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn unbind(&self, port: impl Into<Port>) -> Result<(), Error> {
        const OP: &str = "evtchn unbind";
        let port = port.into().require_valid(OP)?;
        let arg = ioctl_evtchn_unbind { port: port.get() };
        // SAFETY: the argument type of IOCTL_EVTCHN_UNBIND, alive for the call.
        unsafe { sys::ioctl(self.inner.fd.as_fd(), IOCTL_EVTCHN_UNBIND, &arg) }
            .map_err(|e| Error::os(OP, None, e))?;
        Ok(())
    }

    /// Sends an event on `port`, which must be bound through this handle (else `ENOTCONN`):
    /// the other end sees it pending. One ioctl, no allocation.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let port = ch.bind_interdomain(DomId::new(5), 42u32)?;
    /// ch.notify(port.port())?; // or port.notify()
    /// ch.notify(port.port().get())?; // a plain u32 works too
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    #[inline]
    pub fn notify(&self, port: impl Into<Port>) -> Result<(), Error> {
        const OP: &str = "evtchn notify";
        let port = port.into();
        if !port.is_valid() {
            return Err(invalid_port(OP));
        }
        let arg = ioctl_evtchn_notify { port: port.get() };
        // SAFETY: the argument type of IOCTL_EVTCHN_NOTIFY, alive for the call.
        let r = unsafe { sys::ioctl_once(self.inner.fd.as_fd(), IOCTL_EVTCHN_NOTIFY, &arg) };
        if r < 0 {
            return self.notify_failed(port, r);
        }
        Ok(())
    }

    /// A failed notify: retried on `EINTR`, otherwise the error.
    #[cold]
    #[inline(never)]
    fn notify_failed(&self, port: Port, ret: libc::c_long) -> Result<(), Error> {
        let arg = ioctl_evtchn_notify { port: port.get() };
        match xen_hypercall::sys::errno_of(ret) {
            // SAFETY: as in `notify`.
            Errno::EINTR => unsafe { sys::ioctl(self.inner.fd.as_fd(), IOCTL_EVTCHN_NOTIFY, &arg) }
                .map(drop)
                .map_err(|e| Error::os("evtchn notify", None, e)),
            e => Err(Error::os("evtchn notify", None, e)),
        }
    }

    /// Waits for the next pending port and returns it (`xenevtchn_pending`). The port stays
    /// masked until [`unmask`](Self::unmask)ed.
    ///
    /// Blocking handle: one `read`. Non-blocking handle: `read`, and `poll` while there is
    /// nothing. No allocation.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let port = ch.bind_unbound_port(DomId::new(5))?;
    /// loop {
    ///     let p = ch.pending()?;
    ///     // ... service p ...
    ///     ch.unmask(p)?;
    /// }
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    #[inline]
    pub fn pending(&self) -> Result<Port, Error> {
        // The common case in one `read` of one port: a blocking handle waits in the read
        // itself, and on a non-blocking one a pending port is simply there. Everything else
        // (nothing there yet, EINTR, end of file, errors) takes the general path.
        let mut one = [Port::new(0)];
        if sys::read_one(self.inner.fd.as_fd(), &mut one[0]) {
            return Ok(one[0]);
        }
        self.pending_slow()
    }

    #[cold]
    #[inline(never)]
    fn pending_slow(&self) -> Result<Port, Error> {
        let mut one = [Port::new(0)];
        self.read(&mut one, Wait::Forever)?;
        Ok(one[0])
    }

    /// The next pending port if there is one now, `None` otherwise; never waits (on a
    /// blocking handle see the note on concurrent readers in the type's docs).
    ///
    /// ```no_run
    /// let ch = xen_evtchn::EventChannels::open_nonblocking()?;
    /// if let Some(p) = ch.try_pending()? {
    ///     ch.unmask(p)?;
    /// }
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn try_pending(&self) -> Result<Option<Port>, Error> {
        let mut one = [Port::new(0)];
        Ok((self.read(&mut one, Wait::Never)? == 1).then_some(one[0]))
    }

    /// The next pending port, waiting at most `timeout`; `None` if none came in time.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let ch = xen_evtchn::EventChannels::open()?;
    /// match ch.pending_timeout(Duration::from_millis(100))? {
    ///     Some(p) => ch.unmask(p)?,
    ///     None => println!("quiet"),
    /// }
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn pending_timeout(&self, timeout: Duration) -> Result<Option<Port>, Error> {
        let mut one = [Port::new(0)];
        let n = self.read(&mut one, Wait::Until(sys::deadline_after(timeout)))?;
        Ok((n == 1).then_some(one[0]))
    }

    /// Waits until at least one port is pending, then reads as many as are there (up to
    /// `buf.len()`, and at most 1024 per call) in one `read`; returns them, in the order they
    /// fired. No allocation: the ports land in `buf`. An empty `buf` is refused.
    ///
    /// A port is never lost: the kernel hands out whole port numbers and keeps the ones that
    /// did not fit for the next call.
    ///
    /// ```no_run
    /// use xen_evtchn::{EventChannels, Port};
    /// let ch = EventChannels::open()?;
    /// let mut buf = [Port::default(); 64];
    /// loop {
    ///     let ports = ch.pending_many(&mut buf)?;
    ///     // ... service them ...
    ///     ch.unmask_many(ports)?; // one write for all of them
    /// }
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn pending_many<'b>(&self, buf: &'b mut [Port]) -> Result<&'b [Port], Error> {
        let n = self.read(buf, Wait::Forever)?;
        Ok(&buf[..n])
    }

    /// Like [`pending_many`](Self::pending_many), but never waits: an empty slice when nothing
    /// is pending.
    ///
    /// ```no_run
    /// use xen_evtchn::{EventChannels, Port};
    /// let ch = EventChannels::open_nonblocking()?;
    /// let mut buf = [Port::default(); 16];
    /// assert!(ch.try_pending_many(&mut buf)?.is_empty());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn try_pending_many<'b>(&self, buf: &'b mut [Port]) -> Result<&'b [Port], Error> {
        let n = self.read(buf, Wait::Never)?;
        Ok(&buf[..n])
    }

    /// Like [`pending_many`](Self::pending_many), waiting at most `timeout`: an empty slice if
    /// nothing came in time.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use xen_evtchn::{EventChannels, Port};
    /// let ch = EventChannels::open()?;
    /// let mut buf = [Port::default(); 16];
    /// let ports = ch.pending_many_timeout(&mut buf, Duration::from_secs(1))?;
    /// ch.unmask_many(ports)?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn pending_many_timeout<'b>(
        &self,
        buf: &'b mut [Port],
        timeout: Duration,
    ) -> Result<&'b [Port], Error> {
        let n = self.read(buf, Wait::Until(sys::deadline_after(timeout)))?;
        Ok(&buf[..n])
    }

    fn read(&self, buf: &mut [Port], wait: Wait) -> Result<usize, Error> {
        const OP: &str = "evtchn pending";
        if buf.is_empty() {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: None,
                reason: "empty buffer: there is no room for a port",
            });
        }
        let fd = self.inner.fd.as_fd();
        let err = |e| Error::os(OP, None, e);
        // A blocking read would wait: ask poll first whether there is anything (within the
        // deadline). A non-blocking handle just reads.
        if !self.is_nonblocking() {
            let deadline = match wait {
                Wait::Forever => None,
                Wait::Never => Some(Some(Instant::now())),
                Wait::Until(deadline) => Some(deadline),
            };
            if let Some(deadline) = deadline {
                if !sys::wait_readable(fd, deadline).map_err(err)? {
                    return Ok(0);
                }
            }
        }
        loop {
            match sys::read_ports(fd, buf) {
                // End of file: not the evtchn driver (it blocks or says EAGAIN instead).
                // Never report a made-up port.
                Ok(0) if matches!(wait, Wait::Forever) => return Err(err(Errno::EIO)),
                Ok(n) => return Ok(n),
                // Nothing there on a non-blocking file (also if someone set O_NONBLOCK on a
                // shared file description behind our back): wait with poll, if allowed.
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(err(e)),
            }
            let deadline = match wait {
                Wait::Never => return Ok(0),
                Wait::Forever => None,
                Wait::Until(deadline) => deadline,
            };
            if !sys::wait_readable(fd, deadline).map_err(err)? {
                return Ok(0);
            }
        }
    }

    /// Unmasks `port`: the kernel reports it again the next time it fires
    /// (`xenevtchn_unmask`). One `write`, no allocation.
    ///
    /// The kernel silently ignores ports not bound through this handle and ports not masked.
    ///
    /// ```no_run
    /// let ch = xen_evtchn::EventChannels::open()?;
    /// let p = ch.pending()?;
    /// ch.unmask(p)?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    #[inline]
    pub fn unmask(&self, port: impl Into<Port>) -> Result<(), Error> {
        let ports = [port.into()];
        if sys::write_one(self.inner.fd.as_fd(), &ports[0]) {
            return Ok(());
        }
        self.unmask_slow(&ports)
    }

    #[cold]
    #[inline(never)]
    fn unmask_slow(&self, ports: &[Port]) -> Result<(), Error> {
        self.unmask_many(ports)
    }

    /// Unmasks all of `ports`, 1024 per `write` (one write for what one
    /// [`pending_many`](Self::pending_many) returns).
    ///
    /// ```no_run
    /// use xen_evtchn::{EventChannels, Port};
    /// let ch = EventChannels::open()?;
    /// ch.unmask_many(&[Port::new(5), Port::new(6)])?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn unmask_many(&self, ports: &[Port]) -> Result<(), Error> {
        let mut rest = ports;
        while !rest.is_empty() {
            let n = sys::write_ports(self.inner.fd.as_fd(), rest)
                .map_err(|e| Error::os("evtchn unmask", None, e))?;
            if n == 0 {
                // Cannot happen with this driver (it takes every whole port); never spin.
                return Err(Error::os("evtchn unmask", None, Errno::EIO));
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Empties the handle's queue of pending events and clears its overflow error (`EFBIG`)
    /// (`IOCTL_EVTCHN_RESET`). Ports stay bound; ports whose events were dropped stay masked
    /// until unmasked.
    ///
    /// ```no_run
    /// let ch = xen_evtchn::EventChannels::open()?;
    /// ch.reset()?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn reset(&self) -> Result<(), Error> {
        // SAFETY: IOCTL_EVTCHN_RESET takes no argument.
        unsafe { sys::ioctl::<u8>(self.inner.fd.as_fd(), IOCTL_EVTCHN_RESET, core::ptr::null()) }
            .map_err(|e| Error::os("evtchn reset", None, e))?;
        Ok(())
    }

    /// Restricts this handle to domain `domid` (`xenevtchn_restrict`): afterwards it can only
    /// bind interdomain ports of that domain (`bind_unbound_port` and `bind_virq` fail with
    /// `EACCES`). Ports already bound keep working. It cannot be undone, and the kernel allows
    /// it once per handle (a second call gets `EACCES`).
    ///
    /// `domid` must be a real domain other than dom0 (the kernel refuses dom0): other values
    /// are refused before any syscall.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// ch.restrict(DomId::new(5))?;
    /// assert_eq!(ch.restricted_to(), Some(DomId::new(5)));
    /// assert!(ch.bind_unbound_port(DomId::new(6)).unwrap_err().is_permission_denied());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn restrict(&self, domid: DomId) -> Result<(), Error> {
        self.inner.fd.restrict(domid)
    }

    /// The domain this handle was restricted to ([`restrict`](Self::restrict) or
    /// [`xen_hypercall::restrict_all`]), if any.
    ///
    /// ```no_run
    /// let ch = xen_evtchn::EventChannels::open()?;
    /// assert_eq!(ch.restricted_to(), None);
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn restricted_to(&self) -> Option<DomId> {
        self.inner.fd.restricted_to()
    }
}

/// The refusal of a port number that cannot name a port.
#[cold]
fn invalid_port(op: &'static str) -> Error {
    Error::InvalidArgument {
        op,
        domain: None,
        reason: "not an event-channel port number (0 is reserved; ports are below 2^17)",
    }
}

/// Restricts an open `/dev/xen/evtchn` fd to `domid` (`IOCTL_EVTCHN_RESTRICT_DOMID`): the
/// restrict function [`EventChannels`] registers in the process-wide registry.
///
/// Reserved ids and dom0 are refused before the syscall (the kernel takes neither).
///
/// ```no_run
/// use std::os::fd::AsFd;
/// use xen_evtchn::{restrict_evtchn_fd, DomId, EventChannels};
/// let ch = EventChannels::open()?;
/// restrict_evtchn_fd(ch.as_fd(), DomId::new(5))?;
/// # Ok::<(), xen_hypercall::Error>(())
/// ```
pub fn restrict_evtchn_fd(fd: BorrowedFd<'_>, domid: DomId) -> Result<(), Error> {
    const OP: &str = "evtchn restrict";
    let domid = domid.require_domain(OP)?;
    if domid == DomId::DOM0 {
        return Err(Error::InvalidArgument {
            op: OP,
            domain: Some(domid),
            reason: "the kernel cannot restrict an event-channel handle to dom0",
        });
    }
    let arg = ioctl_evtchn_restrict_domid { domid: domid.get() };
    // SAFETY: the argument type of IOCTL_EVTCHN_RESTRICT_DOMID, alive for the call.
    unsafe { sys::ioctl(fd, IOCTL_EVTCHN_RESTRICT_DOMID, &arg) }
        .map_err(|e| Error::os(OP, Some(domid), e))?;
    Ok(())
}

/// A remote domain for a bind: a real domain or `DOMID_SELF`.
fn require_remote(op: &'static str, remote: DomId) -> Result<DomId, Error> {
    if remote.is_domain() || remote == DomId::SELF {
        Ok(remote)
    } else {
        Err(Error::InvalidArgument {
            op,
            domain: Some(remote),
            reason: "the remote end must be a real domain or DOMID_SELF",
        })
    }
}

impl AsFd for EventChannels {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl AsRawFd for EventChannels {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }
}

impl From<OwnedFd> for EventChannels {
    /// Same as [`EventChannels::from_fd`].
    fn from(fd: OwnedFd) -> EventChannels {
        EventChannels::from_fd(fd)
    }
}

impl fmt::Debug for EventChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannels")
            .field("fd", &self.inner.fd.as_raw_fd())
            .field("nonblocking", &self.is_nonblocking())
            .field("restricted_to", &self.restricted_to())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    fn null() -> EventChannels {
        EventChannels::from(OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .unwrap(),
        ))
    }

    #[test]
    fn bad_input_refused_before_syscall() {
        let ch = null();
        for e in [
            ch.notify(0u32).unwrap_err(),
            ch.unbind(Port::LIMIT).unwrap_err(),
            ch.bind_unbound_port(DomId::INVALID)
                .map(|_| ())
                .unwrap_err(),
            ch.bind_interdomain(DomId::XEN, 5u32)
                .map(|_| ())
                .unwrap_err(),
            ch.bind_interdomain(DomId::new(3), 0u32)
                .map(|_| ())
                .unwrap_err(),
            ch.restrict(DomId::DOM0).unwrap_err(),
            ch.restrict(DomId::SELF).unwrap_err(),
            ch.pending_many(&mut []).map(|_| ()).unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        }
        let e = ch
            .bind_interdomain(DomId::new(3), 0u32)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.domain(), Some(DomId::new(3)));
        assert_eq!(e.op(), "evtchn bind_interdomain");
    }

    #[test]
    fn registry_and_fd_round_trip() {
        let ch = null();
        let raw = ch.as_raw_fd();
        assert!(RestrictRegistry::global()
            .handles()
            .iter()
            .any(|(k, _)| *k == "evtchn"));
        assert!(format!("{ch:?}").contains("EventChannels"));
        // Clones share the open file; a bound port holds one; only the last gives the fd up.
        let port = crate::BoundPort::from_raw_parts(ch.clone(), crate::Port::new(3));
        assert!(port.handle().same_handle(&ch) && ch.handle_count() == 2);
        let ch = ch.into_owned_fd().unwrap_err();
        drop(port); // unbind fails on /dev/null, quietly
        let fd = ch.into_owned_fd().unwrap();
        assert_eq!(fd.as_raw_fd(), raw);
    }

    /// A close-on-exec pipe: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are fresh and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// A pipe stands in for the device's read side: its read end as a handle, and the write
    /// end to "fire" ports (with [`fire`]). Also used by the tokio tests.
    pub(crate) fn pipe_handle() -> (EventChannels, OwnedFd) {
        let (r, w) = pipe();
        (EventChannels::from(r), w)
    }

    /// Writes `ports` into the stand-in's write end, as the driver would hand them out.
    pub(crate) fn fire(w: &OwnedFd, ports: &[u32]) {
        let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_ne_bytes()).collect();
        // SAFETY: writes from a live buffer.
        let n = unsafe { libc::write(w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n as usize, bytes.len());
    }

    #[test]
    fn read_paths_on_a_stand_in() {
        let (mut ch, w) = pipe_handle();
        assert!(!ch.is_nonblocking());
        // Blocking handle: try_ and _timeout forms poll first and do not block.
        assert_eq!(ch.try_pending().unwrap(), None);
        let t = Instant::now();
        assert_eq!(ch.pending_timeout(Duration::from_millis(30)).unwrap(), None);
        assert!(t.elapsed() >= Duration::from_millis(30));
        fire(&w, &[5]);
        assert_eq!(ch.try_pending().unwrap(), Some(Port::new(5)));
        // Several at once, through a smaller buffer: in order, nothing lost.
        fire(&w, &[7, 8, 9]);
        let mut two = [Port::default(); 2];
        assert_eq!(
            ch.pending_many(&mut two).unwrap(),
            [Port::new(7), Port::new(8)]
        );
        assert_eq!(ch.pending_many(&mut two).unwrap(), [Port::new(9)]);
        // Non-blocking: EAGAIN is "nothing", not an error.
        ch.set_nonblocking(true).unwrap();
        assert!(ch.is_nonblocking());
        assert_eq!(ch.try_pending().unwrap(), None);
        assert!(ch.try_pending_many(&mut two).unwrap().is_empty());
        assert_eq!(ch.pending_timeout(Duration::from_millis(10)).unwrap(), None);
        fire(&w, &[11]);
        assert_eq!(ch.pending().unwrap(), Port::new(11));
        // A pending() that waits is woken by a port arriving later.
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                fire(&w, &[12]);
            });
            assert_eq!(ch.pending().unwrap(), Port::new(12));
        });
        // End of file is an error for the blocking forms, never a made-up port.
        drop(w);
        assert_eq!(ch.pending().unwrap_err().errno(), Errno::EIO);
        assert_eq!(ch.try_pending().unwrap(), None);
        ch.set_nonblocking(false).unwrap();
        assert_eq!(ch.pending().unwrap_err().errno(), Errno::EIO);
    }

    #[test]
    fn unmask_writes_whole_ports() {
        // Unmask's write side, on a pipe: one write of all the ports, as u32s.
        let (r, w) = pipe();
        let ch = EventChannels::from(w);
        ch.unmask_many(&[Port::new(3), Port::new(4)]).unwrap();
        ch.unmask(6u32).unwrap();
        let mut buf = [0u8; 12];
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), 12) };
        assert_eq!(n, 12);
        let got: Vec<u32> = buf
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [3, 4, 6]);
        // Nothing to unmask: no syscall, no error.
        ch.unmask_many(&[]).unwrap();
    }

    #[test]
    fn errors_keep_errno() {
        // /dev/null has no ioctls: ENOTTY, named after the operation.
        let ch = null();
        let e = ch.notify(5u32).unwrap_err();
        assert_eq!(e.op(), "evtchn notify");
        assert_eq!(e.errno(), Errno::ENOTTY);
        // Reading /dev/null gives 0 bytes: no port, and no spinning.
        assert_eq!(ch.try_pending().unwrap(), None);
    }
}
