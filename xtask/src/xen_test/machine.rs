//! Booting Xen and dom0 under QEMU (TCG), streaming and logging the serial console, on a
//! deadline.
//!
//! QEMU's flags are the measured ones (see `shared/xen-testbed.md`): q35, `-cpu max,-smap` (QEMU
//! 7.2's plain `max` crashes the PV dom0 at its first exception; 10.x works either way), Xen as
//! the multiboot kernel, dom0's kernel and initramfs as its modules, and isa-debug-exit at 0xf4
//! so dom0 ends the run with a status: byte v gives QEMU exit status `(v << 1) | 1`.
//!
//! Two choices of ours: `bootscrub=0` (Xen would otherwise write all free RAM at boot, making
//! QEMU's resident memory the whole 2 GiB; measured peak without guests ~0.5 GiB instead of
//! 1.4 GiB) and dom0 with 512 MiB (building a bigger dom0 costs boot time; guests get the rest).

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::report::Transcript;
use crate::util;

/// Machine size: RAM for the whole machine, and dom0's share (the rest is for test guests).
const MACHINE_MEM_MIB: u32 = 2048;
const DOM0_MEM: &str = "512M";
/// After a fatal sign (a Xen panic, dom0's death), how long to keep reading before ending QEMU.
const FATAL_GRACE: Duration = Duration::from_secs(3);
/// How many hidden lines to show after a machine failure (the whole log is in the log file).
const HIDDEN_TAIL: usize = 200;

/// What to boot and how.
pub struct Config {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// Xen as an ELF.
    pub xen: PathBuf,
    /// dom0's kernel.
    pub kernel: PathBuf,
    /// dom0's initramfs.
    pub initrd: PathBuf,
    /// Where the whole console goes.
    pub log: PathBuf,
    /// Deadline for the whole run (none for `--shell`).
    pub timeout: Option<Duration>,
    /// Interactive dom0 shell: stdin goes to the console; once dom0's /init runs, output passes
    /// through raw.
    pub shell: bool,
    /// Show everything.
    pub verbose: bool,
    /// Who runs the machine (`xen-test`, `demo`): the prefix of the runner's own messages.
    pub label: &'static str,
    /// In quiet mode, what to show for a console line (`None`: hide it). Without it, the test
    /// transcript decides (dom0's and the tests' own lines are shown).
    pub screen: Option<Screen>,
}

/// A quiet-mode console filter: the text to show for a line, if any.
pub type Screen = Box<dyn Fn(&str) -> Option<String>>;

/// How the run went.
pub struct Outcome {
    /// The parsed console.
    pub transcript: Transcript,
    /// Machine-level problems (timeout, QEMU's status).
    pub problems: Vec<String>,
    /// Time from QEMU's start to dom0's `/init`.
    pub init_after: Option<Duration>,
    /// Time from QEMU's start to its end.
    pub elapsed: Duration,
    /// QEMU's peak resident memory (KiB), polled from /proc.
    pub peak_rss_kib: Option<u64>,
}

/// Xen's command line.
pub fn xen_cmdline() -> String {
    format!(
        "console=com1 com1=115200,8n1 dom0_mem={DOM0_MEM},max:{DOM0_MEM} dom0_max_vcpus=1 \
         loglvl=all guest_loglvl=all noreboot console_timestamps=boot bootscrub=0"
    )
}

/// dom0's command line (no commas: QEMU splits `-initrd` on them).
pub const DOM0_CMDLINE: &str = "console=hvc0 earlyprintk=xen rdinit=/init";

/// The QEMU command for `cfg`.
pub fn qemu_command(cfg: &Config) -> Command {
    let mut c = Command::new(&cfg.qemu);
    c.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max,-smap"])
        .args(["-m", &MACHINE_MEM_MIB.to_string(), "-smp", "2"])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .args(["-monitor", "none"])
        .args([
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(&cfg.xen)
        .args(["-append", &xen_cmdline()])
        .arg("-initrd")
        .arg(format!(
            "{} {DOM0_CMDLINE},{}",
            cfg.kernel.display(),
            cfg.initrd.display()
        ));
    c
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// What QEMU's exit status means, given isa-debug-exit: `Ok(true)` dom0 reported success,
/// `Ok(false)` dom0 reported failing tests, `Err` anything else.
pub fn exit_meaning(code: Option<i32>) -> Result<bool, String> {
    match code {
        Some(1) => Ok(true),
        Some(3) => Ok(false),
        Some(c) => Err(format!(
            "QEMU exited with status {c}, not through dom0's isa-debug-exit"
        )),
        None => Err("QEMU was killed by a signal".into()),
    }
}

struct Console<'a> {
    log: fs::File,
    partial: Vec<u8>,
    hidden: Vec<String>,
    verbose: bool,
    screen: Option<&'a Screen>,
}

impl Console<'_> {
    fn line(&mut self, t: &mut Transcript, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\r', '\n']);
        // Strip other carriage returns and terminal noise that would confuse parsing.
        let line: String = line.chars().filter(|&c| c != '\r').collect();
        let shown = t.feed(&line);
        if self.verbose {
            println!("{line}");
            return;
        }
        match self.screen {
            Some(screen) => match screen(&line) {
                Some(text) => println!("{text}"),
                None => self.hidden.push(line),
            },
            None if shown => println!("{line}"),
            None => self.hidden.push(line),
        }
    }
}

/// Boots the machine and waits for it to end (or the deadline).
pub fn boot(cfg: &Config) -> Result<Outcome, String> {
    if let Some(dir) = cfg.log.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let log =
        fs::File::create(&cfg.log).map_err(|e| format!("creating {}: {e}", cfg.log.display()))?;
    let mut cmd = qemu_command(cfg);
    if cfg.verbose {
        eprintln!("+ {}", util::display(&cmd));
    }
    eprintln!(
        "{}: booting Xen + dom0 under QEMU{}",
        cfg.label,
        cfg.timeout
            .map(|t| format!(" (deadline {} s)", t.as_secs()))
            .unwrap_or_default()
    );
    cmd.stdin(if cfg.shell {
        Stdio::inherit()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", cfg.qemu.display()))?;
    let result = watch(cfg, &mut child, log, start);
    // Whatever happened, QEMU must not outlive us.
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    result
}

fn watch(
    cfg: &Config,
    child: &mut Child,
    log: fs::File,
    start: Instant,
) -> Result<Outcome, String> {
    let mut stdout = child.stdout.take().ok_or("no stdout from QEMU")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let pid = child.id();
    let mut con = Console {
        log,
        partial: Vec::new(),
        hidden: Vec::new(),
        verbose: cfg.verbose,
        screen: cfg.screen.as_ref(),
    };
    let mut t = Transcript::default();
    let mut problems = Vec::new();
    let mut init_after = None;
    let mut peak = None;
    let mut fatal_at: Option<Instant> = None;
    let mut killed = false;
    let deadline = cfg.timeout.map(|d| start + d);
    let mut stdout_term = std::io::stdout();
    let mut raw = false;

    loop {
        let now = Instant::now();
        let mut wait = Duration::from_millis(500);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(now));
        }
        match rx.recv_timeout(wait) {
            Ok(chunk) => {
                con.log
                    .write_all(&chunk)
                    .map_err(|e| format!("writing the console log: {e}"))?;
                if raw {
                    let _ = stdout_term.write_all(&chunk);
                    let _ = stdout_term.flush();
                }
                con.partial.extend_from_slice(&chunk);
                while let Some(i) = con.partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = con.partial.drain(..=i).collect();
                    if raw {
                        // Already shown raw; still parsed for the markers and alarms.
                        let text = String::from_utf8_lossy(&line);
                        t.feed(text.trim_end_matches(['\r', '\n']));
                    } else {
                        con.line(&mut t, &line);
                        if cfg.shell && t.init_started {
                            // dom0's /init runs: from here on the console is interactive
                            // (prompts have no newline), so pass it through as it comes.
                            raw = true;
                            let _ = stdout_term.write_all(&con.partial);
                            let _ = stdout_term.flush();
                        }
                    }
                    if init_after.is_none() && t.init_started {
                        init_after = Some(start.elapsed());
                    }
                    if fatal_at.is_none() && t.alarms.iter().any(|a| a.fatal()) {
                        fatal_at = Some(Instant::now());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(k) = peak_rss_kib(pid) {
            peak = Some(peak.map_or(k, |p: u64| p.max(k)));
        }
        let now = Instant::now();
        if let Some(d) = deadline {
            if now >= d && !killed {
                problems.push(format!(
                    "timed out after {} s; QEMU killed (raise the deadline with --timeout SECS)",
                    cfg.timeout.unwrap_or_default().as_secs()
                ));
                let _ = child.kill();
                killed = true;
            }
        }
        if let Some(f) = fatal_at {
            if now >= f + FATAL_GRACE && !killed {
                let _ = child.kill();
                killed = true;
            }
        }
    }
    if !con.partial.is_empty() {
        let rest = std::mem::take(&mut con.partial);
        if raw {
            let text = String::from_utf8_lossy(&rest);
            t.feed(text.trim_end_matches(['\r', '\n']));
        } else {
            con.line(&mut t, &rest);
        }
    }
    let _ = reader.join();
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    let elapsed = start.elapsed();
    if !killed {
        match exit_meaning(status.code()) {
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    let machine_failed =
        !problems.is_empty() || t.alarms.iter().any(|a| a.fatal()) || !t.init_started;
    if machine_failed && !con.verbose && !con.hidden.is_empty() {
        let from = con.hidden.len().saturating_sub(HIDDEN_TAIL);
        println!(
            "---- {}: the machine failed; last {} lines of Xen's and dom0's log (all in {}):",
            cfg.label,
            con.hidden.len() - from,
            cfg.log.display()
        );
        for l in &con.hidden[from..] {
            println!("{l}");
        }
        println!("---- end of log");
    }
    Ok(Outcome {
        transcript: t,
        problems,
        init_after,
        elapsed,
        peak_rss_kib: peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_meaning(Some(1)), Ok(true));
        assert_eq!(exit_meaning(Some(3)), Ok(false));
        assert!(exit_meaning(Some(0)).is_err());
        assert!(exit_meaning(None).is_err());
    }

    #[test]
    fn command_lines() {
        assert!(!DOM0_CMDLINE.contains(','));
        let cfg = Config {
            qemu: "qemu-system-x86_64".into(),
            xen: "/w/xen.elf".into(),
            kernel: "/boot/vmlinuz".into(),
            initrd: "/w/initrd.cpio.gz".into(),
            log: "/w/console.log".into(),
            timeout: None,
            shell: false,
            verbose: false,
            label: "xen-test",
            screen: None,
        };
        let s = util::display(&qemu_command(&cfg));
        assert!(s.contains("-cpu max,-smap"), "{s}");
        assert!(s.contains("isa-debug-exit,iobase=0xf4,iosize=0x04"), "{s}");
        assert!(
            s.contains(
                "-initrd /boot/vmlinuz console=hvc0 earlyprintk=xen rdinit=/init,/w/initrd.cpio.gz"
            ),
            "{s}"
        );
        assert!(xen_cmdline().contains("noreboot"));
    }
}
