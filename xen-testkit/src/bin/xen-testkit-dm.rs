//! `xen-testkit-dm`: a device model that emulates nothing, so HVM guests run without QEMU in dom0.
//!
//! libxl starts it (xl's `device_model_override`) with QEMU's command line; it answers libxl's
//! handshake with `xen_devicemodel::libxl` (QMP on the sockets libxl names, and
//! `/local/domain/0/device-model/<domid>/state = running`), and logs its arguments and every QMP
//! command to stderr (libxl's `qemu-dm-<name>.log`) and to
//! `/var/log/xen/xen-testkit-dm-<domid>.log`. It exits on `quit`, or when libxl kills it.
//!
//! I/O nobody claims reads as all-ones and writes vanish (Xen's default).

use std::io::Write;
use std::sync::Mutex;

use xen_devicemodel::libxl::{DmArgs, Handshake, QmpEvent};

struct Log(Mutex<Option<std::fs::File>>);

impl Log {
    fn say(&self, msg: &str) {
        eprintln!("xen-testkit-dm: {msg}");
        if let Ok(mut g) = self.0.lock() {
            if let Some(f) = g.as_mut() {
                let _ = writeln!(f, "{msg}");
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match DmArgs::parse(argv.clone()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xen-testkit-dm: {e}: {}", argv.join(" "));
            return std::process::ExitCode::from(2);
        }
    };
    let file = std::fs::create_dir_all("/var/log/xen").ok().and_then(|()| {
        std::fs::File::create(format!("/var/log/xen/xen-testkit-dm-{}.log", args.domid)).ok()
    });
    let log = Log(Mutex::new(file));
    log.say(&format!(
        "started for domain {}: {}",
        args.domid,
        argv.join(" ")
    ));
    let hs = match Handshake::start(&args) {
        Ok(h) => h,
        Err(e) => {
            log.say(&format!("{e}"));
            return std::process::ExitCode::from(1);
        }
    };
    for s in &args.qmp {
        log.say(&format!("{}: listening ({:?})", s.id, s.addr));
    }
    match hs.ready() {
        Ok(()) => log.say(&format!("wrote {} = running", args.state_path())),
        Err(e) => log.say(&format!("{e}")),
    }
    if args.qmp.is_empty() {
        // Nothing to serve: stay alive like a device model would, until libxl kills us.
        loop {
            std::thread::park();
        }
    }
    while let Some(ev) = hs.next_event() {
        log.say(&format!("qmp: {ev:?}"));
        if ev == QmpEvent::Quit {
            log.say("quit");
            return std::process::ExitCode::SUCCESS;
        }
    }
    std::process::ExitCode::SUCCESS
}
