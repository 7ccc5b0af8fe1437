//! The process-wide "restrict everything I have open" registry (the libxentoolcore idea).

// Unsafe: borrows registered descriptors by number.
#![allow(unsafe_code)]

use core::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use crate::{DomId, Error};

/// How one kind of handle restricts itself to a domain: called with the handle's fd.
///
/// `xen-hypercall` registers privcmd handles with `IOCTL_PRIVCMD_RESTRICT`; `xen-evtchn` would
/// register its `/dev/xen/evtchn` fds with a function doing `IOCTL_EVTCHN_RESTRICT_DOMID`. A
/// plain `fn` pointer: nothing to allocate, nothing captured that could outlive the handle.
pub type RestrictFn = fn(BorrowedFd<'_>, DomId) -> Result<(), Error>;

struct Entry {
    id: u64,
    kind: &'static str,
    fd: RawFd,
    restrict: RestrictFn,
    restricted_to: Option<DomId>,
}

struct Inner {
    next_id: u64,
    entries: Vec<Entry>,
}

/// A set of open handles that can all be restricted to one domain at once.
///
/// Every handle of every crate in the workspace (privcmd, foreign memory, device model, event
/// channels) puts its fd into the [global](RestrictRegistry::global) registry when it is
/// created, through [`RestrictRegistry::register`], and leaves it when dropped. A device model
/// opens everything it needs, then calls [`restrict_all`] (the counterpart of
/// `xentoolcore_restrict_all`) to drop privilege: afterwards each handle *registered at that
/// moment* can only act on that domain. That alone does not confine the process: it can still
/// open new, unrestricted handles, and an fd taken out of its handle (`OwnedFd::from`) has
/// left the registry. To keep a compromised device model from reaching other guests, call
/// [`confine`](crate::confine) after `restrict_all`: it stops the process from opening any
/// file, Xen devices included.
///
/// Soundness of keeping raw fds: the registry stores only the fd *number*, but the fd itself is
/// owned by the [`RegisteredFd`] it hands back. Dropping a `RegisteredFd` removes the entry
/// (under the registry's lock) *before* closing the fd, so the registry never calls a restrict
/// function on a closed or reused fd number, even while another thread is inside
/// `restrict_all`.
///
/// Handles opened *after* `restrict_all` are not restricted (as with libxentoolcore): open
/// every handle first. [`RestrictRegistry::new`] makes private registries, used by tests.
///
/// ```
/// use std::os::fd::{BorrowedFd, OwnedFd};
/// use xen_hypercall::{DomId, Error, RestrictRegistry};
///
/// fn restrict_mine(_fd: BorrowedFd<'_>, _domid: DomId) -> Result<(), Error> {
///     Ok(()) // a real handle issues its restrict ioctl here
/// }
///
/// static REGISTRY: RestrictRegistry = RestrictRegistry::new();
/// let (fd, _peer) = std::os::unix::net::UnixStream::pair()?; // stands in for a device fd
/// let fd = OwnedFd::from(fd);
/// let handle = REGISTRY.register("example", fd, restrict_mine);
/// assert_eq!(REGISTRY.len(), 1);
/// assert_eq!(REGISTRY.restrict_all(DomId::new(5))?, 1);
/// assert_eq!(handle.restricted_to(), Some(DomId::new(5)));
/// drop(handle);
/// assert!(REGISTRY.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RestrictRegistry {
    inner: Mutex<Inner>,
}

static GLOBAL: RestrictRegistry = RestrictRegistry::new();

/// Restricts every registered handle of the process to `domid`; see
/// [`RestrictRegistry::restrict_all`] on the [global](RestrictRegistry::global) registry.
///
/// Returns how many handles were restricted. Guarantees exactly this: each handle of the
/// workspace open and registered now acts on `domid` only, for the rest of its life. Handles
/// opened afterwards are not restricted, and fds taken out of their handles are not in the
/// registry: follow with [`confine`](crate::confine) to stop the process from opening new
/// ones.
pub fn restrict_all(domid: DomId) -> Result<usize, Error> {
    GLOBAL.restrict_all(domid)
}

impl RestrictRegistry {
    /// An empty registry. Handles register with [`RestrictRegistry::global`]; private ones are
    /// for tests and special set-ups.
    pub const fn new() -> RestrictRegistry {
        RestrictRegistry {
            inner: Mutex::new(Inner {
                next_id: 0,
                entries: Vec::new(),
            }),
        }
    }

    /// The process-wide registry every handle of the workspace joins.
    pub fn global() -> &'static RestrictRegistry {
        &GLOBAL
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the entry list inconsistent (every
        // change is a single push/remove), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes ownership of a handle's fd and registers it: `kind` names the handle in errors and
    /// listings (e.g. `"privcmd"`, `"evtchn"`), `restrict` is how to restrict it.
    ///
    /// The returned [`RegisteredFd`] owns the fd (use [`AsFd`] on it); dropping it deregisters
    /// and then closes the fd.
    pub fn register(
        &self,
        kind: &'static str,
        fd: OwnedFd,
        restrict: RestrictFn,
    ) -> RegisteredFd<'_> {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.push(Entry {
            id,
            kind,
            fd: fd.as_raw_fd(),
            restrict,
            restricted_to: None,
        });
        RegisteredFd {
            registry: self,
            id,
            fd: ManuallyDrop::new(fd),
        }
    }

    /// Restricts every registered handle to `domid`, returning how many there were.
    ///
    /// All handles are tried even if one fails (so as much as possible is restricted); the
    /// first failure is returned. After a failure the process holds handles in mixed states:
    /// like libxentoolcore, treat that as fatal for a privilege-dropping process. A reserved
    /// `domid` is refused before any syscall (the kernel would read `DOMID_INVALID` as "no
    /// restriction").
    pub fn restrict_all(&self, domid: DomId) -> Result<usize, Error> {
        domid.require_domain("restrict_all")?;
        let mut inner = self.lock();
        let mut first_error = None;
        let mut done = 0;
        for entry in &mut inner.entries {
            // SAFETY: the fd stays open while its entry exists: `RegisteredFd` owns it and
            // removes the entry under this same lock before closing it.
            let fd = unsafe { BorrowedFd::borrow_raw(entry.fd) };
            match (entry.restrict)(fd, domid) {
                Ok(()) => {
                    entry.restricted_to = Some(domid);
                    done += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// How many handles are registered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// `true` when no handle is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kinds of the registered handles with the domain each is restricted to, in
    /// registration order (for diagnostics and tests).
    pub fn handles(&self) -> Vec<(&'static str, Option<DomId>)> {
        self.lock()
            .entries
            .iter()
            .map(|e| (e.kind, e.restricted_to))
            .collect()
    }
}

impl Default for RestrictRegistry {
    fn default() -> RestrictRegistry {
        RestrictRegistry::new()
    }
}

impl core::fmt::Debug for RestrictRegistry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RestrictRegistry")
            .field("handles", &self.handles())
            .finish()
    }
}

/// A handle's fd, owned and registered in a [`RestrictRegistry`]; deregistered, then closed,
/// on drop.
///
/// Handle types of the workspace keep one of these in place of an `OwnedFd`.
pub struct RegisteredFd<'r> {
    registry: &'r RestrictRegistry,
    id: u64,
    // Dropped by hand in `Drop`, after deregistering; taken out in `into_owned_fd`.
    fd: ManuallyDrop<OwnedFd>,
}

impl RegisteredFd<'_> {
    /// Restricts this one handle to `domid` with its restrict function, and records it.
    ///
    /// A reserved `domid` is refused before any syscall.
    pub fn restrict(&self, domid: DomId) -> Result<(), Error> {
        let mut inner = self.registry.lock();
        match inner.entries.iter_mut().find(|e| e.id == self.id) {
            Some(entry) => {
                domid.require_domain(entry.kind)?;
                (entry.restrict)(self.fd.as_fd(), domid)?;
                entry.restricted_to = Some(domid);
                Ok(())
            }
            // Unreachable: an entry lives exactly as long as its RegisteredFd.
            None => Err(Error::InvalidArgument {
                op: "restrict",
                domain: Some(domid),
                reason: "handle is not registered",
            }),
        }
    }

    /// The domain this handle was restricted to through the registry ([`restrict_all`] or
    /// [`RegisteredFd::restrict`]), if any.
    pub fn restricted_to(&self) -> Option<DomId> {
        let inner = self.registry.lock();
        inner
            .entries
            .iter()
            .find(|e| e.id == self.id)
            .and_then(|e| e.restricted_to)
    }

    /// The kind given at registration.
    pub fn kind(&self) -> &'static str {
        let inner = self.registry.lock();
        inner
            .entries
            .iter()
            .find(|e| e.id == self.id)
            .map_or("", |e| e.kind)
    }

    /// Leaves the registry and gives the fd back, open.
    pub fn into_owned_fd(self) -> OwnedFd {
        let mut this = ManuallyDrop::new(self);
        this.deregister();
        // SAFETY: `this` is never dropped (ManuallyDrop), so `fd` is taken exactly once and
        // never dropped in place.
        unsafe { ManuallyDrop::take(&mut this.fd) }
    }

    fn deregister(&self) {
        let mut inner = self.registry.lock();
        inner.entries.retain(|e| e.id != self.id);
    }
}

impl AsFd for RegisteredFd<'_> {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RegisteredFd<'_> {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for RegisteredFd<'_> {
    fn drop(&mut self) {
        // Leave the registry first, so `restrict_all` can no longer reach the fd number...
        self.deregister();
        // SAFETY: ...then close it. `fd` is not used after this; `into_owned_fd` never runs
        // this destructor.
        unsafe { ManuallyDrop::drop(&mut self.fd) }
    }
}

impl core::fmt::Debug for RegisteredFd<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegisteredFd")
            .field("fd", &self.as_raw_fd())
            .field("kind", &self.kind())
            .field("restricted_to", &self.restricted_to())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn ok_restrict(_fd: BorrowedFd<'_>, _d: DomId) -> Result<(), Error> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn failing_restrict(_fd: BorrowedFd<'_>, d: DomId) -> Result<(), Error> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        Err(Error::os("test restrict", Some(d), crate::Errno::EINVAL))
    }

    /// Any fd will do (restrict functions here never use it); a pipe also works under Miri.
    fn null_fd() -> OwnedFd {
        nix::unistd::pipe().unwrap().0
    }

    // One test touches CALLS, so the counts are exact even with parallel tests.
    #[test]
    fn bookkeeping() {
        let reg = RestrictRegistry::new();
        let a = reg.register("a", null_fd(), ok_restrict);
        let b = reg.register("b", null_fd(), ok_restrict);
        assert_eq!(reg.handles(), vec![("a", None), ("b", None)]);
        assert_eq!(a.kind(), "a");

        // Reserved ids never reach a restrict function.
        let before = CALLS.load(Ordering::SeqCst);
        assert!(reg
            .restrict_all(DomId::INVALID)
            .unwrap_err()
            .is_invalid_argument());
        assert!(b.restrict(DomId::SELF).unwrap_err().is_invalid_argument());
        assert_eq!(CALLS.load(Ordering::SeqCst), before);

        assert_eq!(reg.restrict_all(DomId::new(3)), Ok(2));
        assert_eq!(CALLS.load(Ordering::SeqCst), before + 2);
        assert_eq!(a.restricted_to(), Some(DomId::new(3)));
        assert_eq!(
            reg.handles(),
            vec![("a", Some(DomId::new(3))), ("b", Some(DomId::new(3)))]
        );

        // Dropping deregisters; into_owned_fd deregisters and keeps the fd open.
        drop(a);
        assert_eq!(reg.len(), 1);
        let raw = b.as_raw_fd();
        let fd = b.into_owned_fd();
        assert_eq!(fd.as_raw_fd(), raw);
        assert!(reg.is_empty());
        assert!(nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).is_ok());

        // A failing handle does not stop the others; the first error is reported.
        let c = reg.register("c", null_fd(), failing_restrict);
        let d = reg.register("d", null_fd(), ok_restrict);
        let before = CALLS.load(Ordering::SeqCst);
        let e = reg.restrict_all(DomId::new(4)).unwrap_err();
        assert_eq!(e.op(), "test restrict");
        assert_eq!(CALLS.load(Ordering::SeqCst), before + 2);
        assert_eq!(c.restricted_to(), None);
        assert_eq!(d.restricted_to(), Some(DomId::new(4)));
        assert!(format!("{reg:?}").contains("\"c\""));
    }
}
