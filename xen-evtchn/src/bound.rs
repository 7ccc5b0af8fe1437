//! Bound ports as owned values.

// Unsafe: moves the handle out of a port that is not dropped.
#![allow(unsafe_code)]

use core::fmt;
use core::mem::ManuallyDrop;

use xen_hypercall::Error;

use crate::{EventChannels, Port};

/// What leads to an [`EventChannels`] handle: the handle itself, the async handle, and
/// references and smart pointers to them (`&T`, `Box<T>`, `Rc<T>`, `Arc<T>`). A
/// [`BoundPort`] keeps one to reach its handle.
///
/// ```
/// use std::sync::Arc;
/// use xen_evtchn::{AsEventChannels, EventChannels};
///
/// fn fd_of(h: impl AsEventChannels) -> i32 {
///     use std::os::fd::AsRawFd;
///     h.as_event_channels().as_raw_fd()
/// }
/// # fn f(ch: Arc<EventChannels>) {
/// let _ = fd_of(&*ch);
/// let _ = fd_of(ch.clone());
/// # }
/// ```
pub trait AsEventChannels {
    /// The handle.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use xen_evtchn::{AsEventChannels, EventChannels};
    /// let ch = Arc::new(EventChannels::open()?);
    /// assert!(std::ptr::eq(ch.as_event_channels(), &*ch));
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    fn as_event_channels(&self) -> &EventChannels;
}

impl AsEventChannels for EventChannels {
    fn as_event_channels(&self) -> &EventChannels {
        self
    }
}

impl<T: AsEventChannels + ?Sized> AsEventChannels for &T {
    fn as_event_channels(&self) -> &EventChannels {
        (**self).as_event_channels()
    }
}

impl<T: AsEventChannels + ?Sized> AsEventChannels for Box<T> {
    fn as_event_channels(&self) -> &EventChannels {
        (**self).as_event_channels()
    }
}

impl<T: AsEventChannels + ?Sized> AsEventChannels for std::rc::Rc<T> {
    fn as_event_channels(&self) -> &EventChannels {
        (**self).as_event_channels()
    }
}

impl<T: AsEventChannels + ?Sized> AsEventChannels for std::sync::Arc<T> {
    fn as_event_channels(&self) -> &EventChannels {
        (**self).as_event_channels()
    }
}

/// A port bound through an [`EventChannels`] handle; unbound when dropped unless
/// [released](BoundPort::release).
///
/// `H` is how the port reaches its handle. The `bind_*` methods return `BoundPort` (that is,
/// `BoundPort<EventChannels>`): the port holds a clone of its handle, so it never outlives
/// it and moves into threads or spawned tasks as it is. Anything that is
/// [`AsEventChannels`] works as `H` ([`BoundPort::with_handle`], e.g.
/// `Arc<AsyncEventChannels>`, or `&EventChannels` for a port that borrows).
///
/// `BoundPort` is `Send + Sync`.
///
/// ```no_run
/// use xen_evtchn::{BoundPort, DomId, EventChannels};
///
/// let ch = EventChannels::open()?;
/// {
///     let port = ch.bind_unbound_port(DomId::new(5))?;
///     port.notify()?;
/// } // unbound here
///
/// // A port that lives in another thread, with its own clone of the handle:
/// let port: BoundPort = ch.bind_unbound_port(DomId::new(5))?;
/// std::thread::spawn(move || port.notify()).join().unwrap()?;
/// # Ok::<(), xen_hypercall::Error>(())
/// ```
pub struct BoundPort<H: AsEventChannels = EventChannels> {
    handle: H,
    port: Port,
}

impl<H: AsEventChannels> BoundPort<H> {
    /// Takes ownership of `port`, already bound through `handle` (e.g. a number from
    /// [`release`](Self::release), or bound before the fd was adopted): it will be unbound
    /// on drop.
    ///
    /// Giving a port that is not bound through `handle` is not unsafe, but its drop then
    /// fails quietly or unbinds whatever has that number on `handle` then.
    ///
    /// ```no_run
    /// use xen_evtchn::{BoundPort, DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let raw = ch.bind_unbound_port(DomId::new(5))?.release();
    /// let owned = BoundPort::from_raw_parts(ch.clone(), raw);
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn from_raw_parts(handle: H, port: Port) -> BoundPort<H> {
        BoundPort { handle, port }
    }

    /// The local port number.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let port = ch.bind_unbound_port(DomId::new(5))?;
    /// println!("bind to port {}", port.port());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn port(&self) -> Port {
        self.port
    }

    /// The handle the port is bound through.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let port = ch.bind_unbound_port(DomId::new(5))?;
    /// assert!(port.handle().same_handle(&ch));
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn handle(&self) -> &H {
        &self.handle
    }

    /// Sends an event on the port ([`EventChannels::notify`]): one ioctl.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// ch.bind_interdomain(DomId::new(5), 42u32)?.notify()?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn notify(&self) -> Result<(), Error> {
        self.handle.as_event_channels().notify(self.port)
    }

    /// Unmasks the port ([`EventChannels::unmask`]): one write.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let port = ch.bind_unbound_port(DomId::new(5))?;
    /// if ch.pending()? == port.port() {
    ///     port.unmask()?;
    /// }
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn unmask(&self) -> Result<(), Error> {
        self.handle.as_event_channels().unmask(self.port)
    }

    /// Unbinds the port now, reporting failure (dropping unbinds too, but cannot report).
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// ch.bind_unbound_port(DomId::new(5))?.unbind()?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn unbind(self) -> Result<(), Error> {
        let (handle, port) = self.into_parts();
        handle.as_event_channels().unbind(port)
    }

    /// Gives up ownership: the port stays bound (until unbound by number, or the handle is
    /// closed) and its number is returned, as the C API would have it.
    ///
    /// ```no_run
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = EventChannels::open()?;
    /// let raw = ch.bind_unbound_port(DomId::new(5))?.release();
    /// ch.notify(raw)?; // still bound
    /// ch.unbind(raw)?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn release(self) -> Port {
        self.into_parts().1
    }

    /// The same port, reaching its handle through `handle` instead (e.g. an `Arc` of it, so
    /// the port can move into a thread or a spawned task).
    ///
    /// `handle` must lead to the same [`EventChannels`] (a clone of it,
    /// [`EventChannels::same_handle`]); otherwise the port is unbound through its old handle
    /// and [`Error::InvalidArgument`] is returned.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use xen_evtchn::{DomId, EventChannels};
    /// let ch = Arc::new(EventChannels::open()?);
    /// let port = ch.bind_unbound_port(DomId::new(5))?.with_handle(Arc::clone(&ch))?;
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub fn with_handle<H2: AsEventChannels>(self, handle: H2) -> Result<BoundPort<H2>, Error> {
        if !self
            .handle
            .as_event_channels()
            .same_handle(handle.as_event_channels())
        {
            // `self` drops here and unbinds through its own handle: nothing is left bound.
            return Err(Error::InvalidArgument {
                op: "evtchn with_handle",
                domain: None,
                reason: "not the handle the port is bound through",
            });
        }
        Ok(BoundPort {
            handle,
            port: self.release(),
        })
    }

    fn into_parts(self) -> (H, Port) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `handle` is moved out exactly once.
        let handle = unsafe { core::ptr::read(&this.handle) };
        (handle, this.port)
    }
}

impl<H: AsEventChannels> Drop for BoundPort<H> {
    fn drop(&mut self) {
        // Nothing to do on failure: the port is not bound through this handle any more
        // (unbound by number, say), or the handle is going away, which unbinds it anyway.
        let _ = self.handle.as_event_channels().unbind(self.port);
    }
}

impl<H: AsEventChannels> fmt::Debug for BoundPort<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundPort")
            .field("port", &self.port.get())
            .field("handle", self.handle.as_event_channels())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use std::sync::Arc;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn send_sync() {
        assert_send_sync::<EventChannels>();
        assert_send_sync::<BoundPort>();
        assert_send_sync::<BoundPort<&EventChannels>>();
        assert_send_sync::<BoundPort<Arc<EventChannels>>>();
    }

    #[test]
    fn release_and_rehome() {
        let ch = Arc::new(EventChannels::from(OwnedFd::from(
            std::fs::File::open("/dev/null").unwrap(),
        )));
        let other = EventChannels::from(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        let p = BoundPort::from_raw_parts(&*ch, Port::new(9));
        let p = p.with_handle(ch.clone()).unwrap();
        assert_eq!(p.port(), Port::new(9));
        assert!(p.with_handle(&other).is_err());
        let p = BoundPort::from_raw_parts(&other, Port::new(4));
        assert_eq!(p.release(), Port::new(4));
        // On /dev/null, unbind fails (ENOTTY) and drop swallows it.
        let p = BoundPort::from_raw_parts(&other, Port::new(4));
        assert!(p.unbind().is_err());
        drop(BoundPort::from_raw_parts(&other, Port::new(4)));
    }
}
