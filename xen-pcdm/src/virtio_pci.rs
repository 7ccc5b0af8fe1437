//! A virtio-blk disk on the virtio 1.x modern PCI transport (1af4:1042), one request queue.
//!
//! Facts from the virtio 1.1 specification, section 4.1 (the transport) and the PCI local
//! bus specification (config header, MSI-X capability):
//! - config space: vendor capabilities (id 0x09) point the driver at structures in BAR0:
//!   common configuration (type 1), notifications (type 2, with a multiplier), ISR status
//!   (type 3) and the device's own configuration (type 4); an MSI-X capability (id 0x11)
//!   points at the vector table and the pending-bit array, also in BAR0;
//! - BAR0 here: common at 0x0000, ISR at 0x1000, device config at 0x2000, notify at
//!   0x3000, MSI-X table at 0x3800 and PBA at 0x3c00; 16 KiB, 32-bit memory;
//! - interrupts: with MSI-X enabled, the vector the driver chose (`queue_msix_vector`,
//!   `msix_config`) is sent with `inject_msi`, unless masked (then its pending bit is set
//!   and it is sent on unmask); a message whose vector field is 0 names a Xen pirq
//!   (Linux in a Xen HVM guest with pirq-based MSI): the guest masks those on their event
//!   channels and never clears the table's mask bits, so they are sent regardless of the
//!   masks, as Xen's own device models do; otherwise the ISR bit is set and INTA# raised,
//!   lowered when the driver reads the ISR.
//!
//! The BAR is claimed where the guest puts it, while memory decoding is on, and released
//! when it moves or decoding goes off. Nonsense from the guest (a queue size that is not a
//! power of two, rings outside RAM, a broken chain) sets `DEVICE_NEEDS_RESET` and sends a
//! configuration-change interrupt; the queue is not served until the driver resets.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory};
use xen_devicemodel::server::{Access, Claim, Ctx, Device, Doorbell};
use xen_devicemodel::{IntxPin, Sbdf};

use crate::blk::{self, BlkStats, Broken, Disk};

/// Guest memory as the device reaches it for DMA, mapped when first needed and dropped
/// when Xen invalidates the device model's mappings.
pub trait GuestRam: Send {
    /// The `vm-memory` view of guest RAM.
    type Memory: GuestMemory;
    /// The guest's RAM, mapped now if it was not; `None` if it cannot be mapped.
    fn memory(&mut self) -> Option<&Self::Memory>;
    /// Drops the mappings (`IOREQ_TYPE_INVALIDATE`); the next [`GuestRam::memory`] maps again.
    fn invalidate(&mut self);
}

/// Guest memory that is always there (host tests, or a mapping kept for the whole run).
#[derive(Debug)]
pub struct FixedRam<M>(pub M);

impl<M: GuestMemory + Send> GuestRam for FixedRam<M> {
    type Memory = M;
    fn memory(&mut self) -> Option<&M> {
        Some(&self.0)
    }
    fn invalidate(&mut self) {}
}

/// PCI vendor id of virtio devices.
pub const VENDOR: u16 = 0x1af4;
/// PCI device id of a modern virtio-blk (0x1040 + device type 2).
pub const DEVICE: u16 = 0x1042;
/// Size of BAR0.
pub const BAR_SIZE: u32 = 0x4000;
/// The queue size offered (the driver may choose a smaller power of two).
pub const QUEUE_MAX: u16 = 256;

const COMMON: u64 = 0x0000;
const ISR: u64 = 0x1000;
const DEVCFG: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const MSIX_TABLE: u64 = 0x3800;
const MSIX_PBA: u64 = 0x3c00;
/// MSI-X vectors: one for configuration changes, one for the queue.
const VECTORS: usize = 2;
const NO_VECTOR: u16 = 0xffff;
const MSIX_CAP: usize = 0x84;

/// Device status bits.
const S_FEATURES_OK: u8 = 8;
const S_DRIVER_OK: u8 = 4;
/// `DEVICE_NEEDS_RESET`.
pub const S_NEEDS_RESET: u8 = 0x40;

/// Feature bits offered: SEG_MAX (2), BLK_SIZE (6), FLUSH (9), VERSION_1 (32).
const FEATURES: u64 = (1 << 2) | (1 << 6) | (1 << 9) | (1 << 32);
const SEG_MAX: u32 = 128;

#[derive(Debug, Clone, Copy, Default)]
struct MsixEntry {
    addr: u64,
    data: u32,
    ctrl: u32,
}

/// The virtio-blk PCI function. Register it for its config space (`Claim::Pci(sbdf)`); it
/// claims its BAR itself once the guest places it.
pub struct VirtioBlk<R, D> {
    sbdf: Sbdf,
    cfg: [u8; 256],
    claimed: Option<u64>,
    // Transport state.
    dev_feat_sel: u32,
    drv_feat_sel: u32,
    driver_features: u64,
    status: u8,
    config_gen: u8,
    msix_config: u16,
    queue_sel: u16,
    /// The queue, once the driver enabled it with valid rings.
    queue: Option<Queue>,
    queue_size: u16,
    queue_msix: u16,
    queue_enable: bool,
    desc: u64,
    avail: u64,
    used: u64,
    isr: u8,
    intx: bool,
    msix: [MsixEntry; VECTORS],
    pending: u64,
    /// Why the device needs a reset, if it does.
    broken: Option<Broken>,
    // The disk.
    ram: R,
    disk: D,
    bounce: Vec<u8>,
    id: [u8; 20],
    stats: BlkStats,
}

impl<R, D> std::fmt::Debug for VirtioBlk<R, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("sbdf", &self.sbdf)
            .field("bar", &self.claimed)
            .field("status", &self.status)
            .field("queue_size", &self.queue_size)
            .field("queue_ready", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

impl<R: GuestRam, D: Disk> VirtioBlk<R, D> {
    /// A disk at PCI function `sbdf`, reaching guest memory through `ram`, backed by
    /// `disk`; `serial` (up to 20 bytes) answers `VIRTIO_BLK_T_GET_ID`.
    pub fn new(sbdf: Sbdf, ram: R, disk: D, serial: &str) -> Self {
        let mut cfg = [0u8; 256];
        put16(&mut cfg, 0x00, VENDOR);
        put16(&mut cfg, 0x02, DEVICE);
        put16(&mut cfg, 0x06, 0x0010); // status: capability list
        cfg[0x08] = 1; // revision 1: a modern device
        cfg[0x0a] = 0x00; // SCSI-class storage, as other virtio-blk devices show
        cfg[0x0b] = 0x01;
        put32(&mut cfg, 0x10, 0); // BAR0: 32-bit memory, not prefetchable
        put16(&mut cfg, 0x2c, VENDOR);
        put16(&mut cfg, 0x2e, 0x1100);
        cfg[0x34] = 0x40;
        cfg[0x3d] = 1; // INTA#
                       // Vendor capabilities: (offset, next, length, type, bar offset, bar length).
        let caps: [(usize, u8, u8, u8, u32, u32); 4] = [
            (0x40, 0x50, 16, 1, COMMON as u32, 0x38),
            (0x50, 0x64, 20, 2, NOTIFY as u32, 4),
            (0x64, 0x74, 16, 3, ISR as u32, 1),
            (0x74, MSIX_CAP as u8, 16, 4, DEVCFG as u32, 0x18),
        ];
        for (at, next, len, kind, off, size) in caps {
            cfg[at] = 0x09;
            cfg[at + 1] = next;
            cfg[at + 2] = len;
            cfg[at + 3] = kind;
            cfg[at + 4] = 0; // BAR0
            put32(&mut cfg, at + 8, off);
            put32(&mut cfg, at + 12, size);
        }
        put32(&mut cfg, 0x50 + 16, 4); // notify_off_multiplier
        cfg[MSIX_CAP] = 0x11;
        cfg[MSIX_CAP + 1] = 0;
        put16(&mut cfg, MSIX_CAP + 2, VECTORS as u16 - 1);
        put32(&mut cfg, MSIX_CAP + 4, MSIX_TABLE as u32); // BIR 0
        put32(&mut cfg, MSIX_CAP + 8, MSIX_PBA as u32);
        let mut id = [0u8; 20];
        let n = serial.len().min(20);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        VirtioBlk {
            sbdf,
            cfg,
            claimed: None,
            dev_feat_sel: 0,
            drv_feat_sel: 0,
            driver_features: 0,
            status: 0,
            config_gen: 0,
            msix_config: NO_VECTOR,
            queue_sel: 0,
            queue: None,
            queue_size: QUEUE_MAX,
            queue_msix: NO_VECTOR,
            queue_enable: false,
            desc: 0,
            avail: 0,
            used: 0,
            isr: 0,
            intx: false,
            msix: [MsixEntry {
                ctrl: 1,
                ..MsixEntry::default()
            }; VECTORS],
            pending: 0,
            broken: None,
            ram,
            disk,
            bounce: vec![0; blk::BOUNCE],
            id,
            stats: BlkStats::default(),
        }
    }

    /// The claims to register it with: its config space.
    pub fn claims(&self) -> [Claim; 1] {
        [Claim::Pci(self.sbdf)]
    }

    /// Requests served so far.
    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    /// The device status byte (with [`S_NEEDS_RESET`] when the guest broke it).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Why the device needs a reset, if it does.
    pub fn broken(&self) -> Option<Broken> {
        self.broken
    }

    /// The disk behind it.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// BAR0's guest-physical base while it is claimed.
    pub fn bar(&self) -> Option<u64> {
        self.claimed
    }

    fn command(&self) -> u16 {
        get16(&self.cfg, 0x04)
    }

    fn msix_enabled(&self) -> bool {
        get16(&self.cfg, MSIX_CAP + 2) & 0x8000 != 0
    }

    fn msix_masked(&self) -> bool {
        get16(&self.cfg, MSIX_CAP + 2) & 0x4000 != 0
    }

    // ---- config space ----

    fn config_read(&self, reg: u16, size: u8) -> u32 {
        let r = usize::from(reg);
        let mut v = 0u32;
        for i in 0..usize::from(size) {
            let b = self.cfg.get(r + i).copied().unwrap_or(0);
            v |= u32::from(b) << (8 * i);
        }
        v
    }

    fn config_write(&mut self, ctx: &mut Ctx<'_>, reg: u16, size: u8, value: u32) {
        let r = usize::from(reg);
        for i in 0..usize::from(size) {
            let at = r + i;
            let b = (value >> (8 * i)) as u8;
            match at {
                // Command: I/O, memory, bus master; INTx disable.
                0x04 => self.cfg[at] = b & 0x07,
                0x05 => self.cfg[at] = b & 0x04,
                // BAR0: the size's low bits read as zero.
                0x10 => self.cfg[at] = 0,
                0x11 => self.cfg[at] = b & !((BAR_SIZE >> 8) as u8 - 1),
                0x12 | 0x13 => self.cfg[at] = b,
                0x3c => self.cfg[at] = b,
                // MSI-X message control: enable and function mask.
                a if a == MSIX_CAP + 3 => self.cfg[at] = b & 0xc0,
                _ => {}
            }
        }
        if get16(&self.cfg, 0x04) & 0x400 != 0 && self.intx {
            // INTx disabled while asserted: the line goes down.
            self.set_intx(ctx, false);
        }
        self.update_bar(ctx);
        self.deliver_pending(ctx);
    }

    /// Claims BAR0 where the guest put it (memory decoding on), releasing the old place.
    fn update_bar(&mut self, ctx: &mut Ctx<'_>) {
        let base = u64::from(get32(&self.cfg, 0x10) & !(BAR_SIZE - 1));
        let sizing = base == u64::from(!(BAR_SIZE - 1));
        let want = (self.command() & 2 != 0 && base != 0 && !sizing).then_some(base);
        if want == self.claimed {
            return;
        }
        let size = u64::from(BAR_SIZE);
        if let Some(old) = self.claimed.take() {
            // Not there when it could not be set up; either way the loop serves the register.
            let _ = ctx.release_doorbell(notify_doorbell(old));
            if let Err(e) = ctx.release(Claim::Mmio(old..=old + size - 1)) {
                ctx.report(e);
            }
        }
        if let Some(new) = want {
            match ctx.claim(Claim::Mmio(new..=new + size - 1)) {
                Ok(()) => {
                    self.claimed = Some(new);
                    // The queue's notify register through the kernel when it can (ioeventfd);
                    // if not, its writes come through the loop as before, to the same code.
                    let _ = ctx.doorbell(notify_doorbell(new));
                }
                Err(e) => ctx.report(e),
            }
        }
    }

    // ---- interrupts ----

    fn set_intx(&mut self, ctx: &mut Ctx<'_>, level: bool) {
        if self.intx != level {
            self.intx = level;
            if let Err(e) = ctx.set_pci_intx_level(self.sbdf, IntxPin::A, level) {
                ctx.report(e);
            }
        }
    }

    /// Signals `vector` (MSI-X) or ISR bit `isr_bit` (INTx).
    fn interrupt(&mut self, ctx: &mut Ctx<'_>, vector: u16, isr_bit: u8) {
        if self.msix_enabled() {
            let v = usize::from(vector);
            if v >= VECTORS {
                return;
            }
            if self.vector_masked(v) {
                self.pending |= 1 << v;
                return;
            }
            let (addr, data) = (self.msix[v].addr, self.msix[v].data);
            self.stats.msi += 1;
            if let Err(e) = ctx.inject_msi(addr, data) {
                ctx.report(e);
            }
        } else {
            self.stats.intx += 1;
            self.isr |= isr_bit;
            if self.command() & 0x400 == 0 {
                self.set_intx(ctx, true);
            }
        }
    }

    /// Whether vector `v` is held back by a mask. A vector whose message names a Xen pirq
    /// (vector field 0) is never masked here: the guest masks it on its event channel,
    /// and a guest that routes MSIs through pirqs leaves the table's mask bits alone.
    fn vector_masked(&self, v: usize) -> bool {
        let e = &self.msix[v];
        !is_pirq_msi(e.addr, e.data) && (self.msix_masked() || e.ctrl & 1 != 0)
    }

    fn deliver_pending(&mut self, ctx: &mut Ctx<'_>) {
        if self.pending == 0 || !self.msix_enabled() {
            return;
        }
        for v in 0..VECTORS {
            if self.pending & (1 << v) != 0 && !self.vector_masked(v) {
                self.pending &= !(1 << v);
                let (addr, data) = (self.msix[v].addr, self.msix[v].data);
                if let Err(e) = ctx.inject_msi(addr, data) {
                    ctx.report(e);
                }
            }
        }
    }

    /// Marks the device broken (`DEVICE_NEEDS_RESET`) and tells the driver.
    fn break_device(&mut self, ctx: &mut Ctx<'_>, why: Broken) {
        if self.broken.is_none() {
            self.broken = Some(why);
            self.status |= S_NEEDS_RESET;
            self.config_gen = self.config_gen.wrapping_add(1);
            let v = self.msix_config;
            self.interrupt(ctx, v, 2);
        }
    }

    fn reset(&mut self, ctx: &mut Ctx<'_>) {
        self.status = 0;
        self.driver_features = 0;
        self.dev_feat_sel = 0;
        self.drv_feat_sel = 0;
        self.msix_config = NO_VECTOR;
        self.queue_sel = 0;
        self.queue = None;
        self.queue_size = QUEUE_MAX;
        self.queue_msix = NO_VECTOR;
        self.queue_enable = false;
        self.desc = 0;
        self.avail = 0;
        self.used = 0;
        self.isr = 0;
        self.pending = 0;
        self.broken = None;
        self.set_intx(ctx, false);
    }

    // ---- BAR0 ----

    fn common_read(&self, off: u64, size: u8) -> u64 {
        let q0 = self.queue_sel == 0;
        let q = |v: u64| if q0 { v } else { 0 };
        let feat = |sel: u32, f: u64| match sel {
            0 => f & 0xffff_ffff,
            1 => f >> 32,
            _ => 0,
        };
        let v: u64 = match (off, size) {
            (0x00, 4) => self.dev_feat_sel.into(),
            (0x04, 4) => feat(self.dev_feat_sel, FEATURES),
            (0x08, 4) => self.drv_feat_sel.into(),
            (0x0c, 4) => feat(self.drv_feat_sel, self.driver_features),
            (0x10, 2) => self.msix_config.into(),
            (0x12, 2) => 1,
            (0x14, 1) => self.status.into(),
            (0x15, 1) => self.config_gen.into(),
            (0x16, 2) => self.queue_sel.into(),
            (0x18, 2) => q(self.queue_size.into()),
            (0x1a, 2) => {
                if q0 {
                    self.queue_msix.into()
                } else {
                    NO_VECTOR.into()
                }
            }
            (0x1c, 2) => q(self.queue_enable.into()),
            (0x1e, 2) => 0,
            (0x20, 4) => q(self.desc & 0xffff_ffff),
            (0x24, 4) => q(self.desc >> 32),
            (0x28, 4) => q(self.avail & 0xffff_ffff),
            (0x2c, 4) => q(self.avail >> 32),
            (0x30, 4) => q(self.used & 0xffff_ffff),
            (0x34, 4) => q(self.used >> 32),
            (0x20, 8) => q(self.desc),
            (0x28, 8) => q(self.avail),
            (0x30, 8) => q(self.used),
            _ => 0,
        };
        v
    }

    fn common_write(&mut self, ctx: &mut Ctx<'_>, off: u64, size: u8, v: u64) {
        let q0 = self.queue_sel == 0;
        // Queue registers are read-only once the queue is enabled.
        let qw = q0 && !self.queue_enable;
        let lo = |old: u64| (old & !0xffff_ffff) | (v & 0xffff_ffff);
        let hi = |old: u64| (old & 0xffff_ffff) | (v << 32);
        match (off, size) {
            (0x00, 4) => self.dev_feat_sel = v as u32,
            (0x08, 4) => self.drv_feat_sel = v as u32,
            (0x0c, 4) if self.status & S_FEATURES_OK == 0 => match self.drv_feat_sel {
                0 => self.driver_features = lo(self.driver_features),
                1 => self.driver_features = hi(self.driver_features),
                _ => {}
            },
            (0x10, 2) => self.msix_config = v as u16,
            (0x14, 1) => {
                let s = v as u8;
                if s == 0 {
                    self.reset(ctx);
                } else {
                    let mut s = s | (self.status & S_NEEDS_RESET);
                    // FEATURES_OK only for features offered, VERSION_1 among them.
                    let ok = self.driver_features & !FEATURES == 0
                        && self.driver_features & (1 << 32) != 0;
                    if s & S_FEATURES_OK != 0 && !ok {
                        s &= !S_FEATURES_OK;
                    }
                    self.status = s;
                }
            }
            (0x16, 2) => self.queue_sel = v as u16,
            (0x18, 2) if qw => {
                let n = v as u16;
                if n == 0 || n > QUEUE_MAX || !n.is_power_of_two() {
                    self.break_device(ctx, Broken::QueueSize);
                } else {
                    self.queue_size = n;
                }
            }
            (0x1a, 2) if q0 => self.queue_msix = v as u16,
            (0x1c, 2) if qw && v & 1 == 1 => self.enable_queue(ctx),
            (0x20, 4) if qw => self.desc = lo(self.desc),
            (0x24, 4) if qw => self.desc = hi(self.desc),
            (0x28, 4) if qw => self.avail = lo(self.avail),
            (0x2c, 4) if qw => self.avail = hi(self.avail),
            (0x30, 4) if qw => self.used = lo(self.used),
            (0x34, 4) if qw => self.used = hi(self.used),
            (0x20, 8) if qw => self.desc = v,
            (0x28, 8) if qw => self.avail = v,
            (0x30, 8) if qw => self.used = v,
            _ => {}
        }
    }

    fn enable_queue(&mut self, ctx: &mut Ctx<'_>) {
        let Ok(mut q) = Queue::new(QUEUE_MAX) else {
            self.break_device(ctx, Broken::QueueSize);
            return;
        };
        let set = q
            .try_set_size(self.queue_size)
            .and_then(|_| q.try_set_desc_table_address(GuestAddress(self.desc)))
            .and_then(|_| q.try_set_avail_ring_address(GuestAddress(self.avail)))
            .and_then(|_| q.try_set_used_ring_address(GuestAddress(self.used)));
        q.set_ready(true);
        let valid = set.is_ok()
            && match self.ram.memory() {
                Some(mem) => q.is_valid(mem),
                None => false,
            };
        if valid {
            self.queue = Some(q);
            self.queue_enable = true;
        } else {
            self.break_device(ctx, Broken::Memory);
        }
    }

    fn notify(&mut self, ctx: &mut Ctx<'_>) {
        self.stats.notifies += 1;
        if self.broken.is_some() || self.status & S_DRIVER_OK == 0 {
            return;
        }
        let Some(queue) = self.queue.as_mut() else {
            return;
        };
        let Some(mem) = self.ram.memory() else {
            self.break_device(ctx, Broken::Memory);
            return;
        };
        let r = blk::process_queue(
            queue,
            mem,
            &mut self.disk,
            &mut self.bounce,
            &self.id,
            &mut self.stats,
        );
        match r {
            Ok(true) => {
                let v = self.queue_msix;
                self.interrupt(ctx, v, 1);
            }
            Ok(false) => {}
            Err(why) => self.break_device(ctx, why),
        }
    }

    fn devcfg_read(&self, off: u64, size: u8) -> u64 {
        let mut c = [0u8; 0x18];
        let sectors = self.disk.size() / blk::SECTOR;
        c[0..8].copy_from_slice(&sectors.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&512u32.to_le_bytes());
        read_le(&c, off, size)
    }

    fn msix_read(&self, off: u64, size: u8) -> u64 {
        let mut t = [0u8; 16 * VECTORS];
        for (i, e) in self.msix.iter().enumerate() {
            t[16 * i..16 * i + 8].copy_from_slice(&e.addr.to_le_bytes());
            t[16 * i + 8..16 * i + 12].copy_from_slice(&e.data.to_le_bytes());
            t[16 * i + 12..16 * i + 16].copy_from_slice(&e.ctrl.to_le_bytes());
        }
        read_le(&t, off, size)
    }

    fn msix_write(&mut self, ctx: &mut Ctx<'_>, off: u64, size: u8, v: u64) {
        let i = (off / 16) as usize;
        let Some(e) = self.msix.get_mut(i) else {
            return;
        };
        match (off % 16, size) {
            (0, 4) => e.addr = (e.addr & !0xffff_ffff) | (v & 0xffff_ffff),
            (4, 4) => e.addr = (e.addr & 0xffff_ffff) | (v << 32),
            (0, 8) => e.addr = v,
            (8, 4) => e.data = v as u32,
            (12, 4) => e.ctrl = (v as u32) & 1,
            (8, 8) => {
                e.data = v as u32;
                e.ctrl = ((v >> 32) as u32) & 1;
            }
            _ => {}
        }
        self.deliver_pending(ctx);
    }

    fn bar_read(&mut self, ctx: &mut Ctx<'_>, off: u64, size: u8) -> u64 {
        match off {
            o if o < ISR => self.common_read(o - COMMON, size),
            ISR => {
                let v = self.isr;
                self.isr = 0;
                self.set_intx(ctx, false);
                v.into()
            }
            o if (DEVCFG..DEVCFG + 0x18).contains(&o) => self.devcfg_read(o - DEVCFG, size),
            o if (MSIX_TABLE..MSIX_TABLE + 16 * VECTORS as u64).contains(&o) => {
                self.msix_read(o - MSIX_TABLE, size)
            }
            MSIX_PBA => self.pending,
            _ => 0,
        }
    }

    fn bar_write(&mut self, ctx: &mut Ctx<'_>, off: u64, size: u8, v: u64) {
        match off {
            o if o < ISR => self.common_write(ctx, o - COMMON, size, v),
            NOTIFY => self.notify(ctx),
            o if (MSIX_TABLE..MSIX_TABLE + 16 * VECTORS as u64).contains(&o) => {
                self.msix_write(ctx, o - MSIX_TABLE, size, v)
            }
            _ => {}
        }
    }
}

/// The request queue's notify register in BAR0 at `bar`: the driver writes the queue index
/// (0) there, 16 bits wide.
fn notify_doorbell(bar: u64) -> Doorbell {
    Doorbell::new(bar + NOTIFY, 2).datamatch(0)
}

impl<R: GuestRam, D: Disk> Device for VirtioBlk<R, D> {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        let bar = self.claimed;
        let in_bar = |addr: u64| {
            bar.and_then(|b| addr.checked_sub(b))
                .filter(|o| *o < u64::from(BAR_SIZE))
        };
        match access {
            Access::PciRead { dev, reg, size } if dev == self.sbdf => {
                self.config_read(reg, size).into()
            }
            Access::PciWrite {
                dev,
                reg,
                size,
                value,
            } if dev == self.sbdf => {
                self.config_write(ctx, reg, size, value);
                0
            }
            Access::MmioRead { addr, size } => match in_bar(addr) {
                Some(off) => self.bar_read(ctx, off, size),
                None => u64::MAX,
            },
            Access::MmioWrite { addr, size, value } => {
                if let Some(off) = in_bar(addr) {
                    self.bar_write(ctx, off, size, value);
                }
                0
            }
            _ => u64::MAX,
        }
    }

    fn mappings_invalidated(&mut self) {
        self.ram.invalidate();
    }
}

/// Whether an MSI message asks Xen for a pirq rather than a vector: a Linux guest with
/// Xen's pirq-based MSI writes the pirq into the address's destination fields and a data
/// word whose vector (bits 0-7) is 0, which no real MSI uses. Xen's `inject_msi` turns
/// such a message into an event on that pirq's channel. An entry never written (address
/// 0) is not one.
pub fn is_pirq_msi(addr: u64, data: u32) -> bool {
    addr & 0xfff0_0000 == 0xfee0_0000 && data & 0xff == 0
}

fn read_le(bytes: &[u8], off: u64, size: u8) -> u64 {
    let mut v = 0u64;
    for i in 0..u64::from(size.min(8)) {
        let b = usize::try_from(off + i)
            .ok()
            .and_then(|o| bytes.get(o))
            .copied()
            .unwrap_or(0);
        v |= u64::from(b) << (8 * i);
    }
    v
}

fn put16(c: &mut [u8], at: usize, v: u16) {
    c[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(c: &mut [u8], at: usize, v: u32) {
    c[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get16(c: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([c[at], c[at + 1]])
}

fn get32(c: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]])
}
