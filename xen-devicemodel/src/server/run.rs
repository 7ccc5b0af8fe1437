//! The blocking loop: [`Server::run`], [`Server::run_once`], and the serving of the
//! pending ports and vCPU slots that `run_async` shares.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xen_evtchn::Port;
use xen_hypercall::sys::{self, PollFd};

use super::fast::MAX_FAST_DOORBELLS;
use super::guestmem::BLOCKING_RETRY;
use super::stand_in::serve_slot;
use super::{Server, PORTS_PER_READ};
use crate::{Error, Result};

impl Server {
    /// Serves requests on this thread until [`StopHandle::stop`](super::StopHandle::stop) is
    /// called, an event-channel operation fails, or a device calls
    /// [`Ctx::fail`](super::Ctx::fail) (then its error is returned, after the requests
    /// already posted are completed).
    pub fn run(&mut self) -> Result<()> {
        self.d.mem.retry = BLOCKING_RETRY;
        let mut buf = [Port::default(); PORTS_PER_READ];
        loop {
            if let Some(r) = self.stopping() {
                return r;
            }
            let n = self.ch.try_pending_many(&mut buf)?.len();
            // Buffered records left from the last turn are served without waiting.
            if n == 0 && !self.ring_backlog {
                self.wait(None)?;
                continue;
            }
            self.serve_ports(&buf[..n])?;
            self.poll_doorbells()?;
            // Wait before reading again: when the guest has sent nothing new, that read would
            // come back empty, and the poll would follow anyway (one syscall per wake-up
            // saved); a request already pending makes the poll return at once.
            if !self.ring_backlog && !self.must_end() {
                self.wait(None)?;
            }
        }
    }

    /// Whether the loop must end: stopped, or a device failed.
    fn must_end(&self) -> bool {
        self.d.errors.fatal.is_some() || self.stop.flag.load(Ordering::Acquire)
    }

    /// Serves one batch: waits up to `timeout` for pending ports and serves them; returns
    /// how many ports were pending (0 on timeout or when stopped). Buffered records left
    /// from the previous batch (more than one ring's worth arrived) are served at once,
    /// without waiting. For loops of your own: call it again soon, and it never does more
    /// than a bounded amount of work (see "Bounded work" in the module docs).
    ///
    /// After a device's [`Ctx::fail`](super::Ctx::fail), it completes the requests already
    /// posted and returns that error (then and on every later call).
    pub fn run_once(&mut self, timeout: std::time::Duration) -> Result<usize> {
        if let Some(e) = self.d.errors.fatal {
            self.serve_all_slots()?;
            return Err(e);
        }
        self.d.mem.retry = BLOCKING_RETRY;
        let mut buf = [Port::default(); PORTS_PER_READ];
        let mut n = self.ch.try_pending_many(&mut buf)?.len();
        if n == 0 && !self.ring_backlog && !self.stop.flag.load(Ordering::Acquire) {
            self.wait(Some(timeout))?;
            n = self.ch.try_pending_many(&mut buf)?.len();
        }
        if n > 0 || self.ring_backlog {
            self.serve_ports(&buf[..n])?;
            self.poll_doorbells()?;
        }
        if let Some(e) = self.d.errors.fatal {
            self.serve_all_slots()?;
            return Err(e);
        }
        Ok(n)
    }

    /// When the loop must end (stopped, or a device failed): completes the requests already
    /// posted and says what to return.
    pub(super) fn stopping(&mut self) -> Option<Result<()>> {
        if !self.must_end() {
            return None;
        }
        let fatal = self.d.errors.fatal;
        Some(self.serve_all_slots().and(fatal.map_or(Ok(()), Err)))
    }

    /// Waits until the event channels or the stop eventfd are readable, at most `timeout`
    /// (`None`: no limit); a signal does not end the wait early (the syscall layer's `EINTR`
    /// policy). Doorbells the kernel took (ioeventfd) are polled too, and delivered.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut ready = [-1; MAX_FAST_DOORBELLS];
        {
            let mut fds = [PollFd::unused(); 2 + MAX_FAST_DOORBELLS];
            fds[0] = PollFd::readable(self.ch.as_fd());
            fds[1] = PollFd::readable(self.stop.efd.as_fd());
            let n = 2 + self.doorbell_fds(&mut fds[2..]);
            sys::poll(&mut fds[..n], deadline)
                .map_err(|e| Error::os("ioreq server poll", Some(self.dom), e))?;
            ready_fds(&fds[2..n], &mut ready);
        }
        self.deliver_doorbells(&ready)
    }

    /// Fills `fds` with the eventfds of the doorbells the kernel serves; returns how many.
    fn doorbell_fds<'a>(&'a self, fds: &mut [PollFd<'a>]) -> usize {
        let fast = self.d.bells.entries.iter().filter_map(|e| e.fd.as_ref());
        let mut n = 0;
        for (slot, fd) in fds.iter_mut().zip(fast) {
            *slot = PollFd::readable(fd.eventfd());
            n += 1;
        }
        n
    }

    /// Delivers the doorbells whose eventfds are in `ready` (-1 entries are skipped).
    fn deliver_doorbells(&mut self, ready: &[RawFd]) -> Result<()> {
        for &raw in ready.iter().filter(|&&r| r >= 0) {
            let i = self.d.bells.entries.iter().position(|e| {
                e.fd.as_ref()
                    .is_some_and(|fd| fd.eventfd().as_raw_fd() == raw)
            });
            let Some(i) = i else { continue };
            let taken = match &self.d.bells.entries[i].fd {
                Some(fd) => fd.take()?,
                None => 0,
            };
            if taken > 0 {
                self.d.ring_doorbell(i);
            }
        }
        Ok(())
    }

    /// After a turn, the doorbells the kernel took meanwhile (a busy loop does not wait, so
    /// it would not see them otherwise): one `poll` without waiting, only when the kernel
    /// serves some doorbells.
    pub(super) fn poll_doorbells(&mut self) -> Result<()> {
        if self.d.bells.fast == 0 {
            return Ok(());
        }
        let mut ready = [-1; MAX_FAST_DOORBELLS];
        {
            let mut fds = [PollFd::unused(); MAX_FAST_DOORBELLS];
            let n = self.doorbell_fds(&mut fds);
            let now = Some(Instant::now());
            if sys::poll(&mut fds[..n], now)
                .map_err(|e| Error::os("ioreq server poll", Some(self.dom), e))?
                == 0
            {
                return Ok(());
            }
            ready_fds(&fds[..n], &mut ready);
        }
        self.deliver_doorbells(&ready)
    }

    pub(super) fn serve_ports(&mut self, ports: &[Port]) -> Result<()> {
        let t0 = std::time::Instant::now();
        let r = self.serve_ports_inner(ports);
        self.d.stats.busy_ns += t0.elapsed().as_nanos() as u64;
        r
    }

    /// One turn: bounded work (one request per vCPU port, one ring's worth of buffered
    /// records), so the caller looks at the stop flag again soon whatever the guest does.
    fn serve_ports_inner(&mut self, ports: &[Port]) -> Result<()> {
        if !ports.is_empty() {
            self.d.stats.wakeups += 1;
            // Unmask first: an event that comes while we serve is queued again, not lost.
            self.ch.unmask_many(ports)?;
        }
        // Buffered writes were issued before any synchronous request now pending: serve
        // them first, whichever port woke us.
        if let Some(r) = self.ring {
            self.ring_backlog = self.d.drain_ring(r);
        }
        for &p in ports {
            if let Some(v) = self.vcpu_ports.iter().position(|q| q.port() == p) {
                self.serve_slot(v)?;
            }
        }
        Ok(())
    }

    /// Serves every slot that holds a request (used when stopping).
    pub(super) fn serve_all_slots(&mut self) -> Result<()> {
        if let Some(r) = self.ring {
            self.ring_backlog = self.d.drain_ring(r);
        }
        for v in 0..self.slots.len() {
            self.serve_slot(v)?;
        }
        Ok(())
    }

    fn serve_slot(&mut self, v: usize) -> Result<()> {
        let (Some(&s), Some(p)) = (self.slots.get(v), self.vcpu_ports.get(v).map(|b| b.port()))
        else {
            return Ok(());
        };
        if self.d.bells.fast > 0 {
            // The kernel's ioeventfd handler marks a request INPROCESS while it compares it
            // with its doorbells, and sets it back to READY when none matches.
            s.settle();
        }
        serve_slot(&mut self.d, s, &self.ch, p, v as u32).map(drop)
    }
}

/// The descriptors of `fds` a poll found ready, into `ready` (the rest left -1).
fn ready_fds(fds: &[PollFd<'_>], ready: &mut [RawFd]) {
    for (r, p) in ready.iter_mut().zip(fds) {
        if p.is_ready() {
            *r = p.raw_fd();
        }
    }
}
