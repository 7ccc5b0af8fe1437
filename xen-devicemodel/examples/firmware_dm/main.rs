//! `firmware_dm`: a small device model, in Rust, for an HVM guest running Xen's hvmloader and
//! SeaBIOS — a debug console (port 0x402), a 16550 UART (0x3f8), a PCI host bridge, a display
//! controller whose option ROM prints SeaBIOS's screen output to the UART, a test device
//! with a BAR, and the empty TPM/VGA windows firmware probes.
//!
//! On Xen, SeaBIOS writes only its first log lines to port 0x402: once it has found Xen it
//! moves its log to port 0xe9, which Xen itself handles (`xl dmesg`). Its screen output
//! (banner, "Booting from ...", "No bootable device") comes through the option ROM and the
//! UART.
//!
//! ```text
//! firmware_dm <domid> [--until TEXT] [--timeout SECS] [--restrict] [--verbose]
//! ```
//!
//! Run it in dom0 against a guest created paused (e.g. with `xl create -p`), then unpause the
//! guest once it prints `firmware_dm: ready`. Every line the firmware writes to the debug
//! console or the UART is printed as `guest| TEXT` (`guest/serial| TEXT` for the UART). It
//! exits 0 once TEXT has been printed (or on SIGINT/SIGTERM), 2 on timeout, 1 on error, and
//! prints one last line with the requests served:
//!
//! ```text
//! served: port=N mmio=N pci-config=N buffered=N other=N in T s (R req/s)
//! ```
//!
//! `--restrict` drops privileges after set-up (every Xen handle of the process restricted to
//! the guest) and keeps serving. `--verbose` also prints the first MMIO accesses to the empty
//! windows and the BAR the firmware assigned.
//!
//! Build: `cargo build -p xen-devicemodel --features server --example firmware_dm`.

mod cli;
mod console;
mod debugcon;
mod devices;
mod mmio;
mod pci;
mod serial;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(cli::run(std::env::args().skip(1)))
}
