//! The ACPI PM1a control register, the part of the PIIX4-style power management block a
//! Xen HVM guest reaches through its device model: how the guest powers itself off.
//!
//! Facts (ACPI specification, "PM1 Control Registers"; Xen's hvmloader tables): the FADT
//! hvmloader builds puts PM1a_CNT at port 0xb004 (16 bits); Xen itself emulates the PM1a
//! status/enable registers (0xb000) and the PM timer (0xb008), not this one. Bit 0 is
//! SCI_EN (ACPI mode, always on here), bits 10-12 SLP_TYP, bit 13 SLP_EN (write-only).
//! hvmloader's DSDT gives S5 (soft off) the SLP_TYP 0, S3 the SLP_TYP 1. A write with
//! SLP_EN and SLP_TYP 0 powers the guest off: the device asks Xen to shut the domain down
//! (`XEN_DMOP_remote_shutdown`, reason poweroff) and, when given a stop handle, ends the
//! server's loop. Other sleep types are refused (logged,
//! counted): the guest goes on running.

use xen_devicemodel::server::{Access, Claim, Ctx, Device, StopHandle};
use xen_devicemodel::Result;

/// PM1a_CNT's port in hvmloader's FADT.
pub const PM1A_CNT: u16 = 0xb004;
const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;
/// SLP_TYP of S5 in hvmloader's DSDT.
pub const SLP_TYP_S5: u8 = 0;

/// What the device does when the guest asks for soft off.
pub type PowerOff = Box<dyn FnMut() -> Result<()> + Send>;

/// PM1a_CNT: keeps SLP_TYP, reads SCI_EN as set, and powers off on an S5 request.
pub struct AcpiPm {
    cnt: u16,
    power_off: PowerOff,
    requested: bool,
    refused: u32,
    stop: Option<StopHandle>,
}

impl std::fmt::Debug for AcpiPm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpiPm")
            .field("cnt", &self.cnt)
            .field("requested", &self.requested)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl AcpiPm {
    /// The register at power-on; `power_off` runs when the guest enters S5.
    pub fn new(power_off: PowerOff) -> AcpiPm {
        AcpiPm {
            cnt: SCI_EN,
            power_off,
            requested: false,
            refused: 0,
            stop: None,
        }
    }

    /// The claims to register it with.
    pub fn claims(&self) -> [Claim; 1] {
        [Claim::Ports(PM1A_CNT..=PM1A_CNT + 1)]
    }

    /// Stops the server's loop (through `stop`) once the guest has powered off, so that
    /// the device model ends with it.
    pub fn stop_on_power_off(&mut self, stop: StopHandle) {
        self.stop = Some(stop);
    }

    /// Whether the guest asked for soft off.
    pub fn power_off_requested(&self) -> bool {
        self.requested
    }

    /// Sleep requests other than S5, refused.
    pub fn refused(&self) -> u32 {
        self.refused
    }

    fn write(&mut self, ctx: &mut Ctx<'_>, v: u16) {
        self.cnt = (v & !SLP_EN) | SCI_EN;
        if v & SLP_EN == 0 {
            return;
        }
        let typ = ((v >> 10) & 7) as u8;
        if typ != SLP_TYP_S5 {
            self.refused += 1;
            return;
        }
        self.requested = true;
        if let Err(e) = (self.power_off)() {
            ctx.report(e);
        }
        if let Some(stop) = &self.stop {
            stop.stop();
        }
    }
}

impl Device for AcpiPm {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        match access {
            Access::PortRead { port, size } => {
                let v = u64::from(self.cnt);
                match (port.wrapping_sub(PM1A_CNT), size) {
                    (0, 2) => v,
                    (0, 1) => v & 0xff,
                    (1, 1) => v >> 8,
                    _ => u64::MAX,
                }
            }
            Access::PortWrite { port, size, value } => {
                let v = match (port.wrapping_sub(PM1A_CNT), size) {
                    (0, 2) => value as u16,
                    (0, 1) => (self.cnt & 0xff00) | (value as u16 & 0xff),
                    (1, 1) => (self.cnt & 0x00ff) | ((value as u16 & 0xff) << 8),
                    _ => return 0,
                };
                self.write(ctx, v);
                0
            }
            _ => u64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use xen_devicemodel::server::Harness;
    use xen_devicemodel::DomId;

    #[test]
    fn s5_powers_off_and_other_sleep_types_are_refused() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let mut pm = AcpiPm::new(Box::new(move || {
            c.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }));
        let mut h = Harness::new(DomId::new(1), 0, 0, pm.claims());
        let rd = |h: &mut Harness, pm: &mut AcpiPm| {
            h.access(
                pm,
                Access::PortRead {
                    port: PM1A_CNT,
                    size: 2,
                },
            )
        };
        let wr = |h: &mut Harness, pm: &mut AcpiPm, value: u32| {
            h.access(
                pm,
                Access::PortWrite {
                    port: PM1A_CNT,
                    size: 2,
                    value,
                },
            );
        };
        assert_eq!(rd(&mut h, &mut pm), 1, "SCI_EN: ACPI mode");
        // S3 (SLP_TYP 1) is refused; SLP_TYP alone does nothing.
        wr(&mut h, &mut pm, (1 << 10) | u32::from(SLP_EN));
        assert_eq!((pm.refused(), calls.load(Ordering::Relaxed)), (1, 0));
        wr(&mut h, &mut pm, 1);
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        assert!(!pm.power_off_requested());
        // S5: SLP_TYP 0 with SLP_EN; SLP_EN reads back as 0.
        wr(&mut h, &mut pm, 1 | u32::from(SLP_EN));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert!(pm.power_off_requested());
        assert_eq!(rd(&mut h, &mut pm), 1);
        assert_eq!(h.error_count(), 0);
    }
}
