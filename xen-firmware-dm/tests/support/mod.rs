//! A loop on its own thread that is stopped and joined when dropped.
//!
//! Declared after the test's guest, it drops first: a test that panics while the loop runs then
//! stops the loop (which unmaps the guest's ioreq pages and destroys the ioreq server) before
//! the guest is destroyed, so no mapping ever outlives the domain it maps.

use std::thread::JoinHandle;

use xen_devicemodel::server::{Server, StopHandle};

/// A thread serving a guest, with the handle that stops it.
pub struct Running<T> {
    stop: StopHandle,
    thread: Option<JoinHandle<T>>,
}

impl<T> Running<T> {
    /// Takes charge of `thread`, which `stop` stops.
    pub fn new(stop: StopHandle, thread: JoinHandle<T>) -> Self {
        Running {
            stop,
            thread: Some(thread),
        }
    }

    /// The handle that stops the loop (to stop it from yet another thread).
    #[allow(dead_code)]
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Stops the loop and returns what its thread returned.
    pub fn join(mut self) -> T {
        self.stop.stop();
        let thread = self.thread.take().expect("joined once");
        thread.join().expect("the serving thread panicked")
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.stop();
            let _ = thread.join();
        }
    }
}

/// Runs `server`'s blocking loop on a thread; the thread gives the server back when it ends.
#[allow(dead_code)]
pub fn spawn(mut server: Server) -> Running<(xen_devicemodel::Result<()>, Server)> {
    let stop = server.stop_handle();
    Running::new(stop, std::thread::spawn(move || (server.run(), server)))
}
