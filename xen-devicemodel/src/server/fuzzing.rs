//! The request logic under a coverage-guided fuzzer (built only with `--cfg fuzzing`, which
//! `cargo fuzz` sets; not part of the API).
//!
//! [`ioreqs`] decodes raw bytes into what a guest can make Xen put in front of the device
//! model: synchronous requests with any field values (type, address, size, `rep` count,
//! direction, `data_is_ptr`) and a buffered page with any records and ring pointers. They go
//! through the same dispatch as in [`Server::run`](super::Server::run), over a fake guest
//! memory, to two devices that check every promise of the [`Device`] trait. A broken
//! promise, unbounded work or a panic in the dispatch is a finding: this function panics.

// One unsafe block: the fuzzer's own buffered page handed to `Ring::new`.
#![allow(unsafe_code)]

use std::sync::{Arc, Mutex};

use super::ctx::NoPlatform;
use super::device::Device;
use super::dispatch::{Dispatch, GuestMemory, MAX_REP_COUNT, RING_RECORDS_PER_TURN};
use super::slot::{self, Ioreq, Ring};
use super::{Claim, ServerBuilder};
use crate::{DomId, Errno, Error, Result, Sbdf};

/// Guest RAM of the fuzzer: three pages at [`RAM_BASE`]; any other address fails as an
/// unmapped frame does.
struct Ram(Vec<u8>);

/// Where the fake guest RAM starts.
const RAM_BASE: u64 = 0x10_0000;

impl Ram {
    fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>> {
        let bad = || Error::os("fuzz ram", None, Errno::EFAULT);
        let o = usize::try_from(gpa.checked_sub(RAM_BASE).ok_or_else(bad)?).map_err(|_| bad())?;
        let end = o
            .checked_add(len)
            .filter(|&e| e <= self.0.len())
            .ok_or_else(bad)?;
        Ok(o..end)
    }
}

impl GuestMemory for Ram {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.0[r]);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        let r = self.range(gpa, data.len())?;
        self.0[r].copy_from_slice(data);
        Ok(())
    }
    fn invalidate(&mut self) {}
}

/// A device that owns half of every space and panics when an access breaks a promise of
/// the [`Device`] trait: sizes 1, 2 or 4 (8 too for MMIO), values that fit the size, config
/// registers inside the 4 KiB space, and addresses inside its own claims.
struct Checker {
    ports: core::ops::RangeInclusive<u16>,
    mmio: core::ops::RangeInclusive<u64>,
    pci: Sbdf,
    calls: u64,
}

impl Checker {
    fn size(&mut self, what: &str, size: u8, ok: &[u8]) {
        self.calls += 1;
        assert!(ok.contains(&size), "{what} of size {size}");
    }

    fn port(&mut self, what: &str, port: u16, size: u8) {
        self.size(what, size, &[1, 2, 4]);
        assert!(
            self.ports.contains(&port),
            "{what} at {port:#x}, not claimed"
        );
    }

    fn mmio(&mut self, what: &str, addr: u64, size: u8) {
        self.size(what, size, &[1, 2, 4, 8]);
        assert!(
            self.mmio.contains(&addr),
            "{what} at {addr:#x}, not claimed"
        );
    }

    fn cfg(&mut self, what: &str, dev: Sbdf, reg: u16, size: u8) {
        self.size(what, size, &[1, 2, 4]);
        assert_eq!(dev, self.pci, "{what} for a function not claimed");
        assert!(
            u32::from(reg) + u32::from(size) <= 4096,
            "{what} at {reg:#x} size {size}"
        );
    }
}

fn fits(value: u64, size: u8) -> bool {
    size >= 8 || value >> (8 * u32::from(size)) == 0
}

impl Device for Checker {
    fn port_read(&mut self, port: u16, size: u8) -> u32 {
        self.port("port read", port, size);
        u32::MAX
    }
    fn port_write(&mut self, port: u16, size: u8, value: u32) {
        self.port("port write", port, size);
        assert!(
            fits(value.into(), size),
            "port write {value:#x} size {size}"
        );
    }
    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        self.mmio("mmio read", addr, size);
        u64::MAX
    }
    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        self.mmio("mmio write", addr, size);
        assert!(fits(value, size), "mmio write {value:#x} size {size}");
    }
    fn pci_config_read(&mut self, dev: Sbdf, reg: u16, size: u8) -> u32 {
        self.cfg("pci read", dev, reg, size);
        u32::MAX
    }
    fn pci_config_write(&mut self, dev: Sbdf, reg: u16, size: u8, value: u32) {
        self.cfg("pci write", dev, reg, size);
        assert!(fits(value.into(), size), "pci write {value:#x} size {size}");
    }
}

/// Bytes per synchronous request in the input.
pub const REQUEST_BYTES: usize = 26;

/// A request from 26 bytes: address, data, count, size, then a flags byte (`data_is_ptr`,
/// read, direction, and a "near" bit that moves address and data into the claimed
/// function's config space and the fake RAM, where the interesting paths are) and the type
/// byte (small values made likely).
fn request(b: &[u8; REQUEST_BYTES], pci: Sbdf) -> Ioreq {
    let u64_at = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let u32_at = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[i..i + 4]);
        u32::from_le_bytes(w)
    };
    let flags = b[24];
    let near = flags & 8 != 0;
    let kind = match b[25] {
        k @ 0..=2 => k,
        0xf0..=0xf7 => slot::IOREQ_TYPE_TIMEOFFSET,
        0xf8..=0xff => slot::IOREQ_TYPE_INVALIDATE,
        k => k % 4,
    };
    let mut addr = u64_at(0);
    let mut data = u64_at(8);
    if near {
        if kind == slot::IOREQ_TYPE_PCI_CONFIG {
            addr = (u64::from(pci.to_raw()) << 32) | (addr & 0x1fff);
        }
        data = RAM_BASE.wrapping_sub(64) + (data % (3 * 4096 + 128));
    }
    Ioreq {
        addr,
        data,
        count: u32_at(16),
        size: u32_at(20),
        data_is_ptr: flags & 1 != 0,
        read: flags & 2 != 0,
        df: flags & 4 != 0,
        kind,
    }
}

/// Runs one input: its first byte says how many requests (at most 16) come first, each
/// [`REQUEST_BYTES`] long; the rest, if any, is a buffered page (ring pointers first, then
/// records; zeros fill the page). Panics on a finding.
pub fn ioreqs(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let low = Sbdf::new(0, 0, 3, 0).unwrap_or(Sbdf::from_raw(0));
    let high = Sbdf::new(0, 0, 4, 0).unwrap_or(Sbdf::from_raw(0));
    let a = Arc::new(Mutex::new(Checker {
        ports: 0..=0x7fff,
        mmio: 0..=0x7fff_ffff_ffff_ffff,
        pci: low,
        calls: 0,
    }));
    let b = Arc::new(Mutex::new(Checker {
        ports: 0x8000..=0xffff,
        mmio: 0x8000_0000_0000_0000..=u64::MAX,
        pci: high,
        calls: 0,
    }));
    let builder = ServerBuilder::new(DomId::new(1))
        .device(
            a.clone(),
            [
                Claim::Ports(0..=0x7fff),
                Claim::Mmio(0..=0x7fff_ffff_ffff_ffff),
                Claim::Pci(low),
            ],
        )
        .device(
            b.clone(),
            [
                Claim::Ports(0x8000..=0xffff),
                Claim::Mmio(0x8000_0000_0000_0000..=u64::MAX),
                Claim::Pci(high),
            ],
        );
    let ram = Ram(vec![0x5a; 3 * 4096]);
    let mut d = Dispatch::with_platform(
        builder.devices,
        builder.keys,
        ram,
        NoPlatform(DomId::new(1)),
    );
    let calls = || {
        let c = |m: &Arc<Mutex<Checker>>| m.lock().map_or(0, |c| c.calls);
        c(&a) + c(&b)
    };

    let mut chunks = rest.chunks_exact(REQUEST_BYTES);
    for (i, chunk) in (&mut chunks).take(usize::from(n % 17)).enumerate() {
        let mut raw = [0u8; REQUEST_BYTES];
        raw.copy_from_slice(chunk);
        let r = request(&raw, if i % 2 == 0 { low } else { high });
        let before = calls();
        let answer = d.handle(&r);
        let made = calls() - before;
        assert!(made <= u64::from(MAX_REP_COUNT), "{made} calls for {r:?}");
        if answer.is_some() {
            assert!(
                r.read && (r.kind == slot::IOREQ_TYPE_PCI_CONFIG || !r.data_is_ptr),
                "a value answered for {r:?}"
            );
        }
    }

    let page_bytes = &rest[rest.len() - chunks.remainder().len()..];
    if page_bytes.len() < 8 {
        return;
    }
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    let mut page = Box::new(Page([0; 4096]));
    let n = page_bytes.len().min(4096);
    page.0[..n].copy_from_slice(&page_bytes[..n]);
    let rd = u32::from_le_bytes([page.0[0], page.0[1], page.0[2], page.0[3]]);
    let wr = u32::from_le_bytes([page.0[4], page.0[5], page.0[6], page.0[7]]);
    // SAFETY: our own page-aligned, writable page, alive until the end of this function,
    // where `ring` is last used.
    let ring = unsafe { Ring::new(page.0.as_mut_ptr()) };
    // Xen keeps the write pointer at most one ring ahead, but whatever the pointers say,
    // each turn does a bounded amount of work and never moves past the write pointer.
    for turn in 0..8 {
        let before = calls();
        let more = d.drain_ring(ring);
        let made = calls() - before;
        assert!(
            made <= u64::from(RING_RECORDS_PER_TURN),
            "{made} calls for one turn of the ring"
        );
        let now = u32::from_le_bytes([page.0[0], page.0[1], page.0[2], page.0[3]]);
        let taken = now.wrapping_sub(rd);
        assert!(
            taken <= wr.wrapping_sub(rd),
            "turn {turn}: read pointer moved past the write pointer: rd {rd:#x} -> {now:#x}, wr {wr:#x}"
        );
        if !more {
            assert!(
                wr.wrapping_sub(now) <= 1,
                "turn {turn}: {:#x} records left, none handled",
                wr.wrapping_sub(now)
            );
            break;
        }
    }
}
