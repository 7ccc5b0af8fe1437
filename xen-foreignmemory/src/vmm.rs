//! The `vm-memory` feature: our mappings in the rust-vmm device ecosystem.
//!
//! A read-write [`Mapping`] is a `VolatileSlice` ([`Mapping::as_volatile_slice`]), and a
//! [`GuestRegion`] (a mapping placed at a guest-physical address) is a `GuestMemoryRegion`,
//! so a `GuestRegionCollection<GuestRegion>` is the `GuestMemory` that virtio queues and other
//! rust-vmm devices take.
//!
//! Only complete read-write mappings qualify: `VolatileSlice` can always write and has no
//! notion of frames that did not map, so a read-only or partial mapping would let safe code
//! reach a fault.

// Unsafe: hands vm-memory volatile slices of a mapping.
#![allow(unsafe_code)]

use vm_memory::bitmap::BS;
use vm_memory::guest_memory::Result as GuestResult;
use vm_memory::{
    Address, GuestAddress, GuestMemoryError, GuestMemoryRegion, GuestMemoryRegionBytes, GuestUsize,
    MemoryRegionAddress, VolatileSlice,
};

use crate::{Error, Mapping, ReadWrite, Result};

impl Mapping<ReadWrite> {
    /// The whole mapping as a `vm-memory` `VolatileSlice`, borrowed from the mapping (feature
    /// `vm-memory`). Fails with [`Error::NotMapped`] for a partial mapping.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use vm_memory::{Bytes, VolatileMemory};
    /// use xen_foreignmemory::{DomId, ForeignMemory, ReadWrite};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let m = fm.map(DomId::new(1), &[Gfn::new(0x100), Gfn::new(0x101)], ReadWrite)?;
    /// let slice = m.as_volatile_slice()?;
    /// slice.write_obj(0x1234_u32, 0x10).unwrap();
    /// assert_eq!(slice.len(), 8192);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn as_volatile_slice(&self) -> Result<VolatileSlice<'_>> {
        if let Some(frame) = self.frame_errors().first() {
            return Err(Error::NotMapped {
                op: "foreignmemory as_volatile_slice",
                frame: *frame,
            });
        }
        // SAFETY: the whole range is mapped read-write (a complete ReadWrite mapping) and
        // stays mapped for the slice's lifetime, which borrows `self`. VolatileSlice only ever
        // accesses it with volatile operations.
        Ok(unsafe { VolatileSlice::new(self.as_mut_ptr(), self.len()) })
    }
}

/// A complete read-write [`Mapping`] of guest RAM placed at a guest-physical address: a
/// `vm-memory` `GuestMemoryRegion` (feature `vm-memory`).
///
/// Collect them in a `vm_memory::GuestRegionCollection` to get the `GuestMemory` rust-vmm
/// devices (virtio queues, vhost-user backends) work on. Dirty-page tracking is not offered
/// (the bitmap type is `()`): Xen tracks dirty pages itself (`track_dirty_vram`,
/// log-dirty), and a device model tells it about writes with `modified_memory`.
///
/// ```no_run
/// use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestRegionCollection};
/// use xen_foreignmemory::{DomId, ForeignMemory, Gfn, GuestRegion, ReadWrite};
///
/// let fm = ForeignMemory::open()?;
/// let guest = DomId::new(1);
/// // Guest RAM 0x100000..0x140000 (frames 0x100..0x140).
/// let gfns: Vec<Gfn> = (0x100..0x140).map(Gfn::new).collect();
/// let region = GuestRegion::new(GuestAddress(0x10_0000), fm.map(guest, &gfns, ReadWrite)?)?;
/// let mem = GuestRegionCollection::from_regions(vec![region]).unwrap();
/// mem.write_obj(0xabcd_u16, GuestAddress(0x10_0010)).unwrap();
/// let back: u16 = mem.read_obj(GuestAddress(0x10_0010)).unwrap();
/// assert_eq!(back, 0xabcd);
/// # Ok::<(), xen_foreignmemory::Error>(())
/// ```
#[derive(Debug)]
pub struct GuestRegion {
    start: GuestAddress,
    mapping: Mapping<ReadWrite>,
}

impl GuestRegion {
    /// Places `mapping` at guest-physical address `start` (page-aligned). A partial mapping is
    /// refused ([`Error::NotMapped`]), as is a region whose end overflows the address space.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// use vm_memory::GuestAddress;
    /// use xen_foreignmemory::{DomId, ForeignMemory, GuestRegion, ReadWrite};
    ///
    /// let fm = ForeignMemory::open()?;
    /// let r = GuestRegion::new(GuestAddress(0x1000), fm.map(DomId::new(1), &[Gfn::new(1)], ReadWrite)?)?;
    /// assert_eq!(r.mapping().len(), 4096);
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn new(start: GuestAddress, mapping: Mapping<ReadWrite>) -> Result<GuestRegion> {
        const OP: &str = "foreignmemory guest region";
        if let Some(frame) = mapping.frame_errors().first() {
            return Err(Error::NotMapped {
                op: OP,
                frame: *frame,
            });
        }
        if start.raw_value() % crate::PAGE_SIZE as u64 != 0
            || start.checked_add(mapping.len() as u64).is_none()
        {
            return Err(Error::invalid(
                OP,
                Some(mapping.domid()),
                "the region must start page-aligned and end inside the address space",
            ));
        }
        Ok(GuestRegion { start, mapping })
    }

    /// The mapping underneath (for this crate's own typed accessors).
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use vm_memory::GuestAddress;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, GuestRegion, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let r = GuestRegion::new(GuestAddress(0x1000), fm.map(DomId::new(1), &[Gfn::new(1)], ReadWrite)?)?;
    /// let word: u64 = r.mapping().read(0)?;
    /// # let _ = word;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn mapping(&self) -> &Mapping<ReadWrite> {
        &self.mapping
    }

    /// Gives the mapping back.
    ///
    /// ```no_run
    /// # use xen_foreignmemory::Gfn;
    /// # use vm_memory::GuestAddress;
    /// # use xen_foreignmemory::{DomId, ForeignMemory, GuestRegion, ReadWrite};
    /// # let fm = ForeignMemory::open()?;
    /// # let r = GuestRegion::new(GuestAddress(0x1000), fm.map(DomId::new(1), &[Gfn::new(1)], ReadWrite)?)?;
    /// let m = r.into_mapping();
    /// # let _ = m;
    /// # Ok::<(), xen_foreignmemory::Error>(())
    /// ```
    pub fn into_mapping(self) -> Mapping<ReadWrite> {
        self.mapping
    }
}

impl GuestMemoryRegion for GuestRegion {
    type B = ();

    fn len(&self) -> GuestUsize {
        self.mapping.len() as GuestUsize
    }

    fn start_addr(&self) -> GuestAddress {
        self.start
    }

    fn bitmap(&self) -> BS<'_, ()> {}

    fn get_host_address(&self, addr: MemoryRegionAddress) -> GuestResult<*mut u8> {
        let offset = usize::try_from(addr.raw_value())
            .ok()
            .filter(|&o| o < self.mapping.len())
            .ok_or(GuestMemoryError::InvalidBackendAddress)?;
        // SAFETY: offset < len: inside the mapping.
        Ok(unsafe { self.mapping.as_mut_ptr().add(offset) })
    }

    fn get_slice(
        &self,
        offset: MemoryRegionAddress,
        count: usize,
    ) -> GuestResult<VolatileSlice<'_, BS<'_, ()>>> {
        let start = usize::try_from(offset.raw_value())
            .map_err(|_| GuestMemoryError::InvalidBackendAddress)?;
        match start.checked_add(count) {
            Some(end) if end <= self.mapping.len() => {}
            _ => return Err(GuestMemoryError::InvalidBackendAddress),
        }
        // SAFETY: start..start+count lies inside a complete read-write mapping (checked in
        // `new` and above) that outlives the slice, which borrows `self`.
        Ok(unsafe { VolatileSlice::new(self.mapping.as_mut_ptr().add(start), count) })
    }
}

impl GuestMemoryRegionBytes for GuestRegion {}
