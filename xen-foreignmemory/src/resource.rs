//! Typed resources for `IOCTL_PRIVCMD_MMAP_RESOURCE` (Xen's `XENMEM_acquire_resource`).

use xen_sys::memory as m;

/// A resource of a domain that can be mapped whole or by frame range with
/// [`ForeignMemory::map_resource`](crate::ForeignMemory::map_resource), and sized with
/// [`ForeignMemory::resource_size`](crate::ForeignMemory::resource_size).
///
/// ```
/// use xen_foreignmemory::{GrantTable, Resource};
///
/// let r = Resource::IoreqServer { id: 0 };
/// assert_eq!((r.kind(), r.id()), (0, 0)); // XENMEM_resource_ioreq_server
/// assert_eq!(Resource::IOREQ_SERVER_BUFIOREQ_FRAME, 0);
/// assert_eq!(Resource::ioreq_server_ioreq_frame(0), 1);
/// let g = Resource::GrantTable(GrantTable::Status);
/// assert_eq!((g.kind(), g.id()), (1, 1));
/// assert_eq!(Resource::VmtraceBuf { vcpu: 2 }.id(), 2);
/// assert_eq!(Resource::Other { kind: 9, id: 4 }.kind(), 9);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// The pages of ioreq server `id` (`XENMEM_resource_ioreq_server`): frame
    /// [`Resource::IOREQ_SERVER_BUFIOREQ_FRAME`] is the buffered-ioreq page (present when the
    /// server was created with buffered ioreqs), frame
    /// [`Resource::ioreq_server_ioreq_frame(n)`](Resource::ioreq_server_ioreq_frame) the
    /// `n`th synchronous ioreq page (`shared_iopage`: one `ioreq` slot per vCPU).
    IoreqServer {
        /// The ioreq server id (`ioservid_t`), from creating the server.
        id: u16,
    },
    /// The domain's grant table (`XENMEM_resource_grant_table`).
    GrantTable(GrantTable),
    /// A vCPU's processor-trace buffer (`XENMEM_resource_vmtrace_buf`), when the domain was
    /// created with one.
    VmtraceBuf {
        /// The vCPU.
        vcpu: u32,
    },
    /// Any other resource type and id, passed to Xen as they are.
    Other {
        /// `XENMEM_resource_*` type.
        kind: u32,
        /// The id within that type.
        id: u32,
    },
}

/// Which part of a grant table [`Resource::GrantTable`] means.
///
/// ```
/// use xen_foreignmemory::{GrantTable, Resource};
/// assert_eq!(Resource::GrantTable(GrantTable::Shared).id(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantTable {
    /// The shared frames: the grant entries (`XENMEM_resource_grant_table_id_shared`).
    Shared,
    /// The status frames of a v2 grant table (`XENMEM_resource_grant_table_id_status`).
    Status,
}

impl Resource {
    /// The frame index of an ioreq server's buffered-ioreq page
    /// (`XENMEM_resource_ioreq_server_frame_bufioreq`).
    ///
    /// ```
    /// assert_eq!(xen_foreignmemory::Resource::IOREQ_SERVER_BUFIOREQ_FRAME, 0);
    /// ```
    pub const IOREQ_SERVER_BUFIOREQ_FRAME: u32 = m::XENMEM_resource_ioreq_server_frame_bufioreq;

    /// The frame index of an ioreq server's `n`th synchronous ioreq page
    /// (`XENMEM_resource_ioreq_server_frame_ioreq(n)`, a C macro: `1 + n`).
    ///
    /// ```
    /// assert_eq!(xen_foreignmemory::Resource::ioreq_server_ioreq_frame(0), 1);
    /// ```
    pub const fn ioreq_server_ioreq_frame(n: u32) -> u32 {
        n.saturating_add(1)
    }

    /// The `XENMEM_resource_*` type.
    ///
    /// ```
    /// use xen_foreignmemory::Resource;
    /// assert_eq!(Resource::VmtraceBuf { vcpu: 0 }.kind(), 2);
    /// ```
    pub const fn kind(self) -> u32 {
        match self {
            Resource::IoreqServer { .. } => m::XENMEM_resource_ioreq_server,
            Resource::GrantTable(_) => m::XENMEM_resource_grant_table,
            Resource::VmtraceBuf { .. } => m::XENMEM_resource_vmtrace_buf,
            Resource::Other { kind, .. } => kind,
        }
    }

    /// The id within the type.
    ///
    /// ```
    /// use xen_foreignmemory::Resource;
    /// assert_eq!(Resource::IoreqServer { id: 3 }.id(), 3);
    /// ```
    pub const fn id(self) -> u32 {
        match self {
            Resource::IoreqServer { id } => id as u32,
            Resource::GrantTable(GrantTable::Shared) => m::XENMEM_resource_grant_table_id_shared,
            Resource::GrantTable(GrantTable::Status) => m::XENMEM_resource_grant_table_id_status,
            Resource::VmtraceBuf { vcpu } => vcpu,
            Resource::Other { id, .. } => id,
        }
    }

    /// A short name for error messages.
    pub(crate) const fn map_op(self) -> &'static str {
        match self {
            Resource::IoreqServer { .. } => "foreignmemory map_resource ioreq_server",
            Resource::GrantTable(_) => "foreignmemory map_resource grant_table",
            Resource::VmtraceBuf { .. } => "foreignmemory map_resource vmtrace_buf",
            Resource::Other { .. } => "foreignmemory map_resource",
        }
    }

    /// A short name for error messages.
    pub(crate) const fn size_op(self) -> &'static str {
        match self {
            Resource::IoreqServer { .. } => "foreignmemory resource_size ioreq_server",
            Resource::GrantTable(_) => "foreignmemory resource_size grant_table",
            Resource::VmtraceBuf { .. } => "foreignmemory resource_size vmtrace_buf",
            Resource::Other { .. } => "foreignmemory resource_size",
        }
    }
}
