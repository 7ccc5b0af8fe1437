//! The async handle, on tokio's `AsyncFd`.

// Unsafe: registers the handle's descriptor with the reactor.
#![allow(unsafe_code)]

use core::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;
use xen_hypercall::{Errno, Error};

use crate::{AsEventChannels, EventChannels, Port};

/// An [`EventChannels`] handle for tokio: [`pending`](Self::pending)`.await` sleeps in the
/// runtime's reactor (epoll) until the device is readable, then reads; it never busy-polls.
/// Feature `tokio`.
///
/// Binding, notifying and unmasking never block, so they are the plain methods of the inner
/// handle ([`channels`](Self::channels)); only waiting is async. Many
/// ports share one handle: one task can wait for all of them with
/// [`pending_many`](Self::pending_many), or several tasks can each await
/// [`pending`](Self::pending) (each event goes to one of them).
///
/// Do not call the inner handle's blocking `pending*` methods from async code: they would
/// block the runtime thread. Its `try_pending*` forms are fine.
///
/// The futures are cancel-safe: a port is read only in the same poll that returns it, so
/// dropping a `pending()` future (e.g. in `tokio::time::timeout` or `select!`) loses nothing.
///
/// ```no_run
/// use std::sync::Arc;
/// use xen_evtchn::{AsyncEventChannels, BoundPort, DomId};
///
/// # async fn f() -> Result<(), xen_hypercall::Error> {
/// let ch = Arc::new(AsyncEventChannels::open()?);
/// let port: BoundPort<Arc<AsyncEventChannels>> =
///     ch.channels().bind_interdomain(DomId::new(5), 42u32)?.with_handle(ch.clone())?;
/// tokio::spawn(async move {
///     loop {
///         let p = port.handle().pending().await?;
///         // ... service the request ...
///         port.unmask()?;
///         port.notify()?;
///     }
///     #[allow(unreachable_code)]
///     Ok::<(), xen_hypercall::Error>(())
/// });
/// # Ok(()) }
/// ```
pub struct AsyncEventChannels {
    inner: AsyncFd<EventChannels>,
}

impl AsyncEventChannels {
    /// Opens `/dev/xen/evtchn` non-blocking and registers it with the current tokio runtime's
    /// reactor (called outside a runtime, it fails with [`Error::InvalidArgument`]). The
    /// runtime needs its IO driver (`enable_io`, or `enable_all`).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), xen_hypercall::Error> {
    /// let ch = xen_evtchn::AsyncEventChannels::open()?;
    /// # Ok(()) }
    /// ```
    pub fn open() -> Result<AsyncEventChannels, Error> {
        AsyncEventChannels::new(EventChannels::open_nonblocking()?)
    }

    /// Wraps an existing handle (switched to non-blocking) and registers it with the current
    /// tokio runtime's reactor.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), xen_hypercall::Error> {
    /// let ch = xen_evtchn::EventChannels::open()?;
    /// let ch = xen_evtchn::AsyncEventChannels::new(ch)?;
    /// assert!(ch.channels().is_nonblocking());
    /// # Ok(()) }
    /// ```
    pub fn new(mut channels: EventChannels) -> Result<AsyncEventChannels, Error> {
        const OP: &str = "evtchn async register";
        // AsyncFd panics outside a runtime: refuse instead.
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: None,
                reason: "not called inside a tokio runtime",
            });
        }
        if !channels.is_nonblocking() {
            channels.set_nonblocking(true)?;
        }
        // SAFETY: `EventChannels` owns its fd for its whole life and always returns the same
        // one from `as_raw_fd`; the AsyncFd owns the handle, so the fd stays open while
        // registered.
        let inner = unsafe { AsyncFd::register_with_interest(channels, Interest::READABLE) }
            .map_err(|e| io_error(OP, &e.into()))?;
        Ok(AsyncEventChannels { inner })
    }

    /// The inner handle: bind, notify, unmask, `try_pending`, restrict.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), xen_hypercall::Error> {
    /// use xen_evtchn::{AsyncEventChannels, DomId};
    /// let ch = AsyncEventChannels::open()?;
    /// let port = ch.channels().bind_unbound_port(DomId::new(5))?;
    /// # Ok(()) }
    /// ```
    pub fn channels(&self) -> &EventChannels {
        self.inner.get_ref()
    }

    /// Deregisters from the reactor and gives the handle back (still non-blocking).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), xen_hypercall::Error> {
    /// let ch = xen_evtchn::AsyncEventChannels::open()?;
    /// let blocking_again = {
    ///     let mut ch = ch.into_inner();
    ///     ch.set_nonblocking(false)?;
    ///     ch
    /// };
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> EventChannels {
        self.inner.into_inner()
    }

    /// Waits for the next pending port and returns it; the port stays masked until unmasked.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), xen_hypercall::Error> {
    /// use std::time::Duration;
    /// let ch = xen_evtchn::AsyncEventChannels::open()?;
    /// match tokio::time::timeout(Duration::from_secs(1), ch.pending()).await {
    ///     Ok(port) => ch.channels().unmask(port?)?,
    ///     Err(_) => println!("quiet for a second"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn pending(&self) -> Result<Port, Error> {
        let mut one = [Port::new(0)];
        self.pending_many(&mut one).await?;
        Ok(one[0])
    }

    /// Waits until at least one port is pending, then reads as many as are there into `buf`
    /// (one `read`) and returns them. An empty `buf` is refused.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), xen_hypercall::Error> {
    /// use xen_evtchn::{AsyncEventChannels, Port};
    /// let ch = AsyncEventChannels::open()?;
    /// let mut buf = [Port::default(); 32];
    /// loop {
    ///     let ports = ch.pending_many(&mut buf).await?;
    ///     ch.channels().unmask_many(ports)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn pending_many<'b>(&self, buf: &'b mut [Port]) -> Result<&'b [Port], Error> {
        const OP: &str = "evtchn pending";
        if buf.is_empty() {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: None,
                reason: "empty buffer: there is no room for a port",
            });
        }
        loop {
            let mut guard = self.inner.readable().await.map_err(|e| io_error(OP, &e))?;
            match guard.try_io(|inner| match inner.get_ref().try_pending_many(buf) {
                Ok([]) => Err(std::io::ErrorKind::WouldBlock.into()),
                Ok(ports) => Ok(ports.len()),
                Err(e) => Err(std::io::Error::from_raw_os_error(e.errno().raw())),
            }) {
                Ok(Ok(n)) => return Ok(&buf[..n]),
                Ok(Err(e)) => return Err(io_error(OP, &e)),
                // Spurious readiness: try_io cleared it; wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

fn io_error(op: &'static str, e: &std::io::Error) -> Error {
    Error::os(
        op,
        None,
        e.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
    )
}

impl AsEventChannels for AsyncEventChannels {
    fn as_event_channels(&self) -> &EventChannels {
        self.channels()
    }
}

impl AsFd for AsyncEventChannels {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channels().as_fd()
    }
}

impl AsRawFd for AsyncEventChannels {
    fn as_raw_fd(&self) -> RawFd {
        self.channels().as_raw_fd()
    }
}

impl fmt::Debug for AsyncEventChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEventChannels")
            .field("channels", self.channels())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::tests::{fire, pipe_handle};
    use std::time::Duration;

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let (ch, _w) = pipe_handle();
        let e = AsyncEventChannels::new(ch).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    }

    #[test]
    fn awaits_ports_on_a_stand_in() {
        let rt = ::tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (ch, w) = pipe_handle();
            let ch = AsyncEventChannels::new(ch).unwrap();
            assert!(ch.channels().is_nonblocking());
            // Nothing yet: the future waits (timeout), and being dropped loses nothing.
            let r = ::tokio::time::timeout(Duration::from_millis(30), ch.pending()).await;
            assert!(r.is_err());
            fire(&w, &[4]);
            assert_eq!(ch.pending().await.unwrap(), Port::new(4));
            fire(&w, &[5, 6, 7]);
            let mut buf = [Port::default(); 2];
            assert_eq!(
                ch.pending_many(&mut buf).await.unwrap(),
                [Port::new(5), Port::new(6)]
            );
            assert_eq!(ch.pending().await.unwrap(), Port::new(7));
            assert!(ch.pending_many(&mut []).await.is_err());
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                fire(&w, &[9]);
                w
            });
            assert_eq!(ch.pending().await.unwrap(), Port::new(9));
            drop(writer.join().unwrap());
            let inner = ch.into_inner();
            assert!(inner.is_nonblocking());
        });
    }
}
