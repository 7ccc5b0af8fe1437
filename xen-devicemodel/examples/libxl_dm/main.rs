//! `libxl_dm`: a device model that `xl` starts itself, in place of QEMU
//! (`device_model_override`), for an HVM guest running Xen's hvmloader and SeaBIOS. It serves
//! `firmware_dm`'s devices (a debug console at port 0x402, a 16550 UART at 0x3f8, a PCI host
//! bridge, a display controller whose option ROM prints SeaBIOS's screen to the UART) and
//! answers libxl's handshake with `xen_devicemodel::libxl`.
//!
//! ```text
//! name = "fw"
//! type = "hvm"
//! memory = 32
//! device_model_version = "qemu-xen"
//! device_model_override = "/usr/local/bin/libxl_dm"
//! vga = "none"
//! vnc = 0
//! serial = "none"
//! usb = 0
//! vkb_device = 0
//! ```
//!
//! `xl create fw.cfg`; what the firmware prints goes to libxl's device-model log,
//! `/var/log/xen/qemu-dm-fw.log`, as `guest| TEXT` lines, with the QMP commands libxl sent.
//!
//! Build: `cargo build -p xen-devicemodel --features server,libxl --example libxl_dm`.

#[path = "../firmware_dm/console.rs"]
mod console;
#[path = "../firmware_dm/debugcon.rs"]
mod debugcon;
#[path = "../firmware_dm/devices.rs"]
mod devices;
mod dm;
#[path = "../firmware_dm/mmio.rs"]
mod mmio;
#[path = "../firmware_dm/pci.rs"]
mod pci;
#[path = "../firmware_dm/serial.rs"]
mod serial;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(dm::run(std::env::args().skip(1).collect()))
}
