//! Xen device-model operations (dm_op) in safe Rust: ioreq servers, interrupts, memory types,
//! dirty tracking and shutdown — the Rust counterpart of libxendevicemodel, talking to Linux's
//! `/dev/xen/privcmd` through [`xen_hypercall`].
//!
//! ```no_run
//! use xen_devicemodel::{BufIoreqMode, DeviceModel, DomId, IsaIrq};
//!
//! let dm = DeviceModel::open()?;
//! let guest = DomId::new(5);
//! println!("{} vCPUs", dm.nr_vcpus(guest)?);
//!
//! // An ioreq server claiming port 0x402; destroyed when `server` is dropped.
//! let server = dm.create_ioreq_server(guest, BufIoreqMode::Off)?;
//! server.map_port_range(0x402..=0x402)?;
//! server.enable()?;
//!
//! // Pulse ISA IRQ 4 (HVM guests only: see "PVH guests" below).
//! let irq4 = IsaIrq::new(4)?;
//! dm.set_isa_irq_level(guest, irq4, true)?;
//! dm.set_isa_irq_level(guest, irq4, false)?;
//!
//! // From now on this handle can act on `guest` only (the kernel enforces it).
//! dm.restrict(guest)?;
//! # Ok::<(), xen_devicemodel::Error>(())
//! ```
//!
//! # The handle
//! [`DeviceModel`] owns a [`Privcmd`] (shared through an `Arc`: cloning a `DeviceModel` shares
//! the same fd, and an [`IoreqServer`] keeps a clone, so it has no lifetime and can live in the
//! same struct as its handle). Every operation names the target domain; errors name the
//! operation (`"dm_op set_isa_irq_level"`) and the domain, and keep Xen's errno
//! ([`Error`], the workspace's error type).
//!
//! # Costs
//! Every operation except the few that split (below) builds its `xen_dm_op` on the stack and
//! makes exactly one `IOCTL_PRIVCMD_DM_OP` syscall, with no heap allocation (a unit test counts
//! both). Arguments that can never work (a reserved domain id, an ISA IRQ above 15, an empty or
//! overflowing range) are refused before any syscall with [`Error::InvalidArgument`].
//!
//! Operations that could exceed the kernel's per-call limits (privcmd's `dm_op_buf_max_size`,
//! 4096 bytes by default): [`DeviceModel::modified_memory_bulk`] sends its extents in as many
//! calls as needed (256 extents per call with the default limit), transparently.
//! [`DeviceModel::track_dirty_vram`] cannot be split — Xen tracks exactly one range per domain
//! and restarts tracking whenever the range changes — so a range whose bitmap exceeds the limit
//! (32768 frames with the default) is refused with [`Error::BufferTooLarge`] before the call.
//!
//! # Features
//! - `hvm` (default): the operations only HVM and PVH guests have (ioreq servers, interrupts,
//!   memory types, dirty tracking, ...). Xen refuses them for PV guests (`EINVAL`) and for a PV
//!   dom0 (`EPERM`).
//! - `vram` (experimental, off by default): [`VramRegion`][vram], a video-memory region built on
//!   `relocate_memory`, `pin_memory_cacheattr` and `track_dirty_vram`.
//! - `server` (off by default): the ioreq-server runtime in [`server`][server] — a
//!   `Device` trait, a `Server` that sets up an ioreq server from a domain id and runs the
//!   request loop (pulls in `xen-foreignmemory` and `xen-evtchn`). `examples/debugcon.rs`
//!   is a device model in about 40 lines.
//! - `tokio` (implies `server`): `Server::run_async`.
//! - `libxl` (off by default): [`libxl`][libxl], libxl's device-model handshake (QMP on libxl's sockets,
//!   the xenstore state key, through `xen-store`), so `xl` can start your device model itself.
//!
//! # Device models (feature `server`)
//! [`server`][server] is the loop a device model needs: implement `server::Device` (port, MMIO and
//! PCI-config reads and writes) for your device, register it for its ranges with
//! `server::ServerBuilder`, and `Server::run` (or `run_async` with `tokio`) takes the guest's
//! requests from Xen and answers them — synchronous slots, `rep`/`data_is_ptr` requests,
//! the buffered ring, several vCPUs, an optional privilege drop, and a stop handle.
//! `examples/debugcon.rs` is the smallest such program, a debug console at port 0x402:
//! `cargo run -p xen-devicemodel --features server --example debugcon -- <domid>`.
//!
//! # Restriction
//! [`DeviceModel::restrict`] (or [`xen_hypercall::restrict_all`]) limits the handle to one
//! domain: all dm_ops keep working on that domain and fail with `EPERM` on any other. The few
//! operations that are not dm_ops ([`DeviceModel::populate_ram`], [`DeviceModel::s3_suspend`],
//! [`DeviceModel::s3_awaken`], [`DeviceModel::acpi_s_state`]) are ordinary hypercalls, which the
//! kernel refuses on a restricted handle: they fail before any syscall with an `EPERM`
//! [`Error::Os`] whose operation name says `"(not a dm_op: unavailable on a restricted
//! handle)"`.
//!
//! # PVH guests
//! PVH guests have no emulated PIC or IOAPIC. On the Xen 4.17 test machine of this project,
//! `set_isa_irq_level` on a PVH guest once crashed the hypervisor (in `hvm_isa_irq_deassert`).
//! There is no dm_op that tells a PVH guest from an HVM one (the domain's emulation flags are
//! only in the unstable domctl interface, which a restricted device model cannot use), so this
//! crate cannot refuse it: **never call [`DeviceModel::set_isa_irq_level`],
//! [`DeviceModel::set_pci_intx_level`] or [`DeviceModel::set_pci_link_route`] for a PVH
//! guest.** Device models for PVH guests deliver interrupts with
//! [`DeviceModel::inject_msi`] or event channels.
//!
//! Licensed under either of Apache License, Version 2.0 or MIT license at your option.
//!
//! [vram]: https://docs.rs/xen-devicemodel/latest/xen_devicemodel/struct.VramRegion.html
//! [server]: https://docs.rs/xen-devicemodel/latest/xen_devicemodel/server/index.html
//! [libxl]: https://docs.rs/xen-devicemodel/latest/xen_devicemodel/libxl/index.html

#![cfg_attr(docsrs, feature(doc_cfg))]
// Unsafe code lives in the modules that say so (`#![allow(unsafe_code)]`), each block with
// its `SAFETY:` argument.
#![deny(unsafe_code)]

use xen_sys::dm_op::{xen_dm_op, XEN_DMOP_nr_vcpus, XEN_DMOP_remote_shutdown};

pub use xen_hypercall::{DomId, Errno, Error, Gfn, Privcmd, Result, ShutdownReason};

mod types;
pub use types::{
    BufIoreqMode, CacheAttr, Event, EventType, IntxPin, IoreqMemAccess, IoreqServerId, IsaIrq,
    MemType, PciLink, Sbdf,
};

#[cfg(feature = "hvm")]
mod ioreq;
#[cfg(feature = "hvm")]
mod irq;
#[cfg(feature = "libxl")]
#[cfg_attr(docsrs, doc(cfg(feature = "libxl")))]
pub mod libxl;
#[cfg(feature = "hvm")]
mod memory;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(feature = "vram")]
mod vram;

#[cfg(feature = "hvm")]
pub use ioreq::{IoreqServer, IoreqServerInfo};
#[cfg(feature = "hvm")]
pub use memory::MemExtent;
#[cfg(feature = "vram")]
pub use vram::VramRegion;

/// A device-model handle: issues dm_ops (and the few related hypercalls) on guests.
///
/// Holds a clone of a [`Privcmd`] handle: `clone()` shares the same open file (and its
/// restriction), as do the other handles built from the same [`Privcmd`] (e.g. a
/// `xen_foreignmemory::ForeignMemory`). `Send + Sync`; every method takes `&self`.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    xen: Privcmd,
}

impl DeviceModel {
    /// Opens `/dev/xen/privcmd` ([`Privcmd::open`]).
    pub fn open() -> Result<DeviceModel> {
        Ok(DeviceModel::from_privcmd(Privcmd::open()?))
    }

    /// A handle over an existing privcmd handle (pass a clone to share it with e.g.
    /// foreign-memory mappings).
    pub fn from_privcmd(xen: Privcmd) -> DeviceModel {
        DeviceModel { xen }
    }

    /// The underlying privcmd handle.
    #[inline]
    pub fn privcmd(&self) -> &Privcmd {
        &self.xen
    }

    /// Restricts the handle (and every clone of it) to `dom` (`IOCTL_PRIVCMD_RESTRICT`):
    /// afterwards dm_ops on other domains fail with `EPERM`, and the non-dm_op calls fail for
    /// every domain. Irreversible. The handle is also in [`xen_hypercall::restrict_all`]'s
    /// registry for as long as it lives.
    pub fn restrict(&self, dom: DomId) -> Result<()> {
        self.xen.restrict(dom)
    }

    /// The domain this handle is restricted to, if any.
    pub fn restricted_to(&self) -> Option<DomId> {
        self.xen.restricted_to()
    }

    /// Issues one dm_op whose only buffer is the request `req`; `name` names it in errors.
    #[inline]
    pub(crate) fn op(&self, name: &'static str, dom: DomId, req: &mut xen_dm_op) -> Result<()> {
        // `Privcmd::dm_op` refuses reserved domain ids before the syscall.
        self.xen
            .dm_op(name, dom, &[xen_hypercall::DmOpBuf::from_mut(req)])
    }

    /// A blank request for operation `op`.
    #[inline]
    pub(crate) fn request(op: u32) -> xen_dm_op {
        let mut req = <xen_dm_op as xen_hypercall::Plain>::zeroed();
        req.op = op;
        req
    }

    /// Refuses the non-dm_op calls on a restricted handle, before the syscall.
    #[cfg(feature = "hvm")]
    pub(crate) fn require_unrestricted(&self, name: &'static str, dom: DomId) -> Result<DomId> {
        let dom = dom.require_domain(name)?;
        if self.restricted_to().is_some() {
            return Err(Error::os(name, Some(dom), Errno::EPERM));
        }
        Ok(dom)
    }

    /// Shuts `dom` down with `reason`, as if the guest had called `SCHEDOP_shutdown`
    /// (`XEN_DMOP_remote_shutdown`). The toolstack then acts on the reason (its `on_poweroff`,
    /// `on_reboot`, ... settings). Works for every guest type Xen accepts dm_ops for.
    pub fn shutdown(&self, dom: DomId, reason: ShutdownReason) -> Result<()> {
        let mut req = Self::request(XEN_DMOP_remote_shutdown);
        req.u.remote_shutdown.reason = reason as u32;
        self.op("dm_op remote_shutdown", dom, &mut req)
    }

    /// Asks the toolstack to reboot `dom`: [`DeviceModel::shutdown`] with
    /// [`ShutdownReason::Reboot`] (`XEN_DMOP_remote_shutdown`).
    pub fn reboot(&self, dom: DomId) -> Result<()> {
        self.shutdown(dom, ShutdownReason::Reboot)
    }

    /// How many vCPUs `dom` has (`XEN_DMOP_nr_vcpus`).
    pub fn nr_vcpus(&self, dom: DomId) -> Result<u32> {
        let mut req = Self::request(XEN_DMOP_nr_vcpus);
        self.op("dm_op nr_vcpus", dom, &mut req)?;
        // SAFETY: every union member is plain data; Xen wrote `nr_vcpus` (and any bytes are a
        // valid u32).
        #[allow(unsafe_code)]
        let vcpus = unsafe { req.u.nr_vcpus.vcpus };
        Ok(vcpus)
    }
}

/// A counting global allocator for the unit tests: per-thread allocation counts.
#[cfg(test)]
pub(crate) mod test_alloc {
    #[global_allocator]
    static ALLOC: xen_testkit::alloc::CountingAllocator = xen_testkit::alloc::CountingAllocator;

    #[cfg_attr(miri, allow(unused_imports))]
    pub(crate) use xen_testkit::alloc::allocations;
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::test_alloc::allocations;
    use std::os::fd::OwnedFd;
    use xen_hypercall::DmOpPath;

    /// A stand-in privcmd: /dev/null answers every ioctl with ENOTTY after a full trip
    /// through the kernel's ioctl dispatch.
    pub(crate) fn stand_in() -> DeviceModel {
        let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let p = Privcmd::from(fd);
        p.set_dm_op_path(DmOpPath::Ioctl);
        DeviceModel::from_privcmd(p)
    }

    const D: DomId = DomId::new(7);

    /// Newer Xen refuses a dm_op with no buffer and a modified_memory with fewer than two:
    /// neither is ever sent. (Any dm_op that reached the stand-in would fail with ENOTTY.)
    #[cfg(feature = "hvm")]
    #[test]
    fn modified_memory_always_sends_its_extents() {
        let dm = stand_in();
        assert_eq!(
            dm.modified_memory_bulk(D, &[]),
            Ok(()),
            "nothing to send, nothing sent"
        );
        let e = dm.modified_memory(D, Gfn::new(0x100), 0).unwrap_err();
        assert!(e.is_invalid_argument() && !e.is_os(), "{e}");
        let e = dm.modified_memory_call("dm_op modified_memory", D, &mut []);
        assert!(!e.unwrap_err().is_os());
        // With extents: two buffers, one dm_op (the stand-in's ENOTTY shows it was sent).
        assert_eq!(
            dm.modified_memory(D, Gfn::new(0x100), 1),
            Err(enotty("dm_op modified_memory"))
        );
        for path in [DmOpPath::Ioctl, DmOpPath::Hypercall] {
            dm.privcmd().set_dm_op_path(path);
            let e = dm.privcmd().dm_op("dm_op x", D, &[]).unwrap_err();
            assert!(e.is_invalid_argument() && !e.is_os(), "{e}");
        }
    }

    fn enotty(op: &'static str) -> Error {
        Error::os(op, Some(D), Errno::ENOTTY)
    }

    #[test]
    fn simple_ops_allocate_nothing_and_name_themselves() {
        let dm = stand_in();
        let _ = dm.nr_vcpus(D); // warm-up
        #[cfg(feature = "hvm")]
        let srv = IoreqServer::from_id(&dm, D, IoreqServerId::new(1), BufIoreqMode::Atomic);
        let a0 = allocations();
        assert_eq!(dm.nr_vcpus(D), Err(enotty("dm_op nr_vcpus")));
        assert_eq!(
            dm.shutdown(D, ShutdownReason::Crash),
            Err(enotty("dm_op remote_shutdown"))
        );
        assert_eq!(dm.reboot(D), Err(enotty("dm_op remote_shutdown")));
        #[cfg(feature = "hvm")]
        {
            let irq = IsaIrq::new(3).unwrap();
            let pci = Sbdf::new(0, 0, 3, 0).unwrap();
            let e = |op| Err(enotty(op));
            assert_eq!(
                dm.set_isa_irq_level(D, irq, true),
                e("dm_op set_isa_irq_level")
            );
            assert_eq!(
                dm.set_pci_intx_level(D, pci, IntxPin::B, true),
                e("dm_op set_pci_intx_level")
            );
            assert_eq!(
                dm.set_pci_link_route(D, PciLink::C, Some(irq)),
                e("dm_op set_pci_link_route")
            );
            assert_eq!(dm.set_irq_level(D, 40, true), e("dm_op set_irq_level"));
            assert_eq!(dm.inject_msi(D, 0xfee0_0000, 0x40), e("dm_op inject_msi"));
            assert_eq!(
                dm.inject_event(D, Event::interrupt(0, 0x41)),
                e("dm_op inject_event")
            );
            assert_eq!(
                dm.make_ram_region_ro(D, Gfn::new(0x100), 1),
                e("dm_op set_mem_type")
            );
            assert_eq!(
                dm.make_ram_region_rw(D, Gfn::new(0x100), 1),
                e("dm_op set_mem_type")
            );
            assert_eq!(
                dm.modified_memory(D, Gfn::new(0x100), 2),
                e("dm_op modified_memory")
            );
            let mut bitmap = [0u64; 2];
            assert_eq!(
                dm.track_dirty_vram(D, Gfn::new(0x100), 100, &mut bitmap),
                e("dm_op track_dirty_vram")
            );
            assert_eq!(
                dm.relocate_memory(D, Gfn::new(1), Gfn::new(2), 1),
                e("dm_op relocate_memory")
            );
            assert_eq!(
                dm.pin_memory_cacheattr(D, Gfn::new(1)..=Gfn::new(2), CacheAttr::WriteCombining),
                e("dm_op pin_memory_cacheattr")
            );
            assert_eq!(
                srv.map_port_range(0x3f8..=0x3ff),
                e("dm_op map_io_range_to_ioreq_server")
            );
            assert_eq!(
                srv.unmap_mmio_range(0x1000..=0x1fff),
                e("dm_op unmap_io_range_from_ioreq_server")
            );
            assert_eq!(srv.map_pci(pci), e("dm_op map_io_range_to_ioreq_server"));
            assert_eq!(srv.enable(), e("dm_op set_ioreq_server_state"));
            assert_eq!(srv.info(), Err(enotty("dm_op get_ioreq_server_info")));
            assert_eq!(
                srv.map_mem_type(IoreqMemAccess::Write),
                e("dm_op map_mem_type_to_ioreq_server")
            );
            assert_eq!(
                dm.create_ioreq_server(D, BufIoreqMode::Off).unwrap_err(),
                enotty("dm_op create_ioreq_server")
            );
        }
        assert_eq!(allocations() - a0, 0, "no heap allocation on any simple op");
        #[cfg(feature = "hvm")]
        assert_eq!(srv.destroy(), Err(enotty("dm_op destroy_ioreq_server")));
    }

    #[test]
    fn bad_arguments_are_refused_up_front() {
        let dm = stand_in();
        let inval = |r: Result<()>| assert!(r.unwrap_err().is_invalid_argument());
        inval(dm.shutdown(DomId::INVALID, ShutdownReason::Poweroff));
        assert!(dm.nr_vcpus(DomId::SELF).unwrap_err().is_invalid_argument());
        #[cfg(feature = "hvm")]
        {
            let srv = IoreqServer::from_id(&dm, D, IoreqServerId::new(1), BufIoreqMode::Off);
            #[allow(clippy::reversed_empty_ranges)]
            {
                inval(srv.map_port_range(0x10..=0x0f));
                inval(srv.map_mmio_range(0x2000..=0x1fff));
                inval(dm.pin_memory_cacheattr(D, Gfn::new(5)..=Gfn::new(4), CacheAttr::WriteBack));
            }
            let _ = srv.into_id();
            inval(dm.set_mem_type(D, MemType::RamRo, Gfn::new(5), 0));
            inval(dm.set_mem_type(D, MemType::RamRo, Gfn::new(u64::MAX), 2));
            inval(dm.relocate_memory(D, Gfn::new(1), Gfn::new(u64::MAX), 2));
            inval(dm.modified_memory(D, Gfn::new(1), 0));
            inval(dm.modified_memory_bulk(
                D,
                &[
                    MemExtent {
                        first_gfn: Gfn::new(1),
                        nr: 1,
                    },
                    MemExtent {
                        first_gfn: Gfn::new(u64::MAX),
                        nr: 2,
                    },
                ],
            ));
            let mut small = [0u64; 1];
            inval(dm.track_dirty_vram(D, Gfn::new(0), 65, &mut small));
            let mut big = [0u64; 513];
            let e = dm
                .track_dirty_vram(D, Gfn::new(0), 513 * 64, &mut big)
                .unwrap_err();
            assert!(matches!(e, Error::BufferTooLarge { size: 4104, .. }), "{e}");
            inval(dm.populate_ram(D, Gfn::new(5), 0));
            assert!(Sbdf::new(0, 0, 32, 0).is_err());
        }
    }

    #[cfg(feature = "hvm")]
    #[test]
    fn bulk_modified_memory_splits_and_allocates_nothing() {
        let dm = stand_in();
        let extents: Vec<MemExtent> = (0..600)
            .map(|i| MemExtent {
                first_gfn: Gfn::new(0x1000 + 2 * i),
                nr: 1,
            })
            .collect();
        let _ = dm.modified_memory(D, Gfn::new(1), 1);
        let a0 = allocations();
        // The stand-in fails the first call: the error comes from the first chunk.
        assert_eq!(
            dm.modified_memory_bulk(D, &extents),
            Err(enotty("dm_op modified_memory"))
        );
        assert_eq!(dm.modified_memory_bulk(D, &[]), Ok(()));
        assert_eq!(allocations() - a0, 0);
    }

    #[cfg(feature = "hvm")]
    #[test]
    fn non_dm_ops_are_refused_on_a_restricted_handle() {
        // A real restricted handle needs Xen (tests/xen_domain.rs); here the unrestricted stand-in
        // reaches the kernel, which answers ENOTTY.
        let dm = stand_in();
        let e = dm.populate_ram(D, Gfn::new(0x1000), 1).unwrap_err();
        assert_eq!(e.op(), "memory_op populate_physmap");
        assert_eq!(e.errno(), Errno::ENOTTY);
        assert_eq!(
            dm.s3_suspend(D).unwrap_err().op(),
            "hvm_op set_param ACPI_S_STATE"
        );
        assert_eq!(
            dm.acpi_s_state(D).unwrap_err().op(),
            "hvm_op get_param ACPI_S_STATE"
        );
    }

    #[test]
    fn handles_are_send_sync_and_clone_shares_the_fd() {
        fn check<T: Send + Sync>() {}
        check::<DeviceModel>();
        #[cfg(feature = "hvm")]
        check::<IoreqServer>();
        let dm = stand_in();
        let dm2 = dm.clone();
        assert!(dm.privcmd().same_handle(dm2.privcmd()));
        assert_eq!(dm.restricted_to(), None);
    }
}
