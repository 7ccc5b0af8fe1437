//! The ioreq-server runtime: write a [`Device`], register it for the ranges it serves, and
//! let a [`Server`] run the loop that takes the guest's I/O requests from Xen, calls your
//! device, and hands the answers back.
//!
//! ```no_run
//! use xen_devicemodel::server::{Claim, Device, ServerBuilder};
//! use xen_devicemodel::{BufIoreqMode, DomId};
//!
//! /// A debug console: prints what the guest writes to port 0x402.
//! struct DebugCon;
//!
//! impl Device for DebugCon {
//!     fn port_write(&mut self, _port: u16, _size: u8, value: u32) {
//!         print!("{}", value as u8 as char);
//!     }
//!     fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
//!         0xe9 // "a debug console is here", as QEMU's debugcon answers
//!     }
//! }
//!
//! let mut server = ServerBuilder::new(DomId::new(5))
//!     .buffered(BufIoreqMode::Atomic)
//!     .device(DebugCon, [Claim::Ports(0x402..=0x402)])
//!     .restrict(true) // after set-up, this process can act on domain 5 only
//!     .build()?;
//! let stop = server.stop_handle(); // stop.stop() from any thread ends run()
//! # let _ = stop;
//! server.run()?;
//! println!("{}", server.stats());
//! # Ok::<(), xen_devicemodel::Error>(())
//! ```
//!
//! # Devices that do more ([`Ctx`])
//! A device that raises interrupts, does DMA or moves its BARs overrides [`Device::access`]
//! instead of (or besides) the per-kind methods; it gets a [`Ctx`] with each access:
//! - interrupts: [`Ctx::set_isa_irq_level`], [`Ctx::set_pci_intx_level`],
//!   [`Ctx::set_pci_link_route`],
//!   [`Ctx::inject_msi`] (one dm_op each), and [`Ctx::interrupts`] / [`Server::interrupts`],
//!   an [`Interrupts`] handle for the device model's other threads;
//! - DMA: [`Ctx::read_guest`] / [`Ctx::write_guest`] copy through the loop's cache of
//!   foreign mappings (no mapping per request for the frames in use; the cache is dropped on
//!   `IOREQ_TYPE_INVALIDATE`, and [`Device::mappings_invalidated`] tells devices that keep
//!   mappings of their own);
//! - claims at run time: [`Ctx::claim`] / [`Ctx::release`] (a BAR placed or moved);
//! - the guest and the vCPU of the request ([`Ctx::domid`], [`Ctx::vcpu`]);
//! - errors: [`Ctx::report`] counts one ([`Stats::device_errors`],
//!   [`Server::last_device_error`]); [`Ctx::fail`] also ends the loop with it.
//!
//! # Fast paths, with the loop as fallback ([`Doorbell`], [`IrqTrigger`])
//! A virtio-style device can ask for its queue-notify register to be a [`Doorbell`]
//! ([`Ctx::doorbell`]) and for an interrupt it fires often to be an [`IrqTrigger`]
//! ([`Interrupts::trigger`]). Where privcmd has ioeventfd and irqfd (Linux 6.7 built with
//! `CONFIG_XEN_PRIVCMD_EVENTFD`), the kernel completes the guest's doorbell writes itself (the
//! vCPU does not wait for the device) and injects the interrupt on one `write`; elsewhere
//! (`ENOTTY`: Debian's 6.1 and 6.12 kernels) the loop serves the write as any MMIO request and
//! the trigger sends the dm_op. What the kernel answered is asked once per server
//! ([`Server::irqfd_supported`], [`Server::ioeventfd_supported`]). The device's code is the
//! same either way: a doorbell write always reaches [`Device::access`] as an
//! [`Access::MmioWrite`] of the doorbell's address, size and value (from the kernel's
//! eventfd: coalesced, [`Ctx::vcpu`] `None`, counted in [`Stats::doorbells`]).
//!
//! `Box<dyn Device>` and `Arc<Mutex<impl Device>>` are devices too. [`Harness`] calls a
//! device on the host, without Xen (its interrupts and claims recorded, a buffer as guest
//! RAM), for device crates' unit tests.
//!
//! # Set-up ([`ServerBuilder::build`])
//! 1. `XEN_DMOP_create_ioreq_server` with the buffered mode asked for.
//! 2. Its pages mapped with `XENMEM_acquire_resource` ([`xen_foreignmemory`]'s
//!    `map_resource`); where resources cannot be mapped, the frames from
//!    `get_ioreq_server_info` are mapped instead (the legacy way, while the server is
//!    still disabled).
//! 3. The devices' ranges claimed (`map_io_range_to_ioreq_server`: ports, MMIO, PCI config
//!    space of one SBDF).
//! 4. The server enabled; Xen then writes each vCPU's event channel into its slot of the
//!    (already mapped) ioreq page; one channel per vCPU is bound, plus the buffered one.
//! 5. Optionally [`xen_hypercall::restrict_all`] to the guest: every privcmd and evtchn
//!    handle of the process can act on that guest only; serving keeps working.
//!
//! Dropping the [`Server`] undoes it in reverse: disable, unbind the channels, unmap the
//! pages, destroy the server. Between the disable and the unbinding it serves any request a
//! vCPU posted after the loop returned, with the devices, so no vCPU is left waiting on a
//! server that is gone (Xen does not complete such a request itself).
//!
//! # The loop
//! [`Server::run`] (one thread) and `Server::run_async` (feature `tokio`) wait on the
//! event-channel handle. Each wake-up reads every pending port in one `read`, unmasks them
//! in one `write`, drains the buffered ring, then serves each signalled vCPU's slot:
//! - state `READY` is read with acquire ordering, the request copied out and the slot marked
//!   `INPROCESS`; the answer is written and the state set to `IORESP_READY` with release
//!   ordering, then the vCPU's channel is notified (one ioctl per completed request);
//! - `rep` requests run `count` device accesses; with `data_is_ptr` the data goes through
//!   guest memory (mapped frame by frame, crossing pages as needed, a few frames cached),
//!   downwards when the direction flag is set;
//! - `IOREQ_TYPE_INVALIDATE` drops the cached guest mappings, `IOREQ_TYPE_TIMEOFFSET` is
//!   acknowledged; both are counted;
//! - buffered records (writes Xen does not wait for, e.g. stdvga's VGA-window writes) are
//!   dispatched like synchronous writes; 8-byte ones take two ring slots.
//!
//! No heap allocation per request. [`StopHandle::stop`] ends the loop from any thread; the
//! loop first completes any request already posted, so no vCPU is left waiting on it.
//!
//! # Bounded work
//! No guest can keep the loop busy: each turn of the loop does a bounded amount of work and
//! then looks at the stop flag again.
//! - A request's `rep` count is at most 4096 (Xen's emulator never sends more); a request
//!   with more, or with an access size the [`Device`] trait does not take (port I/O of 8
//!   bytes, PCI config of other than 1, 2 or 4 bytes, MMIO of other than 1, 2, 4 or 8), is
//!   refused: answered all-ones (reads) or dropped (writes) without reaching a device,
//!   counted in [`Stats::refused`], the last one kept ([`Server::last_refusal`]).
//! - One turn takes at most one ring's worth (511) of buffered records; the rest wait for
//!   the next turn, which comes at once (the loop does not sleep while records are left).
//! - Between two vCPUs' requests the stop flag is read: a stop is answered after the request
//!   in hand, then every request already posted is completed (one per vCPU at most).
//! - Guest frames that fail to map are remembered for 100 ms (8 of them), so a guest pointing
//!   requests at a bad frame costs one map attempt per frame and period. Paged-out frames
//!   are retried briefly in [`Server::run`] (0.7 ms of sleep at most) and not at all in
//!   `run_async`, which never sleeps: the request then completes as a memory error
//!   ([`Stats::memory_errors`]).
//!
//! Accesses nobody claimed reach no server at all (Xen answers them itself). A request in a
//! claimed range whose device does not override the method gets all-ones on reads and is
//! ignored on writes.

mod ctx;
mod device;
mod dispatch;
mod fast;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod guestmem;
mod harness;
mod run;
#[cfg(feature = "tokio")]
mod run_async;
mod setup;
mod slot;
mod stand_in;
mod stats;
mod stop;

use std::sync::Arc;

use xen_evtchn::{BoundPort, EventChannels};
use xen_foreignmemory::{Mapping, ReadWrite};

use crate::{DeviceModel, DomId, Error, IoreqServer};
use ctx::XenPlatform;
use dispatch::Dispatch;
use guestmem::GuestMem;
use slot::{Ring, Slot};
use stop::StopInner;

pub use ctx::{Ctx, Interrupts, MAX_CLAIMS};
pub use device::{Access, Claim, Device};
pub use fast::{Doorbell, FastPath, Interrupt, IrqTrigger, MAX_DOORBELLS};
pub use harness::{Harness, HarnessEvent};
pub use setup::ServerBuilder;
#[doc(hidden)]
pub use stand_in::StandInLoop;
pub use stats::{Refusal, Stats};
pub use stop::StopHandle;

/// A running ioreq server with its devices. See the [module docs](self).
///
/// `Send`: set it up on one thread and run it on another.
pub struct Server {
    // Teardown order (Drop, then fields in this order): disable (in Drop), unbind the
    // channels (each bound port unbinds itself), unmap the pages, drop the devices and
    // destroy the server (in `d`), close the channel handle.
    vcpu_ports: Vec<BoundPort>,
    buf_port: Option<BoundPort>,
    slots: Vec<Slot>,
    ring: Option<Ring>,
    /// The buffered ring had records left at the end of the last turn.
    ring_backlog: bool,
    buf_page: Option<Mapping<ReadWrite>>,
    ioreq_page: Mapping<ReadWrite>,
    d: Dispatch<GuestMem, XenPlatform>,
    stop: Arc<StopInner>,
    ch: EventChannels,
    dm: DeviceModel,
    dom: DomId,
}

/// How many ports one wake-up reads at most (on the stack).
const PORTS_PER_READ: usize = 64;

impl Server {
    /// The guest served.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// The ioreq server (its id, and dm_ops on it such as claiming more ranges).
    pub fn ioreq_server(&self) -> &IoreqServer {
        &self.d.plat.server
    }

    /// The guest's interrupt lines and MSIs, for threads of the device model's own (a
    /// device's [`Ctx`] has the same during a request).
    pub fn interrupts(&self) -> Interrupts {
        Interrupts::with_fast(self.dm.clone(), self.dom, self.d.plat.fast.clone())
    }

    /// The last error a device reported ([`Ctx::report`], [`Ctx::fail`]).
    pub fn last_device_error(&self) -> Option<Error> {
        self.d.errors.last
    }

    /// The device-model handle.
    pub fn device_model(&self) -> &DeviceModel {
        &self.dm
    }

    /// The number of vCPUs served.
    pub fn vcpus(&self) -> usize {
        self.slots.len()
    }

    /// Requests served so far.
    pub fn stats(&self) -> Stats {
        self.d.stats
    }

    /// The last request refused without reaching a device (see [`Stats::refused`]).
    pub fn last_refusal(&self) -> Option<Refusal> {
        self.d.last_refusal
    }

    /// Whether the kernel offers irqfd ([`Interrupts::trigger`]): `None` until a trigger
    /// was asked for, then what the kernel answered.
    pub fn irqfd_supported(&self) -> Option<bool> {
        self.d.plat.fast.irqfd()
    }

    /// Whether the kernel offers ioeventfd ([`Ctx::doorbell`]): `None` until a doorbell the
    /// kernel could take was asked for, then what the kernel answered.
    pub fn ioeventfd_supported(&self) -> Option<bool> {
        self.d.plat.fast.ioeventfd()
    }

    /// A handle that stops [`Server::run`] (or `run_async`) from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            inner: self.stop.clone(),
        }
    }
}

impl core::fmt::Debug for Server {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("dom", &self.dom)
            .field("server", &self.d.plat.server)
            .field("vcpus", &self.slots.len())
            .field("devices", &self.d.devices.len())
            .field("stats", &self.d.stats)
            .finish()
    }
}
