//! The `libxl_dm` program: a device model that `xl` starts itself, in place of QEMU
//! (`device_model_override`), for an HVM guest running Xen's hvmloader and SeaBIOS. It serves
//! the devices of [`devices`] and answers libxl's handshake with
//! [`xen_devicemodel::libxl`].
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
//! The program is [`run`]; a function, so that a test executable can be the program too.

use std::sync::mpsc;
use std::time::Duration;

use xen_devicemodel::libxl::{DmArgs, Handshake, QmpEvent};
use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{BufIoreqMode, DomId};

use crate::devices;

/// Serves the guest libxl named in `argv` (QEMU's command line, without the program name)
/// until libxl sends `quit` (or kills us) or the loop ends; returns the exit status.
pub fn run(argv: Vec<String>) -> u8 {
    let args = match DmArgs::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("libxl_dm: {e}");
            return 2;
        }
    };
    println!("libxl_dm: domain {}: {}", args.domid, args.args.join(" "));
    // QMP first: libxl may connect as soon as it sees the state key, and only then.
    let hs = match Handshake::start(&args) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("libxl_dm: {e}");
            return 1;
        }
    };
    let (tx, rx) = mpsc::channel();
    let (builder, _pci, _windows) = devices::register(
        ServerBuilder::new(DomId::new(args.domid)).buffered(BufIoreqMode::Atomic),
        tx,
    );
    let mut server = match builder.build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("libxl_dm: set-up failed: {e}");
            return 1;
        }
    };
    let stop = server.stop_handle();
    let worker = std::thread::spawn(move || server.run());
    // Devices are in place: let libxl go on (it unpauses the guest after this).
    if let Err(e) = hs.ready() {
        eprintln!("libxl_dm: {e}");
        stop.stop();
        let _ = worker.join();
        return 1;
    }
    println!("libxl_dm: ready ({})", args.state_path());
    let mut code = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => println!("guest| {}", line.text),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(ev) = hs.next_event_timeout(Duration::ZERO) {
            println!("libxl_dm: qmp {ev:?}");
            if ev == QmpEvent::Quit {
                break;
            }
        }
        if worker.is_finished() {
            break;
        }
    }
    stop.stop();
    match worker.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("libxl_dm: serving failed: {e}");
            code = 1;
        }
        Err(_) => code = 1,
    }
    code
}
