//! The request logic, apart from Xen's handles: routing accesses to the device whose claim
//! holds them, the synchronous ioreq types (`rep` counts, `data_is_ptr` copies through
//! guest memory), and the buffered ring's records.

use super::ctx::{Ctx, DeviceErrors, NoPlatform, Platform};
use super::device::{Access, Device, Key};
use super::fast::Doorbells;
use super::guestmem::GuestMem;
use super::slot::{self, Ioreq, Ring};
use super::{Refusal, Stats};
use crate::{Result, Sbdf};

/// The largest `count` Xen puts in a request: its emulator clips every `rep` to 4096
/// repetitions (`hvmemul_linear_to_phys` in Xen 4.17's `arch/x86/hvm/emulate.c`), and
/// further to one page of guest memory for `data_is_ptr` requests. Anything larger did not
/// come from Xen's emulator and is refused: answered without calling the device.
pub(crate) const MAX_REP_COUNT: u32 = 4096;

/// Buffered records handled per call of [`Dispatch::drain_ring`]: one ring's worth. The
/// guest can refill the ring while it is drained; the loop takes the rest at its next turn,
/// after looking at the stop flag and the other vCPUs.
pub(crate) const RING_RECORDS_PER_TURN: u32 = slot::BUF_SLOTS;

#[cfg(test)]
mod ctx_tests;
#[cfg(all(test, not(miri)))]
mod props;
#[cfg(test)]
mod tests;

/// Guest memory for `data_is_ptr` requests (a trait so the dispatch logic can be tested
/// without Xen).
pub(crate) trait GuestMemory {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()>;
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()>;
    fn invalidate(&mut self);
}

impl GuestMemory for GuestMem {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        GuestMem::read(self, gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        GuestMem::write(self, gpa, data)
    }
    fn invalidate(&mut self) {
        GuestMem::invalidate(self)
    }
}

/// The devices and the request logic, apart from Xen's handles.
pub(crate) struct Dispatch<M, P = NoPlatform> {
    pub(crate) devices: Vec<Box<dyn Device>>,
    pub(super) keys: Vec<(Key, usize)>,
    pub(crate) stats: Stats,
    pub(crate) mem: M,
    /// The last request refused (see [`Refusal`]).
    pub(crate) last_refusal: Option<Refusal>,
    /// Interrupts and claims for the devices' [`Ctx`].
    pub(crate) plat: P,
    /// Errors the devices reported.
    pub(crate) errors: DeviceErrors,
    /// The vCPU of the request in hand (`None` for buffered records).
    pub(crate) vcpu: Option<u32>,
    /// The devices' doorbells.
    pub(crate) bells: Doorbells,
}

/// Bytes of guest memory copied at a time for `data_is_ptr` requests (on the stack).
const COPY_CHUNK: usize = 512;

impl<M: GuestMemory> Dispatch<M, NoPlatform> {
    /// A new dispatch over `devices` and guest memory `mem`, without interrupts or claims.
    #[cfg(test)]
    pub(crate) fn new(devices: Vec<Box<dyn Device>>, keys: Vec<(Key, usize)>, mem: M) -> Self {
        Dispatch::with_platform(devices, keys, mem, NoPlatform(crate::DomId::new(1)))
    }
}

impl<M: GuestMemory, P: Platform> Dispatch<M, P> {
    /// A new dispatch over `devices`, guest memory `mem` and platform `plat`.
    pub(crate) fn with_platform(
        devices: Vec<Box<dyn Device>>,
        keys: Vec<(Key, usize)>,
        mem: M,
        plat: P,
    ) -> Self {
        Dispatch {
            devices,
            keys,
            stats: Stats::default(),
            mem,
            last_refusal: None,
            plat,
            errors: DeviceErrors::default(),
            vcpu: None,
            bells: Doorbells::default(),
        }
    }

    /// Calls device `i` with a [`Ctx`] for `access`.
    fn call(&mut self, i: usize, access: Access) -> u64 {
        let mut ctx = Ctx {
            plat: &self.plat,
            mem: &mut self.mem,
            keys: &mut self.keys,
            device: i,
            vcpu: self.vcpu,
            errors: &mut self.errors,
            bells: &mut self.bells,
        };
        let v = match self.devices.get_mut(i) {
            Some(d) => d.access(&mut ctx, access),
            None => u64::MAX,
        };
        self.stats.device_errors = self.errors.count;
        v
    }

    /// Delivers a doorbell the kernel took (its eventfd counted `n` writes since the last
    /// time): the device gets one MMIO write of the doorbell's value (notifications coalesce,
    /// as a virtio queue's do), without a vCPU.
    pub(crate) fn ring_doorbell(&mut self, i: usize) {
        let Some(e) = self.bells.entries.get(i) else {
            return;
        };
        let (device, b) = (e.device, e.bell);
        self.vcpu = None;
        self.stats.doorbells += 1;
        self.call(
            device,
            Access::MmioWrite {
                addr: b.addr,
                size: b.len,
                value: b.datamatch.unwrap_or(0),
            },
        );
    }

    /// Counts and records a refused request (no allocation: the record is plain data).
    fn refuse(&mut self, r: Refusal) {
        self.stats.refused += 1;
        self.last_refusal = Some(r);
    }

    /// Handles at most [`RING_RECORDS_PER_TURN`] buffered records; returns whether records
    /// are left for the next turn.
    pub(super) fn drain_ring(&mut self, ring: Ring) -> bool {
        self.vcpu = None;
        for _ in 0..RING_RECORDS_PER_TURN {
            let Some(r) = ring.peek() else {
                return false;
            };
            if r.kind != slot::IOREQ_TYPE_TIMEOFFSET {
                self.stats.buffered += 1;
            }
            let pio = r.kind == slot::IOREQ_TYPE_PIO;
            let refusal = |reason| Refusal {
                kind: r.kind,
                addr: r.addr,
                size: r.size.into(),
                count: 1,
                buffered: true,
                reason,
            };
            if r.read {
                // Xen buffers writes only.
                self.refuse(refusal("a read in the buffered ring"));
            } else if pio && r.size == 8 {
                self.refuse(refusal("an 8-byte port write"));
            } else {
                match r.kind {
                    slot::IOREQ_TYPE_PIO => self.port_write(r.addr as u16, r.size, r.data),
                    slot::IOREQ_TYPE_COPY => self.mmio_write(r.addr, r.size, r.data),
                    // Xen broadcasts the guest's RTC offset changes through the ring.
                    slot::IOREQ_TYPE_TIMEOFFSET => self.stats.timeoffset += 1,
                    _ => self.stats.other += 1,
                }
            }
            ring.consume(r.slots);
        }
        ring.peek().is_some()
    }

    fn find(&self, want: impl Fn(&Key) -> bool) -> Option<usize> {
        self.keys.iter().find(|(k, _)| want(k)).map(|&(_, i)| i)
    }

    fn port_read(&mut self, port: u16, size: u8) -> u64 {
        let p = u64::from(port);
        match self.find(|k| matches!(*k, Key::Port(a, b) if a <= p && p <= b)) {
            Some(i) => self.call(i, Access::PortRead { port, size }) & mask(size),
            None => {
                self.stats.unclaimed += 1;
                mask(size)
            }
        }
    }

    fn port_write(&mut self, port: u16, size: u8, value: u64) {
        let p = u64::from(port);
        match self.find(|k| matches!(*k, Key::Port(a, b) if a <= p && p <= b)) {
            Some(i) => {
                let value = (value & mask(size)) as u32;
                self.call(i, Access::PortWrite { port, size, value });
            }
            None => self.stats.unclaimed += 1,
        }
    }

    fn mmio_read(&mut self, addr: u64, size: u8) -> u64 {
        match self.find(|k| matches!(*k, Key::Mmio(a, b) if a <= addr && addr <= b)) {
            Some(i) => self.call(i, Access::MmioRead { addr, size }) & mask(size),
            None => {
                self.stats.unclaimed += 1;
                mask(size)
            }
        }
    }

    fn mmio_write(&mut self, addr: u64, size: u8, value: u64) {
        match self.find(|k| matches!(*k, Key::Mmio(a, b) if a <= addr && addr <= b)) {
            Some(i) => {
                let value = value & mask(size);
                self.call(i, Access::MmioWrite { addr, size, value });
            }
            None => self.stats.unclaimed += 1,
        }
    }

    /// Handles one synchronous request; returns the value to put in `data`, if any.
    pub(super) fn handle(&mut self, req: &Ioreq) -> Option<u64> {
        match req.kind {
            slot::IOREQ_TYPE_PIO => {
                self.stats.port += 1;
                self.io(req, true)
            }
            slot::IOREQ_TYPE_COPY => {
                self.stats.mmio += 1;
                self.io(req, false)
            }
            slot::IOREQ_TYPE_PCI_CONFIG => {
                self.stats.pci_config += 1;
                let raw = (req.addr >> 32) as u32;
                let reg = (req.addr & 0xfff) as u16;
                // Config space is 4096 bytes read in 1, 2 or 4-byte units (the sizes the
                // Device trait promises); anything else is refused, not cut down.
                if !matches!(req.size, 1 | 2 | 4) || u32::from(reg) + req.size > 4096 {
                    self.refuse(Refusal::of(req, "a PCI config access of a bad size"));
                    return req.read.then_some(mask(4));
                }
                let size = req.size as u8;
                let i = self.find(|k| matches!(*k, Key::Pci(s) if s == raw));
                let Some(i) = i else {
                    self.stats.unclaimed += 1;
                    return req.read.then_some(mask(size));
                };
                let dev = Sbdf::from_raw(raw);
                if req.read {
                    let v = self.call(i, Access::PciRead { dev, reg, size });
                    Some(v & mask(size))
                } else {
                    let value = (req.data & mask(size)) as u32;
                    let a = Access::PciWrite {
                        dev,
                        reg,
                        size,
                        value,
                    };
                    self.call(i, a);
                    None
                }
            }
            slot::IOREQ_TYPE_INVALIDATE => {
                self.stats.invalidate += 1;
                self.mem.invalidate();
                for d in &mut self.devices {
                    d.mappings_invalidated();
                }
                None
            }
            slot::IOREQ_TYPE_TIMEOFFSET => {
                self.stats.timeoffset += 1;
                None
            }
            _ => {
                self.stats.other += 1;
                None
            }
        }
    }

    /// Port I/O (`pio`) or MMIO, with `rep` counts and `data_is_ptr`.
    fn io(&mut self, req: &Ioreq, pio: bool) -> Option<u64> {
        let size = req.size;
        let refusal = if !matches!(size, 1 | 2 | 4 | 8) || (pio && size == 8) {
            Some("an access of a bad size")
        } else if req.count > MAX_REP_COUNT {
            Some("a rep count above Xen's limit of 4096")
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.refuse(Refusal::of(req, reason));
            return (req.read && !req.data_is_ptr).then_some(u64::MAX);
        }
        let size = size as u8;
        let step = u64::from(size);
        let count = req.count.max(1);
        // Element i's device address: a port stays put, MMIO moves with the direction flag.
        let at = |i: u32| {
            let off = u64::from(i).wrapping_mul(step);
            if pio {
                req.addr
            } else if req.df {
                req.addr.wrapping_sub(off)
            } else {
                req.addr.wrapping_add(off)
            }
        };
        let dev_read = |s: &mut Self, a: u64| {
            if pio {
                s.port_read(a as u16, size)
            } else {
                s.mmio_read(a, size)
            }
        };
        let dev_write = |s: &mut Self, a: u64, v: u64| {
            if pio {
                s.port_write(a as u16, size, v)
            } else {
                s.mmio_write(a, size, v)
            }
        };
        if !req.data_is_ptr {
            if req.read {
                let mut v = 0;
                for i in 0..count {
                    v = dev_read(self, at(i));
                }
                return Some(v);
            }
            for i in 0..count {
                dev_write(self, at(i), req.data);
            }
            return None;
        }
        // Through guest memory, a chunk of elements per copy (on the stack): the chunk's
        // bytes are contiguous in guest memory, lowest address first; with the direction
        // flag set, element i0 is the highest of them.
        let n = usize::from(size);
        let per = (COPY_CHUNK / n) as u32;
        let mut i0 = 0u32;
        while i0 < count {
            let k = (count - i0).min(per);
            let len = k as usize * n;
            let first = u64::from(i0).wrapping_mul(step);
            let lo = if req.df {
                req.data
                    .wrapping_sub(first)
                    .wrapping_sub(u64::from(k - 1).wrapping_mul(step))
            } else {
                req.data.wrapping_add(first)
            };
            let pos = |j: u32| (if req.df { k - 1 - j } else { j }) as usize * n;
            let mut buf = [0u8; COPY_CHUNK];
            if req.read {
                for j in 0..k {
                    let v = dev_read(self, at(i0 + j));
                    let p = pos(j);
                    buf[p..p + n].copy_from_slice(&v.to_le_bytes()[..n]);
                }
                if self.mem.write(lo, &buf[..len]).is_err() {
                    self.stats.memory_errors += 1;
                }
            } else {
                if self.mem.read(lo, &mut buf[..len]).is_err() {
                    self.stats.memory_errors += 1;
                }
                for j in 0..k {
                    let p = pos(j);
                    let mut b = [0u8; 8];
                    b[..n].copy_from_slice(&buf[p..p + n]);
                    dev_write(self, at(i0 + j), u64::from_le_bytes(b));
                }
            }
            i0 += k;
        }
        None
    }
}

/// All-ones in the low `size` bytes.
fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}
