//! The smallest device model: a debug console at I/O port 0x402 that prints what the guest
//! writes there (SeaBIOS writes its first log lines to it).
//!
//! Run in dom0 against an HVM guest created paused, then unpause it:
//! `cargo run -p xen-devicemodel --features server --example debugcon -- <domid>`.
//!
//! A whole firmware device set (UART, PCI bus, option ROM) built the same way is the
//! repository's `xen-firmware-dm` crate.

use std::io::Write;

use xen_devicemodel::server::{Claim, Device, ServerBuilder};
use xen_devicemodel::DomId;

/// Each byte written to the port goes to stdout; a read answers 0xe9 ("a console is here").
#[derive(Debug)]
struct DebugCon;

impl Device for DebugCon {
    fn port_read(&mut self, _port: u16, _size: u8) -> u32 {
        0xe9
    }

    fn port_write(&mut self, _port: u16, size: u8, value: u32) {
        let bytes = value.to_le_bytes();
        let _ = std::io::stdout().write_all(&bytes[..usize::from(size.min(4))]);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let domid: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: debugcon <domid>")?
        .parse()?;
    let mut server = ServerBuilder::new(DomId::new(domid))
        .device(DebugCon, [Claim::Ports(0x402..=0x402)])
        .build()?;
    eprintln!("debugcon: serving port 0x402 of domain {domid}; unpause the guest");
    server.run()?;
    Ok(())
}
