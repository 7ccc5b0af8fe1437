//! Guest memory: dirty tracking, memory types, relocation, cache attributes, and the
//! non-dm_op calls (populate, S3).

use core::ops::RangeInclusive;

use xen_hypercall::DmOpBuf;
use xen_sys::dm_op::{
    xen_dm_op_modified_memory_extent, XEN_DMOP_modified_memory, XEN_DMOP_pin_memory_cacheattr,
    XEN_DMOP_relocate_memory, XEN_DMOP_set_mem_type, XEN_DMOP_track_dirty_vram,
};
use xen_sys::hvm::HVM_PARAM_ACPI_S_STATE;

use crate::types::check_frames;
use crate::{CacheAttr, DeviceModel, DomId, Errno, Error, Gfn, MemType, Result};

/// A run of guest frames `first_gfn ..= first_gfn + nr - 1`, for
/// [`DeviceModel::modified_memory_bulk`] (`xen_dm_op_modified_memory_extent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemExtent {
    /// The first frame.
    pub first_gfn: Gfn,
    /// How many frames (at least 1).
    pub nr: u32,
}

/// `XEN_DMOP_DELETE_MEM_CACHEATTR` (`~(uint32_t)0`, a C macro bindgen does not translate).
const XEN_DMOP_DELETE_MEM_CACHEATTR: u32 = !0;

/// Most extents sent in one `XEN_DMOP_modified_memory` call from the stack.
const EXTENTS_PER_CALL: usize = 256;
/// Frames per `XENMEM_populate_physmap` call of [`DeviceModel::populate_ram`].
const POPULATE_CHUNK: usize = 512;

/// `true` if `first ..= first + nr - 1` is a non-empty run of frame numbers that does not
/// overflow: [`check_frames`] for a `u32` count, as one add and two branches on the success
/// path.
#[inline(always)]
fn frames_fit(first: u64, nr: u32) -> bool {
    let (_, overflows) = first.overflowing_add(u64::from(nr).wrapping_sub(1));
    nr != 0 && !overflows
}

/// The refusal [`check_frames`] gives for a run [`frames_fit`] refused (out of line).
#[cold]
#[inline(never)]
fn frames_refused(op: &'static str, dom: DomId, first: u64, nr: u32) -> Error {
    match check_frames(op, dom, first, nr.into()) {
        Err(e) => e,
        Ok(_) => Error::InvalidArgument {
            op,
            domain: Some(dom),
            reason: "frame range overflows",
        },
    }
}

impl DeviceModel {
    /// Starts or continues tracking writes to the `bitmap.len() * 64`-or-fewer frames
    /// `first_gfn ..= first_gfn + nr - 1` and fetches which were written since the last call
    /// (`XEN_DMOP_track_dirty_vram`): bit `i` of `bitmap` (bit `i % 64` of word `i / 64`) is
    /// frame `first_gfn + i`. Bits past `nr` are left as Xen leaves them.
    ///
    /// Xen tracks **one range per domain**: calling with another range restarts tracking there
    /// (its first answer then reports every frame dirty). Hence no splitting: a range whose
    /// bitmap exceeds the kernel's buffer limit (32768 frames with privcmd's default 4096
    /// bytes) is refused with [`Error::BufferTooLarge`] before the call. `bitmap` must hold
    /// `nr` bits ([`Error::InvalidArgument`] otherwise). With the `vram` feature, a domain
    /// whose tracking belongs to a `VramRegion` of this process is
    /// refused with `EBUSY`. HVM guests with hardware-assisted paging.
    #[inline]
    pub fn track_dirty_vram(
        &self,
        dom: DomId,
        first_gfn: Gfn,
        nr: u32,
        bitmap: &mut [u64],
    ) -> Result<()> {
        const OP: &str = "dm_op track_dirty_vram";
        if !frames_fit(first_gfn.get(), nr) {
            return Err(frames_refused(OP, dom, first_gfn.get(), nr));
        }
        #[cfg(feature = "vram")]
        crate::vram::refuse_if_claimed(OP, dom)?;
        self.track_dirty_vram_unchecked(dom, first_gfn, nr, bitmap)
    }

    #[inline]
    pub(crate) fn track_dirty_vram_unchecked(
        &self,
        dom: DomId,
        first_gfn: Gfn,
        nr: u32,
        bitmap: &mut [u64],
    ) -> Result<()> {
        const OP: &str = "dm_op track_dirty_vram";
        let words = (nr as usize).div_ceil(64).max(1);
        let Some(bitmap) = bitmap.get_mut(..words) else {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(dom),
                reason: "the bitmap holds fewer bits than frames tracked",
            });
        };
        let mut req = Self::request(XEN_DMOP_track_dirty_vram);
        req.u.track_dirty_vram.nr = nr;
        req.u.track_dirty_vram.first_pfn = first_gfn.get();
        // `dm_op` refuses reserved domain ids before the syscall.
        self.privcmd().dm_op(
            OP,
            dom,
            &[DmOpBuf::from_mut(&mut req), DmOpBuf::from_slice_mut(bitmap)],
        )
    }

    /// Stops dirty tracking for `dom` (`XEN_DMOP_track_dirty_vram` with no frames).
    pub fn stop_tracking_dirty_vram(&self, dom: DomId) -> Result<()> {
        #[cfg(feature = "vram")]
        crate::vram::refuse_if_claimed("dm_op track_dirty_vram", dom)?;
        let mut unused = [0u64; 1];
        self.track_dirty_vram_unchecked(dom, Gfn::new(0), 0, &mut unused)
    }

    /// Tells Xen that the device model wrote `nr` frames from `first_gfn` (e.g. by DMA into
    /// guest memory), so that they are marked in the domain's log-dirty bitmap, the one live
    /// migration reads (`XEN_DMOP_modified_memory` with one extent). A no-op when the domain
    /// is not in log-dirty mode. (With hardware-assisted paging,
    /// [`DeviceModel::track_dirty_vram`] reports the guest's own writes, from page types, and
    /// does not see these marks.)
    #[inline]
    pub fn modified_memory(&self, dom: DomId, first_gfn: Gfn, nr: u32) -> Result<()> {
        const OP: &str = "dm_op modified_memory";
        if !frames_fit(first_gfn.get(), nr) {
            return Err(frames_refused(OP, dom, first_gfn.get(), nr));
        }
        let mut extent = [xen_dm_op_modified_memory_extent {
            nr,
            pad: 0,
            first_pfn: first_gfn.get(),
        }];
        self.modified_memory_call(OP, dom, &mut extent)
    }

    /// [`DeviceModel::modified_memory`] for many runs of frames (`XEN_DMOP_modified_memory`).
    /// Sent in as few calls as the kernel's buffer limit allows (256 extents per call with the
    /// default 4096 bytes), from the stack: no heap allocation. Every extent is checked before
    /// the first call. On failure the extents of earlier calls have been marked.
    pub fn modified_memory_bulk(&self, dom: DomId, extents: &[MemExtent]) -> Result<()> {
        const OP: &str = "dm_op modified_memory";
        for e in extents {
            check_frames(OP, dom, e.first_gfn.get(), e.nr.into())?;
        }
        let per_call = (self.privcmd().dm_op_limits().max_buf_size
            / core::mem::size_of::<xen_dm_op_modified_memory_extent>())
        .clamp(1, EXTENTS_PER_CALL);
        let mut buf = [xen_dm_op_modified_memory_extent {
            nr: 0,
            pad: 0,
            first_pfn: 0,
        }; EXTENTS_PER_CALL];
        for chunk in extents.chunks(per_call) {
            for (b, e) in buf.iter_mut().zip(chunk) {
                *b = xen_dm_op_modified_memory_extent {
                    nr: e.nr,
                    pad: 0,
                    first_pfn: e.first_gfn.get(),
                };
            }
            self.modified_memory_call(OP, dom, &mut buf[..chunk.len()])?;
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn modified_memory_call(
        &self,
        op: &'static str,
        dom: DomId,
        extents: &mut [xen_dm_op_modified_memory_extent],
    ) -> Result<()> {
        // Never a modified_memory without its extent buffer: newer Xen (4.22) refuses a
        // modified_memory with fewer than two buffers.
        if extents.is_empty() {
            return Err(Error::InvalidArgument {
                op,
                domain: Some(dom),
                reason: "needs at least one extent",
            });
        }
        let mut req = Self::request(XEN_DMOP_modified_memory);
        req.u.modified_memory.nr_extents = extents.len() as u32;
        req.u.modified_memory.opaque = 0;
        self.privcmd().dm_op(
            op,
            dom,
            &[
                DmOpBuf::from_mut(&mut req),
                DmOpBuf::from_slice_mut(extents),
            ],
        )
    }

    /// Gives the `nr` frames from `first_gfn` the memory type `mem_type`
    /// (`XEN_DMOP_set_mem_type`). Xen only allows changes between the RAM types and
    /// [`MemType::IoreqServer`], and between [`MemType::MmioDm`] and unpopulated frames.
    pub fn set_mem_type(
        &self,
        dom: DomId,
        mem_type: MemType,
        first_gfn: Gfn,
        nr: u32,
    ) -> Result<()> {
        const OP: &str = "dm_op set_mem_type";
        check_frames(OP, dom, first_gfn.get(), nr.into())?;
        let mut req = Self::request(XEN_DMOP_set_mem_type);
        req.u.set_mem_type.nr = nr;
        req.u.set_mem_type.mem_type = mem_type as u16;
        req.u.set_mem_type.first_pfn = first_gfn.get();
        self.op(OP, dom, &mut req)
    }

    /// Makes `nr` frames from `first_gfn` read-only RAM: the guest's writes are discarded
    /// ([`DeviceModel::set_mem_type`] with [`MemType::RamRo`]).
    pub fn make_ram_region_ro(&self, dom: DomId, first_gfn: Gfn, nr: u32) -> Result<()> {
        self.set_mem_type(dom, MemType::RamRo, first_gfn, nr)
    }

    /// Makes `nr` frames from `first_gfn` ordinary writable RAM again
    /// ([`DeviceModel::set_mem_type`] with [`MemType::RamRw`]).
    pub fn make_ram_region_rw(&self, dom: DomId, first_gfn: Gfn, nr: u32) -> Result<()> {
        self.set_mem_type(dom, MemType::RamRw, first_gfn, nr)
    }

    /// Moves the `nr` frames of guest memory at `src_gfn` to `dst_gfn` in the guest's
    /// physical address space (`XEN_DMOP_relocate_memory`, like `XENMEM_add_to_physmap` with
    /// `XENMAPSPACE_gmfn_range`): the contents appear at the destination, the source frames
    /// become empty. Both ranges are checked for overflow first.
    pub fn relocate_memory(&self, dom: DomId, src_gfn: Gfn, dst_gfn: Gfn, nr: u32) -> Result<()> {
        const OP: &str = "dm_op relocate_memory";
        check_frames(OP, dom, src_gfn.get(), nr.into())?;
        check_frames(OP, dom, dst_gfn.get(), nr.into())?;
        let mut req = Self::request(XEN_DMOP_relocate_memory);
        req.u.relocate_memory.size = nr;
        req.u.relocate_memory.src_gfn = src_gfn.get();
        req.u.relocate_memory.dst_gfn = dst_gfn.get();
        self.op(OP, dom, &mut req)
    }

    /// Pins the caching type of the guest frames `frames` (inclusive) to `attr`, overriding
    /// the guest's own MTRR/PAT choice (`XEN_DMOP_pin_memory_cacheattr`). Ranges may not
    /// overlap an existing pin (`EBUSY`).
    pub fn pin_memory_cacheattr(
        &self,
        dom: DomId,
        frames: RangeInclusive<Gfn>,
        attr: CacheAttr,
    ) -> Result<()> {
        self.pin_cacheattr_raw(dom, frames, attr as u32)
    }

    /// Removes a pin made with [`DeviceModel::pin_memory_cacheattr`] over exactly `frames`
    /// (`XEN_DMOP_pin_memory_cacheattr` with `XEN_DMOP_DELETE_MEM_CACHEATTR`).
    pub fn unpin_memory_cacheattr(&self, dom: DomId, frames: RangeInclusive<Gfn>) -> Result<()> {
        self.pin_cacheattr_raw(dom, frames, XEN_DMOP_DELETE_MEM_CACHEATTR)
    }

    fn pin_cacheattr_raw(&self, dom: DomId, frames: RangeInclusive<Gfn>, ty: u32) -> Result<()> {
        const OP: &str = "dm_op pin_memory_cacheattr";
        if frames.start() > frames.end() {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(dom),
                reason: "range start is after its end",
            });
        }
        let mut req = Self::request(XEN_DMOP_pin_memory_cacheattr);
        req.u.pin_memory_cacheattr.start = frames.start().get();
        req.u.pin_memory_cacheattr.end = frames.end().get();
        req.u.pin_memory_cacheattr.type_ = ty;
        self.op(OP, dom, &mut req)
    }

    /// Allocates new RAM to `dom` at the `nr` frames from `first_gfn`
    /// (`XENMEM_populate_physmap` on the target domain, 4 KiB extents, 512 frames per call,
    /// from the stack). Fails with `ENOMEM` when Xen populated fewer (the domain's memory
    /// limit, or the host's memory, ran out); frames populated so far stay.
    ///
    /// **Not a dm_op**: the kernel refuses it on a restricted handle, so it fails there with
    /// `EPERM` before any syscall.
    pub fn populate_ram(&self, dom: DomId, first_gfn: Gfn, nr: u32) -> Result<()> {
        const OP: &str =
            "memory_op populate_physmap (not a dm_op: unavailable on a restricted handle)";
        let dom = self.require_unrestricted(OP, dom)?;
        if nr == 0 || first_gfn.checked_add(u64::from(nr) - 1).is_none() {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(dom),
                reason: "needs at least one frame and no overflow",
            });
        }
        let mut gfns = [Gfn::new(0); POPULATE_CHUNK];
        let mut next = first_gfn.get();
        let mut left = u64::from(nr);
        while left > 0 {
            let n = left.min(POPULATE_CHUNK as u64) as usize;
            for (i, g) in gfns[..n].iter_mut().enumerate() {
                *g = Gfn::new(next + i as u64);
            }
            let done = self
                .privcmd()
                .populate_physmap(dom, 0, 0, &mut gfns[..n])
                .map_err(|e| e.with_op("memory_op populate_physmap"))?;
            if done < n {
                return Err(Error::os(
                    "memory_op populate_physmap",
                    Some(dom),
                    Errno::ENOMEM,
                ));
            }
            next += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    /// Puts an HVM guest into ACPI S3 (suspend to RAM): `HVMOP_set_param` of
    /// `HVM_PARAM_ACPI_S_STATE` = 3: Xen puts the guest to sleep as real hardware would
    /// (its vCPUs lose their state, as on a real S3 entry, so the guest's firmware must handle
    /// the wake-up); [`DeviceModel::s3_awaken`] wakes it.
    ///
    /// **Not a dm_op**: fails with `EPERM` before any syscall on a restricted handle.
    pub fn s3_suspend(&self, dom: DomId) -> Result<()> {
        self.set_s_state(
            "hvm_op set_param ACPI_S_STATE (not a dm_op: unavailable on a restricted handle)",
            dom,
            3,
        )
    }

    /// Wakes an HVM guest from S3: `HVMOP_set_param` of `HVM_PARAM_ACPI_S_STATE` = 0.
    ///
    /// **Not a dm_op**: fails with `EPERM` before any syscall on a restricted handle.
    pub fn s3_awaken(&self, dom: DomId) -> Result<()> {
        self.set_s_state(
            "hvm_op set_param ACPI_S_STATE (not a dm_op: unavailable on a restricted handle)",
            dom,
            0,
        )
    }

    fn set_s_state(&self, op: &'static str, dom: DomId, state: u64) -> Result<()> {
        let dom = self.require_unrestricted(op, dom)?;
        self.privcmd()
            .hvm_set_param(dom, HVM_PARAM_ACPI_S_STATE, state)
            .map_err(|e| e.with_op("hvm_op set_param ACPI_S_STATE"))
    }

    /// The guest's ACPI sleep state (`HVMOP_get_param` of `HVM_PARAM_ACPI_S_STATE`): 3 while
    /// suspended by [`DeviceModel::s3_suspend`], 0 when running.
    ///
    /// **Not a dm_op**: fails with `EPERM` before any syscall on a restricted handle.
    pub fn acpi_s_state(&self, dom: DomId) -> Result<u64> {
        const OP: &str =
            "hvm_op get_param ACPI_S_STATE (not a dm_op: unavailable on a restricted handle)";
        let dom = self.require_unrestricted(OP, dom)?;
        self.privcmd()
            .hvm_get_param(dom, HVM_PARAM_ACPI_S_STATE)
            .map_err(|e| e.with_op("hvm_op get_param ACPI_S_STATE"))
    }
}
