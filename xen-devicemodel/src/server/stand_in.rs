//! [`StandInLoop`]: the loop's per-request path (take the request from its slot, dispatch it
//! to the device, complete the slot, notify the vCPU's channel) on a slot in plain memory and
//! an event-channel handle of the caller's choosing, for measuring its cost per request
//! without Xen (the instruction-count harness runs it against a stand-in channel handle).
//! Not a way to serve a guest: nothing here talks to Xen.

// Unsafe: a stand-in ioreq page in plain memory.
#![allow(unsafe_code)]

use xen_evtchn::{EventChannels, Port};

use super::ctx::NoPlatform;
use super::device::{Claim, Device, Key};
use super::dispatch::{Dispatch, GuestMemory};
use super::slot::{self, Slot};
use super::Stats;
use crate::{DomId, Errno, Error, Result};

/// No guest memory: `data_is_ptr` requests fail (the stand-in serves requests by value).
struct NoMemory;

impl GuestMemory for NoMemory {
    fn read(&mut self, _: u64, _: &mut [u8]) -> Result<()> {
        Err(Error::os("stand-in guest memory", None, Errno::EFAULT))
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<()> {
        Err(Error::os("stand-in guest memory", None, Errno::EFAULT))
    }
    fn invalidate(&mut self) {}
}

/// One vCPU's slot (in memory this value owns), one device, and an event-channel handle:
/// [`StandInLoop::post_port_read`] puts a request in the slot as Xen does, and
/// [`StandInLoop::serve`] serves it with the same code as [`Server::run`](super::Server::run).
#[doc(hidden)]
pub struct StandInLoop {
    /// The slot's memory (an `ioreq_t`, 8-byte aligned), owned here.
    page: Box<[u64; 4]>,
    slot: Slot,
    d: Dispatch<NoMemory, NoPlatform>,
    ch: EventChannels,
    port: Port,
}

impl StandInLoop {
    /// A loop over `device` (claiming `claims`) whose completions notify `port` on `ch`.
    pub fn new(
        ch: EventChannels,
        port: Port,
        device: impl Device + 'static,
        claims: impl IntoIterator<Item = Claim>,
    ) -> StandInLoop {
        let mut page = Box::new([0u64; 4]);
        // SAFETY: a 32-byte, 8-byte aligned allocation owned by the returned value, which
        // never frees or moves it (the Box's heap memory stays put) while the slot is used.
        let slot = unsafe { Slot::new(page.as_mut_ptr().cast()) };
        let keys = claims.into_iter().map(|c| (Key::of(&c), 0)).collect();
        let devices: Vec<Box<dyn Device>> = vec![Box::new(device)];
        StandInLoop {
            page,
            slot,
            d: Dispatch::with_platform(devices, keys, NoMemory, NoPlatform(DomId::new(1))),
            ch,
            port,
        }
    }

    /// Posts a read of `size` bytes of port `port`, as Xen does: the fields, then the state
    /// `READY`.
    pub fn post_port_read(&mut self, port: u16, size: u8) {
        self.slot
            .post(slot::IOREQ_TYPE_PIO, port.into(), size.into(), true);
    }

    /// Posts a write of `size` bytes to guest-physical `addr` (an MMIO request by value, the
    /// value 0), as Xen does: the fields, then the state `READY`.
    pub fn post_mmio_write(&mut self, addr: u64, size: u8) {
        self.slot
            .post(slot::IOREQ_TYPE_COPY, addr, size.into(), false);
    }

    /// Serves the slot as the loop does; returns the answer left in the slot (`None` when the
    /// slot held no request).
    pub fn serve(&mut self) -> Result<Option<u64>> {
        if serve_slot(&mut self.d, self.slot, &self.ch, self.port, 0)? {
            // SAFETY: `data` is the second word of the slot this value owns.
            return Ok(Some(unsafe {
                core::ptr::read_volatile(&raw const self.page[1])
            }));
        }
        Ok(None)
    }

    /// The requests served.
    pub fn stats(&self) -> Stats {
        self.d.stats
    }
}

/// Serves vCPU `v`'s slot if it holds a request: dispatches it, completes the slot and
/// notifies `port`. Returns whether a request was served. The loop's own path, shared with
/// [`StandInLoop`].
#[inline]
pub(super) fn serve_slot<M: GuestMemory, P: super::ctx::Platform>(
    d: &mut Dispatch<M, P>,
    s: Slot,
    ch: &EventChannels,
    port: Port,
    v: u32,
) -> Result<bool> {
    let Some(req) = s.take() else {
        return Ok(false);
    };
    d.vcpu = Some(v);
    let answer = d.handle(&req);
    s.complete(answer);
    ch.notify(port)?;
    d.stats.notifies += 1;
    Ok(true)
}

impl core::fmt::Debug for StandInLoop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StandInLoop")
            .field("port", &self.port)
            .field("stats", &self.d.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Answer;
    impl Device for Answer {
        fn port_read(&mut self, port: u16, _: u8) -> u32 {
            u32::from(port) + 1
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "opens a stand-in device file")]
    fn serves_a_posted_port_read_and_notifies() {
        // The notify goes to /dev/null, which takes any write... as an ioctl it fails.
        let null = std::fs::File::open("/dev/null").unwrap();
        let ch = EventChannels::from_fd(std::os::fd::OwnedFd::from(null));
        let mut l = StandInLoop::new(ch, Port::new(5), Answer, [Claim::Ports(0x10..=0x1f)]);
        assert!(matches!(l.serve(), Ok(None)));
        l.post_port_read(0x12, 2);
        // The device answered before the notify failed: the slot holds the answer.
        assert!(l.serve().is_err());
        assert_eq!(l.stats().port, 1);
        assert_eq!(
            // SAFETY: the slot's data word, in memory the loop owns.
            unsafe { core::ptr::read_volatile(&raw const l.page[1]) },
            0x13
        );
    }
}
