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
//! pages, destroy the server.
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
//! Accesses nobody claimed reach no server at all (Xen answers them itself). A request in a
//! claimed range whose device does not override the method gets all-ones on reads and is
//! ignored on writes.

mod guestmem;
mod slot;

use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xen_evtchn::{EventChannels, Port};
use xen_foreignmemory::{ForeignMemory, Mapping, ReadWrite, Resource};

use crate::{BufIoreqMode, DeviceModel, DomId, Errno, Error, IoreqServer, Result, Sbdf};
use guestmem::GuestMem;
use slot::{Ioreq, Ring, Slot};

/// A device model's device: the guest's accesses to the ranges it was registered for.
///
/// `size` is the access size in bytes (1, 2, 4, or 8 for MMIO). Reads return the value in
/// the low `size` bytes (the rest is masked off). Every method has a default: reads answer
/// all-ones (nothing there), writes are ignored.
pub trait Device: Send {
    /// A read of I/O port `port`.
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        let _ = (port, size);
        u32::MAX
    }

    /// A write of `value` to I/O port `port`.
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        let _ = (port, size, value);
    }

    /// A read of guest-physical MMIO address `addr`.
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        let _ = (addr, size);
        u64::MAX
    }

    /// A write of `value` to guest-physical MMIO address `addr` (also for buffered writes).
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        let _ = (addr, size, value);
    }

    /// A read of configuration register `reg` (byte offset, 0-4095) of PCI function `dev`.
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        let _ = (dev, reg, size);
        u32::MAX
    }

    /// A write to configuration register `reg` of PCI function `dev`.
    fn pci_config_write(&mut self, dev: Sbdf, reg: u16, size: u8, value: u32) {
        let _ = (dev, reg, size, value);
    }
}

/// A device shared with other threads (to read its state while or after the server runs):
/// each request locks the mutex (a poisoned lock is taken over, not a panic).
impl<D: Device + ?Sized> Device for Arc<std::sync::Mutex<D>> {
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        lock(self).port_read(port, size)
    }
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        lock(self).port_write(port, size, value)
    }
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        lock(self).mmio_read(addr, size)
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        lock(self).mmio_write(addr, size, value)
    }
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        lock(self).pci_config_read(dev, reg, size)
    }
    fn pci_config_write(&mut self, dev: Sbdf, reg: u16, size: u8, value: u32) {
        lock(self).pci_config_write(dev, reg, size, value)
    }
}

fn lock<D: ?Sized>(m: &std::sync::Mutex<D>) -> std::sync::MutexGuard<'_, D> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A range a device claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// I/O ports (inclusive).
    Ports(RangeInclusive<u16>),
    /// Guest-physical MMIO bytes (inclusive).
    Mmio(RangeInclusive<u64>),
    /// The configuration space of one PCI function (requests of type
    /// `IOREQ_TYPE_PCI_CONFIG`, whether the guest used ports 0xcf8/0xcfc or MMCONFIG).
    Pci(Sbdf),
}

#[derive(Debug, Clone, Copy)]
enum Key {
    Port(u64, u64),
    Mmio(u64, u64),
    Pci(u32),
}

/// Requests served, by kind. `Display` gives one line:
/// `port=N mmio=N pci-config=N buffered=N other=N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Port I/O requests (`IOREQ_TYPE_PIO`), each `rep` request counted once.
    pub port: u64,
    /// MMIO requests (`IOREQ_TYPE_COPY`), synchronous.
    pub mmio: u64,
    /// PCI configuration requests (`IOREQ_TYPE_PCI_CONFIG`).
    pub pci_config: u64,
    /// Buffered records taken from the ring, except time-offset ones (in `timeoffset`).
    pub buffered: u64,
    /// `IOREQ_TYPE_INVALIDATE` requests.
    pub invalidate: u64,
    /// `IOREQ_TYPE_TIMEOFFSET` requests (Xen sends them through the buffered ring when the
    /// guest sets its RTC).
    pub timeoffset: u64,
    /// Requests of any other type (acknowledged, not dispatched).
    pub other: u64,
    /// Device accesses that fell in no registered device's range (a claim of the server
    /// but a gap between devices, or a request wider than 8 bytes).
    pub unclaimed: u64,
    /// Guest-memory copies of `data_is_ptr` requests that failed (the request was still
    /// completed, with whatever was copied).
    pub memory_errors: u64,
    /// Wake-ups of the loop with at least one port pending.
    pub wakeups: u64,
    /// Notifications sent back (one per completed synchronous request).
    pub notifies: u64,
    /// Time spent serving, from reading the pending ports to the last notify of each
    /// wake-up, in nanoseconds (`busy_ns / total()` is the loop's own cost per request).
    pub busy_ns: u64,
}

impl Stats {
    /// Every request served (synchronous and buffered).
    pub fn total(&self) -> u64 {
        self.port
            + self.mmio
            + self.pci_config
            + self.buffered
            + self.invalidate
            + self.timeoffset
            + self.other
    }
}

impl core::fmt::Display for Stats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "port={} mmio={} pci-config={} buffered={} other={}",
            self.port,
            self.mmio,
            self.pci_config,
            self.buffered,
            self.invalidate + self.timeoffset + self.other
        )
    }
}

struct StopInner {
    flag: AtomicBool,
    /// An eventfd the blocking loop polls next to the event channels.
    efd: OwnedFd,
    #[cfg(feature = "tokio")]
    notify: tokio::sync::Notify,
}

/// Stops a [`Server`]'s loop from another thread (or task). Cheap to clone.
#[derive(Clone)]
pub struct StopHandle {
    inner: Arc<StopInner>,
}

impl StopHandle {
    /// Asks the loop to return: it completes any request already posted, then
    /// [`Server::run`] returns `Ok(())`. Later `run` calls return at once.
    pub fn stop(&self) {
        self.inner.flag.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN)
        // still leaves it readable, which is all the loop needs.
        let _ = unsafe { libc::write(self.inner.efd.as_raw_fd(), (&one as *const u64).cast(), 8) };
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

/// Builds a [`Server`]: the guest, the buffered mode, the devices and their claims.
pub struct ServerBuilder {
    dom: DomId,
    mode: BufIoreqMode,
    restrict: bool,
    dm: Option<DeviceModel>,
    devices: Vec<Box<dyn Device>>,
    keys: Vec<(Key, usize)>,
    claims: Vec<Claim>,
}

impl ServerBuilder {
    /// A server for guest `dom`, with a buffered ring in [`BufIoreqMode::Atomic`] mode (as
    /// QEMU uses), no devices, and no privilege drop.
    pub fn new(dom: DomId) -> ServerBuilder {
        ServerBuilder {
            dom,
            mode: BufIoreqMode::Atomic,
            restrict: false,
            dm: None,
            devices: Vec::new(),
            keys: Vec::new(),
            claims: Vec::new(),
        }
    }

    /// The buffered-ioreq mode ([`BufIoreqMode::Off`]: no ring, every request synchronous).
    pub fn buffered(mut self, mode: BufIoreqMode) -> ServerBuilder {
        self.mode = mode;
        self
    }

    /// Whether to [`restrict_all`](xen_hypercall::restrict_all) the process's Xen handles to
    /// the guest once set up.
    pub fn restrict(mut self, restrict: bool) -> ServerBuilder {
        self.restrict = restrict;
        self
    }

    /// Uses `dm` for the dm_ops (default: a new [`DeviceModel::open`]).
    pub fn device_model(mut self, dm: DeviceModel) -> ServerBuilder {
        self.dm = Some(dm);
        self
    }

    /// Registers `device` for `claims`. A request goes to the first device registered whose
    /// claim contains it.
    pub fn device(
        mut self,
        device: impl Device + 'static,
        claims: impl IntoIterator<Item = Claim>,
    ) -> ServerBuilder {
        let index = self.devices.len();
        self.devices.push(Box::new(device));
        for c in claims {
            let key = match &c {
                Claim::Ports(r) => Key::Port((*r.start()).into(), (*r.end()).into()),
                Claim::Mmio(r) => Key::Mmio(*r.start(), *r.end()),
                Claim::Pci(s) => Key::Pci(s.to_raw()),
            };
            self.keys.push((key, index));
            self.claims.push(c);
        }
        self
    }

    /// Sets the server up (see the module docs for the steps); on failure, whatever was set
    /// up is torn down.
    pub fn build(self) -> Result<Server> {
        const OP: &str = "ioreq server set-up";
        let dom = self.dom.require_domain(OP)?;
        let dm = match self.dm {
            Some(dm) => dm,
            None => DeviceModel::open()?,
        };
        let nr_vcpus = dm.nr_vcpus(dom)? as usize;
        if nr_vcpus == 0 || nr_vcpus * slot::SLOT_SIZE > xen_foreignmemory::PAGE_SIZE {
            return Err(Error::os(OP, Some(dom), Errno::E2BIG));
        }
        let server = dm.create_ioreq_server(dom, self.mode)?;
        let fm = ForeignMemory::open().map_err(|e| fm_err(OP, dom, e))?;
        let buffered = self.mode != BufIoreqMode::Off;
        let (ioreq_page, buf_page) = map_pages(&fm, &server, buffered)?;
        for c in &self.claims {
            match c {
                Claim::Ports(r) => server.map_port_range(r.clone())?,
                Claim::Mmio(r) => server.map_mmio_range(r.clone())?,
                Claim::Pci(s) => server.map_pci(*s)?,
            }
        }
        server.enable()?;
        let ch = EventChannels::open_nonblocking()?;
        let mut srv = Server {
            vcpu_ports: Vec::with_capacity(nr_vcpus),
            buf_port: None,
            slots: Vec::with_capacity(nr_vcpus),
            ring: None,
            buf_page,
            ioreq_page,
            d: Dispatch {
                devices: self.devices,
                keys: self.keys,
                stats: Stats::default(),
                mem: GuestMem::new(fm, dom),
            },
            stop: Arc::new(StopInner {
                flag: AtomicBool::new(false),
                efd: eventfd()?,
                #[cfg(feature = "tokio")]
                notify: tokio::sync::Notify::new(),
            }),
            server,
            ch,
            dm,
            dom,
        };
        let base = srv.ioreq_page.as_mut_ptr();
        for v in 0..nr_vcpus {
            // SAFETY: slot v lies in the one-page mapping (checked nr_vcpus above), which the
            // Server owns and keeps until it drops; slots are 32-byte aligned.
            let s = unsafe { Slot::new(base.add(v * slot::SLOT_SIZE)) };
            srv.slots.push(s);
            let remote = s.vp_eport();
            let p = srv.ch.bind_interdomain(dom, remote)?.release();
            srv.vcpu_ports.push(p);
        }
        if let Some(page) = &srv.buf_page {
            // SAFETY: the buffered page is mapped for as long as the Server lives.
            srv.ring = Some(unsafe { Ring::new(page.as_mut_ptr()) });
            if let Some(remote) = srv.server.info()?.bufioreq_port {
                srv.buf_port = Some(srv.ch.bind_interdomain(dom, remote)?.release());
            }
        }
        if self.restrict {
            xen_hypercall::restrict_all(dom)?;
        }
        Ok(srv)
    }
}

fn fm_err(op: &'static str, dom: DomId, e: xen_foreignmemory::Error) -> Error {
    match e {
        xen_foreignmemory::Error::Xen(x) => x,
        other => Error::os(op, Some(dom), other.errno()),
    }
}

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: plain syscall; on success we own the new fd.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::last_os_error("ioreq server eventfd", None));
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Maps the synchronous page and (if any) the buffered page of `server`.
fn map_pages(
    fm: &ForeignMemory,
    server: &IoreqServer,
    buffered: bool,
) -> Result<(Mapping<ReadWrite>, Option<Mapping<ReadWrite>>)> {
    const OP: &str = "ioreq server map pages";
    let dom = server.domid();
    let res = Resource::IoreqServer {
        id: server.id().get(),
    };
    match fm.map_resource(
        dom,
        res,
        Resource::ioreq_server_ioreq_frame(0),
        1,
        ReadWrite,
    ) {
        Ok(page) => {
            let buf = if buffered {
                Some(
                    fm.map_resource(
                        dom,
                        res,
                        Resource::IOREQ_SERVER_BUFIOREQ_FRAME,
                        1,
                        ReadWrite,
                    )
                    .map_err(|e| fm_err(OP, dom, e))?,
                )
            } else {
                None
            };
            Ok((page, buf))
        }
        Err(e) if e.is_not_supported() => {
            // Legacy: the frames Xen put into the guest's physical map (while disabled).
            let info = server.info_with_frames()?;
            let gfn = info
                .ioreq_gfn
                .ok_or(Error::os(OP, Some(dom), Errno::ENOENT))?;
            let page = fm
                .map(dom, &[gfn], ReadWrite)
                .map_err(|e| fm_err(OP, dom, e))?;
            let buf = match info.bufioreq_gfn {
                Some(g) if buffered => Some(
                    fm.map(dom, &[g], ReadWrite)
                        .map_err(|e| fm_err(OP, dom, e))?,
                ),
                _ => None,
            };
            Ok((page, buf))
        }
        Err(e) => Err(fm_err(OP, dom, e)),
    }
}

/// A running ioreq server with its devices. See the [module docs](self).
///
/// `Send`: set it up on one thread and run it on another.
pub struct Server {
    // Teardown order (Drop, then fields in this order): disable, unbind the channels
    // (in Drop), unmap the pages, destroy the server, close the channel handle.
    vcpu_ports: Vec<Port>,
    buf_port: Option<Port>,
    slots: Vec<Slot>,
    ring: Option<Ring>,
    buf_page: Option<Mapping<ReadWrite>>,
    ioreq_page: Mapping<ReadWrite>,
    d: Dispatch<GuestMem>,
    stop: Arc<StopInner>,
    server: IoreqServer,
    ch: EventChannels,
    dm: DeviceModel,
    dom: DomId,
}

// SAFETY: the raw pointers in `slots` and `ring` point into `ioreq_page` / `buf_page`, which
// the Server owns and moves with it; nothing else in it is tied to a thread.
unsafe impl Send for Server {}

/// Bytes of guest memory copied at a time for `data_is_ptr` requests (on the stack).
const COPY_CHUNK: usize = 512;

/// How many ports one wake-up reads at most (on the stack).
const PORTS_PER_READ: usize = 64;

impl Server {
    /// The guest served.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// The ioreq server (its id, and dm_ops on it such as claiming more ranges).
    pub fn ioreq_server(&self) -> &IoreqServer {
        &self.server
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

    /// A handle that stops [`Server::run`] (or `run_async`) from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            inner: self.stop.clone(),
        }
    }

    /// Serves requests on this thread until [`StopHandle::stop`] is called or an
    /// event-channel operation fails.
    pub fn run(&mut self) -> Result<()> {
        let mut buf = [Port::default(); PORTS_PER_READ];
        loop {
            if self.stop.flag.load(Ordering::Acquire) {
                self.serve_all_slots()?;
                return Ok(());
            }
            let n = self.ch.try_pending_many(&mut buf)?.len();
            if n == 0 {
                self.wait(-1)?;
                continue;
            }
            self.serve_ports(&buf[..n])?;
        }
    }

    /// Serves one batch: waits up to `timeout` for pending ports and serves them; returns
    /// how many ports were pending (0 on timeout or when stopped). For loops of your own.
    pub fn run_once(&mut self, timeout: std::time::Duration) -> Result<usize> {
        let mut buf = [Port::default(); PORTS_PER_READ];
        let mut n = self.ch.try_pending_many(&mut buf)?.len();
        if n == 0 && !self.stop.flag.load(Ordering::Acquire) {
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            self.wait(ms)?;
            n = self.ch.try_pending_many(&mut buf)?.len();
        }
        if n > 0 {
            self.serve_ports(&buf[..n])?;
        }
        Ok(n)
    }

    /// Serves requests in a tokio task until stopped (feature `tokio`). The event-channel fd
    /// is registered with tokio's reactor; everything else is as in [`Server::run`].
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
        let stop = self.stop.clone();
        let mut buf = [Port::default(); PORTS_PER_READ];
        loop {
            if stop.flag.load(Ordering::Acquire) {
                self.serve_all_slots()?;
                return Ok(());
            }
            let n = self.ch.try_pending_many(&mut buf)?.len();
            if n == 0 {
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
        }
    }

    /// Waits until the event channels or the stop eventfd are readable, at most
    /// `timeout_ms` (-1: no limit).
    fn wait(&self, timeout_ms: i32) -> Result<()> {
        let mut fds = [
            libc::pollfd {
                fd: self.ch.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.stop.efd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds on the stack, alive across the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if r < 0 && Errno::last() != Errno::EINTR {
            return Err(Error::last_os_error("ioreq server poll", Some(self.dom)));
        }
        Ok(())
    }

    fn serve_ports(&mut self, ports: &[Port]) -> Result<()> {
        let t0 = std::time::Instant::now();
        let r = self.serve_ports_inner(ports);
        self.d.stats.busy_ns += t0.elapsed().as_nanos() as u64;
        r
    }

    fn serve_ports_inner(&mut self, ports: &[Port]) -> Result<()> {
        self.d.stats.wakeups += 1;
        // Unmask first: an event that comes while we serve is queued again, not lost.
        self.ch.unmask_many(ports)?;
        // Buffered writes were issued before any synchronous request now pending: serve
        // them first, whichever port woke us.
        if let Some(r) = self.ring {
            self.d.drain_ring(r);
        }
        for &p in ports {
            if let Some(v) = self.vcpu_ports.iter().position(|&q| q == p) {
                self.serve_slot(v)?;
            }
        }
        Ok(())
    }

    /// Serves every slot that holds a request (used when stopping).
    fn serve_all_slots(&mut self) -> Result<()> {
        if let Some(r) = self.ring {
            self.d.drain_ring(r);
        }
        for v in 0..self.slots.len() {
            self.serve_slot(v)?;
        }
        Ok(())
    }

    fn serve_slot(&mut self, v: usize) -> Result<()> {
        let s = self.slots[v];
        if let Some(req) = s.take() {
            let answer = self.d.handle(&req);
            s.complete(answer);
            self.ch.notify(self.vcpu_ports[v])?;
            self.d.stats.notifies += 1;
        }
        Ok(())
    }
}

/// Guest memory for `data_is_ptr` requests (a trait so the dispatch logic can be tested
/// without Xen).
pub(crate) trait GuestMemory {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()>;
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()>;
    fn invalidate(&mut self);
}

impl GuestMemory for GuestMem {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        GuestMem::read(self, gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        GuestMem::write(self, gpa, data)
    }
    fn invalidate(&mut self) {
        GuestMem::invalidate(self)
    }
}

/// The devices and the request logic, apart from Xen's handles.
pub(crate) struct Dispatch<M> {
    pub(crate) devices: Vec<Box<dyn Device>>,
    keys: Vec<(Key, usize)>,
    pub(crate) stats: Stats,
    pub(crate) mem: M,
}

impl<M: GuestMemory> Dispatch<M> {
    fn drain_ring(&mut self, ring: Ring) {
        while let Some(r) = ring.peek() {
            if r.kind != slot::IOREQ_TYPE_TIMEOFFSET {
                self.stats.buffered += 1;
            }
            if !r.read {
                match r.kind {
                    slot::IOREQ_TYPE_PIO => self.port_write(r.addr as u16, r.size, r.data),
                    slot::IOREQ_TYPE_COPY => self.mmio_write(r.addr, r.size, r.data),
                    // Xen broadcasts the guest's RTC offset changes through the ring.
                    slot::IOREQ_TYPE_TIMEOFFSET => self.stats.timeoffset += 1,
                    _ => self.stats.other += 1,
                }
            }
            ring.consume(r.slots);
        }
    }

    fn find(&self, want: impl Fn(&Key) -> bool) -> Option<usize> {
        self.keys.iter().find(|(k, _)| want(k)).map(|&(_, i)| i)
    }

    fn port_read(&mut self, port: u16, size: u8) -> u64 {
        let p = u64::from(port);
        match self.find(|k| matches!(*k, Key::Port(a, b) if a <= p && p <= b)) {
            Some(i) => u64::from(self.devices[i].port_read(port, size)) & mask(size),
            None => {
                self.stats.unclaimed += 1;
                mask(size)
            }
        }
    }

    fn port_write(&mut self, port: u16, size: u8, value: u64) {
        let p = u64::from(port);
        match self.find(|k| matches!(*k, Key::Port(a, b) if a <= p && p <= b)) {
            Some(i) => self.devices[i].port_write(port, size, (value & mask(size)) as u32),
            None => self.stats.unclaimed += 1,
        }
    }

    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        match self.find(|k| matches!(*k, Key::Mmio(a, b) if a <= addr && addr <= b)) {
            Some(i) => self.devices[i].mmio_read(addr, size) & mask(size),
            None => {
                self.stats.unclaimed += 1;
                mask(size)
            }
        }
    }

    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        match self.find(|k| matches!(*k, Key::Mmio(a, b) if a <= addr && addr <= b)) {
            Some(i) => self.devices[i].mmio_write(addr, size, value & mask(size)),
            None => self.stats.unclaimed += 1,
        }
    }

    /// Handles one synchronous request; returns the value to put in `data`, if any.
    fn handle(&mut self, req: &Ioreq) -> Option<u64> {
        match req.kind {
            slot::IOREQ_TYPE_PIO => {
                self.stats.port += 1;
                self.io(req, true)
            }
            slot::IOREQ_TYPE_COPY => {
                self.stats.mmio += 1;
                self.io(req, false)
            }
            slot::IOREQ_TYPE_PCI_CONFIG => {
                self.stats.pci_config += 1;
                let raw = (req.addr >> 32) as u32;
                let reg = (req.addr & 0xfff) as u16;
                let size = req.size.min(4) as u8;
                let i = self.find(|k| matches!(*k, Key::Pci(s) if s == raw));
                let Some(i) = i else {
                    self.stats.unclaimed += 1;
                    return req.read.then_some(mask(size));
                };
                let dev = Sbdf::from_raw(raw);
                if req.read {
                    let v = self.devices[i].pci_config_read(dev, reg, size);
                    Some(u64::from(v) & mask(size))
                } else {
                    let v = (req.data & mask(size)) as u32;
                    self.devices[i].pci_config_write(dev, reg, size, v);
                    None
                }
            }
            slot::IOREQ_TYPE_INVALIDATE => {
                self.stats.invalidate += 1;
                self.mem.invalidate();
                None
            }
            slot::IOREQ_TYPE_TIMEOFFSET => {
                self.stats.timeoffset += 1;
                None
            }
            _ => {
                self.stats.other += 1;
                None
            }
        }
    }

    /// Port I/O (`pio`) or MMIO, with `rep` counts and `data_is_ptr`.
    fn io(&mut self, req: &Ioreq, pio: bool) -> Option<u64> {
        let size = req.size;
        if !matches!(size, 1 | 2 | 4 | 8) || (pio && size == 8) {
            self.stats.unclaimed += 1;
            return (req.read && !req.data_is_ptr).then_some(u64::MAX);
        }
        let size = size as u8;
        let step = u64::from(size);
        let count = req.count.max(1);
        // Element i's device address: a port stays put, MMIO moves with the direction flag.
        let at = |i: u32| {
            let off = u64::from(i).wrapping_mul(step);
            if pio {
                req.addr
            } else if req.df {
                req.addr.wrapping_sub(off)
            } else {
                req.addr.wrapping_add(off)
            }
        };
        let dev_read = |s: &mut Self, a: u64| {
            if pio {
                s.port_read(a as u16, size)
            } else {
                s.mmio_read(a, size)
            }
        };
        let dev_write = |s: &mut Self, a: u64, v: u64| {
            if pio {
                s.port_write(a as u16, size, v)
            } else {
                s.mmio_write(a, size, v)
            }
        };
        if !req.data_is_ptr {
            if req.read {
                let mut v = 0;
                for i in 0..count {
                    v = dev_read(self, at(i));
                }
                return Some(v);
            }
            for i in 0..count {
                dev_write(self, at(i), req.data);
            }
            return None;
        }
        // Through guest memory, a chunk of elements per copy (on the stack): the chunk's
        // bytes are contiguous in guest memory, lowest address first; with the direction
        // flag set, element i0 is the highest of them.
        let n = usize::from(size);
        let per = (COPY_CHUNK / n) as u32;
        let mut i0 = 0u32;
        while i0 < count {
            let k = (count - i0).min(per);
            let len = k as usize * n;
            let first = u64::from(i0).wrapping_mul(step);
            let lo = if req.df {
                req.data
                    .wrapping_sub(first)
                    .wrapping_sub(u64::from(k - 1).wrapping_mul(step))
            } else {
                req.data.wrapping_add(first)
            };
            let pos = |j: u32| (if req.df { k - 1 - j } else { j }) as usize * n;
            let mut buf = [0u8; COPY_CHUNK];
            if req.read {
                for j in 0..k {
                    let v = dev_read(self, at(i0 + j));
                    let p = pos(j);
                    buf[p..p + n].copy_from_slice(&v.to_le_bytes()[..n]);
                }
                if self.mem.write(lo, &buf[..len]).is_err() {
                    self.stats.memory_errors += 1;
                }
            } else {
                if self.mem.read(lo, &mut buf[..len]).is_err() {
                    self.stats.memory_errors += 1;
                }
                for j in 0..k {
                    let p = pos(j);
                    let mut b = [0u8; 8];
                    b[..n].copy_from_slice(&buf[p..p + n]);
                    dev_write(self, at(i0 + j), u64::from_le_bytes(b));
                }
            }
            i0 += k;
        }
        None
    }
}

/// All-ones in the low `size` bytes.
fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stop Xen sending requests, then release the channels; the pages are unmapped and
        // the server destroyed as the fields drop.
        let _ = self.server.disable();
        for &p in &self.vcpu_ports {
            let _ = self.ch.unbind(p);
        }
        if let Some(p) = self.buf_port {
            let _ = self.ch.unbind(p);
        }
    }
}

impl core::fmt::Debug for Server {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("dom", &self.dom)
            .field("server", &self.server)
            .field("vcpus", &self.slots.len())
            .field("devices", &self.d.devices.len())
            .field("stats", &self.d.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_alloc::allocations;

    /// Guest memory: `pages` bytes starting at guest-physical `BASE`.
    struct Ram(Vec<u8>);
    const BASE: u64 = 0x10_0000;

    impl GuestMemory for Ram {
        fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
            let o = (gpa - BASE) as usize;
            buf.copy_from_slice(&self.0[o..o + buf.len()]);
            Ok(())
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
            let o = (gpa - BASE) as usize;
            self.0[o..o + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn invalidate(&mut self) {}
    }

    /// Records accesses into a fixed array (no allocation); reads answer a counter.
    struct Rec {
        log: Log,
        next: u64,
    }

    impl Device for Rec {
        fn port_read(&mut self, port: u16, size: u8) -> u32 {
            self.next += 1;
            self.log
                .lock()
                .unwrap()
                .push(('i', port.into(), size, self.next));
            self.next as u32
        }
        fn port_write(&mut self, port: u16, size: u8, value: u32) {
            self.log
                .lock()
                .unwrap()
                .push(('o', port.into(), size, value.into()));
        }
        fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
            self.next += 1;
            self.log.lock().unwrap().push(('r', addr, size, self.next));
            self.next
        }
        fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
            self.log.lock().unwrap().push(('w', addr, size, value));
        }
        fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
            self.log
                .lock()
                .unwrap()
                .push(('c', u64::from(dev.to_raw()), size, reg.into()));
            0xdead_beef
        }
    }

    type Log = Arc<std::sync::Mutex<Vec<(char, u64, u8, u64)>>>;

    fn dispatch() -> (Dispatch<Ram>, Log) {
        let log: Log = Arc::new(std::sync::Mutex::new(Vec::with_capacity(100_000)));
        let b = ServerBuilder::new(DomId::new(1)).device(
            Rec {
                log: log.clone(),
                next: 0,
            },
            [
                Claim::Ports(0x510..=0x513),
                Claim::Mmio(0xe000_0000..=0xe000_ffff),
                Claim::Pci(Sbdf::new(0, 0, 3, 0).unwrap()),
            ],
        );
        let ram: Vec<u8> = (0..3 * 4096).map(|i| (i * 7 + i / 256) as u8).collect();
        let d = Dispatch {
            devices: b.devices,
            keys: b.keys,
            stats: Stats::default(),
            mem: Ram(ram),
        };
        (d, log)
    }

    #[allow(clippy::too_many_arguments)]
    fn req(
        kind: u8,
        addr: u64,
        data: u64,
        count: u32,
        size: u32,
        ptr: bool,
        read: bool,
        df: bool,
    ) -> Ioreq {
        Ioreq {
            addr,
            data,
            count,
            size,
            data_is_ptr: ptr,
            read,
            df,
            kind,
        }
    }

    #[test]
    fn rep_outs_through_guest_memory_both_directions() {
        for df in [false, true] {
            let (mut d, log) = dispatch();
            // 700 words = 1400 bytes: three chunks, across a page boundary at BASE + 4096.
            let start = BASE + 4096 - 600;
            let first = if df { start + 2 * 699 } else { start };
            let r = req(slot::IOREQ_TYPE_PIO, 0x510, first, 700, 2, true, false, df);
            assert_eq!(d.handle(&r), None);
            let log = log.lock().unwrap();
            assert_eq!(log.len(), 700);
            for (j, e) in log.iter().enumerate() {
                let i = if df { 699 - j } else { j };
                let o = 4096 - 600 + 2 * i;
                let want = u64::from(u16::from_le_bytes([d.mem.0[o], d.mem.0[o + 1]]));
                assert_eq!(*e, ('o', 0x510, 2, want), "df {df} element {j}");
            }
        }
    }

    #[test]
    fn rep_ins_and_string_mmio_reads_fill_guest_memory() {
        for df in [false, true] {
            let (mut d, log) = dispatch();
            let first = if df { BASE + 4 * 299 } else { BASE };
            let r = req(slot::IOREQ_TYPE_PIO, 0x510, first, 300, 4, true, true, df);
            assert_eq!(d.handle(&r), None);
            for i in 0..300usize {
                // Element i (counter value i + 1) lands at first +/- 4 i.
                let o = if df { 4 * (299 - i) } else { 4 * i };
                let v = u32::from_le_bytes(d.mem.0[o..o + 4].try_into().unwrap());
                assert_eq!(v, i as u32 + 1, "df {df} element {i}");
            }
            // MMIO: the device address moves with the direction flag too.
            log.lock().unwrap().clear();
            let r = req(
                slot::IOREQ_TYPE_COPY,
                0xe000_1000,
                BASE + 8192,
                3,
                8,
                true,
                true,
                df,
            );
            d.handle(&r);
            let addrs: Vec<u64> = log.lock().unwrap().iter().map(|e| e.1).collect();
            let want = if df {
                [0xe000_1000, 0xe000_0ff8, 0xe000_0ff0]
            } else {
                [0xe000_1000, 0xe000_1008, 0xe000_1010]
            };
            assert_eq!(addrs, want);
        }
    }

    #[test]
    fn values_pci_config_and_unclaimed() {
        let (mut d, log) = dispatch();
        // A port read answers by value, masked to the size.
        let r = req(slot::IOREQ_TYPE_PIO, 0x511, 0, 1, 1, false, true, false);
        assert_eq!(d.handle(&r), Some(1));
        // PCI config: SBDF in the high half of addr, register in the low bits.
        let sbdf = Sbdf::new(0, 0, 3, 0).unwrap();
        let r = req(
            slot::IOREQ_TYPE_PCI_CONFIG,
            (u64::from(sbdf.to_raw()) << 32) | 0x3e,
            0,
            1,
            2,
            false,
            true,
            false,
        );
        assert_eq!(d.handle(&r), Some(0xbeef));
        assert_eq!(log.lock().unwrap().last(), Some(&('c', 0x18, 2, 0x3e)));
        // Another function's config space and an unregistered port: all-ones.
        let r = req(
            slot::IOREQ_TYPE_PCI_CONFIG,
            1 << 40,
            0,
            1,
            4,
            false,
            true,
            false,
        );
        assert_eq!(d.handle(&r), Some(0xffff_ffff));
        let r = req(slot::IOREQ_TYPE_PIO, 0x600, 0, 1, 2, false, true, false);
        assert_eq!(d.handle(&r), Some(0xffff));
        // Invalidate and time-offset are acknowledged.
        assert_eq!(
            d.handle(&req(
                slot::IOREQ_TYPE_INVALIDATE,
                0,
                0,
                1,
                0,
                false,
                false,
                false
            )),
            None
        );
        assert_eq!(
            d.handle(&req(
                slot::IOREQ_TYPE_TIMEOFFSET,
                0,
                5,
                1,
                0,
                false,
                false,
                false
            )),
            None
        );
        let s = d.stats;
        assert_eq!(
            (
                s.port,
                s.pci_config,
                s.invalidate,
                s.timeoffset,
                s.unclaimed
            ),
            (2, 2, 1, 1, 2)
        );
        assert_eq!(
            s.to_string(),
            "port=2 mmio=0 pci-config=2 buffered=0 other=2"
        );
    }

    #[test]
    fn requests_allocate_nothing() {
        let (mut d, log) = dispatch();
        let reqs = [
            req(slot::IOREQ_TYPE_PIO, 0x510, 0x41, 1, 1, false, false, false),
            req(slot::IOREQ_TYPE_PIO, 0x510, 0, 1, 4, false, true, false),
            req(
                slot::IOREQ_TYPE_PIO,
                0x510,
                BASE,
                1000,
                4,
                true,
                false,
                false,
            ),
            req(
                slot::IOREQ_TYPE_COPY,
                0xe000_1000,
                BASE + 8 * 99,
                100,
                8,
                true,
                true,
                true,
            ),
            req(
                slot::IOREQ_TYPE_COPY,
                0xe000_0000,
                7,
                1,
                8,
                false,
                false,
                false,
            ),
            req(
                slot::IOREQ_TYPE_PCI_CONFIG,
                0x18 << 32,
                0,
                1,
                4,
                false,
                true,
                false,
            ),
        ];
        for r in &reqs {
            d.handle(r);
        }
        log.lock().unwrap().clear();
        let a0 = allocations();
        for _ in 0..10 {
            for r in &reqs {
                d.handle(r);
            }
        }
        assert_eq!(allocations() - a0, 0);
    }

    #[test]
    fn buffered_records_reach_the_devices() {
        #[repr(C, align(4096))]
        struct Page([u8; 4096]);
        let mut page = Box::new(Page([0; 4096]));
        let w = |kind: u32, size_log2: u32, addr: u32| kind | (size_log2 << 10) | (addr << 12);
        let put = |p: &mut Page, slot: usize, w: u32, data: u32| {
            p.0[8 + 8 * slot..12 + 8 * slot].copy_from_slice(&w.to_le_bytes());
            p.0[12 + 8 * slot..16 + 8 * slot].copy_from_slice(&data.to_le_bytes());
        };
        // An 8-byte MMIO write (two slots) and a 2-byte port write; the MMIO address must fit
        // in the record's 20 bits, so claim low MMIO for this test.
        put(&mut page, 0, w(1, 3, 0xa0008), 0x5566_7788);
        put(&mut page, 1, w(1, 3, 0xa0008), 0x1122_3344);
        put(&mut page, 2, w(0, 1, 0x512), 0xbeef);
        page.0[4..8].copy_from_slice(&3u32.to_le_bytes());
        let log: Log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = ServerBuilder::new(DomId::new(1)).device(
            Rec {
                log: log.clone(),
                next: 0,
            },
            [Claim::Ports(0x510..=0x513), Claim::Mmio(0xa0000..=0xbffff)],
        );
        let mut d = Dispatch {
            devices: b.devices,
            keys: b.keys,
            stats: Stats::default(),
            mem: Ram(vec![0; 4096]),
        };
        // SAFETY: our page, alive for the test.
        let ring = unsafe { Ring::new(page.0.as_mut_ptr()) };
        d.drain_ring(ring);
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                ('w', 0xa0008, 8, 0x1122_3344_5566_7788),
                ('o', 0x512, 2, 0xbeef)
            ]
        );
        assert_eq!(d.stats.buffered, 2);
        assert_eq!(&page.0[0..4], &3u32.to_le_bytes());
    }
}
