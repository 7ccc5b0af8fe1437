//! Port numbers and VIRQ numbers.

use core::fmt;

use xen_hypercall::Error;
use xen_sys::event_channel::EVTCHN_FIFO_NR_CHANNELS;

/// An event-channel port number of this domain (`evtchn_port_t`).
///
/// A plain number, as in the C API: it says nothing about who has it bound. Ports bound through
/// an [`EventChannels`](crate::EventChannels) handle come back as owned
/// [`BoundPort`](crate::BoundPort)s, whose [`port`](crate::BoundPort::port) is a `Port`; the
/// operations that take a port accept a `Port` or a `u32` (`impl Into<Port>`).
///
/// `#[repr(transparent)]` over `u32`, so a `[Port]` buffer is exactly what the kernel reads
/// into and writes from.
///
/// ```
/// use xen_evtchn::Port;
///
/// let p = Port::new(7);
/// assert_eq!(p.get(), 7);
/// assert_eq!(Port::from(7u32), p);
/// assert_eq!(u32::from(p), 7);
/// assert_eq!(p.to_string(), "7");
/// assert!(p.is_valid());
/// assert!(!Port::new(0).is_valid()); // port 0 is reserved by Xen
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Port(u32);

// SAFETY: a transparent `u32`: no padding, every bit pattern a value (an invalid port is
// still a `Port`, refused where it is used). The kernel reads and writes ports as `u32`s.
#[allow(unsafe_code)]
unsafe impl xen_hypercall::Plain for Port {}

impl Port {
    /// The most ports any Xen event-channel ABI has (the FIFO ABI's 2^17); every valid port
    /// number is below it.
    ///
    /// ```
    /// assert_eq!(xen_evtchn::Port::LIMIT, 131072);
    /// ```
    pub const LIMIT: u32 = EVTCHN_FIFO_NR_CHANNELS;

    /// The port numbered `raw`.
    ///
    /// ```
    /// assert_eq!(xen_evtchn::Port::new(3).get(), 3);
    /// ```
    pub const fn new(raw: u32) -> Port {
        Port(raw)
    }

    /// The port's number.
    ///
    /// ```
    /// assert_eq!(xen_evtchn::Port::new(3).get(), 3);
    /// ```
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// `true` when the number could name a port: not 0 (reserved by Xen) and below
    /// [`Port::LIMIT`]. Operations refuse other numbers before any syscall.
    ///
    /// ```
    /// use xen_evtchn::Port;
    /// assert!(Port::new(1).is_valid());
    /// assert!(!Port::new(0).is_valid());
    /// assert!(!Port::new(Port::LIMIT).is_valid());
    /// ```
    #[inline]
    pub const fn is_valid(self) -> bool {
        self.0 != 0 && self.0 < Self::LIMIT
    }

    /// `Ok(self)` if [valid](Port::is_valid), else [`Error::InvalidArgument`] naming `op`.
    pub(crate) fn require_valid(self, op: &'static str) -> Result<Port, Error> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(Error::InvalidArgument {
                op,
                domain: None,
                reason: "not an event-channel port number (0 is reserved; ports are below 2^17)",
            })
        }
    }
}

impl From<u32> for Port {
    fn from(raw: u32) -> Port {
        Port(raw)
    }
}

impl From<Port> for u32 {
    fn from(port: Port) -> u32 {
        port.0
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Port({})", self.0)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A virtual IRQ number (`VIRQ_*` of `xen/xen.h`), checked: only the numbers Xen 4.17 defines.
///
/// Build one from a constant ([`Virq::DOM_EXC`], ...) or check a number with [`Virq::new`] /
/// `TryFrom<u32>`; [`EventChannels::bind_virq`](crate::EventChannels::bind_virq) takes only
/// this type, so a bad number is refused before any syscall.
///
/// ```
/// use xen_evtchn::Virq;
///
/// assert_eq!(Virq::DOM_EXC.get(), 3);
/// assert_eq!(Virq::new(3)?, Virq::DOM_EXC);
/// assert!(Virq::new(5).is_err()); // unassigned in Xen 4.17
/// assert!(Virq::try_from(24).is_err()); // NR_VIRQS
/// assert!(Virq::DOM_EXC.is_global());
/// assert!(!Virq::TIMER.is_global());
/// assert_eq!(format!("{:?}", Virq::CON_RING), "VIRQ_CON_RING");
/// # Ok::<(), xen_hypercall::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Virq(u32);

macro_rules! virqs {
    ($( $(#[$doc:meta])* $name:ident = $c:ident, $global:expr; )*) => {
        impl Virq {
            $(
                $(#[$doc])*
                ///
                #[doc = concat!(
                    "```\nassert_eq!(xen_evtchn::Virq::", stringify!($name), ".name(), \"",
                    stringify!($c), "\");\n```"
                )]
                pub const $name: Virq = Virq(xen_sys::xen::$c);
            )*

            /// The C name (`"VIRQ_DOM_EXC"`), for messages.
            ///
            /// ```
            /// assert_eq!(xen_evtchn::Virq::DOM_EXC.name(), "VIRQ_DOM_EXC");
            /// ```
            pub const fn name(self) -> &'static str {
                match self.0 {
                    $( xen_sys::xen::$c => stringify!($c), )*
                    _ => "VIRQ_?",
                }
            }

            /// `true` for global VIRQs (one binding per domain, delivered to vCPU 0), `false`
            /// for per-vCPU ones (`TIMER`, `DEBUG`, `XENOPROF`, `XENPMU`). The kernel binds
            /// through this device on vCPU 0.
            ///
            /// ```
            /// assert!(xen_evtchn::Virq::CON_RING.is_global());
            /// ```
            pub const fn is_global(self) -> bool {
                match self.0 {
                    $( xen_sys::xen::$c => $global, )*
                    _ => false,
                }
            }

            const fn is_defined(raw: u32) -> bool {
                matches!(raw, $( xen_sys::xen::$c )|*)
            }
        }
    };
}

virqs! {
    /// `VIRQ_TIMER` (per vCPU): the system timer tick. Linux binds it for itself.
    TIMER = VIRQ_TIMER, false;
    /// `VIRQ_DEBUG` (per vCPU): request guest to dump debug info.
    DEBUG = VIRQ_DEBUG, false;
    /// `VIRQ_CONSOLE`: (dom0) bytes received on the emergency console. Linux's hvc driver
    /// binds it in dom0.
    CONSOLE = VIRQ_CONSOLE, true;
    /// `VIRQ_DOM_EXC`: (dom0) a domain died or changed state. xenstored binds it in dom0.
    DOM_EXC = VIRQ_DOM_EXC, true;
    /// `VIRQ_TBUF`: trace buffer has records.
    TBUF = VIRQ_TBUF, true;
    /// `VIRQ_DEBUGGER`: (dom0) a domain has paused for the debugger.
    DEBUGGER = VIRQ_DEBUGGER, true;
    /// `VIRQ_XENOPROF` (per vCPU): oprofile samples.
    XENOPROF = VIRQ_XENOPROF, false;
    /// `VIRQ_CON_RING`: (dom0) Xen's console ring has new text.
    CON_RING = VIRQ_CON_RING, true;
    /// `VIRQ_PCPU_STATE`: (dom0) a physical CPU went on- or offline.
    PCPU_STATE = VIRQ_PCPU_STATE, true;
    /// `VIRQ_MEM_EVENT`: (dom0) a memory event is waiting.
    MEM_EVENT = VIRQ_MEM_EVENT, true;
    /// `VIRQ_ARGO`: Argo interdomain message.
    ARGO = VIRQ_ARGO, true;
    /// `VIRQ_ENOMEM`: (dom0) Xen is low on heap memory.
    ENOMEM = VIRQ_ENOMEM, true;
    /// `VIRQ_XENPMU` (per vCPU): PMC interrupt.
    XENPMU = VIRQ_XENPMU, false;
    /// `VIRQ_ARCH_0`: architecture-specific (x86: `VIRQ_MCA`, machine check).
    ARCH_0 = VIRQ_ARCH_0, true;
    /// `VIRQ_ARCH_1`: architecture-specific.
    ARCH_1 = VIRQ_ARCH_1, true;
    /// `VIRQ_ARCH_2`: architecture-specific.
    ARCH_2 = VIRQ_ARCH_2, true;
    /// `VIRQ_ARCH_3`: architecture-specific.
    ARCH_3 = VIRQ_ARCH_3, true;
    /// `VIRQ_ARCH_4`: architecture-specific.
    ARCH_4 = VIRQ_ARCH_4, true;
    /// `VIRQ_ARCH_5`: architecture-specific.
    ARCH_5 = VIRQ_ARCH_5, true;
    /// `VIRQ_ARCH_6`: architecture-specific.
    ARCH_6 = VIRQ_ARCH_6, true;
    /// `VIRQ_ARCH_7`: architecture-specific.
    ARCH_7 = VIRQ_ARCH_7, true;
}

impl Virq {
    /// Checks `raw`: `Ok` for the numbers Xen 4.17 defines, [`Error::InvalidArgument`]
    /// otherwise (5, 14, 15 are unassigned; `NR_VIRQS` is 24).
    ///
    /// ```
    /// use xen_evtchn::Virq;
    /// assert_eq!(Virq::new(8)?, Virq::CON_RING);
    /// assert!(Virq::new(99).unwrap_err().is_invalid_argument());
    /// # Ok::<(), xen_hypercall::Error>(())
    /// ```
    pub const fn new(raw: u32) -> Result<Virq, Error> {
        if raw < xen_sys::xen::NR_VIRQS && Self::is_defined(raw) {
            Ok(Virq(raw))
        } else {
            Err(Error::InvalidArgument {
                op: "evtchn bind_virq",
                domain: None,
                reason: "not a VIRQ number Xen 4.17 defines",
            })
        }
    }

    /// The number.
    ///
    /// ```
    /// assert_eq!(xen_evtchn::Virq::CON_RING.get(), 8);
    /// ```
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Virq {
    type Error = Error;
    fn try_from(raw: u32) -> Result<Virq, Error> {
        Virq::new(raw)
    }
}

impl From<Virq> for u32 {
    fn from(v: Virq) -> u32 {
        v.0
    }
}

impl fmt::Debug for Virq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Virq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virq_numbers() {
        let ok: Vec<u32> = (0..64).filter(|&n| Virq::new(n).is_ok()).collect();
        assert_eq!(
            ok,
            vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23]
        );
        for n in ok {
            let v = Virq::new(n).unwrap();
            assert_eq!(v.get(), n);
            assert!(v.name().starts_with("VIRQ_") && v.name() != "VIRQ_?");
        }
        assert!(Virq::new(u32::MAX).is_err());
    }

    #[test]
    fn ports() {
        assert!(Port::new(0).require_valid("x").is_err());
        assert!(Port::new(Port::LIMIT).require_valid("x").is_err());
        assert_eq!(Port::new(5).require_valid("x"), Ok(Port::new(5)));
        assert_eq!(format!("{:?}", Port::new(5)), "Port(5)");
    }
}
