//! `cargo xtask bench [--rounds N] [--short] [-v] [--timeout SECS]`: boots the Xen machine of
//! `cargo xtask xen-test` once and, in it, the same Linux HVM guest with our device model
//! (xen-pcdm's PC) and with Debian's QEMU as libxl's device model, interleaved, `N` rounds
//! each (default 3); prints one table (ours, QEMU, ours/QEMU, each min / median / max of the
//! rounds) and saves it in `target/xen-test/bench.md`.
//!
//! - `xen-bench` (dom0): boots the guests and measures (see its docs);
//! - `xen-pcdm` (dom0, release build): our device model, as its binary;
//! - `xen-bench-guest` (the guest, a static executable): the disk and port-I/O parts;
//! - [`table`]: the console read back into the table.
//!
//! `cargo xtask ci` runs one short round ([`smoke`]): it fails only when a boot fails, never
//! on the numbers.

pub(crate) mod table;

use std::fs;
use std::time::{Duration, Instant};

use crate::payloads::{self, Payload};
use crate::util;
use crate::xen_test::init_script::{heartbeat, power_off, toolstack_start};
use crate::xen_test::initramfs::{Entry, Tree};
use crate::xen_test::{initramfs, machine, mib, system, Host, RunLock, PAYLOAD_DIR};

/// QEMU's direct-boot option ROMs (package qemu-system-data): with xl's `kernel`, QEMU
/// puts one into fw_cfg for SeaBIOS to run; without the file it boots nothing.
const QEMU_DIRECT_BOOT: &[&str] = &[
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/linuxboot.bin",
];

/// The target the guest tool is built for (with glibc linked in statically).
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

const USAGE: &str = "usage: cargo xtask bench [--rounds N] [--short] [-v] [--timeout SECS]\n\
\n\
Boots Xen 4.17 + a Debian dom0 under QEMU once and measures, in it, one Linux HVM guest served\n\
by our device model (xen-pcdm) and by Debian's QEMU (libxl's device model), interleaved.\n\
\x20 --rounds N       boots per device model (default 3)\n\
\x20 --short          smaller parts: 16 MiB, 500 random reads, 5000 port reads (CI: --rounds 1 --short)\n\
\x20 -v, --verbose    show Xen's and dom0's whole console as it comes\n\
\x20 --timeout SECS   deadline for the machine run (default 600 + 600 per round)\n";

/// Command-line options of `cargo xtask bench`.
#[derive(Debug, PartialEq)]
pub struct Options {
    /// Boots per device model.
    pub rounds: u32,
    /// Show the whole console.
    pub verbose: bool,
    /// The machine's deadline.
    pub timeout: Option<Duration>,
    /// Fewer requests per part (CI's smoke).
    pub short: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            rounds: 3,
            verbose: false,
            timeout: None,
            short: false,
        }
    }
}

/// Parses the arguments after `bench`. `Ok(None)` means help was asked for.
pub fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "-v" | "--verbose" => o.verbose = true,
            "--short" => o.short = true,
            "--timeout" => o.timeout = Some(util::timeout_arg(it.next(), USAGE)?),
            "--rounds" => {
                o.rounds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--rounds needs a number above 0\n\n{USAGE}"))?
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    Ok(Some(o))
}

/// The runner's arguments in dom0.
fn runner_args(o: &Options) -> String {
    let mut s = format!("--rounds {}", o.rounds);
    if o.short {
        s += " --seq-mib 16 --rand-count 500 --lsr-count 5000";
    }
    s
}

/// Builds the guest tool: a static executable (glibc linked in), in its own target
/// directory so the workspace's builds keep their flags.
fn guest_tool(verbose: bool) -> Result<Payload, String> {
    let out = util::workspace_root().join("target/xen-bench-guest");
    let mut cargo = util::cargo();
    cargo
        .args([
            "build",
            "-p",
            "xen-bench-guest",
            "--release",
            "--target",
            GUEST_TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .env("CARGO_TARGET_DIR", &out)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    if !verbose {
        cargo.arg("-q");
    }
    Ok(Payload {
        host: payloads::build_binary(cargo, "xen-bench-guest")?,
        dom0: format!("{PAYLOAD_DIR}/xen-bench-guest"),
    })
}

/// Builds binary `bin` of `package` (release: QEMU is an optimised build too).
fn release_binary(package: &str, bin: &str, verbose: bool) -> Result<Payload, String> {
    let mut cargo = util::cargo();
    cargo.args([
        "build",
        "-p",
        package,
        "--release",
        "--bin",
        bin,
        "--message-format=json-render-diagnostics",
    ]);
    if !verbose {
        cargo.arg("-q");
    }
    Ok(Payload {
        host: payloads::build_binary(cargo, bin)?,
        dom0: format!("{PAYLOAD_DIR}/{bin}"),
    })
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Entry point of `cargo xtask bench`.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(opts) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    bench(&opts)
}

/// CI's smoke: one short round; fails only on a broken run.
pub fn smoke() -> Result<(), String> {
    bench(&Options {
        rounds: 1,
        short: true,
        ..Options::default()
    })
}

fn bench(opts: &Options) -> Result<(), String> {
    let started = Instant::now();
    let Host { sys, work, .. } = Host::prepare("bench")?;
    util::ensure_rust_target(GUEST_TARGET)?;
    let payloads = vec![
        release_binary("xen-bench", "xen-bench", opts.verbose)?,
        release_binary("xen-pcdm", "xen-pcdm", opts.verbose)?,
        guest_tool(opts.verbose)?,
        payloads::fake_dm()?,
        Payload {
            host: sys.kernel.clone(),
            dom0: format!("{PAYLOAD_DIR}/linux-guest.bzImage"),
        },
    ];
    let built = started.elapsed();

    let lock_start = Instant::now();
    let _lock = RunLock::acquire(&work, "bench")?;
    let waited = lock_start.elapsed();
    let load_before = loadavg();
    let image = initramfs::assemble(&sys, &work, false, |inputs| {
        let mut init = toolstack_start("bench", inputs.modules, inputs.xen_bin);
        init += &heartbeat();
        init += &format!("{PAYLOAD_DIR}/xen-bench {}\nrc=$?\n", runner_args(opts));
        init += &power_off();
        let mut t = Tree::default();
        t.add("/init", Entry::Text(init, 0o755));
        t.add_payloads(&payloads, inputs.base)?;
        for f in QEMU_DIRECT_BOOT.iter().map(std::path::Path::new) {
            if !f.is_file() {
                return Err(format!("no {} (package qemu-system-data)", f.display()));
            }
            t.copy_same(f);
        }
        Ok(t)
    })?;
    let xen = system::xen_elf(&sys, &work)?;
    let kernel = system::dom0_kernel(&sys, &work)?;
    eprintln!(
        "bench: built in {:.1} s; initramfs {:.1} MiB; host load {load_before}",
        built.as_secs_f64(),
        mib(image.size)
    );
    let log = work.join("bench-console.log");
    let timeout = opts
        .timeout
        .unwrap_or(Duration::from_secs(600 + 600 * u64::from(opts.rounds)));
    let cfg = machine::Config {
        qemu: sys.qemu.clone(),
        xen,
        kernel,
        initrd: image.path.clone(),
        log: log.clone(),
        timeout: Some(machine::Deadlines::fixed(timeout)),
        shell: false,
        verbose: opts.verbose,
        label: "bench",
        screen: Some(Box::new(|line: &str| {
            let at = line.find("xen-bench: ")?;
            Some(line[at..].to_owned())
        })),
    };
    let outcome = machine::boot(&cfg)?;
    let load_after = loadavg();

    let console = fs::read(&log).map_err(|e| format!("reading {}: {e}", log.display()))?;
    let console = String::from_utf8_lossy(&console);
    let rows: Vec<table::Row> = console.lines().filter_map(table::parse_row).collect();
    let versions = console
        .lines()
        .find_map(table::parse_versions)
        .unwrap_or_default();
    let mut failures = outcome.problems.clone();
    failures.extend(outcome.transcript.alarms.iter().map(|a| a.to_string()));
    failures.extend(
        console
            .lines()
            .filter_map(|l| l.find("xen-bench: FAILED").map(|at| l[at..].to_owned())),
    );
    for dm in ["ours", "qemu"] {
        let n = rows.iter().filter(|r| r.dm == dm).count();
        if n != opts.rounds as usize {
            failures.push(format!("{n} of {} {dm} boots measured", opts.rounds));
        }
    }

    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let v = |k: &str| versions.get(k).cloned().unwrap_or_else(|| "unknown".into());
    let mut text = format!(
        "{} round(s) per device model, {date}; machine: Xen {} (credit), dom0 Linux {} under {} (TCG), host {} CPUs, load {load_before} before, {load_after} after; QEMU device model: {}; guest: Linux {}, 256 MiB, 1 vCPU, virtio-blk on a raw image in dom0's tmpfs\n\n",
        opts.rounds,
        v("xen"),
        v("dom0"),
        system::qemu_version(&sys.qemu),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        v("qemu"),
        v("dom0"),
    );
    text += &table::table(&rows);
    println!("\n{text}");
    let out = work.join("bench.md");
    fs::write(&out, &text).map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!(
        "bench: machine {:.1} s, whole bench {:.1} s{}; table in {}, console in {}",
        outcome.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        if waited >= Duration::from_secs(1) {
            format!(
                " ({:.0} s of it waiting for another machine run)",
                waited.as_secs_f64()
            )
        } else {
            String::new()
        },
        out.display(),
        log.display()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        for f in &failures {
            println!("bench: FAILED: {f}");
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
        let o = parse_args(&args(&[
            "--rounds",
            "5",
            "-v",
            "--timeout",
            "90",
            "--short",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.rounds, 5);
        assert!(o.short);
        assert!(o.verbose);
        assert_eq!(o.timeout, Some(Duration::from_secs(90)));
        assert!(parse_args(&args(&["--rounds", "0"])).is_err());
        assert!(parse_args(&args(&["--rounds"])).is_err());
        assert!(parse_args(&args(&["--help"])).unwrap().is_none());
        assert!(parse_args(&args(&["extra"])).is_err());
    }

    #[test]
    fn smoke_is_short() {
        let o = Options {
            rounds: 1,
            short: true,
            ..Options::default()
        };
        assert_eq!(
            runner_args(&o),
            "--rounds 1 --seq-mib 16 --rand-count 500 --lsr-count 5000"
        );
        assert_eq!(runner_args(&Options::default()), "--rounds 3");
    }
}
