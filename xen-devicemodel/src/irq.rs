//! Interrupts: INTx and ISA lines, link routing, MSIs and event injection.

use xen_sys::dm_op::{
    XEN_DMOP_inject_event, XEN_DMOP_inject_msi, XEN_DMOP_set_irq_level, XEN_DMOP_set_isa_irq_level,
    XEN_DMOP_set_pci_intx_level, XEN_DMOP_set_pci_link_route,
};

use crate::{DeviceModel, DomId, Event, IntxPin, IsaIrq, PciLink, Result, Sbdf};

impl DeviceModel {
    /// Sets the level of PCI device `device`'s interrupt pin `pin` (`XEN_DMOP_set_pci_intx_level`;
    /// `asserted` = 1). Xen identifies INTx by segment, bus and device: `device.function()`
    /// is not sent. The pin drives IOAPIC input `16 + ((device * 4 + device / 8 + pin) % 32)`
    /// and, through its link, the ISA IRQ routed with [`DeviceModel::set_pci_link_route`].
    ///
    /// HVM guests only: **never call it for a PVH guest** (see the crate docs, "PVH guests").
    pub fn set_pci_intx_level(
        &self,
        dom: DomId,
        device: Sbdf,
        pin: IntxPin,
        asserted: bool,
    ) -> Result<()> {
        let mut req = Self::request(XEN_DMOP_set_pci_intx_level);
        req.u.set_pci_intx_level = xen_sys::dm_op::xen_dm_op_set_pci_intx_level {
            domain: device.segment(),
            bus: device.bus(),
            device: device.device(),
            intx: pin as u8,
            level: u8::from(asserted),
        };
        self.op("dm_op set_pci_intx_level", dom, &mut req)
    }

    /// Routes PCI interrupt link `link` to ISA IRQ `irq`, or disconnects it with `None`
    /// (`XEN_DMOP_set_pci_link_route`; Xen takes ISA IRQ 0 as "disconnected" too).
    ///
    /// HVM guests only: **never call it for a PVH guest** (see the crate docs).
    pub fn set_pci_link_route(&self, dom: DomId, link: PciLink, irq: Option<IsaIrq>) -> Result<()> {
        let mut req = Self::request(XEN_DMOP_set_pci_link_route);
        req.u.set_pci_link_route.link = link as u8;
        req.u.set_pci_link_route.isa_irq = irq.map_or(0, IsaIrq::get);
        self.op("dm_op set_pci_link_route", dom, &mut req)
    }

    /// Sets the level of ISA IRQ line `irq` (`XEN_DMOP_set_isa_irq_level`; `asserted` = 1).
    /// It drives the emulated PIC and the IOAPIC (ISA IRQ 0 is IOAPIC input 2).
    ///
    /// HVM guests only: **never call it for a PVH guest** — it crashed Xen 4.17 once here
    /// (see the crate docs, "PVH guests").
    pub fn set_isa_irq_level(&self, dom: DomId, irq: IsaIrq, asserted: bool) -> Result<()> {
        let mut req = Self::request(XEN_DMOP_set_isa_irq_level);
        req.u.set_isa_irq_level.isa_irq = irq.get();
        req.u.set_isa_irq_level.level = u8::from(asserted);
        self.op("dm_op set_isa_irq_level", dom, &mut req)
    }

    /// Sets the level of interrupt line `irq` of the guest's interrupt controller
    /// (`XEN_DMOP_set_irq_level`): the Arm form, for SPIs of the virtual GIC. Xen on x86
    /// answers `EOPNOTSUPP`.
    pub fn set_irq_level(&self, dom: DomId, irq: u32, asserted: bool) -> Result<()> {
        let mut req = Self::request(XEN_DMOP_set_irq_level);
        req.u.set_irq_level.irq = irq;
        req.u.set_irq_level.level = u8::from(asserted);
        self.op("dm_op set_irq_level", dom, &mut req)
    }

    /// Delivers a message-signalled interrupt as if a device wrote `data` to `addr`
    /// (`XEN_DMOP_inject_msi`). On x86, `addr` is `0xfee0_0000 | dest_apic_id << 12 | ...`
    /// and the low byte of `data` the vector. Works for HVM and PVH guests.
    pub fn inject_msi(&self, dom: DomId, addr: u64, data: u32) -> Result<()> {
        let mut req = Self::request(XEN_DMOP_inject_msi);
        req.u.inject_msi.addr = addr;
        req.u.inject_msi.data = data;
        self.op("dm_op inject_msi", dom, &mut req)
    }

    /// Injects `event` into one of `dom`'s vCPUs, taken when it next runs
    /// (`XEN_DMOP_inject_event`). The caller must know enough of the vCPU's state for the
    /// event to make sense (an exception with an error code, a page fault with `cr2`, ...).
    pub fn inject_event(&self, dom: DomId, event: Event) -> Result<()> {
        let mut req = Self::request(XEN_DMOP_inject_event);
        req.u.inject_event = xen_sys::dm_op::xen_dm_op_inject_event {
            vcpuid: event.vcpu,
            vector: event.vector,
            type_: event.kind as u8,
            insn_len: event.insn_len,
            pad0: 0,
            error_code: event.error_code.unwrap_or(!0),
            pad1: 0,
            cr2: event.cr2,
        };
        self.op("dm_op inject_event", dom, &mut req)
    }
}
