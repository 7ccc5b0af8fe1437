//! [`Harness`]: calls a [`Device`] on the host, without Xen, with a [`Ctx`] whose
//! interrupts and claims are recorded and whose guest memory is a buffer (for device
//! crates' unit tests).

use std::cell::RefCell;

use super::ctx::{Ctx, DeviceErrors, Interrupts, Platform};
use super::device::{Access, Claim, Device, Key};
use super::dispatch::GuestMemory;
use super::fast::Doorbells;
use crate::{DomId, Errno, Error, IntxPin, IsaIrq, PciLink, Result, Sbdf};

/// What a device asked of the platform through its [`Ctx`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HarnessEvent {
    /// [`Ctx::set_isa_irq_level`].
    IsaIrq(IsaIrq, bool),
    /// [`Ctx::set_pci_intx_level`].
    Intx(Sbdf, IntxPin, bool),
    /// [`Ctx::inject_msi`]: address and data.
    Msi(u64, u32),
    /// [`Ctx::set_pci_link_route`].
    LinkRoute(PciLink, Option<IsaIrq>),
    /// [`Ctx::claim`].
    Claim(Claim),
    /// [`Ctx::release`].
    Release(Claim),
}

struct Recorder {
    dom: DomId,
    events: RefCell<Vec<HarnessEvent>>,
}

impl Recorder {
    fn push(&self, e: HarnessEvent) -> Result<()> {
        self.events.borrow_mut().push(e);
        Ok(())
    }
}

impl Platform for Recorder {
    fn domid(&self) -> DomId {
        self.dom
    }
    fn interrupts(&self) -> Option<Interrupts> {
        None
    }
    fn set_isa_irq_level(&self, irq: IsaIrq, asserted: bool) -> Result<()> {
        self.push(HarnessEvent::IsaIrq(irq, asserted))
    }
    fn set_pci_intx_level(&self, dev: Sbdf, pin: IntxPin, asserted: bool) -> Result<()> {
        self.push(HarnessEvent::Intx(dev, pin, asserted))
    }
    fn inject_msi(&self, addr: u64, data: u32) -> Result<()> {
        self.push(HarnessEvent::Msi(addr, data))
    }
    fn set_pci_link_route(&self, link: PciLink, irq: Option<IsaIrq>) -> Result<()> {
        self.push(HarnessEvent::LinkRoute(link, irq))
    }
    fn map(&self, claim: &Claim) -> Result<()> {
        self.push(HarnessEvent::Claim(claim.clone()))
    }
    fn unmap(&self, claim: &Claim) -> Result<()> {
        self.push(HarnessEvent::Release(claim.clone()))
    }
}

/// Guest RAM of the harness: `bytes` at guest-physical `base`.
struct Ram {
    base: u64,
    bytes: Vec<u8>,
}

impl Ram {
    fn range(&self, gpa: u64, len: usize) -> Result<std::ops::Range<usize>> {
        let off = gpa
            .checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| o.checked_add(len).is_some_and(|e| e <= self.bytes.len()));
        match off {
            Some(o) => Ok(o..o + len),
            None => Err(Error::os("harness guest memory", None, Errno::EFAULT)),
        }
    }
}

impl GuestMemory for Ram {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        let r = self.range(gpa, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
    fn invalidate(&mut self) {}
}

/// Calls one device as the loop would, on the host: its [`Ctx`] records interrupts and
/// claims ([`Harness::events`]), reaches a buffer as guest RAM ([`Harness::ram`]) and
/// keeps the errors reported. Claims are kept as a server would keep them (release of a
/// range not claimed fails with `ENOENT`).
pub struct Harness {
    rec: Recorder,
    ram: Ram,
    keys: Vec<(Key, usize)>,
    errors: DeviceErrors,
    vcpu: Option<u32>,
    /// Doorbells the device asked for (the loop's path: the harness has no kernel).
    bells: Doorbells,
}

impl Harness {
    /// A harness for guest `dom` with `ram_len` bytes of zeroed guest RAM at
    /// guest-physical `ram_base`, and the device's registered `claims`.
    pub fn new(
        dom: DomId,
        ram_base: u64,
        ram_len: usize,
        claims: impl IntoIterator<Item = Claim>,
    ) -> Harness {
        Harness {
            rec: Recorder {
                dom,
                events: RefCell::new(Vec::new()),
            },
            ram: Ram {
                base: ram_base,
                bytes: vec![0; ram_len],
            },
            keys: claims.into_iter().map(|c| (Key::of(&c), 0)).collect(),
            errors: DeviceErrors::default(),
            vcpu: Some(0),
            bells: Doorbells::default(),
        }
    }

    /// The vCPU the next accesses come from (`None`: a buffered write).
    pub fn set_vcpu(&mut self, vcpu: Option<u32>) {
        self.vcpu = vcpu;
    }

    /// Calls `device` for `access` with a [`Ctx`]; returns what it answered.
    pub fn access(&mut self, device: &mut dyn Device, access: Access) -> u64 {
        let mut ctx = Ctx {
            plat: &self.rec,
            mem: &mut self.ram,
            keys: &mut self.keys,
            device: 0,
            vcpu: self.vcpu,
            errors: &mut self.errors,
            bells: &mut self.bells,
        };
        device.access(&mut ctx, access)
    }

    /// Whether the device holds `claim` now (registered, or claimed and not released).
    pub fn holds(&self, claim: &Claim) -> bool {
        let k = Key::of(claim);
        self.keys.iter().any(|&(x, _)| x == k)
    }

    /// Takes the events recorded so far.
    pub fn events(&mut self) -> Vec<HarnessEvent> {
        std::mem::take(&mut *self.rec.events.borrow_mut())
    }

    /// The guest RAM (to set up what the device will DMA from, and check what it wrote).
    pub fn ram(&mut self) -> &mut [u8] {
        &mut self.ram.bytes
    }

    /// Errors the device reported so far.
    pub fn error_count(&self) -> u64 {
        self.errors.count
    }

    /// The last error the device reported.
    pub fn last_error(&self) -> Option<Error> {
        self.errors.last
    }

    /// The error the device failed with ([`Ctx::fail`]), if it did.
    pub fn failure(&self) -> Option<Error> {
        self.errors.fatal
    }
}

impl core::fmt::Debug for Harness {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Harness")
            .field("dom", &self.rec.dom)
            .field("claims", &self.keys.len())
            .field("errors", &self.errors.count)
            .finish()
    }
}
