//! [`XenRam`]: the guest's RAM for the devices' DMA, mapped through `xen-foreignmemory`
//! once (a region at a time, whole), as a `vm-memory` `GuestMemory`.

use vm_memory::{GuestAddress, GuestRegionCollection};
use xen_devicemodel::DomId;
use xen_foreignmemory::{ForeignMemory, GuestRegion, ReadWrite, PAGE_SIZE};

use crate::virtio_pci::GuestRam;

/// Guest RAM regions of one domain, mapped on first use and kept until Xen invalidates the
/// device model's mappings. A region that fails to map leaves no memory at all (the device
/// then needs a reset): a partial view would make requests fail at random.
pub struct XenRam {
    fm: ForeignMemory,
    dom: DomId,
    regions: Vec<(u64, u64)>,
    mem: Option<GuestRegionCollection<GuestRegion>>,
    /// The last attempt failed: do not retry until the next invalidation (a guest that
    /// notifies in a loop costs one failed map, not one per notify).
    failed: bool,
}

impl XenRam {
    /// RAM of `dom`: `regions` as (guest-physical start, length), page-aligned.
    pub fn new(fm: ForeignMemory, dom: DomId, regions: Vec<(u64, u64)>) -> XenRam {
        XenRam {
            fm,
            dom,
            regions,
            mem: None,
            failed: false,
        }
    }

    fn map(&self) -> Option<GuestRegionCollection<GuestRegion>> {
        let page = PAGE_SIZE as u64;
        let mut out = Vec::with_capacity(self.regions.len());
        for &(start, len) in &self.regions {
            if start % page != 0 || len % page != 0 || len == 0 {
                return None;
            }
            let first = start / page;
            let gfns: Vec<xen_foreignmemory::Gfn> = (first..first.checked_add(len / page)?)
                .map(xen_foreignmemory::Gfn::new)
                .collect();
            let m = self.fm.map(self.dom, &gfns, ReadWrite).ok()?;
            out.push(GuestRegion::new(GuestAddress(start), m).ok()?);
        }
        GuestRegionCollection::from_regions(out).ok()
    }
}

impl GuestRam for XenRam {
    type Memory = GuestRegionCollection<GuestRegion>;

    fn memory(&mut self) -> Option<&Self::Memory> {
        if self.mem.is_none() && !self.failed {
            self.mem = self.map();
            self.failed = self.mem.is_none();
        }
        self.mem.as_ref()
    }

    fn invalidate(&mut self) {
        self.mem = None;
        self.failed = false;
    }
}

impl core::fmt::Debug for XenRam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenRam")
            .field("dom", &self.dom)
            .field("regions", &self.regions)
            .field("mapped", &self.mem.is_some())
            .finish()
    }
}
