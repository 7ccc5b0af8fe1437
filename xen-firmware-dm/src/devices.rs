//! The whole device set, registered on a server builder: one function, so that `firmware_dm`,
//! `libxl_dm` and the tests serve the firmware with exactly the same devices.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use xen_devicemodel::server::ServerBuilder;

use crate::console::Line;
use crate::{debugcon, mmio, pci, serial};

/// Registers the debug console and the UART (their lines go to `out`), the PCI bus and the
/// empty MMIO windows; returns the builder and the two devices whose state is read after a run.
pub fn register(
    builder: ServerBuilder,
    out: Sender<Line>,
) -> (
    ServerBuilder,
    Arc<Mutex<pci::PciBus>>,
    Arc<Mutex<mmio::EmptyWindows>>,
) {
    let windows = Arc::new(Mutex::new(mmio::EmptyWindows::default()));
    let pci = Arc::new(Mutex::new(pci::PciBus::new()));
    let builder = builder
        .device(
            debugcon::DebugCon::new(out.clone()),
            debugcon::DebugCon::claims(),
        )
        .device(serial::Serial::new(out), serial::Serial::claims())
        .device(pci.clone(), pci::PciBus::claims())
        .device(windows.clone(), mmio::EmptyWindows::claims());
    (builder, pci, windows)
}
