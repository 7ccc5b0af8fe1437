//! `beside_qemu`: our device model next to QEMU. QEMU stays the guest's device model (libxl
//! starts it, as on any Xen host); this program adds a second ioreq server that claims one
//! device, the debug console at port 0x402 (QEMU's Xen machine has none), and
//! prints what the guest writes there: SeaBIOS's first log lines.
//!
//! ```text
//! beside_qemu <domid> [--until TEXT] [--timeout SECS]
//! ```
//!
//! Create the guest paused (`xl create -p`), start this, unpause the guest once it prints
//! `ready`. Exits 0 once TEXT was printed (or on end of the loop), 2 on timeout, 1 on error.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::DomId;
use xen_firmware_dm::debugcon;

fn main() -> std::process::ExitCode {
    let mut it = std::env::args().skip(1);
    let usage = || {
        eprintln!("usage: beside_qemu <domid> [--until TEXT] [--timeout SECS]");
        std::process::ExitCode::from(1)
    };
    let Some(domid) = it.next().and_then(|d| d.parse::<u16>().ok()) else {
        return usage();
    };
    let (mut until, mut timeout) = (None, None);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--until", Some(t)) => until = Some(t),
            ("--timeout", Some(s)) => match s.parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => timeout = Some(Duration::from_secs_f64(s)),
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut server = match ServerBuilder::new(DomId::new(domid))
        .device(debugcon::DebugCon::new(tx), debugcon::DebugCon::claims())
        .build()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("beside_qemu: set-up failed: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!(
        "beside_qemu: domain {domid}, ioreq server {} claims port {:#x}: ready",
        server.ioreq_server().id(),
        debugcon::PORT
    );
    let stop = server.stop_handle();
    let worker = std::thread::spawn(move || server.run());
    let t0 = Instant::now();
    let mut code = 0;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                println!("guest| {}", l.text);
                if until.as_deref().is_some_and(|u| l.text.contains(u)) {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if timeout.is_some_and(|t| t0.elapsed() > t) {
            eprintln!("beside_qemu: timed out");
            code = 2;
            break;
        }
    }
    stop.stop();
    if let Ok(Err(e)) = worker.join() {
        eprintln!("beside_qemu: serving failed: {e}");
        code = 1;
    }
    std::process::ExitCode::from(code)
}
