//! Typed hypercalls: xen_version, memory_op, hvm_op, sched_op.

// Unsafe: hypercalls with buffer addresses.
#![allow(unsafe_code)]

use core::fmt;

use crate::{abi, DomId, Error, Gfn, Privcmd};

/// Xen's version, from `XENVER_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XenVersion {
    /// Major version (4 for Xen 4.17).
    pub major: u16,
    /// Minor version (17 for Xen 4.17).
    pub minor: u16,
}

impl fmt::Display for XenVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl XenVersion {
    /// Decodes `XENVER_version`'s result: major in the upper 16 bits, minor in the lower.
    pub const fn from_raw(raw: u32) -> XenVersion {
        XenVersion {
            major: (raw >> 16) as u16,
            minor: raw as u16,
        }
    }
}

/// Why a domain is shut down (`SHUTDOWN_*` of `xen/include/public/sched.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`: the domain is halted.
    Poweroff = abi::SHUTDOWN_poweroff,
    /// `SHUTDOWN_reboot`: the toolstack should restart it.
    Reboot = abi::SHUTDOWN_reboot,
    /// `SHUTDOWN_suspend`: it is suspended (for save/migration).
    Suspend = abi::SHUTDOWN_suspend,
    /// `SHUTDOWN_crash`: it crashed.
    Crash = abi::SHUTDOWN_crash,
    /// `SHUTDOWN_watchdog`: its watchdog fired.
    Watchdog = abi::SHUTDOWN_watchdog,
    /// `SHUTDOWN_soft_reset`: soft reset (kexec-style restart in place).
    SoftReset = abi::SHUTDOWN_soft_reset,
}

impl ShutdownReason {
    /// The reason for a raw `SHUTDOWN_*` number, if known.
    pub const fn from_raw(raw: u32) -> Option<ShutdownReason> {
        Some(match raw {
            abi::SHUTDOWN_poweroff => ShutdownReason::Poweroff,
            abi::SHUTDOWN_reboot => ShutdownReason::Reboot,
            abi::SHUTDOWN_suspend => ShutdownReason::Suspend,
            abi::SHUTDOWN_crash => ShutdownReason::Crash,
            abi::SHUTDOWN_watchdog => ShutdownReason::Watchdog,
            abi::SHUTDOWN_soft_reset => ShutdownReason::SoftReset,
            _ => return None,
        })
    }
}

/// Turns a NUL-padded byte array from Xen into a string (lossy on invalid UTF-8).
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Privcmd {
    /// Xen's version (`XENVER_version`).
    pub fn xen_version(&self) -> Result<XenVersion, Error> {
        let args = [abi::XENVER_version, 0, 0, 0, 0];
        // SAFETY: XENVER_version takes no buffer (the argument is ignored).
        let raw = unsafe {
            self.hypercall_named("xen_version", None, abi::__HYPERVISOR_xen_version, args)
        }?;
        Ok(XenVersion::from_raw(raw as u32))
    }

    fn xen_version_string<const N: usize>(
        &self,
        name: &'static str,
        cmd: u64,
    ) -> Result<String, Error> {
        let mut buf = self.buffers().alloc([0u8; N])?;
        let args = [cmd, buf.as_arg(), 0, 0, 0];
        // SAFETY: the XENVER string sub-ops write at most N bytes (their fixed array size) into
        // the buffer, an exclusively borrowed hypercall buffer of N bytes.
        unsafe { self.hypercall_named(name, None, abi::__HYPERVISOR_xen_version, args) }?;
        Ok(c_string(&buf[..]))
    }

    /// Xen's extra version string (`XENVER_extraversion`), e.g. `".7"` for 4.17.7.
    pub fn xen_extraversion(&self) -> Result<String, Error> {
        self.xen_version_string::<{ core::mem::size_of::<abi::xen_extraversion_t>() }>(
            "xen_version extraversion",
            abi::XENVER_extraversion,
        )
    }

    /// The guest ABIs Xen supports (`XENVER_capabilities`), e.g.
    /// `"xen-3.0-x86_64 hvm-3.0-x86_32 ..."`.
    pub fn xen_capabilities(&self) -> Result<String, Error> {
        self.xen_version_string::<{ core::mem::size_of::<abi::xen_capabilities_info_t>() }>(
            "xen_version capabilities",
            abi::XENVER_capabilities,
        )
    }

    /// The source changeset Xen was built from (`XENVER_changeset`).
    pub fn xen_changeset(&self) -> Result<String, Error> {
        self.xen_version_string::<{ core::mem::size_of::<abi::xen_changeset_info_t>() }>(
            "xen_version changeset",
            abi::XENVER_changeset,
        )
    }

    /// Allocates memory to `domid` at the guest frames in `gfns` (`XENMEM_populate_physmap`):
    /// one extent of `2^extent_order` pages per entry. Returns how many extents Xen populated
    /// (fewer than `gfns.len()` when it ran out); on return `gfns` holds what Xen wrote back
    /// (for translated guests, the same frame numbers).
    ///
    /// Not a dm_op: refused on a restricted handle. `mem_flags` are the `XENMEMF_*` flags.
    /// `domid` must name a real domain: `DOMID_SELF` (which would grow the caller's own
    /// memory) and the other reserved ids are refused before any syscall.
    /// Xen answers a domain that does not exist with "0 extents done", so `Ok(0)` for a
    /// non-empty list means nothing was populated, whatever the reason.
    pub fn populate_physmap(
        &self,
        domid: DomId,
        extent_order: u32,
        mem_flags: u32,
        gfns: &mut [Gfn],
    ) -> Result<usize, Error> {
        const OP: &str = "memory_op populate_physmap";
        let domid = domid.require_domain(OP)?;
        if gfns.is_empty() {
            return Ok(0);
        }
        let mut list = self.buffers().alloc_copy(gfns)?;
        let mut reservation = self.buffers().alloc(abi::MemoryReservation {
            extent_start: list.as_mut_ptr() as u64,
            nr_extents: gfns.len() as abi::xen_ulong_t,
            extent_order,
            mem_flags,
            domid: domid.get(),
            _pad: [0; abi::RESERVATION_PAD],
        })?;
        let args = [abi::XENMEM_populate_physmap, reservation.as_arg(), 0, 0, 0];
        // SAFETY: the reservation and the extent list it points to are hypercall buffers
        // held for the call; Xen reads/writes at most nr_extents entries of the list.
        let done =
            unsafe { self.hypercall_named(OP, Some(domid), abi::__HYPERVISOR_memory_op, args) }?;
        let done = usize::try_from(done).unwrap_or(0).min(gfns.len());
        gfns.copy_from_slice(&list);
        Ok(done)
    }

    /// Reads an HVM parameter of `domid` (`HVMOP_get_param`; `index` is an `HVM_PARAM_*`).
    /// Not a dm_op: refused on a restricted handle.
    pub fn hvm_get_param(&self, domid: DomId, index: u32) -> Result<u64, Error> {
        let mut p = self.buffers().alloc(abi::xen_hvm_param {
            domid: domid.get(),
            pad: 0,
            index,
            value: 0,
        })?;
        let args = [abi::HVMOP_get_param, p.as_arg(), 0, 0, 0];
        // SAFETY: `p` is a hypercall buffer holding the xen_hvm_param Xen reads and writes.
        unsafe {
            self.hypercall_named(
                "hvm_op get_param",
                Some(domid),
                abi::__HYPERVISOR_hvm_op,
                args,
            )
        }?;
        Ok(p.value)
    }

    /// Sets an HVM parameter of `domid` (`HVMOP_set_param`; `index` is an `HVM_PARAM_*`).
    /// Not a dm_op: refused on a restricted handle. `domid` must name a real domain (reserved
    /// ids such as `DOMID_SELF` are refused before any syscall).
    pub fn hvm_set_param(&self, domid: DomId, index: u32, value: u64) -> Result<(), Error> {
        let domid = domid.require_domain("hvm_op set_param")?;
        let mut p = self.buffers().alloc(abi::xen_hvm_param {
            domid: domid.get(),
            pad: 0,
            index,
            value,
        })?;
        let args = [abi::HVMOP_set_param, p.as_arg(), 0, 0, 0];
        // SAFETY: `p` is a hypercall buffer holding the xen_hvm_param Xen reads.
        unsafe {
            self.hypercall_named(
                "hvm_op set_param",
                Some(domid),
                abi::__HYPERVISOR_hvm_op,
                args,
            )
        }?;
        Ok(())
    }

    /// Shuts `domid` down with `reason` (`SCHEDOP_remote_shutdown`). Not a dm_op: refused on
    /// a restricted handle (use `xen-devicemodel`'s dm_op form there). `domid` must name a real
    /// domain: `DOMID_SELF` (the caller itself) and the other reserved ids are refused before
    /// any syscall.
    pub fn remote_shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<(), Error> {
        let domid = domid.require_domain("sched_op remote_shutdown")?;
        let mut s = self.buffers().alloc(abi::RemoteShutdown {
            domain_id: domid.get(),
            _pad: [0; abi::SHUTDOWN_PAD],
            reason: reason as u32,
        })?;
        let args = [abi::SCHEDOP_remote_shutdown, s.as_arg(), 0, 0, 0];
        // SAFETY: `s` is a hypercall buffer holding the sched_remote_shutdown Xen reads.
        unsafe {
            self.hypercall_named(
                "sched_op remote_shutdown",
                Some(domid),
                abi::__HYPERVISOR_sched_op,
                args,
            )
        }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_decoding() {
        assert_eq!(
            XenVersion::from_raw(0x0004_0011),
            XenVersion {
                major: 4,
                minor: 17
            }
        );
        assert_eq!(XenVersion::from_raw(0x0004_0011).to_string(), "4.17");
        assert_eq!(ShutdownReason::from_raw(1), Some(ShutdownReason::Reboot));
        assert_eq!(ShutdownReason::from_raw(6), None);
        assert_eq!(c_string(b".7\0\0junk"), ".7");
        assert_eq!(c_string(b"abc"), "abc");
    }
}
