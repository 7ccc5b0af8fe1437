//! The request logic against a recording device and plain RAM (no Xen needed).

// Unsafe: tests over fake slots in plain memory.
#![allow(unsafe_code)]

use super::*;
use crate::server::{Claim, ServerBuilder};
use crate::test_alloc::allocations;
use crate::DomId;
use std::sync::Arc;

/// Guest memory: `pages` bytes starting at guest-physical `BASE`.
struct Ram(Vec<u8>);
const BASE: u64 = 0x10_0000;

impl GuestMemory for Ram {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let o = (gpa - BASE) as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        let o = (gpa - BASE) as usize;
        self.0[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn invalidate(&mut self) {}
}

/// Records accesses into a fixed array (no allocation); reads answer a counter.
struct Rec {
    log: Log,
    next: u64,
}

impl Device for Rec {
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        self.next += 1;
        self.log
            .lock()
            .unwrap()
            .push(('i', port.into(), size, self.next));
        self.next as u32
    }
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        self.log
            .lock()
            .unwrap()
            .push(('o', port.into(), size, value.into()));
    }
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        self.next += 1;
        self.log.lock().unwrap().push(('r', addr, size, self.next));
        self.next
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        self.log.lock().unwrap().push(('w', addr, size, value));
    }
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        self.log
            .lock()
            .unwrap()
            .push(('c', u64::from(dev.to_raw()), size, reg.into()));
        0xdead_beef
    }
}

type Log = Arc<std::sync::Mutex<Vec<(char, u64, u8, u64)>>>;

fn dispatch() -> (Dispatch<Ram>, Log) {
    let log: Log = Arc::new(std::sync::Mutex::new(Vec::with_capacity(100_000)));
    let b = ServerBuilder::new(DomId::new(1)).device(
        Rec {
            log: log.clone(),
            next: 0,
        },
        [
            Claim::Ports(0x510..=0x513),
            Claim::Mmio(0xe000_0000..=0xe000_ffff),
            Claim::Pci(Sbdf::new(0, 0, 3, 0).unwrap()),
        ],
    );
    let ram: Vec<u8> = (0..3 * 4096).map(|i| (i * 7 + i / 256) as u8).collect();
    let d = Dispatch::new(b.devices, b.keys, Ram(ram));
    (d, log)
}

#[allow(clippy::too_many_arguments)]
fn req(
    kind: u8,
    addr: u64,
    data: u64,
    count: u32,
    size: u32,
    ptr: bool,
    read: bool,
    df: bool,
) -> Ioreq {
    Ioreq {
        addr,
        data,
        count,
        size,
        data_is_ptr: ptr,
        read,
        df,
        kind,
    }
}

#[test]
fn rep_outs_through_guest_memory_both_directions() {
    for df in [false, true] {
        let (mut d, log) = dispatch();
        // 700 words = 1400 bytes: three chunks, across a page boundary at BASE + 4096.
        let start = BASE + 4096 - 600;
        let first = if df { start + 2 * 699 } else { start };
        let r = req(slot::IOREQ_TYPE_PIO, 0x510, first, 700, 2, true, false, df);
        assert_eq!(d.handle(&r), None);
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 700);
        for (j, e) in log.iter().enumerate() {
            let i = if df { 699 - j } else { j };
            let o = 4096 - 600 + 2 * i;
            let want = u64::from(u16::from_le_bytes([d.mem.0[o], d.mem.0[o + 1]]));
            assert_eq!(*e, ('o', 0x510, 2, want), "df {df} element {j}");
        }
    }
}

#[test]
fn rep_ins_and_string_mmio_reads_fill_guest_memory() {
    for df in [false, true] {
        let (mut d, log) = dispatch();
        let first = if df { BASE + 4 * 299 } else { BASE };
        let r = req(slot::IOREQ_TYPE_PIO, 0x510, first, 300, 4, true, true, df);
        assert_eq!(d.handle(&r), None);
        for i in 0..300usize {
            // Element i (counter value i + 1) lands at first +/- 4 i.
            let o = if df { 4 * (299 - i) } else { 4 * i };
            let v = u32::from_le_bytes(d.mem.0[o..o + 4].try_into().unwrap());
            assert_eq!(v, i as u32 + 1, "df {df} element {i}");
        }
        // MMIO: the device address moves with the direction flag too.
        log.lock().unwrap().clear();
        let r = req(
            slot::IOREQ_TYPE_COPY,
            0xe000_1000,
            BASE + 8192,
            3,
            8,
            true,
            true,
            df,
        );
        d.handle(&r);
        let addrs: Vec<u64> = log.lock().unwrap().iter().map(|e| e.1).collect();
        let want = if df {
            [0xe000_1000, 0xe000_0ff8, 0xe000_0ff0]
        } else {
            [0xe000_1000, 0xe000_1008, 0xe000_1010]
        };
        assert_eq!(addrs, want);
    }
}

#[test]
fn values_pci_config_and_unclaimed() {
    let (mut d, log) = dispatch();
    // A port read answers by value, masked to the size.
    let r = req(slot::IOREQ_TYPE_PIO, 0x511, 0, 1, 1, false, true, false);
    assert_eq!(d.handle(&r), Some(1));
    // PCI config: SBDF in the high half of addr, register in the low bits.
    let sbdf = Sbdf::new(0, 0, 3, 0).unwrap();
    let r = req(
        slot::IOREQ_TYPE_PCI_CONFIG,
        (u64::from(sbdf.to_raw()) << 32) | 0x3e,
        0,
        1,
        2,
        false,
        true,
        false,
    );
    assert_eq!(d.handle(&r), Some(0xbeef));
    assert_eq!(log.lock().unwrap().last(), Some(&('c', 0x18, 2, 0x3e)));
    // Another function's config space and an unregistered port: all-ones.
    let r = req(
        slot::IOREQ_TYPE_PCI_CONFIG,
        1 << 40,
        0,
        1,
        4,
        false,
        true,
        false,
    );
    assert_eq!(d.handle(&r), Some(0xffff_ffff));
    let r = req(slot::IOREQ_TYPE_PIO, 0x600, 0, 1, 2, false, true, false);
    assert_eq!(d.handle(&r), Some(0xffff));
    // Invalidate and time-offset are acknowledged.
    assert_eq!(
        d.handle(&req(
            slot::IOREQ_TYPE_INVALIDATE,
            0,
            0,
            1,
            0,
            false,
            false,
            false
        )),
        None
    );
    assert_eq!(
        d.handle(&req(
            slot::IOREQ_TYPE_TIMEOFFSET,
            0,
            5,
            1,
            0,
            false,
            false,
            false
        )),
        None
    );
    let s = d.stats;
    assert_eq!(
        (
            s.port,
            s.pci_config,
            s.invalidate,
            s.timeoffset,
            s.unclaimed
        ),
        (2, 2, 1, 1, 2)
    );
    assert_eq!(
        s.to_string(),
        "port=2 mmio=0 pci-config=2 buffered=0 other=2"
    );
}

#[test]
fn requests_allocate_nothing() {
    let (mut d, log) = dispatch();
    let reqs = [
        req(slot::IOREQ_TYPE_PIO, 0x510, 0x41, 1, 1, false, false, false),
        req(slot::IOREQ_TYPE_PIO, 0x510, 0, 1, 4, false, true, false),
        req(
            slot::IOREQ_TYPE_PIO,
            0x510,
            BASE,
            1000,
            4,
            true,
            false,
            false,
        ),
        req(
            slot::IOREQ_TYPE_COPY,
            0xe000_1000,
            BASE + 8 * 99,
            100,
            8,
            true,
            true,
            true,
        ),
        req(
            slot::IOREQ_TYPE_COPY,
            0xe000_0000,
            7,
            1,
            8,
            false,
            false,
            false,
        ),
        req(
            slot::IOREQ_TYPE_PCI_CONFIG,
            0x18 << 32,
            0,
            1,
            4,
            false,
            true,
            false,
        ),
    ];
    for r in &reqs {
        d.handle(r);
    }
    log.lock().unwrap().clear();
    let a0 = allocations();
    for _ in 0..10 {
        for r in &reqs {
            d.handle(r);
        }
    }
    assert_eq!(allocations() - a0, 0);
}

#[test]
fn buffered_records_reach_the_devices() {
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    let mut page = Box::new(Page([0; 4096]));
    let w = |kind: u32, size_log2: u32, addr: u32| kind | (size_log2 << 10) | (addr << 12);
    let put = |p: &mut Page, slot: usize, w: u32, data: u32| {
        p.0[8 + 8 * slot..12 + 8 * slot].copy_from_slice(&w.to_le_bytes());
        p.0[12 + 8 * slot..16 + 8 * slot].copy_from_slice(&data.to_le_bytes());
    };
    // An 8-byte MMIO write (two slots) and a 2-byte port write; the MMIO address must fit
    // in the record's 20 bits, so claim low MMIO for this test.
    put(&mut page, 0, w(1, 3, 0xa0008), 0x5566_7788);
    put(&mut page, 1, w(1, 3, 0xa0008), 0x1122_3344);
    put(&mut page, 2, w(0, 1, 0x512), 0xbeef);
    page.0[4..8].copy_from_slice(&3u32.to_le_bytes());
    let log: Log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let b = ServerBuilder::new(DomId::new(1)).device(
        Rec {
            log: log.clone(),
            next: 0,
        },
        [Claim::Ports(0x510..=0x513), Claim::Mmio(0xa0000..=0xbffff)],
    );
    let mut d = Dispatch::new(b.devices, b.keys, Ram(vec![0; 4096]));
    // SAFETY: our page, alive for the test.
    let ring = unsafe { Ring::new(page.0.as_mut_ptr()) };
    assert!(!d.drain_ring(ring));
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            ('w', 0xa0008, 8, 0x1122_3344_5566_7788),
            ('o', 0x512, 2, 0xbeef)
        ]
    );
    assert_eq!(d.stats.buffered, 2);
    assert_eq!(&page.0[0..4], &3u32.to_le_bytes());
}

/// A buffered page in host memory, with helpers to publish records.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

impl Page {
    fn new() -> Box<Page> {
        Box::new(Page([0; 4096]))
    }
    /// Writes record `index` (slot index % 511): type, dir, size (log2), addr, data.
    fn put(&mut self, index: u32, kind: u32, read: bool, size_log2: u32, addr: u32, data: u32) {
        let w = kind | (u32::from(read) << 9) | (size_log2 << 10) | (addr << 12);
        let o = 8 + 8 * (index % slot::BUF_SLOTS) as usize;
        self.0[o..o + 4].copy_from_slice(&w.to_le_bytes());
        self.0[o + 4..o + 8].copy_from_slice(&data.to_le_bytes());
    }
    fn set_pointers(&mut self, read: u32, write: u32) {
        self.0[0..4].copy_from_slice(&read.to_le_bytes());
        self.0[4..8].copy_from_slice(&write.to_le_bytes());
    }
    fn read_pointer(&self) -> u32 {
        u32::from_le_bytes(self.0[0..4].try_into().unwrap())
    }
}

/// A device that only counts its calls (a request with a huge count must not reach it 4
/// billion times).
#[derive(Default)]
struct Counter(u64);

impl Device for Counter {
    fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
        self.0 += 1;
        0
    }
    fn port_write(&mut self, _port: u16, _size: u8, _value: u32) {
        self.0 += 1;
    }
    fn mmio_read(&mut self, _addr: u64, _size: u8) -> u64 {
        self.0 += 1;
        0
    }
    fn mmio_write(&mut self, _addr: u64, _size: u8, _value: u64) {
        self.0 += 1;
    }
    fn pci_config_read(&mut self, _dev: Sbdf, _reg: u16, _size: u8) -> u32 {
        self.0 += 1;
        0
    }
    fn pci_config_write(&mut self, _dev: Sbdf, _reg: u16, _size: u8, _value: u32) {
        self.0 += 1;
    }
}

fn counting() -> (Dispatch<Ram>, Arc<std::sync::Mutex<Counter>>) {
    let c = Arc::new(std::sync::Mutex::new(Counter::default()));
    let b = ServerBuilder::new(DomId::new(1)).device(
        c.clone(),
        [
            Claim::Ports(0x510..=0x513),
            Claim::Mmio(0xa0000..=0xbffff),
            Claim::Pci(Sbdf::new(0, 0, 3, 0).unwrap()),
        ],
    );
    (Dispatch::new(b.devices, b.keys, Ram(vec![0; 3 * 4096])), c)
}

fn calls(c: &Arc<std::sync::Mutex<Counter>>) -> u64 {
    c.lock().unwrap().0
}

#[test]
fn rep_counts_above_xens_limit_are_refused() {
    let (mut d, c) = counting();
    // The largest count Xen sends is served in full...
    let r = req(
        slot::IOREQ_TYPE_PIO,
        0x510,
        0,
        MAX_REP_COUNT,
        1,
        false,
        false,
        false,
    );
    assert_eq!(d.handle(&r), None);
    assert_eq!(calls(&c), u64::from(MAX_REP_COUNT));
    let r = req(
        slot::IOREQ_TYPE_PIO,
        0x510,
        BASE,
        MAX_REP_COUNT,
        2,
        true,
        false,
        false,
    );
    d.handle(&r);
    assert_eq!(calls(&c), 2 * u64::from(MAX_REP_COUNT));
    // ...anything larger reaches no device (it made 4.3 billion calls before).
    for (kind, ptr, read, count) in [
        (slot::IOREQ_TYPE_PIO, false, true, u32::MAX),
        (slot::IOREQ_TYPE_PIO, true, true, MAX_REP_COUNT + 1),
        (slot::IOREQ_TYPE_COPY, false, false, u32::MAX),
        (slot::IOREQ_TYPE_COPY, true, true, 1 << 20),
    ] {
        let addr = if kind == slot::IOREQ_TYPE_PIO {
            0x510
        } else {
            0xa0000
        };
        let r = req(kind, addr, BASE, count, 4, ptr, read, false);
        let want = (read && !ptr).then_some(u64::MAX);
        assert_eq!(d.handle(&r), want, "{r:?}");
        assert_eq!(d.last_refusal.unwrap().count, count);
    }
    assert_eq!(calls(&c), 2 * u64::from(MAX_REP_COUNT));
    assert_eq!(d.stats.refused, 4);
    let last = d.last_refusal.unwrap();
    assert_eq!(last.reason, "a rep count above Xen's limit of 4096");
    assert!(last.to_string().contains("count 1048576"), "{last}");
    // Nothing was written to guest memory by the refused reads.
    assert!(d.mem.0.iter().all(|&b| b == 0));
}

#[test]
fn access_sizes_the_device_trait_does_not_take_are_refused() {
    let (mut d, c) = counting();
    let pci = u64::from(Sbdf::new(0, 0, 3, 0).unwrap().to_raw()) << 32;
    for (kind, addr, size) in [
        (slot::IOREQ_TYPE_PCI_CONFIG, pci | 0x10, 0),
        (slot::IOREQ_TYPE_PCI_CONFIG, pci | 0x10, 3),
        (slot::IOREQ_TYPE_PCI_CONFIG, pci | 0x10, 8),
        (slot::IOREQ_TYPE_PCI_CONFIG, pci | 0xffe, 4),
        (slot::IOREQ_TYPE_PIO, 0x510, 8),
        (slot::IOREQ_TYPE_PIO, 0x510, 0),
        (slot::IOREQ_TYPE_PIO, 0x510, 3),
        (slot::IOREQ_TYPE_COPY, 0xa0000, 16),
    ] {
        for read in [false, true] {
            let r = req(kind, addr, 0, 1, size, false, read, false);
            let got = d.handle(&r);
            if read {
                assert!(got.is_some_and(|v| v & 0xffff_ffff == 0xffff_ffff), "{r:?}");
            } else {
                assert_eq!(got, None, "{r:?}");
            }
        }
    }
    assert_eq!(calls(&c), 0, "no bad size reached the device");
    assert_eq!(d.stats.refused, 16);
    assert!(d.stats.to_string().ends_with(" refused=16"), "{}", d.stats);
    // The sizes it does take still arrive, unchanged.
    for size in [1, 2, 4] {
        d.handle(&req(
            slot::IOREQ_TYPE_PCI_CONFIG,
            pci | 0x10,
            0,
            1,
            size,
            false,
            true,
            false,
        ));
    }
    d.handle(&req(
        slot::IOREQ_TYPE_COPY,
        0xa0000,
        0,
        1,
        8,
        false,
        true,
        false,
    ));
    assert_eq!(calls(&c), 4);
}

#[test]
fn buffered_records_of_bad_sizes_are_refused() {
    let mut page = Page::new();
    page.put(0, 0, false, 3, 0x510, 0x11); // 8-byte port write: two slots
    page.put(1, 0, false, 3, 0x510, 0x22);
    page.put(2, 1, true, 2, 0xa0000, 0); // a read: Xen buffers writes only
    page.put(3, 0, false, 0, 0x511, 0x33); // a good one
    page.set_pointers(0, 4);
    let (mut d, c) = counting();
    // SAFETY: our page, alive for the test.
    let ring = unsafe { Ring::new(page.0.as_mut_ptr()) };
    assert!(!d.drain_ring(ring));
    assert_eq!(calls(&c), 1);
    assert_eq!(d.stats.refused, 2);
    assert_eq!(page.read_pointer(), 4);
}

#[test]
fn one_turn_takes_at_most_one_ring_of_records() {
    // Write pointer far ahead (as if the guest refilled the ring while it drains).
    let mut page = Page::new();
    for i in 0..slot::BUF_SLOTS {
        page.put(i, 0, false, 0, 0x510, i);
    }
    page.set_pointers(0, 100_000);
    let (mut d, c) = counting();
    // SAFETY: our page, alive for the test.
    let ring = unsafe { Ring::new(page.0.as_mut_ptr()) };
    assert!(d.drain_ring(ring), "records are left for the next turn");
    assert_eq!(calls(&c), u64::from(RING_RECORDS_PER_TURN));
    assert_eq!(page.read_pointer(), RING_RECORDS_PER_TURN);
    assert!(d.drain_ring(ring));
    assert_eq!(calls(&c), 2 * u64::from(RING_RECORDS_PER_TURN));
}
