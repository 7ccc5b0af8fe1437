//! The `firmware_dm` program: the devices of [`devices`] serving an HVM guest
//! running Xen's hvmloader and SeaBIOS.
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
//! The program is [`run`]; a function, so that a test executable can be the program too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{BufIoreqMode, DomId};

use crate::devices;

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

struct Args {
    domid: u16,
    until: Option<String>,
    timeout: Option<Duration>,
    restrict: bool,
    verbose: bool,
}

fn usage() -> u8 {
    eprintln!(
        "usage: firmware_dm <domid> [--until TEXT] [--timeout SECS] [--restrict] [--verbose]"
    );
    1
}

fn parse(mut it: impl Iterator<Item = String>) -> Option<Args> {
    let mut a = Args {
        domid: it.next()?.parse().ok()?,
        until: None,
        timeout: None,
        restrict: false,
        verbose: false,
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--until" => a.until = Some(it.next()?),
            "--timeout" => a.timeout = Some(Duration::from_secs_f64(it.next()?.parse().ok()?)),
            "--restrict" => a.restrict = true,
            "--verbose" => a.verbose = true,
            _ => return None,
        }
    }
    Some(a)
}

/// Runs the device model with the command-line arguments `args` (without the program name);
/// returns the exit status. Installs SIGINT and SIGTERM handlers that end the run.
pub fn run(args: impl Iterator<Item = String>) -> u8 {
    let Some(args) = parse(args) else {
        return usage();
    };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }

    let (tx, rx) = mpsc::channel();
    let (builder, pci, windows) = devices::register(
        ServerBuilder::new(DomId::new(args.domid)).buffered(BufIoreqMode::Atomic),
        tx,
    );
    let built = builder.restrict(args.restrict).build();
    let mut server = match built {
        Ok(s) => s,
        Err(e) => {
            eprintln!("firmware_dm: set-up failed: {e}");
            return 1;
        }
    };
    println!(
        "firmware_dm: serving domain {} (ioreq server {}, {} vCPUs{}): ready",
        args.domid,
        server.ioreq_server().id(),
        server.vcpus(),
        if args.restrict { ", restricted" } else { "" }
    );
    let stop = server.stop_handle();
    let t0 = Instant::now();
    let worker = std::thread::spawn(move || {
        let r = server.run();
        if let Some(refusal) = server.last_refusal() {
            eprintln!("firmware_dm: last request refused: {refusal}");
        }
        (r, server.stats())
    });

    let mut code = 0u8;
    let mut seen = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let tag = if line.source == "serial" {
                    "guest/serial"
                } else {
                    "guest"
                };
                println!("{tag}| {}", line.text);
                if let Some(t) = &args.until {
                    if line.text.contains(t.as_str()) {
                        seen = true;
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The devices are gone: the loop ended (an error; reported below).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if SIGNALLED.load(Ordering::SeqCst) {
            eprintln!("firmware_dm: signalled, stopping");
            break;
        }
        if args.timeout.is_some_and(|t| t0.elapsed() > t) {
            eprintln!("firmware_dm: timed out after {:?}", t0.elapsed());
            code = 2;
            break;
        }
    }
    stop.stop();
    let (result, stats) = worker.join().unwrap_or((Ok(()), Default::default()));
    let secs = t0.elapsed().as_secs_f64();
    if let Err(e) = result {
        eprintln!("firmware_dm: serving failed: {e}");
        code = 1;
    }
    if args.until.is_some() && !seen && code == 0 && !SIGNALLED.load(Ordering::SeqCst) {
        code = 1;
    }
    if args.verbose {
        let w = windows.lock().unwrap_or_else(|p| p.into_inner());
        for a in &w.first {
            eprintln!(
                "firmware_dm: mmio {} {:#x} size {}",
                a.write
                    .map_or("read".into(), |v| format!("write {v:#x} to")),
                a.addr,
                a.size
            );
        }
        let p = pci.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "firmware_dm: pci config accesses {}, test device BAR0 {:x?}, option ROM at {:x?} read {} times",
            p.config_accesses,
            p.bar0(),
            p.rom(),
            p.rom_reads
        );
    }
    println!(
        "served: {stats} in {secs:.2} s ({:.0} req/s)",
        stats.total() as f64 / secs.max(1e-9)
    );
    if args.verbose {
        eprintln!(
            "firmware_dm: {} wake-ups, {} notifies, loop's own time {:.1} us per request",
            stats.wakeups,
            stats.notifies,
            stats.busy_ns as f64 / stats.total().max(1) as f64 / 1e3
        );
    }
    code
}
