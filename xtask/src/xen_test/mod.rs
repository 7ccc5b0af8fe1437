//! `cargo xtask xen-test [FILTER] [--xen 4.17|4.20] [--shell] [--keep] [-v] [-p PACKAGE]...
//! [--timeout SECS]`: runs the workspace's tests inside dom0 of a real Xen, booted under QEMU
//! (software emulation), and reports one `xen-test: N passed, N failed, N skipped` line.
//!
//! Two machines, one description parameterised by [`Generation`]: Debian 12's Xen 4.17 and Linux
//! 6.1 (the host's own packages, the default), and Debian 13's Xen 4.20 and Linux 6.12 (fetched
//! and unpacked beside the host's, never installed: [`debian`]). Both run the same test
//! executables with the same `/init`.
//!
//! The steps, one file each:
//! - [`packages`]: the Debian packages the machine needs (installed with apt when we are root);
//! - [`debian`]: another Debian release's packages, fetched with a private apt configuration;
//! - [`system`]: where those packages put Xen, the dom0 kernel, its modules and the tools;
//! - [`build`]: `cargo test --no-run` for the test executables, plus [`crate::payloads`];
//! - [`initramfs`]: dom0's root file system (a cached base + this run's tests), cpio newc + gzip;
//! - [`init_script`]: dom0's `/init` (toolstack start, the test loop, the exit status);
//! - [`machine`]: QEMU on a deadline, the serial console streamed and logged;
//! - [`report`]: the console parsed into per-executable results and the final counts.
//!
//! dom0 layout (shared with the payloads): payloads under `/opt/xen-rs/` (the directory is
//! exported to the tests as `XEN_RS_PAYLOAD_DIR`), test executables in `/opt/xen-rs/tests/`.

pub(crate) mod build;
pub(crate) mod debian;
pub(crate) mod init_script;
pub(crate) mod initramfs;
pub(crate) mod machine;
pub(crate) mod packages;
pub(crate) mod report;
pub(crate) mod system;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util;

/// Where payloads live in dom0 (exported to the tests as `XEN_RS_PAYLOAD_DIR`).
pub const PAYLOAD_DIR: &str = "/opt/xen-rs";
/// Where the test executables live in dom0.
pub const TESTS_DIR: &str = "/opt/xen-rs/tests";

/// Default deadline for the whole machine run (QEMU start to exit) while no test finishes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The hard limit of a run that keeps making progress, in multiples of its deadline.
const CAP_FACTOR: u32 = 4;

/// How long dom0 lets one test executable run before killing it (and naming it): the run's
/// deadline (`--timeout`), so that a slow executable on a busy host still finishes.
pub fn exe_timeout(opts: &Options) -> Duration {
    opts.timeout.unwrap_or(DEFAULT_TIMEOUT)
}

/// The machine's deadlines for `opts`: `--timeout` (default 300 s) while nothing finishes; each
/// finished test or executable allows one more executable's time (plus a margin, so that dom0
/// names a stuck executable before the host ends the machine); at most four times `--timeout`
/// in all. A machine silent for `--silence` (default [`machine::DEFAULT_SILENCE`]) is
/// diagnosed and ended at once.
pub fn deadlines(opts: &Options) -> machine::Deadlines {
    let base = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    machine::Deadlines {
        silence: opts.silence.unwrap_or(machine::DEFAULT_SILENCE),
        base,
        progress: exe_timeout(opts) + Duration::from_secs(30),
        cap: base * CAP_FACTOR,
    }
}

/// Which Xen (and with it which Debian release's kernel and dom0 user space) a machine runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Debian 12: Xen 4.17, Linux 6.1, QEMU 7.2 as libxl's device model (the host's packages).
    #[default]
    Xen417,
    /// Debian 13: Xen 4.20, Linux 6.12, QEMU 10.0 (fetched into `target/xen-test/debian-13/`).
    Xen420,
}

impl Generation {
    /// Every generation, the default first.
    pub const ALL: [Generation; 2] = [Generation::Xen417, Generation::Xen420];

    /// Xen's version (`4.17`), as `--xen` takes it.
    pub fn xen(self) -> &'static str {
        match self {
            Generation::Xen417 => "4.17",
            Generation::Xen420 => "4.20",
        }
    }

    /// The Debian release to fetch, or `None` for the host's own packages.
    pub fn release(self) -> Option<&'static debian::Release> {
        match self {
            Generation::Xen417 => None,
            Generation::Xen420 => Some(&debian::TRIXIE),
        }
    }

    /// Parses `--xen`'s value.
    pub fn parse(s: &str) -> Result<Generation, String> {
        Generation::ALL
            .into_iter()
            .find(|g| g.xen() == s)
            .ok_or_else(|| format!("unknown Xen version `{s}` (4.17 or 4.20)\n\n{USAGE}"))
    }

    /// The subdirectory of `target/xen-test/` holding this machine's caches and console log
    /// (`None`: `target/xen-test/` itself).
    pub fn subdir(self) -> Option<String> {
        self.release().map(|_| format!("xen-{}", self.xen()))
    }
}

/// Command-line options of `cargo xtask xen-test`.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    /// Which machine (`--xen`).
    pub xen: Generation,
    /// libtest filter passed to every test executable.
    pub filter: Option<String>,
    /// Boot to an interactive dom0 shell instead of running the tests.
    pub shell: bool,
    /// Keep the staging directories and print where they are.
    pub keep: bool,
    /// Show Xen's and dom0's boot log as it happens.
    pub verbose: bool,
    /// Only these packages' tests (`-p`), instead of the whole workspace.
    pub packages: Vec<String>,
    /// Deadline for the machine run; `None` means the default.
    pub timeout: Option<Duration>,
    /// How long the machine may print nothing; `None` means the default.
    pub silence: Option<Duration>,
}

const USAGE: &str = "usage: cargo xtask xen-test [FILTER] [--xen 4.17|4.20] [--shell] [--keep] [-v] [-p PACKAGE]... [--timeout SECS] [--silence SECS]\n\
\n\
Runs the workspace's tests (with --include-ignored) inside dom0 of Xen under QEMU.\n\
\x20 FILTER           libtest filter, passed to every test executable\n\
\x20 --xen VERSION    4.17: Debian 12's Xen 4.17 and Linux 6.1 (the default, the host's packages);\n\
\x20                  4.20: Debian 13's Xen 4.20 and Linux 6.12 (fetched into target/xen-test/debian-13)\n\
\x20 --shell          boot and drop into a dom0 shell on the serial console (no tests run; `run-tests` runs them)\n\
\x20 --keep           keep the staging directories and print where they are\n\
\x20 -v, --verbose    show Xen's and dom0's boot log and kernel messages as they come\n\
\x20 -p, --package P  only build and run package P's tests (repeatable)\n\
\x20 --timeout SECS   deadline while no test finishes, and each executable's limit (default 300;\n\
\x20                  each finished test extends the run, up to 4x this in all; a machine that\n\
\x20                  prints nothing for --silence SECS is diagnosed and ended at once)\n\
\x20 --silence SECS   how long the machine may print nothing (default 60; dom0 prints a\n\
\x20                  heartbeat every 15 s)\n";

/// Parses the arguments after `xen-test`. `Ok(None)` means help was asked for.
pub fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--shell" => o.shell = true,
            "--keep" => o.keep = true,
            "-v" | "--verbose" => o.verbose = true,
            "-p" | "--package" => {
                let p = it
                    .next()
                    .ok_or_else(|| format!("{a} needs a package name\n\n{USAGE}"))?;
                o.packages.push(p.clone());
            }
            "--xen" => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("--xen needs a version\n\n{USAGE}"))?;
                o.xen = Generation::parse(v)?;
            }
            s if s.starts_with("--xen=") => o.xen = Generation::parse(&s["--xen=".len()..])?,
            "--timeout" => o.timeout = Some(util::timeout_arg(it.next(), USAGE)?),
            "--silence" => o.silence = Some(util::timeout_arg(it.next(), USAGE)?),
            s if s.starts_with("--package=") => o.packages.push(s["--package=".len()..].into()),
            s if s.starts_with("-p") && s.len() > 2 => o.packages.push(s[2..].into()),
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`\n\n{USAGE}")),
            s => {
                if o.filter.is_some() {
                    return Err(format!("only one FILTER may be given\n\n{USAGE}"));
                }
                o.filter = Some(s.into());
            }
        }
    }
    Ok(Some(o))
}

/// Entry point of `cargo xtask xen-test`. On a test or machine failure it prints the reasons and
/// the summary line itself, and returns `Err` with an empty message (nothing more to say).
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(opts) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let started = Instant::now();
    let Host { sys, meta, work } = Host::prepare_for("xen-test", opts.xen)?;

    let tests = build::test_executables(&meta, &opts.packages)?;
    let mut payloads = crate::payloads::build()?;
    // The Linux HVM guest boots dom0's own kernel (its tests take the modules from dom0).
    for p in payloads.iter_mut() {
        if p.dom0.ends_with("/linux-guest.bzImage") {
            p.host = sys.kernel.clone();
        }
    }
    eprintln!(
        "xen-test: {} test executable(s), {} payload(s)",
        tests.len(),
        payloads.len()
    );

    // One machine at a time per target directory: runs share target/xen-test/, and two TCG
    // machines on a small host would only slow each other down.
    let _lock = RunLock::acquire(&meta.target_directory.join("xen-test"), "xen-test")?;
    let image = initramfs::assemble(&sys, &work, opts.keep, |inputs| {
        initramfs::test_run_tree(inputs, &tests, &payloads, &opts)
    })?;
    let xen_elf = system::xen_elf(&sys, &work)?;
    let kernel = system::dom0_kernel(&sys, &work)?;
    eprintln!(
        "xen-test: initramfs {:.1} MiB (base {:.1} MiB{}), prepared in {:.1} s",
        mib(image.size),
        mib(image.base_size),
        if image.base_cached { ", cached" } else { "" },
        started.elapsed().as_secs_f64()
    );
    if opts.keep {
        eprintln!(
            "xen-test: staging kept: base tree {}, this run's tree {}, initramfs {}",
            image.base_dir.display(),
            image.run_dir.display(),
            image.path.display()
        );
    }

    let names: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
    let cfg = machine::Config {
        qemu: sys.qemu.clone(),
        xen: xen_elf,
        kernel,
        initrd: image.path.clone(),
        log: work.join("console.log"),
        timeout: if opts.shell {
            None
        } else {
            Some(deadlines(&opts))
        },
        shell: opts.shell,
        verbose: opts.verbose,
        label: "xen-test",
        screen: None,
    };
    let outcome = machine::boot(&cfg)?;

    eprintln!(
        "xen-test: Xen {}: dom0 /init {}; machine run {:.1} s (whole xen-test {:.1} s); QEMU peak RSS {}; initramfs {:.1} MiB; console log {}",
        opts.xen.xen(),
        outcome
            .init_after
            .map(|d| format!("reached after {:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never reached".into()),
        outcome.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        outcome
            .peak_rss_kib
            .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "unknown".into()),
        mib(image.size),
        cfg.log.display()
    );
    if opts.shell {
        let mut reasons = outcome.problems.clone();
        reasons.extend(outcome.transcript.alarms.iter().map(|a| a.to_string()));
        return match reasons.is_empty() {
            true => Ok(()),
            false => Err(reasons.join("\n")),
        };
    }

    let slow = report::slowest(&outcome.transcript, 5);
    if !slow.is_empty() {
        eprintln!("xen-test: slowest executables: {}", slow.join(", "));
    }
    let woken = report::woken(&outcome.transcript);
    if !woken.is_empty() {
        eprintln!(
            "xen-test: test-guest wake-up calls (a vCPU stopped answering for a while): {}",
            woken.join(", ")
        );
    }
    let verdict = report::verdict(&outcome.transcript, &names, &outcome.problems);
    for r in &verdict.flaky {
        println!("xen-test: FLAKY: {r}");
    }
    for r in &verdict.reasons {
        println!("xen-test: FAILED: {r}");
    }
    if opts.xen != Generation::default() {
        println!(
            "xen-test: machine: Xen {}, Linux {}",
            opts.xen.xen(),
            sys.release
        );
    }
    println!("{}", verdict.totals.line());
    if verdict.reasons.is_empty() {
        Ok(())
    } else {
        Err(String::new())
    }
}

/// What every machine run starts from: the Debian packages installed, the host's QEMU, Xen and
/// dom0 kernel found, and the work directory (`target/xen-test/`, shared by all runs: the cached
/// initramfs base lives there).
pub struct Host {
    /// The host's files for the machine.
    pub sys: system::System,
    /// The workspace's metadata.
    pub meta: build::Metadata,
    /// `target/xen-test/`.
    pub work: PathBuf,
}

impl Host {
    /// Checks the packages, finds the system (naming it on stderr after `label:`), creates the
    /// work directory: the default machine (Xen 4.17).
    pub fn prepare(label: &str) -> Result<Host, String> {
        Host::prepare_for(label, Generation::default())
    }

    /// [`Host::prepare`] for the machine of `generation`: another Debian release's packages
    /// are fetched and unpacked first (or taken from the cache), and the work directory is
    /// that machine's own (`target/xen-test/xen-4.20/`).
    pub fn prepare_for(label: &str, generation: Generation) -> Result<Host, String> {
        packages::ensure(label, &[packages::MACHINE])?;
        let meta = build::Metadata::load()?;
        let top = meta.target_directory.join("xen-test");
        let work = match generation.subdir() {
            Some(d) => top.join(d),
            None => top.clone(),
        };
        fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
        let sys = match generation.release() {
            None => system::System::find()?,
            Some(rel) => {
                let unpacked = debian::prepare(rel, &top, label)?;
                system::System::in_root(&unpacked.root, generation.xen())?
            }
        };
        eprintln!(
            "{label}: QEMU {}, Xen {}, dom0 kernel {}",
            system::qemu_version(&sys.qemu),
            sys.xen_gz.display(),
            sys.release
        );
        Ok(Host { sys, meta, work })
    }
}

/// A lock directory (`target/xen-test/lock`, holding the owner's pid), removed on drop; a lock
/// whose owner is gone is taken over.
pub struct RunLock(PathBuf);

impl RunLock {
    /// Takes the lock in `work`, waiting while another live run holds it (saying so after
    /// `label:`).
    pub fn acquire(work: &Path, label: &str) -> Result<RunLock, String> {
        let dir = work.join("lock");
        let me = fs::read_to_string("/proc/self/comm").unwrap_or_default();
        let mut told = false;
        let mut no_pid = 0;
        loop {
            match fs::create_dir(&dir) {
                Ok(()) => {
                    fs::write(dir.join("pid"), std::process::id().to_string())
                        .map_err(|e| format!("writing {}/pid: {e}", dir.display()))?;
                    return Ok(RunLock(dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("creating {}: {e}", dir.display())),
            }
            let holder = fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            let alive = holder.is_some_and(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == me)
            });
            if alive {
                if !told {
                    eprintln!(
                        "{label}: waiting for another xen-test or demo run (pid {}) to finish",
                        holder.unwrap_or_default()
                    );
                    told = true;
                }
                no_pid = 0;
            } else if holder.is_some() || no_pid >= 5 {
                let _ = fs::remove_dir_all(&dir); // stale: its owner is gone
                continue;
            } else {
                no_pid += 1; // being created right now
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Bytes in MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::args;

    #[test]
    fn parses_options() {
        let o = parse_args(&args(&[
            "version",
            "-v",
            "-p",
            "xen-sys",
            "--package=xen-hypercall",
            "--keep",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.filter.as_deref(), Some("version"));
        assert!(o.verbose && o.keep && !o.shell);
        assert_eq!(o.packages, ["xen-sys", "xen-hypercall"]);
        let o = parse_args(&args(&["--shell", "--timeout", "60"]))
            .unwrap()
            .unwrap();
        assert!(o.shell);
        assert_eq!(o.timeout, Some(Duration::from_secs(60)));
        assert!(parse_args(&args(&["--help"])).unwrap().is_none());
        assert!(parse_args(&args(&["a", "b"])).is_err());
        assert!(parse_args(&args(&["--bogus"])).is_err());
        assert!(parse_args(&args(&["-p"])).is_err());
        assert_eq!(
            parse_args(&args(&[])).unwrap().unwrap().xen,
            Generation::Xen417
        );
        let o = parse_args(&args(&["--xen", "4.20", "x"])).unwrap().unwrap();
        assert_eq!(
            (o.xen, o.filter.as_deref()),
            (Generation::Xen420, Some("x"))
        );
        let o = parse_args(&args(&["--xen=4.17"])).unwrap().unwrap();
        assert_eq!(o.xen, Generation::Xen417);
        assert!(parse_args(&args(&["--xen", "4.19"])).is_err());
        assert!(parse_args(&args(&["--xen"])).is_err());
        assert_eq!(Generation::Xen420.subdir().as_deref(), Some("xen-4.20"));
        assert_eq!(Generation::Xen417.subdir(), None);
    }
}
