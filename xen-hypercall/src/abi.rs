//! The `xen-sys` items this crate uses, gathered in one place, with the hypercall numbers and
//! sub-op codes widened to the `u64` the privcmd ioctl takes.

// Unsafe: `Plain` for the ABI structs defined here.
#![allow(unsafe_code)]
#![allow(non_camel_case_types, non_upper_case_globals)]

use core::ffi::c_ulong;

pub(crate) use xen_sys::dm_op::xen_dm_op_buf;
pub(crate) use xen_sys::hvm::xen_hvm_param;
pub(crate) use xen_sys::memory::xen_memory_reservation;
pub(crate) use xen_sys::privcmd::{
    privcmd_dm_op, privcmd_dm_op_buf, privcmd_hypercall, privcmd_mmap_resource, privcmd_mmapbatch,
    privcmd_mmapbatch_v2,
};
pub(crate) use xen_sys::sched::{
    sched_remote_shutdown, SHUTDOWN_crash, SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_soft_reset,
    SHUTDOWN_suspend, SHUTDOWN_watchdog,
};
pub(crate) use xen_sys::version::{
    xen_capabilities_info_t, xen_changeset_info_t, xen_extraversion_t,
};
pub(crate) use xen_sys::xen::{domid_t, xen_ulong_t};

cfg_if::cfg_if! {
    if #[cfg(target_arch = "aarch64")] {
        /// `XEN_GUEST_HANDLE(xen_pfn_t)`: a 64-bit union on Arm (named by a size check only).
        #[allow(dead_code)]
        pub(crate) type PfnHandle = xen_sys::xen::__guest_handle_64_xen_pfn_t;
        /// `XEN_GUEST_HANDLE(void)`: a 64-bit union on Arm.
        pub(crate) type VoidHandle = xen_sys::xen::__guest_handle_64_void;
    } else {
        /// `XEN_GUEST_HANDLE(xen_pfn_t)`: a plain pointer on x86 (named by a size check only).
        #[allow(dead_code)]
        pub(crate) type PfnHandle = xen_sys::xen::__guest_handle_xen_pfn_t;
        /// `XEN_GUEST_HANDLE(void)`: a plain pointer on x86.
        pub(crate) type VoidHandle = xen_sys::xen::__guest_handle_void;
    }
}

pub(crate) const IOCTL_PRIVCMD_HYPERCALL: c_ulong =
    xen_sys::privcmd::IOCTL_PRIVCMD_HYPERCALL as c_ulong;
pub(crate) const IOCTL_PRIVCMD_MMAPBATCH: c_ulong =
    xen_sys::privcmd::IOCTL_PRIVCMD_MMAPBATCH as c_ulong;
pub(crate) const IOCTL_PRIVCMD_MMAPBATCH_V2: c_ulong =
    xen_sys::privcmd::IOCTL_PRIVCMD_MMAPBATCH_V2 as c_ulong;
pub(crate) const IOCTL_PRIVCMD_DM_OP: c_ulong = xen_sys::privcmd::IOCTL_PRIVCMD_DM_OP as c_ulong;
pub(crate) const IOCTL_PRIVCMD_RESTRICT: c_ulong =
    xen_sys::privcmd::IOCTL_PRIVCMD_RESTRICT as c_ulong;
pub(crate) const IOCTL_PRIVCMD_MMAP_RESOURCE: c_ulong =
    xen_sys::privcmd::IOCTL_PRIVCMD_MMAP_RESOURCE as c_ulong;

pub(crate) const __HYPERVISOR_memory_op: u64 = xen_sys::xen::__HYPERVISOR_memory_op as u64;
pub(crate) const __HYPERVISOR_xen_version: u64 = xen_sys::xen::__HYPERVISOR_xen_version as u64;
pub(crate) const __HYPERVISOR_sched_op: u64 = xen_sys::xen::__HYPERVISOR_sched_op as u64;
pub(crate) const __HYPERVISOR_hvm_op: u64 = xen_sys::xen::__HYPERVISOR_hvm_op as u64;
pub(crate) const __HYPERVISOR_dm_op: u64 = xen_sys::xen::__HYPERVISOR_dm_op as u64;

pub(crate) const XENVER_version: u64 = xen_sys::version::XENVER_version as u64;
pub(crate) const XENVER_extraversion: u64 = xen_sys::version::XENVER_extraversion as u64;
pub(crate) const XENVER_capabilities: u64 = xen_sys::version::XENVER_capabilities as u64;
pub(crate) const XENVER_changeset: u64 = xen_sys::version::XENVER_changeset as u64;

pub(crate) const XENMEM_populate_physmap: u64 = xen_sys::memory::XENMEM_populate_physmap as u64;
pub(crate) const HVMOP_set_param: u64 = xen_sys::hvm::HVMOP_set_param as u64;
pub(crate) const HVMOP_get_param: u64 = xen_sys::hvm::HVMOP_get_param as u64;
pub(crate) const SCHEDOP_remote_shutdown: u64 = xen_sys::sched::SCHEDOP_remote_shutdown as u64;

// The gfn lists of the public API are `u64`; the ABI's `xen_pfn_t` must be the same type.
static_assertions::assert_type_eq_all!(xen_sys::xen::xen_pfn_t, u64);

/// `xen_memory_reservation` without padding: the same layout (asserted against `xen-sys`
/// below) with the tail padding as an explicit zeroed field, so it is [`Plain`](crate::Plain)
/// and no uninitialised byte is ever copied into a hypercall buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MemoryReservation {
    /// `extent_start`: the guest handle, as the address it holds.
    pub extent_start: u64,
    pub nr_extents: xen_ulong_t,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: domid_t,
    pub _pad: [u8; RESERVATION_PAD],
}

pub(crate) const RESERVATION_PAD: usize = core::mem::size_of::<xen_memory_reservation>()
    - core::mem::offset_of!(xen_memory_reservation, domid)
    - core::mem::size_of::<domid_t>();

/// `sched_remote_shutdown` without padding (the same layout, asserted below).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RemoteShutdown {
    pub domain_id: domid_t,
    pub _pad: [u8; SHUTDOWN_PAD],
    pub reason: u32,
}

pub(crate) const SHUTDOWN_PAD: usize =
    core::mem::offset_of!(sched_remote_shutdown, reason) - core::mem::size_of::<domid_t>();

/// Asserts that a mirror has its ABI struct's size, alignment and field offsets.
macro_rules! same_layout {
    ($mirror:ty, $abi:ty, $($f:ident),+) => {
        static_assertions::assert_eq_size!($mirror, $abi);
        static_assertions::assert_eq_align!($mirror, $abi);
        $(static_assertions::const_assert_eq!(
            core::mem::offset_of!($mirror, $f),
            core::mem::offset_of!($abi, $f)
        );)+
    };
}
same_layout!(
    MemoryReservation,
    xen_memory_reservation,
    extent_start,
    nr_extents,
    extent_order,
    mem_flags,
    domid
);
same_layout!(RemoteShutdown, sched_remote_shutdown, domain_id, reason);
static_assertions::assert_eq_size!(PfnHandle, u64);

// SAFETY: integers only; the size is the sum of the field sizes (asserted), so no padding.
unsafe impl crate::Plain for MemoryReservation {}
// SAFETY: as above.
unsafe impl crate::Plain for RemoteShutdown {}
static_assertions::const_assert_eq!(
    core::mem::size_of::<MemoryReservation>(),
    8 + core::mem::size_of::<xen_ulong_t>() + 4 + 4 + 2 + RESERVATION_PAD
);
static_assertions::const_assert_eq!(core::mem::size_of::<RemoteShutdown>(), 2 + SHUTDOWN_PAD + 4);
