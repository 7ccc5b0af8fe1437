//! The PC chipset's PCI functions: the i440FX host bridge (00:00.0) and the PIIX3 ISA
//! bridge (00:01.0), as a firmware and Linux expect them.
//!
//! Facts (Intel 82441FX and 82371SB datasheets; SeaBIOS's QEMU detection):
//! - host bridge 8086:1237, revision 2, class 06/00; with subsystem 1af4:1100 SeaBIOS says
//!   "Running on QEMU (i440fx)" and goes on to look for fw_cfg;
//! - ISA bridge 8086:7000, class 06/01, multi-function header; its PIRQ route registers
//!   0x60-0x63 (links A-D) hold an ISA IRQ in bits 0-3 and "disabled" in bit 7; IRQs 0-2, 8
//!   and 13 are reserved. A write becomes `set_pci_link_route`, so the interrupt a PCI
//!   function's INTx reaches through its link follows what the firmware programmed.
//!
//! - the configuration address register at port 0xcf8 reads back what was written (Linux
//!   checks this before it uses configuration mechanism #1; Xen latches the register for
//!   its own routing of 0xcfc but passes the access on to the device model).
//!
//! Other registers read as the datasheets' defaults; the writable ones (command, latency,
//! PAM and SMRAM of the host bridge, the ISA bridge's routing and control bytes) keep what
//! is written, the rest ignores writes.

use xen_devicemodel::server::{Access, Claim, Ctx, Device};
use xen_devicemodel::{IsaIrq, PciLink, Sbdf};

/// The host bridge's function.
pub const HOST_BRIDGE: (u8, u8) = (0, 0);
/// The ISA bridge's function.
pub const ISA_BRIDGE: (u8, u8) = (1, 0);

/// One function's 256 bytes and which of them take writes.
struct Function {
    cfg: [u8; 256],
    writable: [u8; 256],
}

impl Function {
    fn new(vendor: u16, device: u16, rev: u8, class: u8, subclass: u8, header: u8) -> Self {
        let mut cfg = [0u8; 256];
        cfg[0..2].copy_from_slice(&vendor.to_le_bytes());
        cfg[2..4].copy_from_slice(&device.to_le_bytes());
        cfg[0x08] = rev;
        cfg[0x0a] = subclass;
        cfg[0x0b] = class;
        cfg[0x0e] = header;
        cfg[0x2c..0x2e].copy_from_slice(&0x1af4u16.to_le_bytes());
        cfg[0x2e..0x30].copy_from_slice(&0x1100u16.to_le_bytes());
        let mut writable = [0u8; 256];
        // Command: I/O, memory, bus master.
        writable[0x04] = 0x07;
        writable[0x0d] = 0xff; // latency timer
        Function { cfg, writable }
    }

    fn read(&self, reg: u16, size: u8) -> u32 {
        let r = usize::from(reg);
        (0..usize::from(size)).fold(0u32, |v, i| {
            v | u32::from(self.cfg.get(r + i).copied().unwrap_or(0)) << (8 * i)
        })
    }

    /// Writes the bits the register takes; the others keep their value.
    fn write(&mut self, reg: u16, size: u8, value: u32) {
        let r = usize::from(reg);
        for i in 0..usize::from(size) {
            let Some(w) = self.writable.get(r + i).copied() else {
                return;
            };
            let b = (value >> (8 * i)) as u8;
            self.cfg[r + i] = (self.cfg[r + i] & !w) | (b & w);
        }
    }
}

/// The i440FX host bridge and the PIIX3 ISA bridge, one device for both functions.
pub struct Chipset {
    host: Function,
    isa: Function,
    host_sbdf: Sbdf,
    isa_sbdf: Sbdf,
    /// Link routes as last given to Xen (so unchanged writes cost no dm_op).
    routes: [Option<Option<u8>>; 4],
    /// The configuration address register (port 0xcf8).
    cf8: u32,
}

impl std::fmt::Debug for Chipset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chipset")
            .field("host", &self.host_sbdf)
            .field("isa", &self.isa_sbdf)
            .field("routes", &self.routes)
            .field("cf8", &self.cf8)
            .finish_non_exhaustive()
    }
}

/// The configuration address register's port.
pub const PORT_CF8: u16 = 0xcf8;

impl Default for Chipset {
    fn default() -> Self {
        Self::new()
    }
}

impl Chipset {
    /// Both functions at their power-on values.
    pub fn new() -> Chipset {
        let mut host = Function::new(0x8086, 0x1237, 0x02, 0x06, 0x00, 0x00);
        // PAM0-6 and SMRAM keep what the firmware writes (Xen maps the BIOS area itself).
        for r in 0x59..=0x5f {
            host.writable[r] = 0xff;
        }
        host.writable[0x72] = 0xff;
        host.cfg[0x72] = 0x02;
        let mut isa = Function::new(0x8086, 0x7000, 0x00, 0x06, 0x01, 0x80);
        // PIRQ routes: disabled at reset.
        for r in 0x60..=0x63 {
            isa.cfg[r] = 0x80;
            isa.writable[r] = 0x8f;
        }
        // ISA clock, misc status, top of memory, ... : kept as written.
        for r in [
            0x4c, 0x4e, 0x4f, 0x69, 0x6a, 0x70, 0x71, 0x76, 0x77, 0x80, 0x82,
        ] {
            isa.writable[r] = 0xff;
        }
        isa.cfg[0x4c] = 0x4d;
        isa.cfg[0x4e] = 0x03;
        isa.cfg[0x69] = 0x02;
        isa.cfg[0x70] = 0x80;
        isa.cfg[0x76] = 0x0c;
        isa.cfg[0x77] = 0x0c;
        isa.cfg[0x82] = 0x00;
        let f = |(d, f): (u8, u8)| Sbdf::new(0, 0, d, f).unwrap_or(Sbdf::from_raw(0));
        Chipset {
            host,
            isa,
            host_sbdf: f(HOST_BRIDGE),
            isa_sbdf: f(ISA_BRIDGE),
            routes: [None; 4],
            cf8: 0,
        }
    }

    /// The claims to register it with: the two functions' config spaces and the
    /// configuration address register.
    pub fn claims(&self) -> [Claim; 3] {
        [
            Claim::Pci(self.host_sbdf),
            Claim::Pci(self.isa_sbdf),
            Claim::Ports(PORT_CF8..=PORT_CF8 + 3),
        ]
    }

    /// The ISA IRQ link `link` (0-3) is routed to, `None` when disabled.
    pub fn route(&self, link: usize) -> Option<u8> {
        self.isa.cfg.get(0x60 + link).and_then(|&v| decode_route(v))
    }

    /// Tells Xen about route registers that changed.
    fn sync_routes(&mut self, ctx: &mut Ctx<'_>) {
        for (i, link) in [PciLink::A, PciLink::B, PciLink::C, PciLink::D]
            .into_iter()
            .enumerate()
        {
            let want = self.route(i);
            if self.routes[i] == Some(want) {
                continue;
            }
            let irq = want.and_then(|n| IsaIrq::new(n).ok());
            match ctx.set_pci_link_route(link, irq) {
                Ok(()) => self.routes[i] = Some(want),
                Err(e) => ctx.report(e),
            }
        }
    }
}

/// A route register's ISA IRQ: bit 7 clear and an IRQ the PIIX3 can route to.
fn decode_route(v: u8) -> Option<u8> {
    let irq = v & 0x0f;
    (v & 0x80 == 0 && !matches!(irq, 0 | 1 | 2 | 8 | 13)).then_some(irq)
}

impl Device for Chipset {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        match access {
            Access::PciRead { dev, reg, size } if dev == self.host_sbdf => {
                self.host.read(reg, size).into()
            }
            Access::PciRead { dev, reg, size } if dev == self.isa_sbdf => {
                self.isa.read(reg, size).into()
            }
            Access::PciWrite {
                dev,
                reg,
                size,
                value,
            } if dev == self.host_sbdf => {
                self.host.write(reg, size, value);
                0
            }
            Access::PciWrite {
                dev,
                reg,
                size,
                value,
            } if dev == self.isa_sbdf => {
                self.isa.write(reg, size, value);
                if reg < 0x64 && u32::from(reg) + u32::from(size) > 0x60 {
                    self.sync_routes(ctx);
                }
                0
            }
            // Configuration mechanism #1's address: whole 32-bit accesses only.
            Access::PortWrite {
                port: PORT_CF8,
                size: 4,
                value,
            } => {
                self.cf8 = value;
                0
            }
            Access::PortRead {
                port: PORT_CF8,
                size: 4,
            } => self.cf8.into(),
            Access::PciRead { .. } => u32::MAX.into(),
            _ => u64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_devicemodel::server::{Harness, HarnessEvent};
    use xen_devicemodel::DomId;

    fn read(h: &mut Harness, c: &mut Chipset, dev: Sbdf, reg: u16, size: u8) -> u32 {
        h.access(c, Access::PciRead { dev, reg, size }) as u32
    }

    #[test]
    fn ids_say_qemu_i440fx_and_piix3() {
        let mut c = Chipset::new();
        let mut h = Harness::new(DomId::new(1), 0, 0, c.claims());
        let (host, isa) = (c.host_sbdf, c.isa_sbdf);
        assert_eq!(read(&mut h, &mut c, host, 0, 4), 0x1237_8086);
        assert_eq!(read(&mut h, &mut c, host, 0x2c, 4), 0x1100_1af4);
        assert_eq!(read(&mut h, &mut c, host, 0x0a, 2), 0x0600);
        assert_eq!(read(&mut h, &mut c, isa, 0, 4), 0x7000_8086);
        assert_eq!(read(&mut h, &mut c, isa, 0x0a, 2), 0x0601);
        assert_eq!(read(&mut h, &mut c, isa, 0x0e, 1), 0x80, "multi-function");
        assert_eq!(read(&mut h, &mut c, isa, 0x60, 4), 0x8080_8080);
        // Read-only registers ignore writes.
        h.access(
            &mut c,
            Access::PciWrite {
                dev: host,
                reg: 0,
                size: 4,
                value: 0,
            },
        );
        assert_eq!(read(&mut h, &mut c, host, 0, 4), 0x1237_8086);
        assert!(h.events().is_empty());
    }

    #[test]
    fn pirq_route_writes_become_link_routes() {
        let mut c = Chipset::new();
        let mut h = Harness::new(DomId::new(1), 0, 0, c.claims());
        let isa = c.isa_sbdf;
        let w = |h: &mut Harness, c: &mut Chipset, reg: u16, size: u8, value: u32| {
            h.access(
                c,
                Access::PciWrite {
                    dev: isa,
                    reg,
                    size,
                    value,
                },
            );
        };
        // What hvmloader does: links A-D to IRQs 5, 10, 11, 5 in one dword.
        w(&mut h, &mut c, 0x60, 4, 0x050b_0a05);
        let irq = |n| Some(IsaIrq::new(n).unwrap());
        assert_eq!(
            h.events(),
            vec![
                HarnessEvent::LinkRoute(PciLink::A, irq(5)),
                HarnessEvent::LinkRoute(PciLink::B, irq(10)),
                HarnessEvent::LinkRoute(PciLink::C, irq(11)),
                HarnessEvent::LinkRoute(PciLink::D, irq(5)),
            ]
        );
        // The same value again costs nothing; disabling and a reserved IRQ unroute.
        w(&mut h, &mut c, 0x60, 1, 0x05);
        assert!(h.events().is_empty());
        w(&mut h, &mut c, 0x61, 1, 0x8a);
        w(&mut h, &mut c, 0x62, 1, 0x02);
        assert_eq!(
            h.events(),
            vec![
                HarnessEvent::LinkRoute(PciLink::B, None),
                HarnessEvent::LinkRoute(PciLink::C, None),
            ]
        );
        assert_eq!(c.route(0), Some(5));
        assert_eq!(c.route(1), None);
        // The configuration address register reads back (whole dwords only).
        let cf8 = |h: &mut Harness, c: &mut Chipset, size: u8| {
            h.access(
                c,
                Access::PortRead {
                    port: PORT_CF8,
                    size,
                },
            )
        };
        h.access(
            &mut c,
            Access::PortWrite {
                port: PORT_CF8,
                size: 4,
                value: 0x8000_0000,
            },
        );
        assert_eq!(cf8(&mut h, &mut c, 4), 0x8000_0000);
        assert_eq!(cf8(&mut h, &mut c, 1), u64::MAX);
        // Other registers of the ISA bridge do not touch the routes.
        w(&mut h, &mut c, 0x4c, 1, 0x4d);
        assert!(h.events().is_empty());
        assert_eq!(h.error_count(), 0);
    }
}
