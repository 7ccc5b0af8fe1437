//! Guest memory for `data_is_ptr` requests: a small cache of one-frame foreign mappings, and
//! of the frames that failed to map.

use std::time::{Duration, Instant};

use xen_foreignmemory::{ForeignMemory, MapOptions, Mapping, ReadWrite, RetryPolicy, PAGE_SIZE};

use crate::{DomId, Errno, Error, Gfn, Result};

/// How many frames stay mapped. A `rep` request touches at most a few frames; the cache
/// spares a map/unmap pair per element and per request.
const WAYS: usize = 8;

/// How many failed frames are remembered, and for how long. A guest that points request
/// after request at a frame that cannot be mapped (not RAM, paged out, ballooned away) costs
/// one map attempt per frame and period, not one per request; the period is short so that a
/// frame that comes back (paged in) works again soon. `IOREQ_TYPE_INVALIDATE` forgets them.
const FAILED_WAYS: usize = 8;
const FAILED_FOR: Duration = Duration::from_millis(100);

/// Paged-out frames in the blocking loop: a few quick retries, 0.7 ms of sleep at most
/// (the default policy's 0.7 s would stall every vCPU the loop serves).
pub(crate) const BLOCKING_RETRY: RetryPolicy = RetryPolicy {
    attempts: 3,
    first_delay: Duration::from_micros(100),
    max_delay: Duration::from_micros(400),
};

const OP: &str = "ioreq server guest memory";

/// The last [`FAILED_WAYS`] frames that failed to map, each with its errno and when.
#[derive(Debug, Default)]
struct FailedFrames {
    ways: [Option<(u64, Errno, Instant)>; FAILED_WAYS],
    next: usize,
}

impl FailedFrames {
    /// The errno of `gfn`'s failure, if it failed less than [`FAILED_FOR`] before `now`.
    fn get(&self, gfn: u64, now: Instant) -> Option<Errno> {
        self.ways.iter().flatten().find_map(|&(g, errno, at)| {
            (g == gfn && now.saturating_duration_since(at) < FAILED_FOR).then_some(errno)
        })
    }

    /// Remembers `gfn`'s failure, in place of the oldest one remembered.
    fn put(&mut self, gfn: u64, errno: Errno, now: Instant) {
        self.ways[self.next] = Some((gfn, errno, now));
        self.next = (self.next + 1) % FAILED_WAYS;
    }
}

/// Maps guest frames on demand and keeps the last few mapped (dropped on
/// `IOREQ_TYPE_INVALIDATE`, as Xen asks when the guest's memory map changed).
pub(crate) struct GuestMem {
    fm: ForeignMemory,
    dom: DomId,
    ways: [Option<(u64, Mapping<ReadWrite>)>; WAYS],
    next: usize,
    failed: FailedFrames,
    /// How paged-out frames are retried: [`BLOCKING_RETRY`] in the blocking loop,
    /// [`RetryPolicy::NEVER`] in the async one (which must never sleep).
    pub(crate) retry: RetryPolicy,
}

impl GuestMem {
    pub(crate) fn new(fm: ForeignMemory, dom: DomId) -> GuestMem {
        GuestMem {
            fm,
            dom,
            ways: Default::default(),
            next: 0,
            failed: FailedFrames::default(),
            retry: BLOCKING_RETRY,
        }
    }

    /// Forgets every cached mapping, and every remembered failure.
    pub(crate) fn invalidate(&mut self) {
        self.ways = Default::default();
        self.failed = FailedFrames::default();
    }

    fn frame(&mut self, gfn: u64) -> Result<&Mapping<ReadWrite>> {
        let hit = self
            .ways
            .iter()
            .position(|w| matches!(w, Some((g, _)) if *g == gfn));
        let i = match hit {
            Some(i) => i,
            None => {
                let now = Instant::now();
                if let Some(errno) = self.failed.get(gfn, now) {
                    return Err(Error::os(OP, Some(self.dom), errno));
                }
                let opts = MapOptions::new().retry(self.retry);
                let m = match self
                    .fm
                    .map_with(self.dom, &[Gfn::new(gfn)], ReadWrite, &opts)
                {
                    Ok(m) => m,
                    Err(e) => {
                        self.failed.put(gfn, e.errno(), now);
                        return Err(e);
                    }
                };
                let i = self.next;
                self.next = (self.next + 1) % WAYS;
                self.ways[i] = Some((gfn, m));
                i
            }
        };
        match &self.ways[i] {
            Some((_, m)) => Ok(m),
            None => Err(Error::os(OP, Some(self.dom), Errno::EFAULT)),
        }
    }

    /// Copies guest bytes at `gpa` into `buf`, across frames as needed.
    pub(crate) fn read(&mut self, mut gpa: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let off = (gpa % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - off).min(buf.len() - done);
            self.frame(gpa / PAGE_SIZE as u64)?
                .read_bytes(off, &mut buf[done..done + n])?;
            done += n;
            gpa = gpa.wrapping_add(n as u64);
        }
        Ok(())
    }

    /// Copies `data` into guest memory at `gpa`, across frames as needed.
    pub(crate) fn write(&mut self, mut gpa: u64, data: &[u8]) -> Result<()> {
        let mut done = 0;
        while done < data.len() {
            let off = (gpa % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - off).min(data.len() - done);
            self.frame(gpa / PAGE_SIZE as u64)?
                .write_bytes(off, &data[done..done + n])?;
            done += n;
            gpa = gpa.wrapping_add(n as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_frames_are_remembered_for_a_while_and_bounded() {
        let mut f = FailedFrames::default();
        let t0 = Instant::now();
        assert_eq!(f.get(5, t0), None);
        f.put(5, Errno::EINVAL, t0);
        assert_eq!(f.get(5, t0), Some(Errno::EINVAL));
        assert_eq!(f.get(5, t0 + FAILED_FOR / 2), Some(Errno::EINVAL));
        assert_eq!(f.get(6, t0), None);
        // Forgotten after the period: the next request tries to map it again.
        assert_eq!(f.get(5, t0 + FAILED_FOR), None);
        // At most FAILED_WAYS frames: the oldest makes room.
        for g in 100..100 + FAILED_WAYS as u64 {
            f.put(g, Errno::ENOENT, t0);
        }
        assert_eq!(f.get(5, t0), None);
        assert!((100..100 + FAILED_WAYS as u64).all(|g| f.get(g, t0) == Some(Errno::ENOENT)));
    }

    /// The blocking loop's retries of paged-out frames sleep well under a millisecond in all.
    #[test]
    fn blocking_retries_are_short() {
        assert!(BLOCKING_RETRY.worst_case() < Duration::from_millis(1));
        const { assert!(BLOCKING_RETRY.attempts > 0) };
    }
}
