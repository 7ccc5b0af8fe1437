//! Set-up and teardown: [`ServerBuilder`] (creating the ioreq server, mapping its pages,
//! claiming the ranges, binding the event channels) and [`Server`]'s `Drop`.

// Unsafe: places the slots in the mapped ioreq page.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use xen_evtchn::EventChannels;
use xen_foreignmemory::{ForeignMemory, Mapping, ReadWrite, Resource};

use super::ctx::XenPlatform;
use super::device::{Claim, Device, Key};
use super::dispatch::Dispatch;
use super::fast::{self, IoreqPages};
use super::guestmem::GuestMem;
use super::slot::{self, Ring, Slot};
use super::stop::StopInner;
use super::Server;
use crate::{BufIoreqMode, DeviceModel, DomId, Errno, Error, IoreqServer, Result};

/// Builds a [`Server`]: the guest, the buffered mode, the devices and their claims.
pub struct ServerBuilder {
    dom: DomId,
    mode: BufIoreqMode,
    restrict: bool,
    dm: Option<DeviceModel>,
    pub(super) devices: Vec<Box<dyn Device>>,
    pub(super) keys: Vec<(Key, usize)>,
    claims: Vec<Claim>,
}

impl core::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("dom", &self.dom)
            .field("mode", &self.mode)
            .field("restrict", &self.restrict)
            .field("devices", &self.devices.len())
            .field("claims", &self.claims.len())
            .finish_non_exhaustive()
    }
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
            self.keys.push((Key::of(&c), index));
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
        // The same privcmd file as the dm_ops: one open file, one restriction.
        let fm = ForeignMemory::from_privcmd(dm.privcmd().clone());
        let buffered = self.mode != BufIoreqMode::Off;
        let (ioreq_page, buf_page, by_resource) = map_pages(&fm, &server, buffered)?;
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
            ring_backlog: false,
            d: Dispatch::with_platform(
                self.devices,
                self.keys,
                GuestMem::new(fm, dom),
                XenPlatform {
                    server,
                    fast: Arc::default(),
                    pages: IoreqPages::default(),
                },
            ),
            stop: Arc::new(StopInner {
                flag: AtomicBool::new(false),
                efd: eventfd()?,
                #[cfg(feature = "tokio")]
                notify: tokio::sync::Notify::new(),
            }),
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
            let p = srv.ch.bind_interdomain(dom, remote)?;
            srv.vcpu_ports.push(p);
        }
        // The kernel's ioeventfd reads the slots through the pages privcmd mapped as a
        // resource; the legacy mapping (frames of the guest's physical map) is not offered,
        // nor a PV domain's mapping (see `fast::ioeventfd`).
        if by_resource && !fast::dom0_is_pv() {
            srv.d.plat.pages = IoreqPages {
                page: base as usize,
                ports: srv.vcpu_ports.iter().map(|p| p.port().get()).collect(),
            };
        }
        if let Some(page) = &srv.buf_page {
            // SAFETY: the buffered page is mapped for as long as the Server lives.
            srv.ring = Some(unsafe { Ring::new(page.as_mut_ptr()) });
            if let Some(remote) = srv.d.plat.server.info()?.bufioreq_port {
                srv.buf_port = Some(srv.ch.bind_interdomain(dom, remote)?);
            }
        }
        if self.restrict {
            xen_hypercall::restrict_all(dom)?;
        }
        Ok(srv)
    }
}

fn eventfd() -> Result<OwnedFd> {
    xen_hypercall::sys::eventfd(true).map_err(|e| Error::os("ioreq server eventfd", None, e))
}

/// Maps the synchronous page and (if any) the buffered page of `server`.
fn map_pages(
    fm: &ForeignMemory,
    server: &IoreqServer,
    buffered: bool,
) -> Result<(Mapping<ReadWrite>, Option<Mapping<ReadWrite>>, bool)> {
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
                Some(fm.map_resource(
                    dom,
                    res,
                    Resource::IOREQ_SERVER_BUFIOREQ_FRAME,
                    1,
                    ReadWrite,
                )?)
            } else {
                None
            };
            Ok((page, buf, true))
        }
        Err(e) if e.is_not_supported() => {
            // Legacy: the frames Xen put into the guest's physical map (while disabled).
            let info = server.info_with_frames()?;
            let gfn = info
                .ioreq_gfn
                .ok_or(Error::os(OP, Some(dom), Errno::ENOENT))?;
            let page = fm.map(dom, &[gfn], ReadWrite)?;
            let buf = match info.bufioreq_gfn {
                Some(g) if buffered => Some(fm.map(dom, &[g], ReadWrite)?),
                _ => None,
            };
            Ok((page, buf, false))
        }
        Err(e) => Err(e),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stop Xen sending requests; the channels are unbound, the pages unmapped and the
        // server destroyed as the fields drop.
        let _ = self.d.plat.server.disable();
        // A request a vCPU posted after the loop returned (and before the disable) would
        // never be answered: Xen does not complete it when the server goes, and that vCPU
        // would wait forever. The devices are still here: serve it.
        let _ = self.serve_all_slots();
        // The kernel's ioeventfds read the ioreq page: removed before it is unmapped (the
        // channels unbind as their ports drop, then the pages are unmapped).
        self.d.bells.clear();
    }
}
