//! Ioreq servers: the channel through which Xen hands a guest's I/O to a device model.

// Unsafe: reads the union fields Xen filled in.
#![allow(unsafe_code)]

use core::fmt;
use core::ops::RangeInclusive;

use xen_sys::dm_op::{
    XEN_DMOP_create_ioreq_server, XEN_DMOP_destroy_ioreq_server, XEN_DMOP_get_ioreq_server_info,
    XEN_DMOP_map_io_range_to_ioreq_server, XEN_DMOP_map_mem_type_to_ioreq_server, XEN_DMOP_no_gfns,
    XEN_DMOP_set_ioreq_server_state, XEN_DMOP_unmap_io_range_from_ioreq_server,
    XEN_DMOP_IO_RANGE_MEMORY, XEN_DMOP_IO_RANGE_PCI, XEN_DMOP_IO_RANGE_PORT,
};

use crate::{BufIoreqMode, DeviceModel, DomId, Error, IoreqMemAccess, IoreqServerId, MemType};
use crate::{Gfn, Result, Sbdf};

/// What [`IoreqServer::info`] reports (`XEN_DMOP_get_ioreq_server_info`).
///
/// The per-vCPU event channels of synchronous requests are not here: each vCPU's slot in the
/// ioreq page holds its own (`vp_eport` of `ioreq_t`), which Xen writes there when the server
/// is enabled, and only into pages that exist then: map the pages (`Privcmd::mmap_resource`
/// makes Xen allocate them) *before* [`IoreqServer::enable`], read the ports after. Map the pages with
/// `Privcmd::mmap_resource` (`XENMEM_resource_ioreq_server`, id [`IoreqServerId::get`];
/// frame 0 is the buffered ring, frame 1 the synchronous page); the frame numbers here are the
/// legacy way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoreqServerInfo {
    /// The event channel (in the guest domain) Xen signals for buffered requests; `None` when
    /// the server has no buffered ring ([`BufIoreqMode::Off`]).
    pub bufioreq_port: Option<u32>,
    /// The guest frame of the synchronous ioreq page, when asked for
    /// ([`IoreqServer::info_with_frames`]).
    pub ioreq_gfn: Option<Gfn>,
    /// The guest frame of the buffered ring, when asked for and the server has one.
    pub bufioreq_gfn: Option<Gfn>,
}

/// An ioreq server of a guest, destroyed (`XEN_DMOP_destroy_ioreq_server`) when dropped.
///
/// Made by [`DeviceModel::create_ioreq_server`]. It keeps a clone of its [`DeviceModel`]
/// (which shares the privcmd fd), so it borrows nothing and can be stored next to its handle,
/// moved to another thread, or shared by reference. Every method is one dm_op.
///
/// A new server is disabled. The order that works: claim ranges, map its pages
/// (`Privcmd::mmap_resource`), [`enable`](IoreqServer::enable) it, then read each vCPU's
/// event channel from the page and bind it (Xen fills the ports in on enable). Xen sends a request to a server only when the access
/// falls entirely in one of its ranges.
pub struct IoreqServer {
    dm: DeviceModel,
    dom: DomId,
    id: IoreqServerId,
    mode: BufIoreqMode,
    /// Whether dropping it destroys the server: cleared by [`IoreqServer::destroy`] and
    /// [`IoreqServer::into_id`], which still let the fields drop (the `DeviceModel`, and so
    /// the privcmd fd it shares, is released as usual).
    owned: bool,
}

impl DeviceModel {
    /// Creates an ioreq server for `dom` (`XEN_DMOP_create_ioreq_server`) with buffered
    /// requests handled as `mode` says. HVM/PVH guests only.
    pub fn create_ioreq_server(&self, dom: DomId, mode: BufIoreqMode) -> Result<IoreqServer> {
        let mut req = Self::request(XEN_DMOP_create_ioreq_server);
        req.u.create_ioreq_server.handle_bufioreq = mode as u8;
        self.op("dm_op create_ioreq_server", dom, &mut req)?;
        // SAFETY: every union member is plain data; Xen wrote the id.
        let id = IoreqServerId::new(unsafe { req.u.create_ioreq_server.id });
        Ok(IoreqServer {
            dm: self.clone(),
            dom,
            id,
            mode,
            owned: true,
        })
    }
}

impl IoreqServer {
    /// Adopts an existing server `id` of `dom` (e.g. created by another process, or released
    /// with [`IoreqServer::into_id`]); it will be destroyed on drop. `mode` is only used to
    /// interpret [`IoreqServer::info`].
    pub fn from_id(dm: &DeviceModel, dom: DomId, id: IoreqServerId, mode: BufIoreqMode) -> Self {
        IoreqServer {
            dm: dm.clone(),
            dom,
            id,
            mode,
            owned: true,
        }
    }

    /// The server's id.
    pub fn id(&self) -> IoreqServerId {
        self.id
    }

    /// The guest it serves.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// The buffered-request mode it was created with.
    pub fn mode(&self) -> BufIoreqMode {
        self.mode
    }

    /// The handle it uses.
    pub fn device_model(&self) -> &DeviceModel {
        &self.dm
    }

    /// Gives up ownership without destroying the server; returns its id. The handle it held
    /// is released (its clone of the [`DeviceModel`] drops).
    pub fn into_id(mut self) -> IoreqServerId {
        self.owned = false;
        self.id
    }

    fn get_info(&self, flags: u32) -> Result<IoreqServerInfo> {
        let mut req = DeviceModel::request(XEN_DMOP_get_ioreq_server_info);
        req.u.get_ioreq_server_info.id = self.id.get();
        req.u.get_ioreq_server_info.flags = flags as u16;
        self.dm
            .op("dm_op get_ioreq_server_info", self.dom, &mut req)?;
        // SAFETY: every union member is plain data; Xen wrote the info.
        let info = unsafe { req.u.get_ioreq_server_info };
        let buffered = self.mode != BufIoreqMode::Off;
        let frames = flags & XEN_DMOP_no_gfns == 0;
        Ok(IoreqServerInfo {
            bufioreq_port: buffered.then_some(info.bufioreq_port),
            ioreq_gfn: frames.then_some(Gfn::new(info.ioreq_gfn)),
            bufioreq_gfn: (frames && buffered).then_some(Gfn::new(info.bufioreq_gfn)),
        })
    }

    /// The buffered-request event channel (`XEN_DMOP_get_ioreq_server_info` with
    /// `XEN_DMOP_no_gfns`: Xen maps nothing into the guest).
    pub fn info(&self) -> Result<IoreqServerInfo> {
        self.get_info(XEN_DMOP_no_gfns)
    }

    /// [`IoreqServer::info`] plus the guest frames of the ioreq pages
    /// (`XEN_DMOP_get_ioreq_server_info` without `XEN_DMOP_no_gfns`). The legacy way to reach
    /// the pages: Xen puts them into the guest's physical memory map while the server is
    /// disabled. Prefer `Privcmd::mmap_resource`.
    pub fn info_with_frames(&self) -> Result<IoreqServerInfo> {
        self.get_info(0)
    }

    /// Claims the I/O ports `ports` (inclusive), `XEN_DMOP_map_io_range_to_ioreq_server` with
    /// `XEN_DMOP_IO_RANGE_PORT`. An empty range (start > end) is refused before the call.
    #[inline]
    pub fn map_port_range(&self, ports: RangeInclusive<u16>) -> Result<()> {
        self.range::<true>(
            XEN_DMOP_IO_RANGE_PORT,
            (*ports.start()).into(),
            (*ports.end()).into(),
        )
    }

    /// Releases ports claimed with [`IoreqServer::map_port_range`]
    /// (`XEN_DMOP_unmap_io_range_from_ioreq_server`); the range must be the one claimed.
    #[inline]
    pub fn unmap_port_range(&self, ports: RangeInclusive<u16>) -> Result<()> {
        self.range::<false>(
            XEN_DMOP_IO_RANGE_PORT,
            (*ports.start()).into(),
            (*ports.end()).into(),
        )
    }

    /// Claims the guest-physical bytes `addrs` (inclusive) as MMIO,
    /// `XEN_DMOP_map_io_range_to_ioreq_server` with `XEN_DMOP_IO_RANGE_MEMORY`.
    #[inline]
    pub fn map_mmio_range(&self, addrs: RangeInclusive<u64>) -> Result<()> {
        self.range::<true>(XEN_DMOP_IO_RANGE_MEMORY, *addrs.start(), *addrs.end())
    }

    /// Releases an MMIO range (`XEN_DMOP_unmap_io_range_from_ioreq_server`).
    #[inline]
    pub fn unmap_mmio_range(&self, addrs: RangeInclusive<u64>) -> Result<()> {
        self.range::<false>(XEN_DMOP_IO_RANGE_MEMORY, *addrs.start(), *addrs.end())
    }

    /// Claims the PCI configuration space of `device`: the guest's config accesses to it
    /// (through ports 0xcf8/0xcfc or MMCONFIG) arrive as `IOREQ_TYPE_PCI_CONFIG` requests
    /// (`XEN_DMOP_map_io_range_to_ioreq_server` with `XEN_DMOP_IO_RANGE_PCI`).
    #[inline]
    pub fn map_pci(&self, device: Sbdf) -> Result<()> {
        let raw = u64::from(device.to_raw());
        self.range::<true>(XEN_DMOP_IO_RANGE_PCI, raw, raw)
    }

    /// Releases a PCI device's config space (`XEN_DMOP_unmap_io_range_from_ioreq_server`).
    #[inline]
    pub fn unmap_pci(&self, device: Sbdf) -> Result<()> {
        let raw = u64::from(device.to_raw());
        self.range::<false>(XEN_DMOP_IO_RANGE_PCI, raw, raw)
    }

    /// `XEN_DMOP_map_io_range_to_ioreq_server` (`MAP`) or its unmap twin for one range.
    /// Inlined into each public wrapper, so the operation and its name are constants there.
    #[inline(always)]
    fn range<const MAP: bool>(&self, kind: u32, start: u64, end: u64) -> Result<()> {
        let (name, op) = if MAP {
            (
                "dm_op map_io_range_to_ioreq_server",
                XEN_DMOP_map_io_range_to_ioreq_server,
            )
        } else {
            (
                "dm_op unmap_io_range_from_ioreq_server",
                XEN_DMOP_unmap_io_range_from_ioreq_server,
            )
        };
        if start > end {
            return Err(self.empty_range(name));
        }
        let mut req = DeviceModel::request(op);
        // Map and unmap share the range struct.
        req.u.map_io_range_to_ioreq_server = xen_sys::dm_op::xen_dm_op_ioreq_server_range {
            id: self.id.get(),
            pad: 0,
            type_: kind,
            start,
            end,
        };
        self.dm.op(name, self.dom, &mut req)
    }

    /// The refusal of an empty range (out of line: the success path stays small).
    #[cold]
    #[inline(never)]
    fn empty_range(&self, name: &'static str) -> Error {
        Error::InvalidArgument {
            op: name,
            domain: Some(self.dom),
            reason: "range start is after its end",
        }
    }

    /// Claims the guest memory of type [`MemType::IoreqServer`] for this server: accesses
    /// selected by `access` to frames given that type with
    /// [`DeviceModel::set_mem_type`] arrive as requests (`XEN_DMOP_map_mem_type_to_ioreq_server`;
    /// [`IoreqMemAccess::Unmap`] releases it). One server per domain may hold it.
    pub fn map_mem_type(&self, access: IoreqMemAccess) -> Result<()> {
        let mut req = DeviceModel::request(XEN_DMOP_map_mem_type_to_ioreq_server);
        let m = xen_sys::dm_op::xen_dm_op_map_mem_type_to_ioreq_server {
            id: self.id.get(),
            type_: MemType::IoreqServer as u16,
            flags: access as u32,
            opaque: 0,
        };
        req.u.map_mem_type_to_ioreq_server = m;
        self.dm
            .op("dm_op map_mem_type_to_ioreq_server", self.dom, &mut req)
    }

    /// Enables or disables the server (`XEN_DMOP_set_ioreq_server_state`). A disabled server
    /// gets no requests; its ranges stay claimed.
    pub fn set_enabled(&self, enabled: bool) -> Result<()> {
        let mut req = DeviceModel::request(XEN_DMOP_set_ioreq_server_state);
        req.u.set_ioreq_server_state.id = self.id.get();
        req.u.set_ioreq_server_state.enabled = u8::from(enabled);
        self.dm
            .op("dm_op set_ioreq_server_state", self.dom, &mut req)
    }

    /// [`IoreqServer::set_enabled`]`(true)`.
    pub fn enable(&self) -> Result<()> {
        self.set_enabled(true)
    }

    /// [`IoreqServer::set_enabled`]`(false)`.
    pub fn disable(&self) -> Result<()> {
        self.set_enabled(false)
    }

    fn destroy_now(&self) -> Result<()> {
        let mut req = DeviceModel::request(XEN_DMOP_destroy_ioreq_server);
        req.u.destroy_ioreq_server.id = self.id.get();
        self.dm.op("dm_op destroy_ioreq_server", self.dom, &mut req)
    }

    /// Destroys the server now (`XEN_DMOP_destroy_ioreq_server`), reporting failure (dropping
    /// it does the same and ignores errors: the guest may already be gone).
    pub fn destroy(mut self) -> Result<()> {
        self.owned = false;
        self.destroy_now()
    }
}

impl Drop for IoreqServer {
    fn drop(&mut self) {
        if self.owned {
            let _ = self.destroy_now();
        }
    }
}

impl fmt::Debug for IoreqServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoreqServer")
            .field("dom", &self.dom)
            .field("id", &self.id)
            .field("mode", &self.mode)
            .finish()
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    /// `destroy` and `into_id` release the handle they hold: the privcmd handle is shared by
    /// the caller's `DeviceModel` alone afterwards, however many servers came and went.
    #[test]
    fn destroy_and_into_id_release_the_handle() {
        let dm = crate::tests::stand_in();
        let d = DomId::new(7);
        for i in 0..100u16 {
            let s = IoreqServer::from_id(&dm, d, IoreqServerId::new(i), BufIoreqMode::Off);
            assert_eq!(dm.privcmd().handle_count(), 2);
            if i % 2 == 0 {
                assert!(s.destroy().is_err()); // the stand-in answers ENOTTY
            } else {
                assert_eq!(s.into_id(), IoreqServerId::new(i));
            }
            assert_eq!(dm.privcmd().handle_count(), 1, "round {i}");
        }
    }
}
