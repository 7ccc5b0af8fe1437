//! Experimental: a video-memory region (feature `vram`).

use std::sync::Mutex;

use crate::{CacheAttr, DeviceModel, DomId, Errno, Error, Gfn, Result};

/// Domains whose dirty-VRAM tracking belongs to a live [`VramRegion`] of this process.
static CLAIMED: Mutex<Vec<DomId>> = Mutex::new(Vec::new());

fn claimed() -> std::sync::MutexGuard<'static, Vec<DomId>> {
    CLAIMED.lock().unwrap_or_else(|e| e.into_inner())
}

/// `EBUSY` when a [`VramRegion`] of this process owns `dom`'s dirty tracking.
pub(crate) fn refuse_if_claimed(op: &'static str, dom: DomId) -> Result<()> {
    if claimed().contains(&dom) {
        return Err(Error::os(op, Some(dom), Errno::EBUSY));
    }
    Ok(())
}

/// The most frames a region may have: its whole dirty bitmap must fit one dm_op buffer of
/// the kernel's default size (4096 bytes).
const MAX_FRAMES: u32 = 4096 * 8;

/// A guest's video memory: `nr` frames of its RAM moved to `vram_start_gfn` with
/// write-combining caching, whose writes are tracked. **Experimental.**
///
/// [`VramRegion::create`] moves the frames from `backing_start_gfn` to `vram_start_gfn`
/// (`XEN_DMOP_relocate_memory`) and pins their caching to write-combining
/// (`XEN_DMOP_pin_memory_cacheattr`). Dropping it removes the pin and moves the frames back,
/// restoring the original layout (errors are ignored there; use [`VramRegion::destroy`] to
/// see them).
///
/// Xen tracks dirty VRAM for one range per domain, and a query over another range restarts
/// tracking there. So a region owns its domain's tracking: while it lives, creating a second
/// region for the same domain in this process, or calling
/// [`DeviceModel::track_dirty_vram`] for the domain, fails with `EBUSY`. Queries over a
/// sub-range ([`VramRegion::dirty_bitmap`]) always ask Xen about the whole region and pick
/// the bits out. Regions hold at most 32768 frames (128 MiB).
#[derive(Debug)]
pub struct VramRegion {
    dm: DeviceModel,
    dom: DomId,
    vram_start_gfn: Gfn,
    backing_start_gfn: Gfn,
    nr: u32,
    /// Whether dropping it undoes the region: cleared by [`VramRegion::destroy`], which still
    /// lets the fields drop (the `DeviceModel`'s handle is released as usual).
    live: bool,
}

impl VramRegion {
    /// Creates the region (see the type's docs). Fails with `EBUSY` when this process already
    /// has a region for `dom`; arguments are checked before any call (at most 32768 frames,
    /// no overflow, the two ranges disjoint). On failure nothing is left changed.
    pub fn create(
        dm: &DeviceModel,
        dom: DomId,
        vram_start_gfn: Gfn,
        backing_start_gfn: Gfn,
        nr: u32,
    ) -> Result<VramRegion> {
        const OP: &str = "vram create";
        let dom = dom.require_domain(OP)?;
        crate::types::check_frames(OP, dom, vram_start_gfn.get(), nr.into())?;
        crate::types::check_frames(OP, dom, backing_start_gfn.get(), nr.into())?;
        let (v, b) = (vram_start_gfn, backing_start_gfn);
        // Inclusive last frames: check_frames proved that these sums do not overflow, and
        // working with them keeps every later sum (here and in `undo`) inside u64.
        let (v_last, b_last) = (last_frame(OP, dom, v, nr)?, last_frame(OP, dom, b, nr)?);
        if nr > MAX_FRAMES {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(dom),
                reason: "a VRAM region holds at most 32768 frames",
            });
        }
        if v <= b_last && b <= v_last {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(dom),
                reason: "the VRAM and backing ranges overlap",
            });
        }
        {
            let mut c = claimed();
            if c.contains(&dom) {
                return Err(Error::os(OP, Some(dom), Errno::EBUSY));
            }
            c.push(dom);
        }
        let release = || claimed().retain(|d| *d != dom);
        if let Err(e) = dm.relocate_memory(dom, b, v, nr) {
            release();
            return Err(e);
        }
        if let Err(e) = dm.pin_memory_cacheattr(dom, v..=v_last, CacheAttr::WriteCombining) {
            let _ = dm.relocate_memory(dom, v, b, nr);
            release();
            return Err(e);
        }
        Ok(VramRegion {
            dm: dm.clone(),
            dom,
            vram_start_gfn,
            backing_start_gfn,
            nr,
            live: true,
        })
    }

    /// The guest.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// The region's first frame.
    pub fn start_gfn(&self) -> Gfn {
        self.vram_start_gfn
    }

    /// Its size in frames.
    pub fn frames(&self) -> u32 {
        self.nr
    }

    /// Which of the `count` frames from `offset` (relative to the region's start) the guest
    /// wrote since the previous query (`XEN_DMOP_track_dirty_vram` over the whole region):
    /// bit `i` of `bitmap` is frame `start + offset + i`; bits of `bitmap` past `count` are
    /// cleared. The first query reports every frame dirty (tracking starts then). The
    /// sub-range must lie in the region and `bitmap` hold `count` bits
    /// ([`Error::InvalidArgument`] otherwise, before any call). Note that a query clears the
    /// dirty state of the whole region, not only of the sub-range.
    pub fn dirty_bitmap(&self, offset: u32, count: u32, bitmap: &mut [u64]) -> Result<()> {
        const OP: &str = "dm_op track_dirty_vram";
        let end = offset.checked_add(count);
        if count == 0 || end.is_none_or(|e| e > self.nr) {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(self.dom),
                reason: "the sub-range is empty or outside the VRAM region",
            });
        }
        if bitmap.len() < (count as usize).div_ceil(64) {
            return Err(Error::InvalidArgument {
                op: OP,
                domain: Some(self.dom),
                reason: "the bitmap holds fewer bits than frames asked for",
            });
        }
        let mut whole = [0u64; (MAX_FRAMES / 64) as usize];
        let words = (self.nr as usize).div_ceil(64);
        self.dm.track_dirty_vram_unchecked(
            self.dom,
            self.vram_start_gfn,
            self.nr,
            &mut whole[..words],
        )?;
        bitmap.fill(0);
        for i in 0..count as usize {
            let j = offset as usize + i;
            if whole[j / 64] >> (j % 64) & 1 == 1 {
                bitmap[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(())
    }

    fn undo(&mut self) -> Result<()> {
        let v = self.vram_start_gfn;
        // Checked when the region was made; the error cannot happen, but is no panic either.
        let v_last = last_frame("vram destroy", self.dom, v, self.nr);
        // Stop tracking, unpin, move back; report the first failure but try every step.
        let mut unused = [0u64; 1];
        let a = self
            .dm
            .track_dirty_vram_unchecked(self.dom, Gfn::new(0), 0, &mut unused);
        let b = v_last.and_then(|l| self.dm.unpin_memory_cacheattr(self.dom, v..=l));
        let c = self
            .dm
            .relocate_memory(self.dom, v, self.backing_start_gfn, self.nr);
        let dom = self.dom;
        claimed().retain(|d| *d != dom);
        a.and(b).and(c)
    }

    /// Undoes the region now (see [`VramRegion`]) and reports the first failure.
    pub fn destroy(mut self) -> Result<()> {
        self.live = false;
        self.undo()
    }
}

impl Drop for VramRegion {
    fn drop(&mut self) {
        if self.live {
            let _ = self.undo();
        }
    }
}

/// The last frame of `nr` frames from `first`, or [`Error::InvalidArgument`] when that is
/// past `u64::MAX` (or `nr` is 0).
fn last_frame(op: &'static str, dom: DomId, first: Gfn, nr: u32) -> Result<Gfn> {
    u64::from(nr)
        .checked_sub(1)
        .and_then(|k| first.checked_add(k))
        .ok_or(Error::InvalidArgument {
            op,
            domain: Some(dom),
            reason: "frame range overflows",
        })
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    /// Ranges at the top of the frame space: the valid ones reach the call (the stand-in
    /// answers `ENOTTY`), the others are refused with a typed error before any call. None
    /// panics (the overlap test used to overflow: a panic in debug builds).
    #[test]
    fn ranges_at_the_end_of_the_frame_space() {
        let dm = crate::tests::stand_in();
        let d = DomId::new(7);
        let m = u64::MAX;
        for (v, b, n, valid) in [
            (0, m, 1, true),
            (m, 0, 1, true),
            (m, m - 1, 1, true),
            (0, m - 1, 2, true),
            (m - 4, m - 9, 5, true),
            (0, m, 2, false),
            (m, 0, 2, false),
            (m - 3, m - 4, 4, false),
            (m, m, 1, false),
        ] {
            let e = VramRegion::create(&dm, d, Gfn::new(v), Gfn::new(b), n).unwrap_err();
            if valid {
                assert_eq!(e.errno(), Errno::ENOTTY, "{v:#x} {b:#x} {n}: {e}");
            } else {
                assert!(e.is_invalid_argument(), "{v:#x} {b:#x} {n}: {e}");
            }
            // A failed creation leaves the domain unclaimed.
            assert!(!claimed().contains(&d));
        }
        assert_eq!(dm.privcmd().handle_count(), 1);
    }

    /// `destroy` releases the handle it holds; `Drop` after it does nothing more.
    #[test]
    fn destroy_releases_the_handle() {
        let dm = crate::tests::stand_in();
        let d = DomId::new(8);
        for _ in 0..100 {
            let r = VramRegion {
                dm: dm.clone(),
                dom: d,
                vram_start_gfn: Gfn::new(u64::MAX - 3),
                backing_start_gfn: Gfn::new(0),
                nr: 4,
                live: true,
            };
            claimed().push(d);
            assert!(r.destroy().is_err()); // the stand-in answers ENOTTY
            assert!(!claimed().contains(&d));
            assert_eq!(dm.privcmd().handle_count(), 1);
        }
    }
}
