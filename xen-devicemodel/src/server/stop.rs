//! [`StopHandle`]: ends a [`Server`](super::Server)'s loop from another thread or task.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(super) struct StopInner {
    pub(super) flag: AtomicBool,
    /// An eventfd the blocking loop polls next to the event channels.
    pub(super) efd: OwnedFd,
    #[cfg(feature = "tokio")]
    pub(super) notify: tokio::sync::Notify,
}

/// Stops a [`Server`](super::Server)'s loop from another thread (or task). Cheap to clone.
#[derive(Clone)]
pub struct StopHandle {
    pub(super) inner: Arc<StopInner>,
}

impl StopHandle {
    /// Asks the loop to return: it completes any request already posted, then
    /// [`Server::run`](super::Server::run) returns `Ok(())`. Later `run` calls return at once.
    pub fn stop(&self) {
        self.inner.flag.store(true, Ordering::Release);
        // A full counter (EAGAIN) still leaves it readable, which is all the loop needs.
        let _ = xen_hypercall::sys::write(self.inner.efd.as_fd(), &[1u64]);
        #[cfg(feature = "tokio")]
        self.inner.notify.notify_one();
    }

    /// Whether [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }
}

impl core::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StopHandle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}
