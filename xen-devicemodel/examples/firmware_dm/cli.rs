//! The command line of `firmware_dm` (see `main.rs`), as a function so that tests can run it.

use crate::devices;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{BufIoreqMode, DomId};

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
/// returns the exit status.
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
