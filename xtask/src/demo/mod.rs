//! `cargo xtask demo [--firmware] [-v] [--timeout SECS]`: boots the Xen machine of
//! `cargo xtask xen-test` (Xen 4.17 and a Debian dom0 under QEMU) and creates an HVM guest
//! there that runs Xen's hvmloader and Debian's SeaBIOS, every emulated device served by a
//! Rust device model of ours.
//!
//! By default ([`linux`]) the device model is xen-pcdm's binary and the guest boots dom0's
//! own Linux kernel to a busybox shell on its serial port: interactive when stdin is a
//! terminal, a few commands typed by the script otherwise; the guest's `poweroff` ends it.
//! With `--firmware`, `firmware_dm` (of the xen-firmware-dm crate) serves the firmware alone,
//! through to "No bootable device".
//!
//! - [`linux`]: the Linux demo's dom0 script, its console filter and its results;
//! - [`script`]: the firmware demo's dom0 `/init` and script (guest config, device model,
//!   unpause);
//! - [`output`]: the firmware demo's console read back: what quiet mode shows, and what
//!   happened.
//!
//! Everything else (packages, the system's files, the cached initramfs base, the machine and its
//! console) is `xen_test`'s. The whole console goes to `target/xen-test/demo-console.log`.

mod linux;
mod output;
mod script;

use std::fs;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::payloads::{self, Payload};
use crate::util;
use crate::xen_test::initramfs::{Entry, Tree};
use crate::xen_test::{initramfs, machine, mib, system, Host, RunLock, PAYLOAD_DIR};

/// Default deadline for the firmware demo's machine run (QEMU start to exit).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);
/// Default deadline for the scripted Linux demo's machine run (none when interactive).
const LINUX_TIMEOUT: Duration = Duration::from_secs(900);

const USAGE: &str = "usage: cargo xtask demo [--firmware] [-v] [--timeout SECS]\n\
\n\
Boots Xen 4.17 + a Debian dom0 under QEMU and runs an HVM guest (Xen's hvmloader + SeaBIOS)\n\
there whose every emulated device is served by our Rust device model, xen-pcdm: the guest boots\n\
dom0's Linux kernel to a busybox shell on its serial port (interactive on a terminal: `poweroff`\n\
ends it; otherwise a few commands are typed for you).\n\
\x20 --firmware       the firmware alone instead, served by firmware_dm (xen-firmware-dm),\n\
\x20                  through to \"No bootable device\"\n\
\x20 -v, --verbose    show Xen's and dom0's whole console as it comes\n\
\x20 --timeout SECS   deadline for the machine run (default 900 for Linux, 180 with\n\
\x20                  --firmware; none for an interactive shell)\n";

/// Command-line options of `cargo xtask demo`.
#[derive(Debug, Default, PartialEq)]
struct Options {
    firmware: bool,
    verbose: bool,
    timeout: Option<Duration>,
}

/// Parses the arguments after `demo`. `Ok(None)` means help was asked for.
fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "-v" | "--verbose" => o.verbose = true,
            "--firmware" => o.firmware = true,
            "--timeout" => o.timeout = Some(util::timeout_arg(it.next(), USAGE)?),
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    Ok(Some(o))
}

/// Whether this host itself runs Xen with a toolstack (dom0): then firmware_dm runs here as it is.
fn on_xen_host() -> bool {
    Path::new("/dev/xen/privcmd").exists()
        && std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("xl").is_file()))
}

/// On a Xen host: writes the guest's config for this host and says how to run firmware_dm here.
fn host_hint(work: &Path, dm: &Payload, fake: &Payload) -> Result<(), String> {
    let cfg = work.join("demo-guest.cfg");
    fs::write(&cfg, script::xl_config(&fake.host.to_string_lossy()))
        .map_err(|e| format!("writing {}: {e}", cfg.display()))?;
    eprintln!(
        "demo: this host runs Xen (/dev/xen/privcmd, xl): firmware_dm runs here directly too, as root:\n\
         \x20     xl create -p {cfg}; {dm} $(xl domid {name}) --until \"{until}\"\n\
         \x20     and `xl unpause {name}` once it prints `ready`; then `xl destroy {name}`.\n\
         demo: the demo itself boots its own Xen machine under QEMU, as everywhere.",
        cfg = cfg.display(),
        dm = dm.host.display(),
        name = script::GUEST_NAME,
        until = script::UNTIL,
    );
    Ok(())
}

/// Builds `firmware_dm` (xen-firmware-dm's program, release) and returns it as a payload.
fn firmware_dm(verbose: bool) -> Result<Payload, String> {
    let mut cargo = util::cargo();
    cargo.args([
        "build",
        "-p",
        "xen-firmware-dm",
        "--bin",
        script::FIRMWARE_DM,
        "--release",
        "--message-format=json-render-diagnostics",
    ]);
    if !verbose {
        cargo.arg("-q");
    }
    Ok(Payload {
        host: payloads::build_binary(cargo, script::FIRMWARE_DM)?,
        dom0: format!("{PAYLOAD_DIR}/{}", script::FIRMWARE_DM),
    })
}

/// Entry point of `cargo xtask demo`.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(opts) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    if opts.firmware {
        run_firmware(&opts)
    } else {
        run_linux(&opts)
    }
}

/// Builds xen-pcdm's binary (release) and returns it as a payload.
fn pcdm(verbose: bool) -> Result<Payload, String> {
    let mut cargo = util::cargo();
    cargo.args([
        "build",
        "-p",
        "xen-pcdm",
        "--bin",
        linux::PCDM,
        "--release",
        "--message-format=json-render-diagnostics",
    ]);
    if !verbose {
        cargo.arg("-q");
    }
    Ok(Payload {
        host: payloads::build_binary(cargo, linux::PCDM)?,
        dom0: format!("{PAYLOAD_DIR}/{}", linux::PCDM),
    })
}

/// The Linux demo.
fn run_linux(opts: &Options) -> Result<(), String> {
    let started = Instant::now();
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let Host { sys, work, .. } = Host::prepare("demo")?;
    let dm = pcdm(opts.verbose)?;
    let fake = payloads::fake_dm()?;
    let kernel_payload = payloads::linux_guest_kernel()?;
    let built = started.elapsed();

    let lock_start = Instant::now();
    let _lock = RunLock::acquire(&work, "demo")?;
    let waited = lock_start.elapsed();
    let image = initramfs::assemble(&sys, &work, false, |inputs| {
        let mut t = Tree::default();
        t.add(
            "/init",
            Entry::Text(
                linux::init(inputs.modules, inputs.xen_bin, interactive),
                0o755,
            ),
        );
        t.add(
            &format!("{PAYLOAD_DIR}/demo"),
            Entry::Text(linux::demo(interactive), 0o755),
        );
        t.add_payloads(&[dm, fake, kernel_payload], inputs.base)?;
        Ok(t)
    })?;
    let xen = system::xen_elf(&sys, &work)?;
    let kernel = system::dom0_kernel(&sys, &work)?;
    eprintln!(
        "demo: built in {:.1} s; initramfs {:.1} MiB{}; {}",
        built.as_secs_f64(),
        mib(image.size),
        if image.base_cached {
            " (base cached)"
        } else {
            ""
        },
        if interactive {
            "an interactive shell at the end (type `poweroff` to end it)"
        } else {
            "stdin is not a terminal: the shell's commands are typed by the script"
        }
    );

    let log = work.join("demo-console.log");
    let boot_start = Instant::now();
    let cfg = machine::Config {
        qemu: sys.qemu.clone(),
        xen,
        kernel,
        initrd: image.path.clone(),
        log: log.clone(),
        timeout: match (interactive, opts.timeout) {
            (_, Some(t)) => Some(machine::Deadlines::fixed(t)),
            (true, None) => None,
            (false, None) => Some(machine::Deadlines::fixed(LINUX_TIMEOUT)),
        },
        shell: interactive,
        verbose: opts.verbose,
        label: "demo",
        screen: {
            let guest_seen = std::cell::Cell::new(false);
            Some(Box::new(move |line: &str| {
                linux::screen(line, boot_start.elapsed(), &guest_seen)
            }))
        },
    };
    let outcome = machine::boot(&cfg)?;

    let console = fs::read(&log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    let run = linux::Run::parse(&String::from_utf8_lossy(&console));
    let mut failures = outcome.problems.clone();
    failures.extend(outcome.transcript.alarms.iter().map(|a| a.to_string()));
    failures.extend(run.failures());
    if let Some(s) = &run.served {
        println!("demo: xen-pcdm served {s}");
    }
    if let Some(r) = &run.rss {
        println!("demo: xen-pcdm's {r}");
    }
    println!(
        "demo: machine {:.1} s (dom0 up after {}), whole demo {:.1} s{}; console log {}",
        outcome.elapsed.as_secs_f64(),
        outcome
            .init_after
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".into()),
        started.elapsed().as_secs_f64(),
        if waited >= Duration::from_secs(1) {
            format!(
                " ({:.1} s of it waiting for another machine run)",
                waited.as_secs_f64()
            )
        } else {
            String::new()
        },
        log.display()
    );
    for f in &failures {
        println!("demo: FAILED: {f}");
    }
    println!("{}", run.last_line());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(String::new())
    }
}

/// The firmware demo (`--firmware`).
fn run_firmware(opts: &Options) -> Result<(), String> {
    let started = Instant::now();
    let Host { sys, work, .. } = Host::prepare("demo")?;
    let dm = firmware_dm(opts.verbose)?;
    let fake = payloads::fake_dm()?;
    let built = started.elapsed();
    if on_xen_host() {
        host_hint(&work, &dm, &fake)?;
    }

    let lock_start = Instant::now();
    let _lock = RunLock::acquire(&work, "demo")?;
    let waited = lock_start.elapsed();
    let image = initramfs::assemble(&sys, &work, false, |inputs| {
        let mut t = Tree::default();
        t.add(
            "/init",
            Entry::Text(script::init(inputs.modules, inputs.xen_bin), 0o755),
        );
        t.add(
            &format!("{PAYLOAD_DIR}/demo"),
            Entry::Text(script::demo(), 0o755),
        );
        t.add_payloads(&[dm, fake], inputs.base)?;
        Ok(t)
    })?;
    let xen = system::xen_elf(&sys, &work)?;
    let kernel = system::dom0_kernel(&sys, &work)?;
    eprintln!(
        "demo: built in {:.1} s; initramfs {:.1} MiB{}",
        built.as_secs_f64(),
        mib(image.size),
        if image.base_cached {
            " (base cached)"
        } else {
            ""
        },
    );

    let log = work.join("demo-console.log");
    let boot_start = Instant::now();
    let cfg = machine::Config {
        qemu: sys.qemu.clone(),
        xen,
        kernel,
        initrd: image.path.clone(),
        log: log.clone(),
        timeout: Some(machine::Deadlines::fixed(
            opts.timeout.unwrap_or(DEFAULT_TIMEOUT),
        )),
        shell: false,
        verbose: opts.verbose,
        label: "demo",
        screen: Some(Box::new(move |line: &str| {
            output::screen(line, boot_start.elapsed())
        })),
    };
    let outcome = machine::boot(&cfg)?;

    let console = fs::read(&log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    let run = output::Run::parse(&String::from_utf8_lossy(&console));
    let mut failures = outcome.problems.clone();
    failures.extend(outcome.transcript.alarms.iter().map(|a| a.to_string()));
    failures.extend(run.failures());

    if let Some(s) = &run.served {
        println!(
            "demo: served {} requests: {} port I/O, {} MMIO, {} PCI config, {} buffered, {} other, in {:.2} s of firmware run ({:.0} req/s at the guest's pace, SeaBIOS's boot-menu wait included)",
            s.total(),
            s.port,
            s.mmio,
            s.pci_config,
            s.buffered,
            s.other,
            s.secs,
            s.rate
        );
    }
    if let Some(l) = &run.loop_time {
        println!(
            "demo: the device model's own time: {:.1} us per request ({} wake-ups, {} notifies), under QEMU's emulation",
            l.us_per_request, l.wakeups, l.notifies
        );
    }
    let waited = if waited >= Duration::from_secs(1) {
        format!(
            " ({:.1} s of it waiting for another machine run)",
            waited.as_secs_f64()
        )
    } else {
        String::new()
    };
    println!(
        "demo: {} firmware line(s) through our devices; machine {:.1} s (dom0 up after {}), whole demo {:.1} s{waited}; console log {}",
        run.guest_lines.len(),
        outcome.elapsed.as_secs_f64(),
        outcome
            .init_after
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never".into()),
        started.elapsed().as_secs_f64(),
        log.display()
    );
    if failures.is_empty() {
        println!(
            "demo: OK. On a real Xen host the same program runs as a plain binary in dom0: firmware_dm <domid>"
        );
        Ok(())
    } else {
        for f in &failures {
            println!("demo: FAILED: {f}");
        }
        Err(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::args;

    #[test]
    fn parses_options() {
        assert_eq!(parse_args(&[]).unwrap(), Some(Options::default()));
        let o = parse_args(&args(&["-v", "--timeout", "90"]))
            .unwrap()
            .unwrap();
        assert!(o.verbose && !o.firmware);
        assert!(
            parse_args(&args(&["--firmware"]))
                .unwrap()
                .unwrap()
                .firmware
        );
        assert_eq!(o.timeout, Some(Duration::from_secs(90)));
        assert!(parse_args(&args(&["--help"])).unwrap().is_none());
        assert!(parse_args(&args(&["--timeout"])).is_err());
        assert!(parse_args(&args(&["--timeout", "x"])).is_err());
        assert!(parse_args(&args(&["extra"])).is_err());
    }

    #[test]
    fn host_hint_writes_this_hosts_guest_config() {
        let dir = std::env::temp_dir().join(format!("xtask-demo-hint-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = |h: &str| Payload {
            host: h.into(),
            dom0: String::new(),
        };
        host_hint(&dir, &p("/t/firmware_dm"), &p("/t/xen-testkit-dm")).unwrap();
        let cfg = fs::read_to_string(dir.join("demo-guest.cfg")).unwrap();
        assert!(
            cfg.contains("device_model_override = \"/t/xen-testkit-dm\"\n"),
            "{cfg}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
