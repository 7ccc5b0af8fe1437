//! Guest memory for `data_is_ptr` requests: a small cache of one-frame foreign mappings.

use xen_foreignmemory::{ForeignMemory, Mapping, ReadWrite, PAGE_SIZE};

use super::setup::fm_err;
use crate::{DomId, Error, Result};

/// How many frames stay mapped. A `rep` request touches at most a few frames; the cache
/// spares a map/unmap pair per element and per request.
const WAYS: usize = 8;

const OP: &str = "ioreq server guest memory";

/// Maps guest frames on demand and keeps the last few mapped (dropped on
/// `IOREQ_TYPE_INVALIDATE`, as Xen asks when the guest's memory map changed).
pub(crate) struct GuestMem {
    fm: ForeignMemory,
    dom: DomId,
    ways: [Option<(u64, Mapping<ReadWrite>)>; WAYS],
    next: usize,
}

impl GuestMem {
    pub(crate) fn new(fm: ForeignMemory, dom: DomId) -> GuestMem {
        GuestMem {
            fm,
            dom,
            ways: Default::default(),
            next: 0,
        }
    }

    /// Forgets every cached mapping.
    pub(crate) fn invalidate(&mut self) {
        self.ways = Default::default();
    }

    fn frame(&mut self, gfn: u64) -> Result<&Mapping<ReadWrite>> {
        let hit = self
            .ways
            .iter()
            .position(|w| matches!(w, Some((g, _)) if *g == gfn));
        let i = match hit {
            Some(i) => i,
            None => {
                let m = self
                    .fm
                    .map(self.dom, &[gfn], ReadWrite)
                    .map_err(|e| fm_err(OP, self.dom, e))?;
                let i = self.next;
                self.next = (self.next + 1) % WAYS;
                self.ways[i] = Some((gfn, m));
                i
            }
        };
        match &self.ways[i] {
            Some((_, m)) => Ok(m),
            None => Err(Error::os(OP, Some(self.dom), crate::Errno::EFAULT)),
        }
    }

    /// Copies guest bytes at `gpa` into `buf`, across frames as needed.
    pub(crate) fn read(&mut self, mut gpa: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let off = (gpa % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - off).min(buf.len() - done);
            let dom = self.dom;
            self.frame(gpa / PAGE_SIZE as u64)?
                .read_bytes(off, &mut buf[done..done + n])
                .map_err(|e| fm_err(OP, dom, e))?;
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
            let dom = self.dom;
            self.frame(gpa / PAGE_SIZE as u64)?
                .write_bytes(off, &data[done..done + n])
                .map_err(|e| fm_err(OP, dom, e))?;
            done += n;
            gpa = gpa.wrapping_add(n as u64);
        }
        Ok(())
    }
}
