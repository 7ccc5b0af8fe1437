//! `firmware_dm`'s command line, run in the Xen machine the way the demo runs it: this test
//! executable re-runs itself as the program (`firmware_dm_child` calls the library's
//! `cli::run`, which is all the `firmware_dm` binary does), so the exact command-line
//! behaviour — ready line, `guest|` lines, `--until`, `--restrict`, SIGTERM, exit status, the
//! `served:` line — is checked against hvmloader + SeaBIOS.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use xen_firmware_dm::cli;
use xen_testkit::{require_xen, Guest, GuestConfig};

macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "xen-devicemodel server_cli: {}", format!($($t)*));
    }};
}

const ARGS_ENV: &str = "FIRMWARE_DM_ARGS";

/// Runs as `firmware_dm` when the environment says so (the parent test sets it); otherwise
/// does nothing.
#[test]
fn firmware_dm_child() {
    if let Ok(a) = std::env::var(ARGS_ENV) {
        let code = cli::run(a.split('\x1f').map(str::to_string));
        std::process::exit(i32::from(code));
    }
}

struct Run {
    lines: Vec<String>,
    code: Option<i32>,
    ready_after: Duration,
    total: Duration,
}

/// Starts `firmware_dm ARGS` for a new paused hvmloader guest, unpauses the guest once the
/// ready line is out, and (if `term_after` is given) sends SIGTERM that long after unpause.
#[allow(clippy::zombie_processes)] // waited for on every path: after the loop if not in it
fn run_dm(args: &[&str], term_after: Option<Duration>) -> Run {
    let g = Guest::create(&GuestConfig::hvm_hvmloader().paused(true)).unwrap();
    let domid = g.domid().to_string();
    let mut all = vec![domid.as_str()];
    all.extend_from_slice(args);
    report!("command: firmware_dm {}", all.join(" "));
    let t0 = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "firmware_dm_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ARGS_ENV, all.join("\x1f"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut lines = Vec::new();
    let mut ready_after = Duration::ZERO;
    let mut unpaused_at = None;
    let mut code = None;
    while t0.elapsed() < Duration::from_secs(45) {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => {
                if l.contains("firmware_dm: serving")
                    && l.ends_with("ready")
                    && unpaused_at.is_none()
                {
                    ready_after = t0.elapsed();
                    g.unpause().unwrap();
                    unpaused_at = Some(Instant::now());
                }
                report!("  {l}");
                lines.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                code = child.wait().unwrap().code();
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let (Some(after), Some(u)) = (term_after, unpaused_at) {
            if u.elapsed() > after {
                // SAFETY: plain kill(2) of our child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                unpaused_at = None;
            }
        }
    }
    if code.is_none() {
        let _ = child.kill();
        code = child.wait().unwrap().code();
    }
    Run {
        lines,
        code,
        ready_after,
        total: t0.elapsed(),
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_firmware_dm_until_no_bootable_device_restricted() {
    require_xen();
    let r = run_dm(
        &[
            "--until",
            "No bootable device",
            "--timeout",
            "60",
            "--restrict",
            "--verbose",
        ],
        None,
    );
    report!(
        "ready {:?} after spawn, exit {:?} after {:?}",
        r.ready_after,
        r.code,
        r.total
    );
    assert_eq!(r.code, Some(0));
    let has = |p: &str| r.lines.iter().any(|l| l.starts_with(p));
    assert!(
        has("guest| SeaBIOS (version"),
        "banner on the debug console"
    );
    assert!(has("guest/serial| SeaBIOS (version"));
    assert!(has("guest/serial| No bootable device"));
    let served = r.lines.iter().find(|l| l.starts_with("served: ")).unwrap();
    report!("{served}");
    for kind in ["port=", "mmio=", "pci-config="] {
        let n: u64 = served
            .split(kind)
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(n > 0, "{kind} in {served}");
    }
}

#[test]
#[ignore = "needs Xen: cargo xtask xen-test"]
fn server_firmware_dm_stops_on_sigterm_and_times_out() {
    require_xen();
    let r = run_dm(&[], Some(Duration::from_secs(2)));
    report!("SIGTERM run exit {:?}", r.code);
    assert_eq!(r.code, Some(0));
    assert!(r.lines.iter().any(|l| l.starts_with("served: ")));
    let r = run_dm(&["--until", "never printed", "--timeout", "3"], None);
    report!("timeout run exit {:?}", r.code);
    assert_eq!(r.code, Some(2));
    assert!(r.lines.iter().any(|l| l.starts_with("served: ")));
}
