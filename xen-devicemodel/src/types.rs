//! Typed arguments of the device-model operations.

use core::fmt;

use crate::Error;

/// An ioreq server's id (`ioservid_t`), unique within its target domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoreqServerId(u16);

impl IoreqServerId {
    /// The id from its raw value (as Xen handed it back from `XEN_DMOP_create_ioreq_server`).
    pub const fn new(raw: u16) -> IoreqServerId {
        IoreqServerId(raw)
    }

    /// The raw value, e.g. the `id` of `XENMEM_resource_ioreq_server` for
    /// `Privcmd::mmap_resource`.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for IoreqServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether and how an ioreq server handles *buffered* requests (`HVM_IOREQSRV_BUFIOREQ_*`):
/// writes Xen may queue in a ring page instead of waiting for the device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum BufIoreqMode {
    /// `HVM_IOREQSRV_BUFIOREQ_OFF`: no ring; every request is synchronous.
    #[default]
    Off = 0,
    /// `HVM_IOREQSRV_BUFIOREQ_LEGACY`: a ring whose read and write pointers are updated
    /// separately.
    Legacy = 1,
    /// `HVM_IOREQSRV_BUFIOREQ_ATOMIC`: a ring whose pointers Xen updates together atomically
    /// (the mode QEMU uses).
    Atomic = 2,
}

/// A PCI function address: segment, bus, device (0-31), function (0-7).
///
/// Encoded for Xen as `XEN_DMOP_PCI_SBDF` ([`Sbdf::to_raw`]). Displays as
/// `ssss:bb:dd.f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sbdf {
    segment: u16,
    bus: u8,
    device: u8,
    function: u8,
}

impl Sbdf {
    /// A PCI address; `device` above 31 or `function` above 7 is refused (before any
    /// syscall) with [`Error::InvalidArgument`].
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Result<Sbdf, Error> {
        if device > 31 || function > 7 {
            return Err(Error::InvalidArgument {
                op: "pci address",
                domain: None,
                reason: "PCI device must be 0-31 and function 0-7",
            });
        }
        Ok(Sbdf {
            segment,
            bus,
            device,
            function,
        })
    }

    /// The PCI segment (domain).
    pub const fn segment(self) -> u16 {
        self.segment
    }

    /// The bus number.
    pub const fn bus(self) -> u8 {
        self.bus
    }

    /// The device number (0-31).
    pub const fn device(self) -> u8 {
        self.device
    }

    /// The function number (0-7).
    pub const fn function(self) -> u8 {
        self.function
    }

    /// The `XEN_DMOP_PCI_SBDF(s, b, d, f)` encoding: segment in bits 16-31, bus in 8-15,
    /// device in 3-7, function in 0-2. The `addr` of an `IOREQ_TYPE_PCI_CONFIG` request
    /// carries it in bits 32-63.
    pub const fn to_raw(self) -> u32 {
        ((self.segment as u32) << 16)
            | ((self.bus as u32) << 8)
            | ((self.device as u32) << 3)
            | self.function as u32
    }

    /// Decodes [`Sbdf::to_raw`]'s encoding (every 32-bit value is a valid address).
    pub const fn from_raw(raw: u32) -> Sbdf {
        Sbdf {
            segment: (raw >> 16) as u16,
            bus: (raw >> 8) as u8,
            device: ((raw >> 3) & 0x1f) as u8,
            function: (raw & 7) as u8,
        }
    }
}

impl fmt::Display for Sbdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

/// An ISA IRQ line, 0-15 (checked when made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsaIrq(u8);

impl IsaIrq {
    /// The line `irq`; above 15 is refused with [`Error::InvalidArgument`].
    pub const fn new(irq: u8) -> Result<IsaIrq, Error> {
        if irq > 15 {
            return Err(Error::InvalidArgument {
                op: "isa irq",
                domain: None,
                reason: "ISA IRQs are 0-15",
            });
        }
        Ok(IsaIrq(irq))
    }

    /// The line number (0-15).
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// A PCI interrupt pin, INTA# to INTD#.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IntxPin {
    /// INTA#.
    A = 0,
    /// INTB#.
    B = 1,
    /// INTC#.
    C = 2,
    /// INTD#.
    D = 3,
}

/// One of the four PCI interrupt links (LNKA-LNKD) of the emulated chipset, routed to an ISA
/// IRQ by [`DeviceModel::set_pci_link_route`](crate::DeviceModel::set_pci_link_route). A
/// device's INTx pin uses link `(device + pin) % 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PciLink {
    /// Link A (0).
    A = 0,
    /// Link B (1).
    B = 1,
    /// Link C (2).
    C = 2,
    /// Link D (3).
    D = 3,
}

/// How the guest's memory at some frames behaves (`hvmmem_type_t`), for
/// [`DeviceModel::set_mem_type`](crate::DeviceModel::set_mem_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum MemType {
    /// `HVMMEM_ram_rw`: ordinary RAM.
    RamRw = 0,
    /// `HVMMEM_ram_ro`: RAM the guest can read; its writes are discarded.
    RamRo = 1,
    /// `HVMMEM_mmio_dm`: accesses go to the device model as MMIO.
    MmioDm = 2,
    /// `HVMMEM_ioreq_server`: RAM whose writes go to the ioreq server that claimed this type
    /// with [`IoreqServer::map_mem_type`](crate::IoreqServer::map_mem_type).
    IoreqServer = 4,
}

/// A memory caching type (`XEN_DMOP_MEM_CACHEATTR_*`, the x86 MTRR/PAT codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CacheAttr {
    /// Uncacheable.
    Uncacheable = 0,
    /// Write-combining (video memory).
    WriteCombining = 1,
    /// Write-through.
    WriteThrough = 4,
    /// Write-protected.
    WriteProtected = 5,
    /// Write-back (ordinary RAM).
    WriteBack = 6,
    /// Uncached-minus (UC-).
    UncachedMinus = 7,
}

/// The kind of event [`DeviceModel::inject_event`](crate::DeviceModel::inject_event) injects
/// (`XEN_DMOP_EVENT_*`, the x86 event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventType {
    /// `XEN_DMOP_EVENT_ext_int`: an external interrupt.
    ExtInt = 0,
    /// `XEN_DMOP_EVENT_nmi`: a non-maskable interrupt.
    Nmi = 2,
    /// `XEN_DMOP_EVENT_hw_exc`: a hardware exception (#PF, #GP, ...).
    HwException = 3,
    /// `XEN_DMOP_EVENT_sw_int`: a software interrupt (`int nn`).
    SwInt = 4,
    /// `XEN_DMOP_EVENT_pri_sw_exc`: a privileged software exception (`icebp`).
    PrivSwException = 5,
    /// `XEN_DMOP_EVENT_sw_exc`: a software exception (`int3`, `into`).
    SwException = 6,
}

/// An event for [`DeviceModel::inject_event`](crate::DeviceModel::inject_event)
/// (`XEN_DMOP_inject_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// The vCPU to inject into.
    pub vcpu: u32,
    /// The vector.
    pub vector: u8,
    /// The event's type.
    pub kind: EventType,
    /// The error code pushed with it, if any (exceptions such as #GP and #PF).
    pub error_code: Option<u32>,
    /// Length of the instruction that raised it (software events), else 0.
    pub insn_len: u8,
    /// The faulting address for a page fault (written to `cr2`), else 0.
    pub cr2: u64,
}

impl Event {
    /// An external interrupt `vector` on `vcpu`.
    pub const fn interrupt(vcpu: u32, vector: u8) -> Event {
        Event {
            vcpu,
            vector,
            kind: EventType::ExtInt,
            error_code: None,
            insn_len: 0,
            cr2: 0,
        }
    }
}

/// Which accesses to [`MemType::IoreqServer`] memory are forwarded to an ioreq server
/// (`XEN_DMOP_IOREQ_MEM_ACCESS_*`). Xen 4.17 supports writes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum IoreqMemAccess {
    /// 0: the server no longer claims the type.
    Unmap = 0,
    /// `XEN_DMOP_IOREQ_MEM_ACCESS_WRITE`: writes are forwarded, reads go to RAM.
    Write = 2,
    /// `READ | WRITE` (refused by Xen 4.17 with `EINVAL`; kept for later versions).
    ReadWrite = 3,
}

/// The interval of frames `first ..= first + count - 1`, checked: `count >= 1`, fits Xen's
/// 32-bit counts, no overflow.
#[cfg(feature = "hvm")]
#[inline]
pub(crate) fn check_frames(
    op: &'static str,
    dom: crate::DomId,
    first: u64,
    count: u64,
) -> Result<u32, Error> {
    match u32::try_from(count) {
        Ok(n) if n != 0 && first.checked_add(count - 1).is_some() => Ok(n),
        _ => Err(frames_refused(op, dom, first, count)),
    }
}

/// Why [`check_frames`] refused.
#[cfg(feature = "hvm")]
#[cold]
#[inline(never)]
fn frames_refused(op: &'static str, dom: crate::DomId, first: u64, count: u64) -> Error {
    let reason = if count == 0 {
        "needs at least one frame"
    } else if first.checked_add(count - 1).is_none() {
        "frame range overflows"
    } else {
        "more than 2^32-1 frames in one range"
    };
    Error::InvalidArgument {
        op,
        domain: Some(dom),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbdf_encoding() {
        let a = Sbdf::new(1, 2, 3, 4).unwrap();
        assert_eq!(a.to_raw(), 0x0001_021c);
        assert_eq!(Sbdf::from_raw(a.to_raw()), a);
        assert_eq!(a.to_string(), "0001:02:03.4");
        assert!(Sbdf::new(0, 0, 32, 0).unwrap_err().is_invalid_argument());
        assert!(Sbdf::new(0, 0, 0, 8).is_err());
        let b = Sbdf::new(0, 0xff, 31, 7).unwrap();
        assert_eq!(
            u64::from(b.to_raw()),
            xen_sys::dm_op::XEN_DMOP_PCI_SBDF(0, 0xff, 31, 7)
        );
    }

    #[cfg(feature = "hvm")]
    #[test]
    fn irq_and_frames_checked() {
        use crate::DomId;
        assert_eq!(IsaIrq::new(15).unwrap().get(), 15);
        assert!(IsaIrq::new(16).is_err());
        let d = DomId::new(1);
        assert_eq!(check_frames("x", d, 5, 3), Ok(3));
        assert!(check_frames("x", d, 5, 0).is_err());
        assert!(check_frames("x", d, u64::MAX, 2).is_err());
        assert_eq!(check_frames("x", d, u64::MAX, 1), Ok(1));
        assert!(check_frames("x", d, 0, 1 << 32).is_err());
    }

    #[test]
    fn enums_match_the_abi() {
        use xen_sys::dm_op as d;
        use xen_sys::hvm as h;
        assert_eq!(MemType::RamRo as u32, h::HVMMEM_ram_ro);
        assert_eq!(MemType::IoreqServer as u32, h::HVMMEM_ioreq_server);
        assert_eq!(MemType::MmioDm as u32, h::HVMMEM_mmio_dm);
        assert_eq!(
            CacheAttr::WriteCombining as u32,
            d::XEN_DMOP_MEM_CACHEATTR_WC
        );
        assert_eq!(
            CacheAttr::UncachedMinus as u32,
            d::XEN_DMOP_MEM_CACHEATTR_UCM
        );
        assert_eq!(EventType::SwException as u32, d::XEN_DMOP_EVENT_sw_exc);
        assert_eq!(EventType::Nmi as u32, d::XEN_DMOP_EVENT_nmi);
        assert_eq!(
            IoreqMemAccess::Write as u32,
            d::XEN_DMOP_IOREQ_MEM_ACCESS_WRITE
        );
    }
}
