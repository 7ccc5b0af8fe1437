//! Raw ioreq-server scaffolding for the device-model tests: an ioreq page mapped through
//! `XENMEM_resource_ioreq_server`, one `/dev/xen/evtchn` port, and [`Serve`], a minimal
//! synchronous server for vCPU 0 that answers one request at a time.
//!
//! Deliberately raw (an `mmap` of the privcmd fd filled by `Privcmd::mmap_resource`, evtchn
//! ioctls): it checks `xen-devicemodel`'s dm_ops without going through the crates
//! (`xen-foreignmemory`, `xen-evtchn`, the `server` runtime) that own that plumbing. The
//! `ioreq_t` layout comes from `xen_sys::hvm`.
//!
//! Also the small helpers the scenarios share: [`report!`](crate::report), [`wait_until`],
//! [`pattern_hash`].

use std::fs::{File, OpenOptions};
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use xen_devicemodel::{DeviceModel, DomId, IoreqServer};
use xen_sys::hvm;

use crate::protocol::{fnv1a64, pattern_byte};

/// Prints a line of the report even when libtest captures output (straight to fd 2), so the
/// measured facts show in `cargo xtask xen-test`'s log; prefixed with the calling package's
/// name.
#[macro_export]
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}: {}",
            env!("CARGO_PKG_NAME"),
            format!($($t)*)
        );
    }};
}

/// The FNV-1a hash of a page filled with `pattern_byte(seed, ..)` (what
/// [`TestGuest::checksum`](crate::TestGuest::checksum) returns after a fill with `seed`).
pub fn pattern_hash(seed: u64) -> u64 {
    fnv1a64((0..4096).map(|i| pattern_byte(seed, i)))
}

/// Polls `f` every 2 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The synchronous ioreq page of a server, mapped through `XENMEM_resource_ioreq_server`.
#[derive(Debug)]
pub struct IoreqPage {
    ptr: *mut u8,
}

// SAFETY: shared memory accessed with volatile reads/writes only.
unsafe impl Send for IoreqPage {}
// SAFETY: as above.
unsafe impl Sync for IoreqPage {}

impl IoreqPage {
    /// Maps `srv`'s synchronous ioreq page (which makes Xen allocate it); panics on failure.
    pub fn map(dm: &DeviceModel, srv: &IoreqServer) -> IoreqPage {
        let xen = dm.privcmd();
        // SAFETY: a fresh shared mapping of the privcmd fd, one page; privcmd fills it below.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                xen.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap privcmd");
        // SAFETY: `ptr` is the start of a one-page mapping of this privcmd fd, unused so far.
        unsafe {
            xen.mmap_resource(
                srv.domid(),
                xen_sys::memory::XENMEM_resource_ioreq_server,
                u32::from(srv.id().get()),
                1, // XENMEM_resource_ioreq_server_frame_ioreq(0)
                1,
                ptr,
            )
        }
        .expect("mmap_resource ioreq page");
        IoreqPage { ptr: ptr.cast() }
    }

    /// The address of vCPU `vcpu`'s `ioreq_t`.
    pub fn slot(&self, vcpu: usize) -> *mut u8 {
        // SAFETY: one ioreq_t per vCPU, all within the page for our guests.
        unsafe { self.ptr.add(size_of::<hvm::ioreq>() * vcpu) }
    }

    /// vCPU `vcpu`'s request state (`STATE_*`).
    pub fn state(&self, vcpu: usize) -> u8 {
        // SAFETY: the flag byte of ioreq_t holds state (bits 0-3), data_is_ptr, dir, df.
        unsafe { core::ptr::read_volatile(self.slot(vcpu).add(OFF_FLAGS)) & FLAGS_STATE }
    }

    /// vCPU `vcpu`'s event channel in the guest (written by Xen when the server is enabled).
    pub fn vp_eport(&self, vcpu: usize) -> u32 {
        // SAFETY: vp_eport is an aligned u32 of the slot.
        unsafe { core::ptr::read_volatile(self.slot(vcpu).add(OFF_VP_EPORT).cast::<u32>()) }
    }
}

impl Drop for IoreqPage {
    fn drop(&mut self) {
        // SAFETY: our mapping, nobody holds references into it.
        unsafe { libc::munmap(self.ptr.cast(), 4096) };
    }
}

/// One `/dev/xen/evtchn` file with one interdomain port bound.
#[derive(Debug)]
pub struct Evtchn {
    file: File,
    port: u32,
}

impl Evtchn {
    /// Binds the guest's `remote_port` of `dom`; panics on failure.
    pub fn bind(dom: DomId, remote_port: u32) -> Evtchn {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/xen/evtchn")
            .expect("open /dev/xen/evtchn");
        let mut b = xen_sys::evtchn::ioctl_evtchn_bind_interdomain {
            remote_domain: u32::from(dom.get()),
            remote_port,
        };
        // SAFETY: the ioctl reads the struct, which lives across the call.
        let r = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                xen_sys::evtchn::IOCTL_EVTCHN_BIND_INTERDOMAIN as _,
                &mut b,
            )
        };
        assert!(
            r >= 0,
            "bind_interdomain d{dom} port {remote_port}: {}",
            std::io::Error::last_os_error()
        );
        Evtchn {
            file,
            port: r as u32,
        }
    }

    /// Signals the bound port; panics on failure.
    pub fn notify(&self) {
        let mut n = xen_sys::evtchn::ioctl_evtchn_notify { port: self.port };
        // SAFETY: as above.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                xen_sys::evtchn::IOCTL_EVTCHN_NOTIFY as _,
                &mut n,
            )
        };
        assert!(r >= 0, "notify: {}", std::io::Error::last_os_error());
    }
}

/// One request as read from the ioreq page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Req {
    /// Port, guest-physical address, or SBDF << 32 | register.
    pub addr: u64,
    /// The value written (or the guest address of the data for `data_is_ptr`).
    pub data: u64,
    /// Access size in bytes.
    pub size: u32,
    /// Repeat count.
    pub count: u32,
    /// A read (`IOREQ_READ`).
    pub read: bool,
    /// `IOREQ_TYPE_*`.
    pub kind: u8,
}

/// `IOREQ_TYPE_PIO`.
pub const IOREQ_TYPE_PIO: u8 = hvm::IOREQ_TYPE_PIO as u8;
/// `IOREQ_TYPE_COPY`.
pub const IOREQ_TYPE_COPY: u8 = hvm::IOREQ_TYPE_COPY as u8;
/// `IOREQ_TYPE_PCI_CONFIG`.
pub const IOREQ_TYPE_PCI_CONFIG: u8 = hvm::IOREQ_TYPE_PCI_CONFIG as u8;
/// Offsets in `ioreq_t`, from the generated struct (`_bitfield_1` is the flag byte:
/// `state:4, data_is_ptr:1, dir:1, df:1`).
const OFF_DATA: usize = offset_of!(hvm::ioreq, data);
const OFF_COUNT: usize = offset_of!(hvm::ioreq, count);
const OFF_SIZE: usize = offset_of!(hvm::ioreq, size);
const OFF_VP_EPORT: usize = offset_of!(hvm::ioreq, vp_eport);
const OFF_FLAGS: usize = offset_of!(hvm::ioreq, _bitfield_1);
const OFF_TYPE: usize = offset_of!(hvm::ioreq, type_);
const FLAGS_STATE: u8 = 0xf;
const FLAG_READ: u8 = (hvm::IOREQ_READ as u8) << 5;
const STATE_IOREQ_READY: u8 = hvm::STATE_IOREQ_READY as u8;
const STATE_IORESP_READY: u8 = hvm::STATE_IORESP_READY as u8;

/// A minimal synchronous server for vCPU 0: waits for a request, answers reads with
/// `answer`, completes it and notifies.
#[derive(Debug)]
pub struct Serve {
    /// The mapped ioreq page.
    pub page: IoreqPage,
    evt: Evtchn,
}

impl Serve {
    /// Maps the ioreq page (which makes Xen allocate it), enables the server (which makes
    /// Xen write each vCPU's event channel into the page: it writes them only into pages
    /// that exist at that moment), then binds vCPU 0's channel.
    pub fn setup(dm: &DeviceModel, srv: &IoreqServer) -> Serve {
        let page = IoreqPage::map(dm, srv);
        srv.enable().unwrap();
        let port = page.vp_eport(0);
        let mut head = [0u8; 64];
        for (i, b) in head.iter_mut().enumerate() {
            // SAFETY: the page is mapped; volatile byte reads.
            *b = unsafe { core::ptr::read_volatile(page.ptr.add(i)) };
        }
        crate::report!(
            "ioreq page of server {}: vp_eport[0] = {port}, first bytes {head:02x?}",
            srv.id()
        );
        let evt = Evtchn::bind(srv.domid(), port);
        Serve { page, evt }
    }

    /// Serves one request if one arrives within `timeout`.
    pub fn one(&self, timeout: Duration, answer: u64, gave_up: impl Fn() -> bool) -> Option<Req> {
        let t0 = Instant::now();
        while self.page.state(0) != STATE_IOREQ_READY {
            if t0.elapsed() > timeout || gave_up() {
                if t0.elapsed() > timeout {
                    let mut slot = [0u8; 32];
                    for (i, b) in slot.iter_mut().enumerate() {
                        // SAFETY: the page is mapped; volatile byte reads.
                        *b = unsafe { core::ptr::read_volatile(self.page.slot(0).add(i)) };
                    }
                    crate::report!("no request within {timeout:?}; vCPU 0 slot: {slot:02x?}");
                }
                return None;
            }
            std::thread::yield_now();
        }
        fence(Ordering::Acquire);
        let s = self.page.slot(0);
        // SAFETY: fields of ioreq_t at their offsets (from the generated struct, addr first);
        // the page is mapped while `self` lives.
        let req = unsafe {
            let flags = core::ptr::read_volatile(s.add(OFF_FLAGS));
            Req {
                addr: core::ptr::read_volatile(s.cast::<u64>()),
                data: core::ptr::read_volatile(s.add(OFF_DATA).cast::<u64>()),
                count: core::ptr::read_volatile(s.add(OFF_COUNT).cast::<u32>()),
                size: core::ptr::read_volatile(s.add(OFF_SIZE).cast::<u32>()),
                read: flags & FLAG_READ != 0,
                kind: core::ptr::read_volatile(s.add(OFF_TYPE)),
            }
        };
        // SAFETY: as above; we own the request until we mark it IORESP_READY.
        unsafe {
            if req.read {
                core::ptr::write_volatile(s.add(OFF_DATA).cast::<u64>(), answer);
            }
            fence(Ordering::Release);
            let flags = core::ptr::read_volatile(s.add(OFF_FLAGS));
            core::ptr::write_volatile(
                s.add(OFF_FLAGS),
                (flags & !FLAGS_STATE) | STATE_IORESP_READY,
            );
        }
        fence(Ordering::SeqCst);
        self.evt.notify();
        Some(req)
    }
}

/// Runs `guest_side` on another thread (the guest's vCPU blocks on our answer) while this
/// thread serves at most one request; returns both results.
pub fn with_guest<T: Send>(
    serve: &Serve,
    answer: u64,
    guest_side: impl FnOnce() -> T + Send,
) -> (Option<Req>, T) {
    std::thread::scope(|s| {
        let h = s.spawn(guest_side);
        // Stop waiting once the guest's command has finished without reaching us.
        let req = serve.one(Duration::from_secs(10), answer, || h.is_finished());
        // If nothing arrived, the guest's command finished on its own (unclaimed access).
        (req, h.join().expect("guest thread"))
    })
}
