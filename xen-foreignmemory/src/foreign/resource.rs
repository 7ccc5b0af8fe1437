//! Mapping resources: [`ForeignMemory::resource_size`], [`ForeignMemory::map_resource`],
//! [`ForeignMemory::map_resource_with`].

// Unsafe: the resource map ioctl into our own mapping.
#![allow(unsafe_code)]

use xen_hypercall::{DomId, Errno, PrivcmdIoctl};

use super::{check_domain, domain_ok, sizes, ForeignMemory, MapOptions, Where};
use crate::{Access, Error, Mapping, Resource, Result};

impl ForeignMemory {
    /// The size in frames of `resource` of `domid` (`IOCTL_PRIVCMD_MMAP_RESOURCE` with no
    /// address): e.g. 2 for an ioreq server with buffered ioreqs (the buffered page and one
    /// ioreq page), the grant table's frame count.
    ///
    /// A resource the domain does not have, or a Xen or kernel without resource mapping,
    /// gives an error with [`Error::is_not_supported`]; resources of dom0 are refused by Xen
    /// ([`Error::is_permission_denied`]).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{DomId, ForeignMemory, GrantTable, Resource};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let frames = fm.resource_size(DomId::new(1), Resource::GrantTable(GrantTable::Shared))?;
    /// println!("grant table: {frames} frames");
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn resource_size(&self, domid: DomId, resource: Resource) -> Result<u64> {
        let op = resource.size_op();
        check_domain(op, domid)?;
        let frames = self
            .privcmd
            .resource_size(domid, resource.kind(), resource.id())
            .map_err(|e| self.resource_error(e.with_op(op)))?;
        resource_size_result(op, domid, frames)
    }

    /// Maps `count` frames of `resource` of `domid`, starting at frame `frame`
    /// (`IOCTL_PRIVCMD_MMAP_RESOURCE`): all or nothing.
    ///
    /// "Not supported" (the Xen or kernel cannot map resources, or not this one) is an error
    /// with [`Error::is_not_supported`]: device models then fall back to mapping the frames
    /// by number with [`map`](ForeignMemory::map).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{field, DomId, ForeignMemory, ReadWrite, Resource};
    /// # #[derive(Clone, Copy)]
    /// # #[repr(C)]
    /// # struct Ioreq { addr: u64, data: u64, count: u32, size: u32, vp_eport: u32, pad: u16, state: u8, kind: u8 }
    /// # // SAFETY: integers only.
    /// # unsafe impl xen_foreignmemory::Plain for Ioreq {}
    ///
    /// let fm = ForeignMemory::open()?;
    /// let server = Resource::IoreqServer { id: 0 };
    /// let ioreq_page = Resource::ioreq_server_ioreq_frame(0);
    /// let page = fm.map_resource(DomId::new(1), server, ioreq_page, 1, ReadWrite)?;
    /// let vcpu0 = page.view::<Ioreq>(0)?;
    /// println!("vCPU 0 ioreq at {:#x}", field!(vcpu0, addr)?.read());
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    #[inline(always)]
    pub fn map_resource<A: Access>(
        &self,
        domid: DomId,
        resource: Resource,
        frame: u32,
        count: usize,
        access: A,
    ) -> Result<Mapping<A>> {
        self.map_resource_with(domid, resource, frame, count, access, &MapOptions::new())
    }

    /// [`map_resource`](ForeignMemory::map_resource) with a placement from `opts` (its
    /// failure and retry policies do not apply: resources map whole or not at all).
    ///
    /// ```no_run
    /// use xen_foreignmemory::{DomId, ForeignMemory, GrantTable, MapOptions, ReadOnly, Resource};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let opts = MapOptions::new().near(0x7e00_0000_0000);
    /// let gt = Resource::GrantTable(GrantTable::Shared);
    /// let m = fm.map_resource_with(DomId::new(1), gt, 0, 1, ReadOnly, &opts)?;
    /// # let _ = m;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    #[inline(always)]
    pub fn map_resource_with<A: Access>(
        &self,
        domid: DomId,
        resource: Resource,
        frame: u32,
        count: usize,
        _access: A,
        opts: &MapOptions,
    ) -> Result<Mapping<A>> {
        // The checks of `check_domain`, `sizes` and the 32-bit frame index, with the
        // operation's name (and which check failed) only worked out for a refusal.
        let n = count as u64;
        if !domain_ok(domid) || n == 0 || n > i32::MAX as u64 || n > u64::from(u32::MAX - frame) {
            return Err(refused(resource.map_op(), domid, count, self.page));
        }
        let len = count * crate::PAGE_SIZE;
        // Kernel pages are powers of two of at least PAGE_SIZE; `len` is below 2^43.
        let vma_len = (len + self.page - 1) & !(self.page - 1);
        let base = if opts.is_anywhere() {
            // SAFETY: not `Where::Replace`.
            unsafe { self.mmap_empty::<A>(|| resource.map_op(), domid, Where::Hint(0), vma_len)? }
        } else {
            self.mmap_placed::<A>(resource.map_op(), domid, opts, vma_len)?
        };
        // SAFETY: a whole, fresh privcmd mapping of this handle, `count` pages long,
        // referenced by nothing.
        let r = unsafe {
            self.privcmd.mmap_resource(
                domid,
                resource.kind(),
                resource.id(),
                frame,
                count as u64,
                base.as_ptr().cast(),
            )
        };
        // SAFETY: that mapping, `vma_len` bytes with A's protection, owned by nobody else;
        // handed out only if the ioctl filled it, unmapped (dropped) otherwise.
        let mapping = unsafe { Mapping::from_raw(base, len, vma_len, domid) };
        match r {
            Ok(()) => Ok(mapping),
            Err(e) => {
                drop(mapping);
                Err(self.resource_error(e.with_op(resource.map_op())))
            }
        }
    }
}

/// The refusal of a resource map's arguments (out of line), as the checks in order give it.
#[cold]
#[inline(never)]
fn refused(op: &'static str, domid: DomId, count: usize, page: usize) -> Error {
    if let Err(e) = check_domain(op, domid) {
        return e;
    }
    if let Err(e) = sizes(op, domid, count as u64, page) {
        return e;
    }
    Error::invalid(op, Some(domid), "the frame range overflows")
}

impl ForeignMemory {
    /// A failed resource ioctl: `ENOTTY` or `EINVAL` from a driver that does not have
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE` at all (older drivers answer unknown ioctls with `EINVAL`)
    /// becomes `ENOTTY`, so [`Error::is_not_supported`] holds on old and new kernels alike.
    #[cold]
    fn resource_error(&self, e: xen_hypercall::Error) -> xen_hypercall::Error {
        let maybe_missing = matches!(e.errno(), Errno::ENOTTY | Errno::EINVAL) && e.is_os();
        if maybe_missing && !self.privcmd.has_ioctl(PrivcmdIoctl::MmapResource) {
            xen_hypercall::Error::os(e.op(), e.domain(), Errno::ENOTTY)
        } else {
            e
        }
    }
}

/// Reads the frame count of a size query. Xen (4.17 at least) answers a query for a resource
/// type it does not know with success and a frame count of `(uint32_t)-EOPNOTSUPP`: such
/// counts (a negative error code in 32 bits) are turned back into that error.
fn resource_size_result(op: &'static str, domid: DomId, frames: u64) -> Result<u64> {
    match u32::try_from(frames) {
        Ok(n) if n > u32::MAX - 4095 => Err(Error::os(
            op,
            Some(domid),
            xen_hypercall::errno_from_xen(i64::from(n as i32)),
        )),
        _ => Ok(frames),
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::super::tests::old_kernel;
    use super::*;
    use xen_hypercall::Errno;

    #[test]
    fn kernels_without_resource_mapping_say_not_supported() {
        let fm = old_kernel();
        let d = DomId::new(4);
        let r = Resource::IoreqServer { id: 1 };
        let e = fm.map_resource(d, r, 0, 2, crate::ReadWrite).unwrap_err();
        assert!(e.is_not_supported(), "{e}");
        assert_eq!(e.op(), "foreignmemory map_resource ioreq_server");
        assert_eq!(e.domain(), Some(d));
        let e = fm.resource_size(d, r).unwrap_err();
        assert!(e.is_not_supported(), "{e}");
        assert_eq!(e.op(), "foreignmemory resource_size ioreq_server");
    }

    #[test]
    fn resource_sizes_that_are_errors() {
        let d = DomId::new(2);
        assert_eq!(resource_size_result("t", d, 64).unwrap(), 64);
        assert_eq!(resource_size_result("t", d, 0).unwrap(), 0);
        let e = resource_size_result("t", d, 0xffff_ffa1).unwrap_err();
        assert!(e.is_not_supported(), "{e}");
        assert_eq!(e.errno(), Errno::EOPNOTSUPP);
        assert_eq!(resource_size_result("t", d, 1 << 33).unwrap(), 1 << 33);
    }
}
