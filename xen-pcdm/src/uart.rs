//! A 16550A UART (the PC's COM1 at 0x3f8, ISA IRQ 4), interrupt-driven: the guest's bytes go
//! to an output (the device model's stdout), bytes from an input thread (its stdin) reach
//! the guest's receive FIFO and raise the receive interrupt.
//!
//! Facts (National Semiconductor PC16550D datasheet; the PC wiring): registers at base+0..7
//! (RBR/THR and DLL at 0, IER and DLM at 1, IIR/FCR at 2, LCR at 3 with DLAB in bit 7, MCR
//! at 4, LSR at 5, MSR at 6, SCR at 7). IIR names the highest-priority pending interrupt:
//! line status (0x06), received data (0x04), transmitter empty (0x02), modem status
//! (0x00), none (0x01); bits 6-7 set when the FIFOs are on. Reading the IIR that reports
//! "transmitter empty" clears it, as does writing THR. On the PC the interrupt reaches the
//! PIC only with MCR's OUT2 set. In loopback (MCR bit 4) the transmitter feeds the receiver
//! and the modem inputs follow the modem outputs (Linux's driver checks this to find the
//! UART).

use std::collections::VecDeque;
use std::io::Write;

use xen_devicemodel::server::{Access, Claim, Ctx, Device, Interrupts};
use xen_devicemodel::IsaIrq;

/// COM1's ports.
pub const COM1: u16 = 0x3f8;
/// COM1's ISA IRQ.
pub const COM1_IRQ: u8 = 4;
/// Bytes the receive side holds (the 16550A's FIFO is 16; input beyond it waits here, and
/// beyond this much is dropped with an overrun).
pub const RX_LIMIT: usize = 4096;

/// The UART's registers and queues, without the interrupt line's delivery.
pub struct Uart {
    base: u16,
    ier: u8,
    lcr: u8,
    mcr: u8,
    lsr_overrun: bool,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo: bool,
    thre_pending: bool,
    rx: VecDeque<u8>,
    out: Box<dyn Write + Send>,
    /// The level last given to the interrupt line.
    line: bool,
    irq: IsaIrq,
    /// Bytes the guest sent.
    pub tx_bytes: u64,
}

impl std::fmt::Debug for Uart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart")
            .field("base", &self.base)
            .field("ier", &self.ier)
            .field("lcr", &self.lcr)
            .field("rx_queued", &self.rx.len())
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl Uart {
    /// A UART at ports `base..base+8` on ISA IRQ `irq`, writing the guest's bytes to `out`.
    pub fn new(base: u16, irq: IsaIrq, out: Box<dyn Write + Send>) -> Uart {
        Uart {
            base,
            ier: 0,
            lcr: 0,
            mcr: 0,
            lsr_overrun: false,
            scr: 0,
            dll: 1,
            dlm: 0,
            fifo: false,
            thre_pending: false,
            rx: VecDeque::new(),
            out,
            line: false,
            irq,
            tx_bytes: 0,
        }
    }

    /// Its claim.
    pub fn claims(&self) -> [Claim; 1] {
        [Claim::Ports(self.base..=self.base + 7)]
    }

    fn loopback(&self) -> bool {
        self.mcr & 0x10 != 0
    }

    /// The pending interrupt's IIR code, if any.
    fn pending(&self) -> Option<u8> {
        if self.ier & 4 != 0 && self.lsr_overrun {
            Some(0x06)
        } else if self.ier & 1 != 0 && !self.rx.is_empty() {
            Some(0x04)
        } else if self.ier & 2 != 0 && self.thre_pending {
            Some(0x02)
        } else {
            None
        }
    }

    /// The level the interrupt line should have: a pending interrupt, gated by OUT2.
    fn level(&self) -> bool {
        self.pending().is_some() && self.mcr & 0x08 != 0 && !self.loopback()
    }

    /// The line's new level, if it changed (the caller drives the line).
    fn line_change(&mut self) -> Option<bool> {
        let want = self.level();
        (want != self.line).then(|| {
            self.line = want;
            want
        })
    }

    /// Bytes for the guest (from the device model's input). Returns the line's new level
    /// if it changed.
    pub fn input(&mut self, bytes: &[u8]) -> Option<bool> {
        for &b in bytes {
            if self.rx.len() >= RX_LIMIT {
                self.lsr_overrun = true;
                break;
            }
            self.rx.push_back(b);
        }
        self.line_change()
    }

    /// The ISA IRQ it raises.
    pub fn irq(&self) -> IsaIrq {
        self.irq
    }

    fn read(&mut self, off: u16) -> u8 {
        let dlab = self.lcr & 0x80 != 0;
        match off {
            0 if dlab => self.dll,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let id = self.pending().unwrap_or(0x01);
                if id == 0x02 {
                    self.thre_pending = false;
                }
                id | if self.fifo { 0xc0 } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let dr = u8::from(!self.rx.is_empty());
                let oe = if std::mem::take(&mut self.lsr_overrun) {
                    2
                } else {
                    0
                };
                // The transmitter is always empty: bytes leave at once.
                dr | oe | 0x60
            }
            6 => {
                if self.loopback() {
                    // CTS <- RTS, DSR <- DTR, RI <- OUT1, DCD <- OUT2.
                    let m = self.mcr;
                    ((m & 2) << 3) | ((m & 1) << 5) | ((m & 4) << 4) | ((m & 8) << 4)
                } else {
                    // DCD, DSR and CTS asserted: a terminal is attached.
                    0xb0
                }
            }
            7 => self.scr,
            _ => 0xff,
        }
    }

    fn write(&mut self, off: u16, v: u8) {
        let dlab = self.lcr & 0x80 != 0;
        match off {
            0 if dlab => self.dll = v,
            0 => {
                if self.loopback() {
                    if self.rx.len() < RX_LIMIT {
                        self.rx.push_back(v);
                    }
                } else {
                    let _ = self.out.write_all(&[v]);
                    if v == b'\n' {
                        let _ = self.out.flush();
                    }
                    self.tx_bytes += 1;
                }
                self.thre_pending = true;
            }
            1 if dlab => self.dlm = v,
            1 => {
                // Enabling the transmitter interrupt with THR empty raises it at once.
                if v & 2 != 0 && self.ier & 2 == 0 {
                    self.thre_pending = true;
                }
                self.ier = v & 0x0f;
            }
            2 => {
                self.fifo = v & 1 != 0;
                if v & 2 != 0 {
                    self.rx.clear();
                }
            }
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1f,
            7 => self.scr = v,
            _ => {}
        }
    }
}

impl Device for Uart {
    fn access(&mut self, ctx: &mut Ctx<'_>, access: Access) -> u64 {
        let v = match access {
            Access::PortRead { port, .. } => u64::from(self.read(port.wrapping_sub(self.base))),
            Access::PortWrite { port, value, .. } => {
                self.write(port.wrapping_sub(self.base), value as u8);
                0
            }
            _ => return u64::MAX,
        };
        if let Some(level) = self.line_change() {
            if let Err(e) = ctx.set_isa_irq_level(self.irq, level) {
                ctx.report(e);
            }
        }
        v
    }
}

/// Feeds bytes from `input` (e.g. stdin) to a shared UART, raising its interrupt through
/// `irqs`, until `input` ends or fails.
pub fn pump_input(
    uart: &std::sync::Mutex<Uart>,
    irqs: &Interrupts,
    mut input: impl std::io::Read,
) -> std::io::Result<()> {
    let mut buf = [0u8; 256];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let (change, irq) = {
            let mut u = uart.lock().unwrap_or_else(|p| p.into_inner());
            (u.input(&buf[..n]), u.irq())
        };
        if let Some(level) = change {
            let _ = irqs.set_isa_irq_level(irq, level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use xen_devicemodel::server::{Harness, HarnessEvent};
    use xen_devicemodel::DomId;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart() -> (Uart, Harness, Sink) {
        let sink = Sink::default();
        let u = Uart::new(COM1, IsaIrq::new(COM1_IRQ).unwrap(), Box::new(sink.clone()));
        let h = Harness::new(DomId::new(1), 0, 0, u.claims());
        (u, h, sink)
    }

    fn out(h: &mut Harness, u: &mut Uart, off: u16, v: u8) {
        h.access(
            u,
            Access::PortWrite {
                port: COM1 + off,
                size: 1,
                value: v.into(),
            },
        );
    }

    fn inb(h: &mut Harness, u: &mut Uart, off: u16) -> u8 {
        h.access(
            u,
            Access::PortRead {
                port: COM1 + off,
                size: 1,
            },
        ) as u8
    }

    #[test]
    fn linux_probe_sees_a_16550a() {
        let (mut u, mut h, _) = uart();
        // Scratch register, then FIFO detection, then the loopback check.
        out(&mut h, &mut u, 7, 0xa5);
        assert_eq!(inb(&mut h, &mut u, 7), 0xa5);
        out(&mut h, &mut u, 2, 0x07);
        assert_eq!(inb(&mut h, &mut u, 2) & 0xc0, 0xc0);
        out(&mut h, &mut u, 4, 0x1a);
        assert_eq!(inb(&mut h, &mut u, 6) & 0xf0, 0x90);
        out(&mut h, &mut u, 0, b'x');
        assert_eq!(inb(&mut h, &mut u, 5) & 1, 1, "loopback byte received");
        assert_eq!(inb(&mut h, &mut u, 0), b'x');
        assert!(h.events().is_empty(), "no interrupt in loopback");
    }

    #[test]
    fn transmit_and_receive_interrupts_on_irq4() {
        let (mut u, mut h, sink) = uart();
        let irq4 = IsaIrq::new(4).unwrap();
        out(&mut h, &mut u, 4, 0x0b); // DTR, RTS, OUT2
        out(&mut h, &mut u, 1, 0x02); // THRE interrupt on: raised at once
        assert_eq!(h.events(), vec![HarnessEvent::IsaIrq(irq4, true)]);
        assert_eq!(inb(&mut h, &mut u, 2) & 0x0f, 0x02);
        assert_eq!(h.events(), vec![HarnessEvent::IsaIrq(irq4, false)]);
        for b in b"hi\n" {
            out(&mut h, &mut u, 0, *b);
        }
        assert_eq!(&sink.0.lock().unwrap()[..], b"hi\n");
        assert_eq!(inb(&mut h, &mut u, 2) & 0x0f, 0x02);
        h.events();
        // Input raises the receive interrupt; reading the byte lowers it.
        out(&mut h, &mut u, 1, 0x01);
        assert_eq!(u.input(b"k"), Some(true));
        assert_eq!(inb(&mut h, &mut u, 2) & 0x0f, 0x04);
        assert_eq!(inb(&mut h, &mut u, 0), b'k');
        assert_eq!(inb(&mut h, &mut u, 2) & 0x0f, 0x01);
        assert!(h.events().contains(&HarnessEvent::IsaIrq(irq4, false)));
    }

    #[test]
    fn input_is_bounded() {
        let (mut u, mut h, _) = uart();
        u.input(&vec![b'a'; RX_LIMIT + 100]);
        assert_eq!(u.rx.len(), RX_LIMIT);
        assert_eq!(inb(&mut h, &mut u, 5) & 2, 2, "overrun reported once");
        assert_eq!(inb(&mut h, &mut u, 5) & 2, 0);
    }
}
