//! The virtio-blk PCI device driven as a guest driver would, on the host: a fake guest RAM
//! (`vm-memory` mmap), a disk in memory, and the runtime's `Harness` recording interrupts
//! and claims. Good requests, then each kind of nonsense a guest can program.
#![allow(missing_docs)]

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use xen_devicemodel::server::{Access, Claim, Harness, HarnessEvent};
use xen_devicemodel::{DomId, IntxPin, Sbdf};
use xen_pcdm::blk::{self, Broken, MemDisk};
use xen_pcdm::virtio_pci::{FixedRam, VirtioBlk, BAR_SIZE, S_NEEDS_RESET};

const RAM: usize = 1 << 20;
const BAR: u64 = 0xe000_0000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const DISK: usize = 64 * 1024;

type Blk = VirtioBlk<FixedRam<GuestMemoryMmap>, MemDisk>;

struct Drv {
    dev: Blk,
    h: Harness,
    mem: GuestMemoryMmap,
    sbdf: Sbdf,
    avail_idx: u16,
}

fn disk_pattern() -> Vec<u8> {
    (0..DISK).map(|i| (i * 13 + i / 512) as u8).collect()
}

impl Drv {
    fn new() -> Drv {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
        let sbdf = Sbdf::new(0, 0, 3, 0).unwrap();
        let dev = VirtioBlk::new(
            sbdf,
            FixedRam(mem.clone()),
            MemDisk(disk_pattern()),
            "xen-pcdm-test",
        );
        let h = Harness::new(DomId::new(3), 0, 0, dev.claims());
        Drv {
            dev,
            h,
            mem,
            sbdf,
            avail_idx: 0,
        }
    }

    fn cfg_read(&mut self, reg: u16, size: u8) -> u32 {
        let a = Access::PciRead {
            dev: self.sbdf,
            reg,
            size,
        };
        self.h.access(&mut self.dev, a) as u32
    }

    fn cfg_write(&mut self, reg: u16, size: u8, value: u32) {
        let a = Access::PciWrite {
            dev: self.sbdf,
            reg,
            size,
            value,
        };
        self.h.access(&mut self.dev, a);
    }

    fn rd(&mut self, off: u64, size: u8) -> u64 {
        let a = Access::MmioRead {
            addr: BAR + off,
            size,
        };
        self.h.access(&mut self.dev, a)
    }

    fn wr(&mut self, off: u64, size: u8, value: u64) {
        let a = Access::MmioWrite {
            addr: BAR + off,
            size,
            value,
        };
        self.h.access(&mut self.dev, a);
    }

    /// Places BAR0 and turns memory decoding (and bus mastering) on.
    fn place_bar(&mut self) {
        self.cfg_write(0x10, 4, BAR as u32);
        self.cfg_write(0x04, 2, 0x6);
    }

    /// The driver's set-up (virtio 1.1, 3.1.1), queue size `qsize`, MSI-X on or off.
    fn setup(&mut self, qsize: u16, msix: bool) {
        self.place_bar();
        self.wr(0x14, 1, 0);
        self.wr(0x14, 1, 1 | 2);
        self.wr(0x08, 4, 1);
        self.wr(0x0c, 4, 1); // VERSION_1
        self.wr(0x08, 4, 0);
        self.wr(0x0c, 4, 1 << 9); // FLUSH
        self.wr(0x14, 1, 1 | 2 | 8);
        assert_eq!(self.rd(0x14, 1) & 8, 8, "FEATURES_OK kept");
        self.wr(0x16, 2, 0);
        self.wr(0x18, 2, qsize.into());
        self.wr(0x20, 4, DESC);
        self.wr(0x24, 4, 0);
        self.wr(0x28, 4, AVAIL);
        self.wr(0x2c, 4, 0);
        self.wr(0x30, 4, USED);
        self.wr(0x34, 4, 0);
        if msix {
            // Vector 1: MSI to APIC 0 vector 0x41, unmasked; the queue uses it.
            self.wr(0x3800 + 16, 4, 0xfee0_0000);
            self.wr(0x3800 + 24, 4, 0x41);
            self.wr(0x3800 + 28, 4, 0);
            self.cfg_write(0x86, 2, 0x8000);
            self.wr(0x1a, 2, 1);
        }
        self.wr(0x1c, 2, 1);
        self.wr(0x14, 1, 1 | 2 | 8 | 4);
        self.h.events();
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + 16 * u64::from(i));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    fn header(&self, at: u64, kind: u32, sector: u64) {
        self.mem.write_obj(kind, GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    /// Makes chain `head` available and notifies.
    fn submit(&mut self, head: u16, qsize: u16) {
        let slot = u64::from(self.avail_idx % qsize);
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        self.wr(0x3000, 2, 0);
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn used_len(&self, n: u64) -> u32 {
        self.mem
            .read_obj(GuestAddress(USED + 4 + 8 * n + 4))
            .unwrap()
    }

    fn byte(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }
}

const NEXT: u16 = 1;
const WRITE: u16 = 2;

#[test]
fn config_space_identifies_a_modern_virtio_blk() {
    let mut d = Drv::new();
    assert_eq!(d.cfg_read(0, 4), 0x1042_1af4);
    assert_eq!(d.cfg_read(0x06, 2) & 0x10, 0x10, "capability list");
    assert_eq!(d.cfg_read(0x0b, 1), 0x01, "storage class");
    // BAR sizing.
    d.cfg_write(0x10, 4, u32::MAX);
    assert_eq!(d.cfg_read(0x10, 4), !(BAR_SIZE - 1));
    // The capability chain: common, notify, ISR, device, MSI-X.
    let mut at = d.cfg_read(0x34, 1) as u16;
    let mut kinds = Vec::new();
    while at != 0 {
        let id = d.cfg_read(at, 1);
        kinds.push(if id == 9 {
            d.cfg_read(at + 3, 1)
        } else {
            0x100 | id
        });
        at = d.cfg_read(at + 1, 1) as u16;
    }
    assert_eq!(kinds, vec![1, 2, 3, 4, 0x111]);
    assert!(d.h.events().is_empty(), "sizing claims nothing");
}

#[test]
fn reads_writes_flush_and_id_complete_with_msix() {
    let mut d = Drv::new();
    d.setup(8, true);
    // Read 4 KiB from sector 8.
    d.header(0x4000, blk::T_IN, 8);
    d.desc(0, 0x4000, 16, NEXT, 1);
    d.desc(1, 0x5000, 4096, NEXT | WRITE, 2);
    d.desc(2, 0x6000, 1, WRITE, 0);
    d.mem.write_obj(0xffu8, GuestAddress(0x6000)).unwrap();
    d.submit(0, 8);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used_len(0), 4097);
    assert_eq!(d.byte(0x6000), blk::S_OK);
    let mut got = vec![0u8; 4096];
    d.mem.read_slice(&mut got, GuestAddress(0x5000)).unwrap();
    assert_eq!(got, disk_pattern()[4096..8192]);
    assert_eq!(d.h.events(), vec![HarnessEvent::Msi(0xfee0_0000, 0x41)]);
    // Write 1 KiB at sector 2, across two data descriptors.
    d.header(0x4000, blk::T_OUT, 2);
    d.mem
        .write_slice(&[0xa5; 1024], GuestAddress(0x7000))
        .unwrap();
    d.desc(3, 0x4000, 16, NEXT, 4);
    d.desc(4, 0x7000, 600, NEXT, 5);
    d.desc(5, 0x7000 + 600, 424, NEXT, 6);
    d.desc(6, 0x6000, 1, WRITE, 0);
    d.submit(3, 8);
    assert_eq!(d.used_idx(), 2);
    assert_eq!(d.byte(0x6000), blk::S_OK);
    assert_eq!(&d.dev.disk().0[1024..2048], &[0xa5; 1024][..]);
    assert_eq!(d.dev.disk().0[2048], disk_pattern()[2048]);
    // Flush, then the identifier.
    d.header(0x4000, blk::T_FLUSH, 0);
    d.desc(0, 0x4000, 16, NEXT, 2);
    d.submit(0, 8);
    assert_eq!(d.byte(0x6000), blk::S_OK);
    d.header(0x4000, blk::T_GET_ID, 0);
    d.desc(0, 0x4000, 16, NEXT, 1);
    d.desc(1, 0x5000, 20, NEXT | WRITE, 2);
    d.submit(0, 8);
    let mut id = [0u8; 13];
    d.mem.read_slice(&mut id, GuestAddress(0x5000)).unwrap();
    assert_eq!(&id, b"xen-pcdm-test");
    let s = d.dev.stats();
    assert_eq!((s.reads, s.writes, s.other, s.errors), (1, 1, 2, 0));
    assert_eq!(d.dev.status() & S_NEEDS_RESET, 0);
    // The capacity in sectors.
    assert_eq!(d.rd(0x2000, 4), (DISK / 512) as u64);
}

#[test]
fn pirq_msi_vectors_are_sent_though_their_mask_bits_stay_set() {
    // What Linux in a Xen HVM guest does: MSI-X on with the function masked while it
    // writes each entry as a pirq (destination = pirq, vector 0), then clears the
    // function mask; the entries' own mask bits it never touches.
    let mut d = Drv::new();
    d.setup(4, false);
    d.cfg_write(0x86, 2, 0xc000);
    let pirq_addr = 0xfee0_0000u64 | (55 << 12);
    d.wr(0x3800 + 16, 4, pirq_addr);
    d.wr(0x3800 + 20, 4, 0);
    d.wr(0x3800 + 24, 4, 0x0300);
    d.cfg_write(0x86, 2, 0x8000);
    d.wr(0x1a, 2, 1);
    assert_eq!(d.rd(0x3800 + 28, 4) & 1, 1, "the entry is still masked");
    d.h.events();
    d.header(0x4000, blk::T_IN, 0);
    d.desc(0, 0x4000, 16, NEXT, 1);
    d.desc(1, 0x6000, 1, WRITE, 0);
    d.submit(0, 4);
    assert_eq!(d.h.events(), vec![HarnessEvent::Msi(pirq_addr, 0x0300)]);
    assert_eq!(d.dev.stats().msi, 1);
    // An ordinary vector (non-zero) keeps honouring its mask bit.
    d.wr(0x3800 + 24, 4, 0x41);
    d.submit(0, 4);
    assert!(d.h.events().is_empty(), "masked: only its pending bit");
    d.wr(0x3800 + 28, 4, 0);
    assert_eq!(d.h.events(), vec![HarnessEvent::Msi(pirq_addr, 0x41)]);
}

#[test]
fn intx_when_msix_is_off_and_the_isr_read_lowers_it() {
    let mut d = Drv::new();
    d.setup(4, false);
    d.header(0x4000, blk::T_IN, 0);
    d.desc(0, 0x4000, 16, NEXT, 1);
    d.desc(1, 0x6000, 1, WRITE, 0);
    d.submit(0, 4);
    let sbdf = d.sbdf;
    assert_eq!(
        d.h.events(),
        vec![HarnessEvent::Intx(sbdf, IntxPin::A, true)]
    );
    assert_eq!(d.rd(0x1000, 1), 1, "ISR: queue interrupt");
    assert_eq!(
        d.h.events(),
        vec![HarnessEvent::Intx(sbdf, IntxPin::A, false)]
    );
    assert_eq!(d.rd(0x1000, 1), 0, "read clears it");
}

#[test]
fn the_bar_is_claimed_where_the_guest_puts_it() {
    let mut d = Drv::new();
    let size = u64::from(BAR_SIZE);
    d.place_bar();
    assert_eq!(
        d.h.events(),
        vec![HarnessEvent::Claim(Claim::Mmio(BAR..=BAR + size - 1))]
    );
    let to = 0xe100_0000u64;
    d.cfg_write(0x10, 4, to as u32);
    assert_eq!(
        d.h.events(),
        vec![
            HarnessEvent::Release(Claim::Mmio(BAR..=BAR + size - 1)),
            HarnessEvent::Claim(Claim::Mmio(to..=to + size - 1)),
        ]
    );
    assert_eq!(d.dev.bar(), Some(to));
    assert!(d.h.holds(&Claim::Mmio(to..=to + size - 1)));
    // Decoding off: released.
    d.cfg_write(0x04, 2, 0);
    assert_eq!(
        d.h.events(),
        vec![HarnessEvent::Release(Claim::Mmio(to..=to + size - 1))]
    );
    assert_eq!(d.dev.bar(), None);
    assert_eq!(d.h.error_count(), 0);
}

/// The device is broken, says so, and serves nothing more until reset.
fn assert_broken(d: &mut Drv, why: Broken) {
    assert_eq!(d.dev.broken(), Some(why));
    assert_eq!(d.rd(0x14, 1) as u8 & S_NEEDS_RESET, S_NEEDS_RESET);
    // A reset brings it back.
    d.wr(0x14, 1, 0);
    assert_eq!(d.rd(0x14, 1), 0);
    assert_eq!(d.dev.broken(), None);
}

#[test]
fn a_queue_size_that_is_not_a_power_of_two_needs_reset() {
    let mut d = Drv::new();
    d.place_bar();
    d.wr(0x18, 2, 6);
    assert_broken(&mut d, Broken::QueueSize);
    d.wr(0x18, 2, 512);
    assert_broken(&mut d, Broken::QueueSize);
}

#[test]
fn rings_outside_ram_need_reset() {
    let mut d = Drv::new();
    d.place_bar();
    d.wr(0x14, 1, 1 | 2);
    d.wr(0x20, 8, (RAM as u64) + 0x1000);
    d.wr(0x28, 8, AVAIL);
    d.wr(0x30, 8, USED);
    d.wr(0x1c, 2, 1);
    assert_broken(&mut d, Broken::Memory);
}

#[test]
fn descriptor_addresses_outside_ram_need_reset_and_write_nothing() {
    let mut d = Drv::new();
    d.setup(8, true);
    d.header(0x4000, blk::T_IN, 0);
    d.desc(0, 0x4000, 16, NEXT, 1);
    d.desc(1, RAM as u64 - 100, 4096, NEXT | WRITE, 2);
    d.desc(2, 0x6000, 1, WRITE, 0);
    d.mem.write_obj(0xeeu8, GuestAddress(0x6000)).unwrap();
    d.submit(0, 8);
    assert_eq!(d.used_idx(), 0, "nothing used");
    assert_eq!(d.byte(0x6000), 0xee, "no status written");
    assert_broken(&mut d, Broken::Memory);
    // An address that wraps the address space.
    d.setup(8, true);
    d.avail_idx = 0;
    d.desc(1, u64::MAX - 10, 4096, NEXT | WRITE, 2);
    d.submit(0, 8);
    assert_broken(&mut d, Broken::Memory);
}

#[test]
fn a_descriptor_loop_needs_reset_without_hanging() {
    let mut d = Drv::new();
    d.setup(8, true);
    d.header(0x4000, blk::T_IN, 0);
    d.desc(0, 0x4000, 16, NEXT, 1);
    d.desc(1, 0x5000, 512, NEXT | WRITE, 2);
    d.desc(2, 0x6000, 1, NEXT | WRITE, 1);
    d.submit(0, 8);
    assert_eq!(d.used_idx(), 0);
    assert_broken(&mut d, Broken::Chain);
    // A next index beyond the table.
    d.setup(8, true);
    d.avail_idx = 0;
    d.desc(2, 0x6000, 1, NEXT | WRITE, 200);
    d.submit(0, 8);
    assert_broken(&mut d, Broken::Chain);
}

#[test]
fn lengths_beyond_the_disk_get_ioerr_and_write_nothing_outside_it() {
    let mut d = Drv::new();
    d.setup(8, true);
    let last = (DISK / 512) as u64 - 1;
    // Write 1 KiB at the last sector: half of it would be beyond the disk.
    d.header(0x4000, blk::T_OUT, last);
    d.mem
        .write_slice(&[0x5a; 1024], GuestAddress(0x7000))
        .unwrap();
    d.desc(0, 0x4000, 16, NEXT, 1);
    d.desc(1, 0x7000, 1024, NEXT, 2);
    d.desc(2, 0x6000, 1, WRITE, 0);
    d.submit(0, 8);
    assert_eq!(d.byte(0x6000), blk::S_IOERR);
    assert_eq!(d.dev.disk().0.len(), DISK, "the image did not grow");
    assert_eq!(d.dev.disk().0, disk_pattern(), "nothing written");
    // Sectors so large the byte offset overflows, both directions.
    for kind in [blk::T_IN, blk::T_OUT] {
        d.header(0x4000, kind, u64::MAX / 256);
        d.desc(
            1,
            0x7000,
            512,
            NEXT | if kind == blk::T_IN { WRITE } else { 0 },
            2,
        );
        d.mem.write_obj(0xffu8, GuestAddress(0x6000)).unwrap();
        d.submit(0, 8);
        assert_eq!(d.byte(0x6000), blk::S_IOERR);
    }
    // An unknown request type.
    d.header(0x4000, 77, 0);
    d.desc(1, 0x6000, 1, WRITE, 0);
    d.submit(0, 8);
    assert_eq!(d.byte(0x6000), blk::S_UNSUPP);
    assert_eq!(d.dev.disk().0, disk_pattern());
    assert_eq!(d.dev.broken(), None, "bad requests are answered, not fatal");
    assert_eq!(d.used_idx(), 4);
    assert_eq!(d.dev.stats().errors, 4);
}

#[test]
fn a_chain_without_a_status_byte_or_header_needs_reset() {
    let mut d = Drv::new();
    d.setup(8, true);
    d.header(0x4000, blk::T_IN, 0);
    d.desc(0, 0x4000, 16, 0, 0);
    d.submit(0, 8);
    assert_broken(&mut d, Broken::Layout);
    d.setup(8, true);
    d.avail_idx = 0;
    d.desc(0, 0x4000, 8, NEXT, 1);
    d.desc(1, 0x6000, 1, WRITE, 0);
    d.submit(0, 8);
    assert_broken(&mut d, Broken::Layout);
}

#[test]
fn an_avail_index_far_ahead_needs_reset() {
    let mut d = Drv::new();
    d.setup(8, true);
    d.mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
    d.wr(0x3000, 2, 0);
    assert_broken(&mut d, Broken::AvailIndex);
}
