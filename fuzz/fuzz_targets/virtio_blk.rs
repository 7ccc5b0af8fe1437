//! xen-pcdm's virtio-blk PCI device as a guest programs it: the driver's set-up with any
//! queue size and ring addresses, then any sequence of register accesses, descriptor tables,
//! available-ring entries, request headers and memory contents, and notifications; the
//! device runs over a fake guest RAM (64 KiB, `vm-memory` mmap) and a disk that panics if
//! the device ever reaches outside the image. Any panic, hang or out-of-image access is a
//! finding; a guest's nonsense must end as an error status or `DEVICE_NEEDS_RESET`.
#![no_main]

use std::io;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use xen_devicemodel::server::{Access, Harness};
use xen_devicemodel::{DomId, Sbdf};
use xen_pcdm::blk::{self, Disk};
use xen_pcdm::virtio_pci::{FixedRam, VirtioBlk};

const RAM: u64 = 64 * 1024;
const BAR: u64 = 0xe000_0000;
const DISK: usize = 32 * 1024;
/// Where the set-up puts the rings unless the input moves them.
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;

/// A disk that holds the device to the `Disk` contract: every access inside the image.
struct StrictDisk(Vec<u8>);

impl StrictDisk {
    fn range(&self, offset: u64, len: usize) -> std::ops::Range<usize> {
        let o = usize::try_from(offset).expect("offset beyond usize");
        let end = o.checked_add(len).expect("end overflows");
        assert!(
            end <= self.0.len(),
            "disk access {o:#x}+{len:#x} outside the {:#x}-byte image",
            self.0.len()
        );
        o..end
    }
}

impl Disk for StrictDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len());
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let r = self.range(offset, data.len());
        self.0[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A guest-physical address: inside the fake RAM (most of the time) or anywhere.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Gpa {
    Ram(u16),
    Raw(u64),
}

impl Gpa {
    fn get(self) -> u64 {
        match self {
            Gpa::Ram(a) => u64::from(a) % RAM,
            Gpa::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A well-formed request as a driver builds it (header, data segments, status byte, in
    /// consecutive descriptors from `head`), made available and notified: what the other
    /// operations then corrupt.
    Request {
        head: u16,
        kind: u8,
        sector: u16,
        len: u16,
        segs: u8,
    },
    /// The driver kicks the queue.
    Notify,
    /// The driver makes chain `head` available (as a driver does: slot, then index).
    Avail { head: u16 },
    /// The available ring's index, raw.
    AvailIdx(u16),
    /// Descriptor `i` of the table at the set-up's address.
    Desc {
        i: u16,
        addr: Gpa,
        len: u32,
        flags: u16,
        next: u16,
    },
    /// A virtio-blk request header.
    Header { at: u16, kind: u32, sector: u64 },
    /// Any bytes anywhere in RAM.
    Poke { at: u16, bytes: Vec<u8> },
    /// A register access in BAR0 (common config, ISR, device config, notify, MSI-X).
    Mmio {
        off: u16,
        size: u8,
        value: u64,
        write: bool,
    },
    /// A config-space access.
    Cfg {
        reg: u16,
        size: u8,
        value: u32,
        write: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    qsize: u16,
    msix: bool,
    rings: [Option<Gpa>; 3],
    ops: Vec<Op>,
}

struct Drv {
    dev: VirtioBlk<FixedRam<GuestMemoryMmap>, StrictDisk>,
    h: Harness,
    mem: GuestMemoryMmap,
    sbdf: Sbdf,
    qsize: u16,
    desc: u64,
    avail: u64,
    avail_idx: u16,
}

fn access_size(size: u8, mmio: bool) -> u8 {
    match size % if mmio { 4 } else { 3 } {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => 8,
    }
}

impl Drv {
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

    /// A config access of 1, 2 or 4 bytes inside the 4 KiB space (what the runtime sends).
    fn cfg(&mut self, reg: u16, size: u8, value: u32, write: bool) {
        let dev = self.sbdf;
        let a = if write {
            Access::PciWrite {
                dev,
                reg,
                size,
                value,
            }
        } else {
            Access::PciRead { dev, reg, size }
        };
        self.h.access(&mut self.dev, a);
    }

    /// The driver's set-up (virtio 1.1, 3.1.1).
    fn setup(&mut self, msix: bool, rings: [u64; 3]) {
        self.cfg(0x10, 4, BAR as u32, true);
        self.cfg(0x04, 2, 0x6, true);
        self.wr(0x14, 1, 0);
        self.wr(0x14, 1, 1 | 2);
        self.wr(0x08, 4, 1);
        self.wr(0x0c, 4, 1); // VERSION_1
        self.wr(0x08, 4, 0);
        self.wr(0x0c, 4, 1 << 9); // FLUSH
        self.wr(0x14, 1, 1 | 2 | 8);
        let _ = self.rd(0x14, 1);
        self.wr(0x16, 2, 0);
        self.wr(0x18, 2, self.qsize.into());
        for (i, a) in rings.into_iter().enumerate() {
            let off = 0x20 + 8 * i as u64;
            self.wr(off, 4, a & 0xffff_ffff);
            self.wr(off + 4, 4, a >> 32);
        }
        if msix {
            self.wr(0x3800 + 16, 4, 0xfee0_0000);
            self.wr(0x3800 + 24, 4, 0x41);
            self.wr(0x3800 + 28, 4, 0);
            self.cfg(0x86, 2, 0x8000, true);
            self.wr(0x1a, 2, 1);
        }
        self.wr(0x1c, 2, 1);
        self.wr(0x14, 1, 1 | 2 | 8 | 4);
        self.h.events();
    }

    fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc.wrapping_add(16 * u64::from(i));
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        let _ = self.mem.write_slice(&d, GuestAddress(at));
    }

    fn avail(&mut self, head: u16) {
        let q = u64::from(self.qsize.max(1));
        let slot = u64::from(self.avail_idx) % q;
        let _ = self
            .mem
            .write_obj(head, GuestAddress(self.avail.wrapping_add(4 + 2 * slot)));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = self
            .mem
            .write_obj(self.avail_idx, GuestAddress(self.avail.wrapping_add(2)));
    }

    fn op(&mut self, op: Op) {
        match op {
            Op::Request {
                head,
                kind,
                sector,
                len,
                segs,
            } => {
                const NEXT: u16 = 1;
                const WRITE: u16 = 2;
                let q = self.qsize.max(1);
                let kind =
                    [blk::T_IN, blk::T_OUT, blk::T_FLUSH, blk::T_GET_ID, 99][usize::from(kind % 5)];
                let segs = u16::from(segs % 4);
                let seg_len = u32::from(len) % 0x2000 + 1;
                let (hdr, data, status) = (0x8000u64, 0x9000u64, 0xf000u64);
                let mut h = [0u8; 16];
                h[0..4].copy_from_slice(&kind.to_le_bytes());
                h[8..16].copy_from_slice(&u64::from(sector % 80).to_le_bytes());
                let _ = self.mem.write_slice(&h, GuestAddress(hdr));
                let idx = |k: u16| head.wrapping_add(k) % q;
                let dir = if kind == blk::T_OUT { 0 } else { WRITE };
                self.desc(idx(0), hdr, 16, NEXT, idx(1));
                for k in 0..segs {
                    let at = data + u64::from(k) * u64::from(seg_len);
                    self.desc(idx(1 + k), at, seg_len, NEXT | dir, idx(2 + k));
                }
                self.desc(idx(1 + segs), status, 1, WRITE, 0);
                self.avail(idx(0));
                self.wr(0x3000, 2, 0);
            }
            Op::Notify => self.wr(0x3000, 2, 0),
            Op::Avail { head } => self.avail(head),
            Op::AvailIdx(i) => {
                self.avail_idx = i;
                let _ = self
                    .mem
                    .write_obj(i, GuestAddress(self.avail.wrapping_add(2)));
            }
            Op::Desc {
                i,
                addr,
                len,
                flags,
                next,
            } => self.desc(i, addr.get(), len, flags & 7, next),
            Op::Header { at, kind, sector } => {
                let mut b = [0u8; 16];
                b[0..4].copy_from_slice(&(kind % 10).to_le_bytes());
                b[8..16].copy_from_slice(&sector.to_le_bytes());
                let _ = self.mem.write_slice(&b, GuestAddress(u64::from(at) % RAM));
            }
            Op::Poke { at, bytes } => {
                let n = bytes.len().min(4096);
                let _ = self
                    .mem
                    .write_slice(&bytes[..n], GuestAddress(u64::from(at) % RAM));
            }
            Op::Mmio {
                off,
                size,
                value,
                write,
            } => {
                let size = access_size(size, true);
                let off = u64::from(off) % 0x4000;
                if write {
                    self.wr(off, size, value & mask(size));
                } else {
                    let _ = self.rd(off, size);
                }
            }
            Op::Cfg {
                reg,
                size,
                value,
                write,
            } => {
                let (reg, size) = (reg % 4096, access_size(size, false));
                if u32::from(reg) + u32::from(size) <= 4096 {
                    self.cfg(reg, size, value & mask(size) as u32, write);
                }
            }
        }
        // Every access does bounded work: at most an interrupt or two and a claim change.
        let events = self.h.events().len();
        assert!(events <= 8, "{events} platform events for one access");
    }
}

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(size))) - 1
    }
}

fuzz_target!(|input: Input| {
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]) else {
        return;
    };
    let sbdf = Sbdf::new(0, 0, 3, 0).expect("a valid address");
    let disk = StrictDisk((0..DISK).map(|i| (i * 7) as u8).collect());
    let dev = VirtioBlk::new(sbdf, FixedRam(mem.clone()), disk, "fuzz");
    let h = Harness::new(DomId::new(3), 0, 0, dev.claims());
    let rings = [DESC, AVAIL, USED];
    let rings: [u64; 3] = std::array::from_fn(|i| input.rings[i].map_or(rings[i], Gpa::get));
    // Mostly the sizes a driver would pick; sometimes anything.
    let qsize = if input.qsize & 0x8000 == 0 {
        1 << (input.qsize % 10)
    } else {
        input.qsize & 0x7fff
    };
    let mut d = Drv {
        dev,
        h,
        mem,
        sbdf,
        qsize,
        desc: rings[0],
        avail: rings[1],
        avail_idx: 0,
    };
    d.setup(input.msix, rings);
    for op in input.ops.into_iter().take(64) {
        d.op(op);
    }
    assert_eq!(d.dev.disk().0.len(), DISK, "the image changed size");
});
