//! A small device model for Xen HVM firmware, built on `xen-devicemodel`'s ioreq-server runtime
//! ([`xen_devicemodel::server`]): enough devices for Xen's hvmloader and SeaBIOS to run to
//! "No bootable device", with what they print coming back as text lines.
//!
//! The devices, each a [`Device`](xen_devicemodel::server::Device) with the ranges it claims:
//!
//! - [`debugcon`]: a debug console at port 0x402 (SeaBIOS's first log lines on Xen).
//! - [`serial`]: a 16550-style UART at 0x3f8, transmit only.
//! - [`pci`]: a PCI host bridge, a display controller whose option ROM sends SeaBIOS's screen
//!   output to the UART, and a test device with one memory BAR.
//! - [`mmio`]: the TPM and legacy VGA windows firmware probes, answered as empty.
//! - [`console`]: where the consoles send what the guest prints: whole lines over a channel.
//!
//! [`devices::register`] puts them all on a [`ServerBuilder`](xen_devicemodel::server::ServerBuilder):
//!
//! ```no_run
//! use std::sync::mpsc;
//! use xen_devicemodel::server::ServerBuilder;
//! use xen_devicemodel::DomId;
//! use xen_firmware_dm::devices;
//!
//! let (lines, guest_output) = mpsc::channel();
//! let (builder, _pci, _windows) = devices::register(ServerBuilder::new(DomId::new(5)), lines);
//! let mut server = builder.build()?;
//! let stop = server.stop_handle();
//! std::thread::spawn(move || {
//!     for line in guest_output {
//!         println!("{}| {}", line.source, line.text);
//!     }
//! });
//! server.run()?; // until `stop.stop()` from another thread
//! # drop(stop);
//! # Ok::<(), xen_devicemodel::Error>(())
//! ```
//!
//! Three programs run these devices; their logic is in the library so that the tests in the
//! Xen machine run exactly the programs' code:
//!
//! - `firmware_dm <domid>` ([`cli`]): serves a guest created paused (`xl create -p`); what
//!   `cargo xtask demo --firmware` runs.
//! - `libxl_dm` ([`libxl_dm`]): the same devices started by `xl` itself in place of QEMU
//!   (`device_model_override`), answering libxl's handshake.
//! - `beside_qemu <domid>`: only the debug console, as a second ioreq server next to the QEMU
//!   that libxl started.
//!
//! The crate is not published: it is the repository's worked example of a device model, and the
//! device set its tests use.

pub mod cli;
pub mod console;
pub mod debugcon;
pub mod devices;
pub mod libxl_dm;
pub mod mmio;
pub mod pci;
pub mod serial;
