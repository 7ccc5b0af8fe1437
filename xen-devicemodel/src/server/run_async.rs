//! The tokio loop: `Server::run_async` (feature `tokio`).

// Unsafe: registers the event-channel descriptor with the reactor.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use xen_evtchn::Port;

use super::{Server, PORTS_PER_READ};
use crate::{Errno, Error, Result};

impl Server {
    /// Serves requests in a tokio task until stopped (feature `tokio`). The event-channel fd
    /// is registered with tokio's reactor; everything else is as in [`Server::run`], except
    /// that it never sleeps on the executor's thread (guest frames that are paged out are not
    /// retried: the request completes as a memory error) and yields to other tasks after
    /// each turn.
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub async fn run_async(&mut self) -> Result<()> {
        use tokio::io::{unix::AsyncFd, Interest};
        struct Fd(std::os::fd::RawFd);
        impl AsRawFd for Fd {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.0
            }
        }
        // SAFETY: the fd is the channel handle's, which `self` owns and keeps open (and the
        // same) for longer than `afd`, a local of this call that holds `&mut self`'s borrow.
        let afd =
            unsafe { AsyncFd::register_with_interest(Fd(self.ch.as_raw_fd()), Interest::READABLE) }
                .map_err(|e| {
                    let e: std::io::Error = e.into();
                    Error::os(
                        "ioreq server tokio registration",
                        Some(self.dom),
                        Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    )
                })?;
        // Never sleep on the executor's thread: paged-out frames are not retried here.
        self.d.mem.retry = xen_foreignmemory::RetryPolicy::NEVER;
        let stop = self.stop.clone();
        let mut buf = [Port::default(); PORTS_PER_READ];
        loop {
            if let Some(r) = self.stopping() {
                return r;
            }
            let n = self.ch.try_pending_many(&mut buf)?.len();
            if n == 0 && !self.ring_backlog {
                tokio::select! {
                    g = afd.readable() => {
                        if let Ok(mut g) = g {
                            g.clear_ready();
                        }
                    }
                    _ = stop.notify.notified() => {}
                }
                continue;
            }
            self.serve_ports(&buf[..n])?;
            self.poll_doorbells()?;
            // A busy guest must not hold the executor's thread: other tasks run between
            // turns (each turn's work is bounded, see the module docs).
            tokio::task::yield_now().await;
        }
    }
}
