//! The shared pages of an ioreq server: the synchronous `ioreq_t` slots (one per vCPU) and the
//! buffered ring, accessed in place with volatile reads/writes and atomics.
//!
//! Protocol facts (xen/include/public/hvm/ioreq.h, Xen's common/ioreq.c):
//! - Xen fills a vCPU's slot, then (after a write barrier) sets its state to
//!   `STATE_IOREQ_READY` and signals the vCPU's event channel. The device model reads the
//!   state, then (after a read barrier) the fields, handles the request, writes the result
//!   into `data`, and (after a write barrier) sets `STATE_IORESP_READY` and notifies. Xen then
//!   consumes the answer and sets the state back to `STATE_IOREQ_NONE`.
//! - The buffered ring has a read and a write pointer (free-running `u32` counters, slot =
//!   pointer % 511). Xen writes records, then bumps `write_pointer`; the device model reads
//!   records up to it and bumps `read_pointer`. An 8-byte write takes two consecutive slots
//!   (the second one holds the high 32 bits of the data). Xen may rewind both pointers
//!   together (an atomic 64-bit compare-and-swap), so `read_pointer` is advanced with an
//!   atomic add, never a plain store.

use core::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};

/// `ioreq_t`'s size: 32 bytes.
pub(crate) const SLOT_SIZE: usize = 32;
const OFF_ADDR: usize = 0;
const OFF_DATA: usize = 8;
const OFF_COUNT: usize = 16;
const OFF_SIZE: usize = 20;
const OFF_VP_EPORT: usize = 24;
/// The byte with `state:4, data_is_ptr:1, dir:1, df:1`.
const OFF_FLAGS: usize = 30;
const OFF_TYPE: usize = 31;

pub(crate) const STATE_IOREQ_READY: u8 = 1;
pub(crate) const STATE_IOREQ_INPROCESS: u8 = 2;
pub(crate) const STATE_IORESP_READY: u8 = 3;

pub(crate) const IOREQ_TYPE_PIO: u8 = 0;
pub(crate) const IOREQ_TYPE_COPY: u8 = 1;
pub(crate) const IOREQ_TYPE_PCI_CONFIG: u8 = 2;
pub(crate) const IOREQ_TYPE_TIMEOFFSET: u8 = 7;
pub(crate) const IOREQ_TYPE_INVALIDATE: u8 = 8;

/// `IOREQ_BUFFER_SLOT_NUM`.
pub(crate) const BUF_SLOTS: u32 = 511;

/// One request as read from a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ioreq {
    pub addr: u64,
    pub data: u64,
    pub count: u32,
    pub size: u32,
    pub data_is_ptr: bool,
    /// `true` for reads (`IOREQ_READ`).
    pub read: bool,
    /// Direction flag: elements go downwards in memory.
    pub df: bool,
    pub kind: u8,
}

/// A pointer to one `ioreq_t` in a mapped ioreq page.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    ptr: *mut u8,
}

impl Slot {
    /// # Safety
    /// `ptr` must point to 32 bytes of a live, writable, 8-byte aligned shared mapping that
    /// stays mapped for as long as the slot is used.
    pub(crate) unsafe fn new(ptr: *mut u8) -> Slot {
        Slot { ptr }
    }

    fn state_cell(&self) -> &AtomicU8 {
        // SAFETY: the flags byte lies in the mapping (Slot::new's contract); AtomicU8 has the
        // size and alignment of u8, and the memory is shared with Xen, which is what atomics
        // are for.
        unsafe { AtomicU8::from_ptr(self.ptr.add(OFF_FLAGS)) }
    }

    fn read<T: Copy>(&self, off: usize) -> T {
        // SAFETY: off + size_of::<T>() <= 32 for every caller, offsets are naturally aligned
        // for T, and the slot is mapped (Slot::new's contract).
        unsafe { core::ptr::read_volatile(self.ptr.add(off).cast::<T>()) }
    }

    fn write<T: Copy>(&self, off: usize, v: T) {
        // SAFETY: as in `read`; the mapping is writable.
        unsafe { core::ptr::write_volatile(self.ptr.add(off).cast::<T>(), v) }
    }

    /// The vCPU's event channel (in the guest), which Xen writes when the server is enabled.
    pub(crate) fn vp_eport(&self) -> u32 {
        self.read(OFF_VP_EPORT)
    }

    /// The request if the slot holds a new one (state `READY`), marking it `INPROCESS`.
    /// The state is read with acquire ordering: the fields read after it are the ones Xen
    /// wrote before setting `READY`.
    pub(crate) fn take(&self) -> Option<Ioreq> {
        let flags = self.state_cell().load(Ordering::Acquire);
        if flags & 0xf != STATE_IOREQ_READY {
            return None;
        }
        let req = Ioreq {
            addr: self.read(OFF_ADDR),
            data: self.read(OFF_DATA),
            count: self.read(OFF_COUNT),
            size: self.read(OFF_SIZE),
            data_is_ptr: flags & 0x10 != 0,
            read: flags & 0x20 != 0,
            df: flags & 0x40 != 0,
            kind: self.read(OFF_TYPE),
        };
        self.state_cell()
            .store((flags & !0xf) | STATE_IOREQ_INPROCESS, Ordering::Relaxed);
        Some(req)
    }

    /// Completes the request taken last: writes `data` (for reads answered by value), then
    /// sets `IORESP_READY` with release ordering, so Xen sees the data before the state.
    pub(crate) fn complete(&self, data: Option<u64>) {
        if let Some(d) = data {
            self.write(OFF_DATA, d);
        }
        let flags = self.state_cell().load(Ordering::Relaxed);
        fence(Ordering::Release);
        self.state_cell()
            .store((flags & !0xf) | STATE_IORESP_READY, Ordering::Release);
    }
}

/// One buffered record, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufIoreq {
    pub kind: u8,
    pub read: bool,
    pub size: u8,
    pub addr: u64,
    pub data: u64,
    /// Slots it took (1, or 2 for 8-byte records).
    pub slots: u32,
}

/// The buffered-ioreq page (`buffered_iopage_t`).
#[derive(Clone, Copy)]
pub(crate) struct Ring {
    ptr: *mut u8,
}

impl Ring {
    /// # Safety
    /// `ptr` must point to a live, writable, page-aligned shared mapping of the buffered
    /// page that stays mapped for as long as the ring is used.
    pub(crate) unsafe fn new(ptr: *mut u8) -> Ring {
        Ring { ptr }
    }

    fn pointer(&self, off: usize) -> &AtomicU32 {
        // SAFETY: read_pointer (offset 0) and write_pointer (4) are aligned u32s in the page.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast::<u32>()) }
    }

    fn record(&self, index: u32) -> u64 {
        let off = 8 + 8 * (index % BUF_SLOTS) as usize;
        // SAFETY: 8 + 8 * 510 + 8 <= 4096, 4-byte aligned; read as two u32 halves so that
        // only naturally aligned accesses are made.
        let (lo, hi) = unsafe {
            let p = self.ptr.add(off).cast::<u32>();
            (
                core::ptr::read_volatile(p),
                core::ptr::read_volatile(p.add(1)),
            )
        };
        u64::from(lo) | (u64::from(hi) << 32)
    }

    /// Decodes the record at `read_pointer`, if Xen has published one. Call
    /// [`Ring::consume`] with its `slots` once handled.
    pub(crate) fn peek(&self) -> Option<BufIoreq> {
        let rd = self.pointer(0).load(Ordering::Acquire);
        let wr = self.pointer(4).load(Ordering::Acquire);
        if rd == wr {
            return None;
        }
        // First word: type in bits 0-7, pad bit 8, dir bit 9, size (log2) bits 10-11,
        // addr in bits 12-31 (gcc's layout of the C bitfields); second word: data.
        let r = self.record(rd);
        let w = r as u32;
        let size = 1u8 << ((w >> 10) & 3);
        let mut data = r >> 32;
        let mut slots = 1;
        if size == 8 {
            if wr.wrapping_sub(rd) < 2 {
                // Xen publishes both halves at once; a half record means a broken ring.
                return None;
            }
            data |= self.record(rd.wrapping_add(1)) & 0xffff_ffff_0000_0000;
            slots = 2;
        }
        Some(BufIoreq {
            kind: w as u8,
            read: (w >> 9) & 1 != 0,
            size,
            addr: u64::from(w >> 12),
            data,
            slots,
        })
    }

    /// Hands `slots` slots back to Xen.
    pub(crate) fn consume(&self, slots: u32) {
        self.pointer(0).fetch_add(slots, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    #[test]
    fn slot_state_machine() {
        let mut page = Box::new(Page([0; 4096]));
        let p = page.0.as_mut_ptr();
        // SAFETY: a page we own, alive for the test.
        let s = unsafe { Slot::new(p.add(32)) };
        assert_eq!(s.take(), None);
        page.0[32..40].copy_from_slice(&0x3f8u64.to_le_bytes());
        page.0[48..52].copy_from_slice(&3u32.to_le_bytes()); // count
        page.0[52..56].copy_from_slice(&1u32.to_le_bytes()); // size
        page.0[56..60].copy_from_slice(&77u32.to_le_bytes()); // vp_eport
        page.0[32 + 30] = STATE_IOREQ_READY | 0x10 | 0x20 | 0x40;
        page.0[32 + 31] = IOREQ_TYPE_PIO;
        // SAFETY: as above (the writes above went through `page`, before `s` is used again).
        let s = unsafe { Slot::new(page.0.as_mut_ptr().add(32)) };
        assert_eq!(s.vp_eport(), 77);
        let r = s.take().unwrap();
        assert_eq!(
            r,
            Ioreq {
                addr: 0x3f8,
                data: 0,
                count: 3,
                size: 1,
                data_is_ptr: true,
                read: true,
                df: true,
                kind: IOREQ_TYPE_PIO
            }
        );
        assert_eq!(page.0[32 + 30], STATE_IOREQ_INPROCESS | 0x70);
        // SAFETY: as above.
        let s = unsafe { Slot::new(page.0.as_mut_ptr().add(32)) };
        assert_eq!(s.take(), None);
        s.complete(Some(0xabcd));
        assert_eq!(page.0[32 + 30], STATE_IORESP_READY | 0x70);
        assert_eq!(&page.0[40..48], &0xabcdu64.to_le_bytes());
    }

    #[test]
    fn ring_records_and_two_slot_writes() {
        let mut page = Box::new(Page([0; 4096]));
        let rec = |kind: u8, dir: u32, size_log2: u32, addr: u32, data: u32| {
            let w = u32::from(kind) | (dir << 9) | (size_log2 << 10) | (addr << 12);
            (u64::from(w) | (u64::from(data) << 32)).to_le_bytes()
        };
        // Start near the wrap of the slot index: 510, then 511 (= slot 0) for the 8-byte one.
        let start = 510u32;
        page.0[0..4].copy_from_slice(&start.to_le_bytes());
        page.0[8 + 8 * 510..8 + 8 * 511].copy_from_slice(&rec(1, 0, 3, 0xa0008, 0x4433_2211));
        page.0[8..16].copy_from_slice(&rec(1, 0, 3, 0xa0008, 0x8877_6655));
        page.0[16..24].copy_from_slice(&rec(0, 0, 1, 0x3c4, 0x0f02));
        page.0[4..8].copy_from_slice(&(start + 3).to_le_bytes());
        // SAFETY: our page, alive for the test; no other access while `r` is used.
        let r = unsafe { Ring::new(page.0.as_mut_ptr()) };
        let a = r.peek().unwrap();
        assert_eq!(
            (a.kind, a.read, a.size, a.addr, a.data, a.slots),
            (1, false, 8, 0xa0008, 0x8877_6655_4433_2211, 2)
        );
        r.consume(a.slots);
        let b = r.peek().unwrap();
        assert_eq!(
            (b.kind, b.size, b.addr, b.data, b.slots),
            (0, 2, 0x3c4, 0x0f02, 1)
        );
        r.consume(1);
        assert_eq!(r.peek(), None);
        assert_eq!(&page.0[0..4], &(start + 3).to_le_bytes());
    }
}
