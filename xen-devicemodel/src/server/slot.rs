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
//!
//! Layout: every size, offset and constant comes from `xen_sys::hvm` (generated from
//! `hvm/ioreq.h` and checked there against the C compilers): fields are reached through the
//! generated `ioreq` and `buffered_iopage` structs. Two bitfields are accessed as raw bits
//! (the slot's flag byte atomically, the buffered record as two aligned words); their bit
//! positions are written below, checked at compile time against the generated layout where
//! Rust can express it, and by the unit tests against the generated bitfield accessors.
//!
//! Raw pointers stay in one small type, [`Shared`]: the slots and the ring are `Copy` handles
//! kept next to the [`Mapping`](xen_foreignmemory::Mapping)s that own the pages (a borrowed
//! `View` cannot live in the same struct as its Mapping), so they hold the address, and the
//! Server that owns both keeps the pages mapped for as long as the handles exist.

// Unsafe: the ioreq page and buffered ring shared with Xen and the guest.
#![allow(unsafe_code)]

use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};

use xen_sys::hvm::{self, buf_ioreq, buffered_iopage, ioreq};

/// A generated constant as the byte it is stored in (a build error if it does not fit).
const fn byte(v: u32) -> u8 {
    assert!(v <= u8::MAX as u32);
    v as u8
}

/// `ioreq_t`'s size: 32 bytes.
pub(crate) const SLOT_SIZE: usize = size_of::<ioreq>();

/// A request's state, as in the flag byte (`STATE_*`).
pub(crate) const STATE_IOREQ_READY: u8 = byte(hvm::STATE_IOREQ_READY);
pub(crate) const STATE_IOREQ_INPROCESS: u8 = byte(hvm::STATE_IOREQ_INPROCESS);
pub(crate) const STATE_IORESP_READY: u8 = byte(hvm::STATE_IORESP_READY);

/// Request kinds (`IOREQ_TYPE_*`, the `type` byte).
pub(crate) const IOREQ_TYPE_PIO: u8 = byte(hvm::IOREQ_TYPE_PIO);
pub(crate) const IOREQ_TYPE_COPY: u8 = byte(hvm::IOREQ_TYPE_COPY);
pub(crate) const IOREQ_TYPE_PCI_CONFIG: u8 = byte(hvm::IOREQ_TYPE_PCI_CONFIG);
pub(crate) const IOREQ_TYPE_TIMEOFFSET: u8 = byte(hvm::IOREQ_TYPE_TIMEOFFSET);
pub(crate) const IOREQ_TYPE_INVALIDATE: u8 = byte(hvm::IOREQ_TYPE_INVALIDATE);

/// Reads of a slot the kernel's handler holds before the loop moves on (see
/// [`Slot::settle`]); the handler holds it for a few hundred instructions.
const SETTLE_SPINS: u32 = 100_000;

/// `IOREQ_BUFFER_SLOT_NUM`.
pub(crate) const BUF_SLOTS: u32 = hvm::IOREQ_BUFFER_SLOT_NUM;

/// The slot's flag byte (`state:4, data_is_ptr:1, dir:1, df:1, pad:1`, a C bitfield that
/// bindgen stores as `_bitfield_1`): the bits used.
const FLAGS_STATE: u8 = 0x0f;
const FLAG_DATA_IS_PTR: u8 = 1 << 4;
/// `dir`: `IOREQ_READ` (1) or `IOREQ_WRITE` (0).
const FLAG_DIR_SHIFT: u32 = 5;
const FLAG_DF: u8 = 1 << 6;

/// The buffered record's first word (`type:8, pad:1, dir:1, size:2, addr:20`); its second
/// word is `data`.
const BUF_TYPE_MASK: u32 = 0xff;
const BUF_DIR_SHIFT: u32 = 9;
const BUF_SIZE_SHIFT: u32 = 10;
const BUF_SIZE_MASK: u32 = 0x3;
const BUF_ADDR_SHIFT: u32 = 12;

// The facts the raw accesses rely on, checked against the generated layout.
const _: () = {
    // The slot: the flag byte sits between the padding and the type byte, one byte wide.
    assert!(size_of::<ioreq>() == 32);
    assert!(offset_of!(ioreq, _bitfield_1) == offset_of!(ioreq, _pad0) + 2);
    assert!(offset_of!(ioreq, _bitfield_1) + 1 == offset_of!(ioreq, type_));
    assert!(size_of::<hvm::__BindgenBitfieldUnit<[u8; 1]>>() == 1);
    // Every state fits the 4-bit state field; the flags above it are distinct bits.
    assert!(byte(hvm::STATE_IOREQ_NONE) & !FLAGS_STATE == 0);
    assert!(STATE_IOREQ_READY & !FLAGS_STATE == 0);
    assert!(STATE_IOREQ_INPROCESS & !FLAGS_STATE == 0);
    assert!(STATE_IORESP_READY & !FLAGS_STATE == 0);
    assert!(FLAG_DATA_IS_PTR & FLAGS_STATE == 0);
    assert!((1u8 << FLAG_DIR_SHIFT) & (FLAGS_STATE | FLAG_DATA_IS_PTR) == 0);
    assert!(FLAG_DF & (FLAGS_STATE | FLAG_DATA_IS_PTR | (1 << FLAG_DIR_SHIFT)) == 0);
    assert!(hvm::IOREQ_READ == 1 && hvm::IOREQ_WRITE == 0);
    // The buffered record: the type byte, then the 24-bit bitfield (pad, dir, size, addr:
    // 1 + 1 + 2 + 20 bits), then the data word.
    assert!(size_of::<buf_ioreq>() == 8);
    assert!(offset_of!(buf_ioreq, type_) == 0);
    assert!(BUF_TYPE_MASK == u8::MAX as u32);
    assert!(offset_of!(buf_ioreq, _bitfield_1) == 1);
    assert!(size_of::<hvm::__BindgenBitfieldUnit<[u8; 3]>>() == 3);
    assert!(BUF_DIR_SHIFT == 8 + 1);
    assert!(BUF_SIZE_SHIFT == BUF_DIR_SHIFT + 1);
    assert!(BUF_ADDR_SHIFT == BUF_SIZE_SHIFT + BUF_SIZE_MASK.count_ones());
    assert!(BUF_ADDR_SHIFT + 20 == 32);
    assert!(offset_of!(buf_ioreq, data) == 4);
    // The ring: two pointers, then BUF_SLOTS records, in one page.
    assert!(offset_of!(buffered_iopage, read_pointer) == 0);
    assert!(offset_of!(buffered_iopage, write_pointer) == 4);
    assert!(
        size_of::<buffered_iopage>()
            == offset_of!(buffered_iopage, buf_ioreq) + BUF_SLOTS as usize * size_of::<buf_ioreq>()
    );
    assert!(size_of::<buffered_iopage>() <= xen_foreignmemory::PAGE_SIZE);
};

/// The address of a `T` in a page shared with Xen: the one place where the server holds a raw
/// pointer.
///
/// Every access through it is volatile or atomic (the memory is shared with Xen, which writes
/// it concurrently), and it never makes a Rust reference to the shared value. Whoever builds
/// one promises (see [`Shared::new`]) that the page stays mapped while it is used.
struct Shared<T> {
    ptr: NonNull<T>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}

// SAFETY: a Shared is an address in a foreign mapping owned by the same Server that holds the
// Shared (see Shared::new); moving it to another thread moves that Server, mapping included.
// The memory itself is not tied to a thread: every access is volatile or atomic, the same
// kind of access Xen and the guest's vCPUs make from other CPUs (the argument of
// xen_foreignmemory::Mapping's own Send).
unsafe impl<T> Send for Shared<T> {}

impl<T> Shared<T> {
    /// # Safety
    /// `ptr` must be non-null, aligned for `T`, and point to a `T` in a live, writable shared
    /// mapping that stays mapped for as long as this value (or a copy) is used.
    unsafe fn new(ptr: *mut T) -> Shared<T> {
        Shared {
            // SAFETY: non-null by the caller's promise.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
        }
    }

    fn as_ptr(self) -> *mut T {
        self.ptr.as_ptr()
    }
}

// The Server that holds the slots and the ring is Send through Shared's impl alone (checked
// here, so losing it is a build error rather than a surprise for users who move a Server).
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<super::Server>();
};

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

/// One `ioreq_t` in a mapped ioreq page.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    req: Shared<ioreq>,
}

impl Slot {
    /// # Safety
    /// `ptr` must point to an `ioreq_t` (32 bytes) of a live, writable, 8-byte aligned shared
    /// mapping that stays mapped for as long as the slot is used.
    pub(crate) unsafe fn new(ptr: *mut u8) -> Slot {
        Slot {
            // SAFETY: forwarded from our caller.
            req: unsafe { Shared::new(ptr.cast::<ioreq>()) },
        }
    }

    fn state_cell(&self) -> &AtomicU8 {
        // SAFETY: the flag byte lies in the slot (Slot::new's contract), its address taken
        // without reading or making a reference; AtomicU8 has the size and alignment of u8,
        // and the memory is shared with Xen, which is what atomics are for.
        unsafe { AtomicU8::from_ptr((&raw mut (*self.req.as_ptr())._bitfield_1).cast::<u8>()) }
    }

    /// The vCPU's event channel (in the guest), which Xen writes when the server is enabled.
    pub(crate) fn vp_eport(&self) -> u32 {
        let p = self.req.as_ptr();
        // SAFETY: a field of the live slot (Slot::new's contract), aligned by its type.
        unsafe { (&raw const (*p).vp_eport).read_volatile() }
    }

    /// Waits (a bounded spin) while the slot is `INPROCESS`: the loop never leaves a slot in
    /// that state between turns, so it is the kernel's ioeventfd handler looking at the
    /// request, which then completes it or hands it back as `READY` at once.
    pub(crate) fn settle(&self) {
        for _ in 0..SETTLE_SPINS {
            if self.state_cell().load(Ordering::Acquire) & FLAGS_STATE != STATE_IOREQ_INPROCESS {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// The request if the slot holds a new one (state `READY`), marking it `INPROCESS`.
    /// The state is read with acquire ordering: the fields read after it are the ones Xen
    /// wrote before setting `READY`.
    pub(crate) fn take(&self) -> Option<Ioreq> {
        let flags = self.state_cell().load(Ordering::Acquire);
        if flags & FLAGS_STATE != STATE_IOREQ_READY {
            return None;
        }
        let p = self.req.as_ptr();
        // SAFETY: fields of the live slot (Slot::new's contract), each aligned by its type;
        // volatile reads, as Xen may write the slot concurrently.
        let req = unsafe {
            Ioreq {
                addr: (&raw const (*p).addr).read_volatile(),
                data: (&raw const (*p).data).read_volatile(),
                count: (&raw const (*p).count).read_volatile(),
                size: (&raw const (*p).size).read_volatile(),
                data_is_ptr: flags & FLAG_DATA_IS_PTR != 0,
                read: (flags >> FLAG_DIR_SHIFT) & 1 == hvm::IOREQ_READ as u8,
                df: flags & FLAG_DF != 0,
                kind: (&raw const (*p).type_).read_volatile(),
            }
        };
        self.state_cell().store(
            (flags & !FLAGS_STATE) | STATE_IOREQ_INPROCESS,
            Ordering::Relaxed,
        );
        Some(req)
    }

    /// Posts a request by value as Xen does (for stand-ins): the fields, then, with release
    /// ordering, the state `READY` and the direction.
    pub(crate) fn post(&self, kind: u8, addr: u64, size: u32, read: bool) {
        let p = self.req.as_ptr();
        // SAFETY: fields of the live, writable slot (Slot::new's contract).
        unsafe {
            (&raw mut (*p).addr).write_volatile(addr);
            (&raw mut (*p).data).write_volatile(0);
            (&raw mut (*p).count).write_volatile(1);
            (&raw mut (*p).size).write_volatile(size);
            (&raw mut (*p).type_).write_volatile(kind);
        }
        let dir = u8::from(read) << FLAG_DIR_SHIFT;
        self.state_cell()
            .store(STATE_IOREQ_READY | dir, Ordering::Release);
    }

    /// Completes the request taken last: writes `data` (for reads answered by value), then
    /// sets `IORESP_READY` with release ordering, so Xen sees the data before the state.
    pub(crate) fn complete(&self, data: Option<u64>) {
        if let Some(d) = data {
            let p = self.req.as_ptr();
            // SAFETY: a field of the live, writable slot (Slot::new's contract).
            unsafe { (&raw mut (*p).data).write_volatile(d) }
        }
        let flags = self.state_cell().load(Ordering::Relaxed);
        fence(Ordering::Release);
        self.state_cell().store(
            (flags & !FLAGS_STATE) | STATE_IORESP_READY,
            Ordering::Release,
        );
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
    page: Shared<buffered_iopage>,
}

impl Ring {
    /// # Safety
    /// `ptr` must point to a live, writable, page-aligned shared mapping of the buffered
    /// page that stays mapped for as long as the ring is used.
    pub(crate) unsafe fn new(ptr: *mut u8) -> Ring {
        Ring {
            // SAFETY: forwarded from our caller (a page is aligned for the struct).
            page: unsafe { Shared::new(ptr.cast::<buffered_iopage>()) },
        }
    }

    fn read_pointer(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 field of the live page (Ring::new's contract), its address
        // taken without a reference; shared with Xen, hence atomic.
        unsafe { AtomicU32::from_ptr(&raw mut (*self.page.as_ptr()).read_pointer) }
    }

    fn write_pointer(&self) -> &AtomicU32 {
        // SAFETY: as in `read_pointer`.
        unsafe { AtomicU32::from_ptr(&raw mut (*self.page.as_ptr()).write_pointer) }
    }

    /// The record at ring position `index`, as (first word, data word).
    fn record(&self, index: u32) -> (u32, u32) {
        let slot = (index % BUF_SLOTS) as usize;
        let page = self.page.as_ptr();
        // SAFETY: slot < BUF_SLOTS, the array's length (checked at compile time), so the
        // record lies in the live page; its address is taken without a reference. The record
        // is read as its two naturally aligned u32 words (volatile: Xen writes the ring).
        unsafe {
            let rec = (&raw const (*page).buf_ioreq)
                .cast::<buf_ioreq>()
                .add(slot)
                .cast::<u32>();
            (rec.read_volatile(), rec.add(1).read_volatile())
        }
    }

    /// Decodes the record at `read_pointer`, if Xen has published one. Call
    /// [`Ring::consume`] with its `slots` once handled.
    pub(crate) fn peek(&self) -> Option<BufIoreq> {
        let rd = self.read_pointer().load(Ordering::Acquire);
        let wr = self.write_pointer().load(Ordering::Acquire);
        if rd == wr {
            return None;
        }
        let (w, lo) = self.record(rd);
        let size = 1u8 << ((w >> BUF_SIZE_SHIFT) & BUF_SIZE_MASK);
        let mut data = u64::from(lo);
        let mut slots = 1;
        if size == 8 {
            if wr.wrapping_sub(rd) < 2 {
                // Xen publishes both halves at once; a half record means a broken ring.
                return None;
            }
            // The second slot's data word holds the high half.
            data |= u64::from(self.record(rd.wrapping_add(1)).1) << 32;
            slots = 2;
        }
        Some(BufIoreq {
            kind: (w & BUF_TYPE_MASK) as u8,
            read: (w >> BUF_DIR_SHIFT) & 1 == hvm::IOREQ_READ,
            size,
            addr: u64::from(w >> BUF_ADDR_SHIFT),
            data,
            slots,
        })
    }

    /// Hands `slots` slots back to Xen.
    pub(crate) fn consume(&self, slots: u32) {
        self.read_pointer().fetch_add(slots, Ordering::AcqRel);
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    #[test]
    fn settle_is_bounded_and_post_then_take_round_trips() {
        let mut page = Box::new(Page([0; 4096]));
        // SAFETY: a page we own, alive for the test.
        let s = unsafe { Slot::new(page.0.as_mut_ptr()) };
        s.post(IOREQ_TYPE_PIO, 0x3f8, 1, true);
        s.settle(); // READY: returns at once
        let r = s.take().unwrap();
        assert_eq!(
            (r.addr, r.size, r.count, r.read, r.kind),
            (0x3f8, 1, 1, true, 0)
        );
        // INPROCESS for good (nobody else here): settle gives up after its spins.
        s.settle();
        assert_eq!(s.take(), None);
        s.complete(Some(9));
        assert_eq!(page.0[30] & FLAGS_STATE, STATE_IORESP_READY);
    }

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

    /// Xen's side written with the generated bitfield setters, read back by `Slot`: the
    /// flag-byte bits agree with bindgen's layout of `state`, `data_is_ptr`, `dir`, `df`.
    #[test]
    fn slot_bits_match_the_generated_bitfields() {
        let mut page = Box::new(Page([0; 4096]));
        let base = page.0.as_mut_ptr().cast::<ioreq>();
        for bits in 0..8u8 {
            let (data_is_ptr, dir, df) = (bits & 1, (bits >> 1) & 1, (bits >> 2) & 1);
            let mut r = ioreq {
                addr: 0x1234_5678_9abc,
                data: 0x55,
                count: 7,
                size: 4,
                vp_eport: 9,
                type_: IOREQ_TYPE_COPY,
                ..Default::default()
            };
            r.set_state(STATE_IOREQ_READY);
            r.set_data_is_ptr(data_is_ptr);
            r.set_dir(dir);
            r.set_df(df);
            // SAFETY: slot 1 of a page we own; no other access while it is written.
            unsafe { base.add(1).write(r) };
            // SAFETY: as above, alive for the test.
            let s = unsafe { Slot::new(base.add(1).cast()) };
            assert_eq!(s.vp_eport(), 9);
            let got = s.take().unwrap();
            assert_eq!(
                got,
                Ioreq {
                    addr: 0x1234_5678_9abc,
                    data: 0x55,
                    count: 7,
                    size: 4,
                    data_is_ptr: data_is_ptr == 1,
                    read: u32::from(dir) == hvm::IOREQ_READ,
                    df: df == 1,
                    kind: IOREQ_TYPE_COPY,
                }
            );
            // SAFETY: as above.
            let after = unsafe { base.add(1).read() };
            assert_eq!(after.state(), STATE_IOREQ_INPROCESS);
            s.complete(Some(0x66));
            // SAFETY: as above.
            let after = unsafe { base.add(1).read() };
            assert_eq!(after.state(), STATE_IORESP_READY);
            assert_eq!(
                (after.data_is_ptr(), after.dir(), after.df(), after.data),
                (data_is_ptr, dir, df, 0x66)
            );
        }
    }

    /// Records written with the generated bitfield setters, decoded by `Ring`: the record's
    /// type/dir/size/addr/data positions agree with bindgen's layout.
    #[test]
    fn ring_bits_match_the_generated_bitfields() {
        let mut page = Box::new(Page([0; 4096]));
        let bp = page.0.as_mut_ptr().cast::<buffered_iopage>();
        // SAFETY: our page (4096 bytes, page-aligned); no other access during the test.
        let r = unsafe { Ring::new(bp.cast()) };
        let cases = [
            (IOREQ_TYPE_PIO, 0u8, 0u8, 0x3f8u32, 0x41u32),
            (IOREQ_TYPE_COPY, 1, 1, 0xf_ffff, 0xbeef),
            (IOREQ_TYPE_TIMEOFFSET, 0, 2, 0x8_0001, 0xdead_beef),
            (IOREQ_TYPE_COPY, 1, 3, 0x1_2345, 0x0102_0304),
        ];
        let mut at = 0u32;
        for (kind, dir, size_log2, addr, data) in cases {
            let rec = buf_ioreq {
                type_: kind,
                _bitfield_1: buf_ioreq::new_bitfield_1(1, dir, size_log2, addr),
                data,
            };
            let slots = if size_log2 == 3 { 2 } else { 1 };
            // SAFETY: records and pointers of our page, written before the ring reads them.
            unsafe {
                let recs = (&raw mut (*bp).buf_ioreq).cast::<buf_ioreq>();
                recs.add((at % BUF_SLOTS) as usize).write(rec);
                if slots == 2 {
                    let high = buf_ioreq {
                        data: !data,
                        ..Default::default()
                    };
                    recs.add(((at + 1) % BUF_SLOTS) as usize).write(high);
                }
                (&raw mut (*bp).write_pointer).write(at + slots);
            }
            let got = r.peek().unwrap();
            let want_data = if slots == 2 {
                u64::from(data) | (u64::from(!data) << 32)
            } else {
                u64::from(data)
            };
            assert_eq!(
                got,
                BufIoreq {
                    kind,
                    read: u32::from(dir) == hvm::IOREQ_READ,
                    size: 1 << size_log2,
                    addr: u64::from(addr),
                    data: want_data,
                    slots,
                }
            );
            r.consume(got.slots);
            at += slots;
            assert_eq!(r.peek(), None);
        }
    }
}
