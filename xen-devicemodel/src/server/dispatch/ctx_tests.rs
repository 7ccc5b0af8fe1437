//! The devices' [`Ctx`] against a recording platform and plain RAM (no Xen needed):
//! interrupts, DMA, claims that change at run time, errors, invalidation.

use std::sync::{Arc, Mutex};

use super::*;
use crate::server::{Access, Claim, Ctx, Device, ServerBuilder};
use crate::test_alloc::allocations;
use crate::{DomId, Errno, Error, IntxPin, IsaIrq};

/// Guest RAM: 2 frames at guest-physical 0; anything else is not RAM.
struct Ram(Vec<u8>);

impl GuestMemory for Ram {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let o = usize::try_from(gpa).map_err(|_| efault())?;
        let src = self.0.get(o..o + buf.len()).ok_or_else(efault)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        let o = usize::try_from(gpa).map_err(|_| efault())?;
        let dst = self.0.get_mut(o..o + data.len()).ok_or_else(efault)?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn invalidate(&mut self) {}
}

fn efault() -> Error {
    Error::os("test ram", None, Errno::EFAULT)
}

/// What the platform was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Isa(u8, bool),
    Intx(u32, u8, bool),
    Msi(u64, u32),
    Route(u8, Option<u8>),
    Map(Claim),
    Unmap(Claim),
}

#[derive(Clone, Default)]
struct Rec(Arc<Mutex<Vec<Ev>>>);

impl Platform for Rec {
    fn domid(&self) -> DomId {
        DomId::new(7)
    }
    fn interrupts(&self) -> Option<crate::server::Interrupts> {
        None
    }
    fn set_isa_irq_level(&self, irq: IsaIrq, asserted: bool) -> Result<()> {
        self.0.lock().unwrap().push(Ev::Isa(irq.get(), asserted));
        Ok(())
    }
    fn set_pci_intx_level(&self, dev: Sbdf, pin: IntxPin, asserted: bool) -> Result<()> {
        let e = Ev::Intx(dev.to_raw(), pin as u8, asserted);
        self.0.lock().unwrap().push(e);
        Ok(())
    }
    fn inject_msi(&self, addr: u64, data: u32) -> Result<()> {
        self.0.lock().unwrap().push(Ev::Msi(addr, data));
        Ok(())
    }
    fn set_pci_link_route(&self, link: crate::PciLink, irq: Option<IsaIrq>) -> Result<()> {
        let e = Ev::Route(link as u8, irq.map(IsaIrq::get));
        self.0.lock().unwrap().push(e);
        Ok(())
    }
    fn map(&self, claim: &Claim) -> Result<()> {
        self.0.lock().unwrap().push(Ev::Map(claim.clone()));
        Ok(())
    }
    fn unmap(&self, claim: &Claim) -> Result<()> {
        self.0.lock().unwrap().push(Ev::Unmap(claim.clone()));
        Ok(())
    }
}

const PORT: u16 = 0x600;

/// A device driven through its port: 1 raises ISA IRQ 4, 2 lowers it, 3 sends an MSI, 4
/// pulses INTA, 5 DMA-copies 16 bytes from 0x100 to 0x1ff0 (across a frame) plus 1, 6 moves
/// its MMIO window to 0xe000_0000, 7 reports an error, 8 fails; reading the port gives the
/// vCPU (or 0xff) and, in MMIO, the window's base answers 0x77; 9 and 10 DMA outside RAM,
/// 11 releases the first window.
struct Smart {
    window: u64,
    invalidated: u32,
}

impl Device for Smart {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        let dev = Sbdf::new(0, 0, 4, 0).unwrap();
        match access {
            Access::PortRead { .. } => ctx.vcpu().map_or(0xff, u64::from),
            Access::PortWrite { value, .. } => {
                let irq4 = IsaIrq::new(4).unwrap();
                let r = match value {
                    1 => ctx.set_isa_irq_level(irq4, true),
                    2 => ctx.set_isa_irq_level(irq4, false),
                    3 => ctx.inject_msi(0xfee0_0000, 0x61),
                    4 => ctx
                        .set_pci_intx_level(dev, IntxPin::A, true)
                        .and_then(|_| ctx.set_pci_intx_level(dev, IntxPin::A, false))
                        .and_then(|_| ctx.set_pci_link_route(crate::PciLink::B, Some(irq4))),
                    5 => {
                        let mut b = [0u8; 16];
                        ctx.read_guest(0x100, &mut b).and_then(|_| {
                            b.iter_mut().for_each(|x| *x = x.wrapping_add(1));
                            ctx.write_guest(0x1ff0, &b)
                        })
                    }
                    6 => {
                        let old = Claim::Mmio(self.window..=self.window + 0xfff);
                        let new = Claim::Mmio(0xe000_0000..=0xe000_0fff);
                        let r = ctx.release(old).and_then(|_| ctx.claim(new));
                        self.window = 0xe000_0000;
                        r
                    }
                    7 => Err(Error::os("smart device", None, Errno::EIO)),
                    8 => {
                        ctx.fail(Error::os("smart device", None, Errno::ENOSPC));
                        Ok(())
                    }
                    // DMA outside RAM, and a range that wraps.
                    9 => ctx.write_guest(0x10_0000, &[1]),
                    10 => ctx.write_guest(u64::MAX - 1, &[1, 2, 3]),
                    // Release a window it does not hold (any more).
                    _ => ctx.release(Claim::Mmio(0xf000_0000..=0xf000_0fff)),
                };
                if let Err(e) = r {
                    ctx.report(e);
                }
                0
            }
            Access::MmioRead { addr, .. } if addr == self.window => 0x77,
            _ => u64::MAX,
        }
    }
    fn mappings_invalidated(&mut self) {
        self.invalidated += 1;
    }
}

fn setup() -> (Dispatch<Ram, Rec>, Rec, Arc<Mutex<Smart>>) {
    let smart = Arc::new(Mutex::new(Smart {
        window: 0xf000_0000,
        invalidated: 0,
    }));
    let b = ServerBuilder::new(DomId::new(7)).device(
        smart.clone(),
        [
            Claim::Ports(PORT..=PORT),
            Claim::Mmio(0xf000_0000..=0xf000_0fff),
        ],
    );
    let rec = Rec::default();
    let ram: Vec<u8> = (0..2 * 4096).map(|i| i as u8).collect();
    let d = Dispatch::with_platform(b.devices, b.keys, Ram(ram), rec.clone());
    (d, rec, smart)
}

fn out(value: u64) -> Ioreq {
    Ioreq {
        addr: PORT.into(),
        data: value,
        count: 1,
        size: 1,
        data_is_ptr: false,
        read: false,
        df: false,
        kind: slot::IOREQ_TYPE_PIO,
    }
}

fn mmio_read(addr: u64) -> Ioreq {
    Ioreq {
        addr,
        data: 0,
        count: 1,
        size: 4,
        data_is_ptr: false,
        read: true,
        df: false,
        kind: slot::IOREQ_TYPE_COPY,
    }
}

#[test]
fn a_device_raises_its_interrupts_from_a_callback() {
    let (mut d, rec, _) = setup();
    for v in [1, 2, 3, 4] {
        d.handle(&out(v));
    }
    let raw = Sbdf::new(0, 0, 4, 0).unwrap().to_raw();
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![
            Ev::Isa(4, true),
            Ev::Isa(4, false),
            Ev::Msi(0xfee0_0000, 0x61),
            Ev::Intx(raw, 0, true),
            Ev::Intx(raw, 0, false),
            Ev::Route(1, Some(4)),
        ]
    );
    assert_eq!(d.stats.device_errors, 0);
}

#[test]
fn a_device_knows_the_vcpu_of_the_request() {
    let (mut d, _, _) = setup();
    let mut r = out(0);
    r.read = true;
    d.vcpu = Some(1);
    assert_eq!(d.handle(&r), Some(1));
    d.vcpu = None;
    assert_eq!(d.handle(&r), Some(0xff));
}

#[test]
fn dma_reads_and_writes_guest_memory_across_frames() {
    let (mut d, _, _) = setup();
    d.handle(&out(5));
    let want: Vec<u8> = (0x100..0x110).map(|i| (i as u8).wrapping_add(1)).collect();
    assert_eq!(&d.mem.0[0x1ff0..0x2000], &want[..]);
    assert_eq!(d.stats.device_errors, 0);
}

#[test]
fn dma_outside_ram_or_wrapping_is_an_error_not_a_write() {
    let (mut d, _, _) = setup();
    let before = d.mem.0.clone();
    d.handle(&out(9));
    d.handle(&out(10));
    assert_eq!(d.mem.0, before);
    assert_eq!(d.stats.device_errors, 2);
    assert_eq!(d.errors.last.map(|e| e.errno()), Some(Errno::EFAULT));
    assert!(
        d.errors.fatal.is_none(),
        "reported errors do not stop the loop"
    );
}

#[test]
fn a_bar_that_moves_is_served_at_its_new_place_only() {
    let (mut d, rec, _) = setup();
    assert_eq!(d.handle(&mmio_read(0xf000_0000)), Some(0x77));
    d.handle(&out(6));
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![
            Ev::Unmap(Claim::Mmio(0xf000_0000..=0xf000_0fff)),
            Ev::Map(Claim::Mmio(0xe000_0000..=0xe000_0fff)),
        ]
    );
    // The old window is nobody's now; the new one reaches the device.
    let u = d.stats.unclaimed;
    assert_eq!(d.handle(&mmio_read(0xf000_0000)), Some(0xffff_ffff));
    assert_eq!(d.stats.unclaimed, u + 1);
    assert_eq!(d.handle(&mmio_read(0xe000_0000)), Some(0x77));
    // Releasing what the device does not hold is refused, and nothing is unmapped.
    d.handle(&out(11));
    assert_eq!(d.stats.device_errors, 1);
    assert_eq!(d.errors.last.map(|e| e.errno()), Some(Errno::ENOENT));
    assert_eq!(rec.0.lock().unwrap().len(), 2);
}

#[test]
fn claims_are_bounded() {
    let (mut d, _, _) = setup();
    let mut ctx = Ctx {
        plat: &d.plat,
        mem: &mut d.mem,
        keys: &mut d.keys,
        device: 0,
        vcpu: None,
        errors: &mut d.errors,
        bells: &mut d.bells,
    };
    let mut last = Ok(());
    for p in 0..2 * crate::server::MAX_CLAIMS as u16 {
        last = ctx.claim(Claim::Ports(0x1000 + p..=0x1000 + p));
        if last.is_err() {
            break;
        }
    }
    assert_eq!(last.map_err(|e| e.errno()), Err(Errno::E2BIG));
    assert_eq!(d.keys.len(), crate::server::MAX_CLAIMS);
}

#[test]
fn errors_are_counted_and_a_failure_is_kept_for_the_loop() {
    let (mut d, _, _) = setup();
    d.handle(&out(7));
    assert_eq!(d.stats.device_errors, 1);
    assert!(d.errors.fatal.is_none());
    d.handle(&out(8));
    d.handle(&out(7));
    assert_eq!(d.stats.device_errors, 3);
    assert_eq!(d.errors.last.map(|e| e.errno()), Some(Errno::EIO));
    assert_eq!(d.errors.fatal.map(|e| e.errno()), Some(Errno::ENOSPC));
    assert!(d.stats.to_string().contains("device-errors=3"));
}

#[test]
fn invalidate_reaches_the_devices() {
    let (mut d, _, smart) = setup();
    let mut r = out(0);
    r.kind = slot::IOREQ_TYPE_INVALIDATE;
    d.handle(&r);
    d.handle(&r);
    assert_eq!(smart.lock().unwrap().invalidated, 2);
    assert_eq!(d.stats.invalidate, 2);
}

#[test]
fn boxed_dyn_devices_register_and_serve() {
    struct Ten;
    impl Device for Ten {
        fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
            10
        }
    }
    let dev: Box<dyn Device> = Box::new(Ten);
    let b = ServerBuilder::new(DomId::new(7)).device(dev, [Claim::Ports(PORT..=PORT)]);
    let mut d = Dispatch::new(b.devices, b.keys, Ram(vec![0; 4096]));
    let mut r = out(0);
    r.read = true;
    assert_eq!(d.handle(&r), Some(10));
}

#[test]
fn interrupts_and_dma_from_a_callback_allocate_nothing() {
    let (mut d, rec, _) = setup();
    rec.0.lock().unwrap().reserve(1000);
    for v in [1, 2, 3, 5] {
        d.handle(&out(v));
    }
    let a0 = allocations();
    for _ in 0..10 {
        for v in [1, 2, 3, 5] {
            d.handle(&out(v));
        }
    }
    assert_eq!(allocations() - a0, 0);
}

#[test]
fn doorbells_lie_in_the_devices_mmio_claims_and_take_the_loop_without_a_kernel() {
    use crate::server::{Doorbell, FastPath};
    let (mut d, _, _) = setup();
    let mut ctx = Ctx {
        plat: &d.plat,
        mem: &mut d.mem,
        keys: &mut d.keys,
        device: 0,
        vcpu: None,
        errors: &mut d.errors,
        bells: &mut d.bells,
    };
    let bell = Doorbell::new(0xf000_0050, 4).datamatch(1);
    assert_eq!(ctx.doorbell(bell).unwrap(), FastPath::Loop);
    // Outside its MMIO claims, across their end, or in a port range: refused.
    for b in [
        Doorbell::new(0xf000_1000, 4),
        Doorbell::new(0xf000_0ffe, 4),
        Doorbell::new(u64::from(PORT), 1),
        Doorbell::new(u64::MAX, 2),
    ] {
        assert_eq!(ctx.doorbell(b).unwrap_err().errno(), Errno::EINVAL, "{b:?}");
    }
    // Another device cannot release it.
    ctx.device = 1;
    assert_eq!(
        ctx.release_doorbell(bell).unwrap_err().errno(),
        Errno::ENOENT
    );
    ctx.device = 0;
    ctx.release_doorbell(bell).unwrap();
    assert!(d.bells.entries.is_empty());
    // A doorbell served by the loop is an ordinary MMIO write: the device gets it.
    assert_eq!(d.handle(&mmio_read(0xf000_0000)), Some(0x77));
}
