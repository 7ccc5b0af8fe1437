//! Booting Xen and dom0 under QEMU (TCG), streaming and logging the serial console, on a
//! deadline.
//!
//! QEMU's flags are the measured ones (see `shared/xen-testbed.md`): q35, `-cpu max,-smap` (QEMU
//! 7.2's plain `max` crashes the PV dom0 at its first exception; 10.x works either way), Xen as
//! the multiboot kernel, dom0's kernel and initramfs as its modules, and isa-debug-exit at 0xf4
//! so dom0 ends the run with a status: byte v gives QEMU exit status `(v << 1) | 1`.
//!
//! Choices of ours: `bootscrub=0` (Xen would otherwise write all free RAM at boot, making
//! QEMU's resident memory the whole 2 GiB; measured peak without guests ~0.5 GiB instead of
//! 1.4 GiB), dom0 with 512 MiB (building a bigger dom0 costs boot time; guests get the rest),
//! and Xen's credit scheduler (`sched=credit`) instead of its default, credit2.
//!
//! Why credit: on a busy host the emulated CPUs stall for long stretches (their QEMU threads
//! are not scheduled), so Xen sees time jump and charges the running vCPU for it. With credit2
//! the machine then stopped: caught by the silence watchdog, both of Xen's CPUs sat in the idle
//! loop (`hlt`, QEMU's `info registers`), dom0's only vCPU was runnable in credit2's run queue
//! with its credit at the minimum (debug key `r`: `RUNQ: [0.0] ... credit=-10000000`,
//! `tickled: 0`, both CPUs `current=d[IDLE]`), and nothing woke them: dom0 did not run for 60 s
//! (its soft-lockup report), so a guest blocked on an ioreq dom0 would serve waited too. Seen
//! with QEMU 7.2 (multi-threaded and `thread=single` TCG) and QEMU 10.0 alike, so a scheduler
//! lost wake-up in Xen, not the emulator. Under the same load with `sched=credit` it did not
//! happen (numbers in the commit that made the change).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::report::Transcript;
use crate::util;

/// Machine size: RAM for the whole machine, and dom0's share (the rest is for test guests).
/// dom0 runs from its initramfs, unpacked into a tmpfs that may fill half of dom0's RAM: with
/// Debian 13's larger userland (170 MB unpacked) 512 MiB left `/var/lib/xen` without space.
const MACHINE_MEM_MIB: u32 = 2048;
const DOM0_MEM: &str = "1024M";
/// After a fatal sign (a Xen panic, dom0's death), how long to keep reading before ending QEMU.
const FATAL_GRACE: Duration = Duration::from_secs(3);
/// How many hidden lines to show after a machine failure (the whole log is in the log file).
const HIDDEN_TAIL: usize = 200;
/// After asking a silent machine for its state, how long to collect the answers.
const DIAGNOSIS_GRACE: Duration = Duration::from_secs(15);
/// How long one QMP exchange may take (a wedged QEMU must not wedge us).
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

/// When a run is over: a machine that prints nothing for `silence` is taken as hung (it is
/// asked for its state, which is printed, and ended at once); otherwise the run may last
/// `base`, and each sign of progress (a test or an executable finished) moves the deadline to
/// at least `progress` later, never beyond `cap` after the start. So a slow machine that keeps
/// going finishes, and a stuck one is named quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// No console output for this long: hung.
    pub silence: Duration,
    /// The deadline without progress.
    pub base: Duration,
    /// How far each sign of progress pushes the deadline.
    pub progress: Duration,
    /// The hard limit.
    pub cap: Duration,
}

impl Deadlines {
    /// A fixed deadline of `d` with the default silence watchdog.
    pub fn fixed(d: Duration) -> Deadlines {
        Deadlines {
            silence: DEFAULT_SILENCE,
            base: d,
            progress: Duration::ZERO,
            cap: d,
        }
    }

    /// The deadline (from the start) given the time of the last progress.
    pub fn deadline(&self, last_progress: Option<Duration>) -> Duration {
        let d = match last_progress {
            Some(p) => self.base.max(p + self.progress),
            None => self.base,
        };
        d.min(self.cap.max(self.base))
    }
}

/// How long a machine may stay silent. dom0 prints a heartbeat line every
/// [`super::init_script::HEARTBEAT_SECS`] seconds, so only a machine that stopped (or whose
/// dom0 stopped scheduling) stays silent this long, even on a busy host.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(60);

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
    /// When to give up (none for `--shell`).
    pub timeout: Option<Deadlines>,
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
         loglvl=all guest_loglvl=all noreboot console_timestamps=boot bootscrub=0 sched=credit"
    )
}

/// dom0's command line (no commas: QEMU splits `-initrd` on them).
pub const DOM0_CMDLINE: &str = "console=hvc0 earlyprintk=xen rdinit=/init";

/// Where QEMU's QMP socket goes for a run by this process (short: a socket path has at most
/// 107 bytes).
pub fn qmp_socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("xen-rs-qmp-{}.sock", std::process::id()))
}

/// The QEMU command for `cfg`: no monitor on the console, but a QMP socket
/// ([`qmp_socket_path`]) to ask the emulated CPUs' state when the machine goes silent.
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
        .args(["-monitor", "none", "-qmp"])
        .arg(format!(
            "unix:{},server=on,wait=off",
            qmp_socket_path().display()
        ))
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
            .map(|t| format!(
                " (deadline {} s, longer while tests progress, at most {} s; silence limit {} s)",
                t.base.as_secs(),
                t.cap.max(t.base).as_secs(),
                t.silence.as_secs()
            ))
            .unwrap_or_default()
    );
    // Not interactive: our own pipe, to send Xen's debug keys and dom0's sysrq to a silent
    // machine.
    cmd.stdin(if cfg.shell {
        Stdio::inherit()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let qmp = qmp_socket_path();
    let _ = fs::remove_file(&qmp);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", cfg.qemu.display()))?;
    let result = watch(cfg, &mut child, log, start);
    // Whatever happened, QEMU must not outlive us.
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let _ = fs::remove_file(&qmp);
    result
}

fn watch(
    cfg: &Config,
    child: &mut Child,
    log: fs::File,
    start: Instant,
) -> Result<Outcome, String> {
    let mut stdout = child.stdout.take().ok_or("no stdout from QEMU")?;
    let mut stdin = child.stdin.take();
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
    let mut stdout_term = std::io::stdout();
    let mut raw = false;
    let mut last_output = Instant::now();
    let mut progress_seen = 0u64;
    let mut last_progress: Option<Duration> = None;
    // Set once the machine went silent and was asked for its state: when to end it.
    let mut diagnosis_until: Option<Instant> = None;

    loop {
        let now = Instant::now();
        let mut wait = Duration::from_millis(500);
        if let Some(d) = cfg.timeout {
            let deadline = start + d.deadline(last_progress);
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        match rx.recv_timeout(wait) {
            Ok(chunk) => {
                last_output = Instant::now();
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
                if t.progress != progress_seen {
                    progress_seen = t.progress;
                    last_progress = Some(start.elapsed());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(k) = peak_rss_kib(pid) {
            peak = Some(peak.map_or(k, |p: u64| p.max(k)));
        }
        let now = Instant::now();
        if let Some(d) = cfg.timeout {
            let silent = now.duration_since(last_output);
            if diagnosis_until.is_none() && !killed && silent >= d.silence {
                problems.push(format!(
                    "the machine printed nothing for {} s (at {:.0} s after QEMU started): \
                     taken as hung; its state (QEMU's CPUs, Xen's debug keys, dom0's sysrq) \
                     is printed above",
                    silent.as_secs(),
                    start.elapsed().as_secs_f64()
                ));
                println!(
                    "---- {}: the machine printed nothing for {} s; asking QEMU, Xen and dom0 \
                     for their state:",
                    cfg.label,
                    silent.as_secs()
                );
                // From here on every console line is shown: it is the diagnosis.
                con.verbose = true;
                con.screen = None;
                for l in qmp_diagnosis(&qmp_socket_path()) {
                    println!("qemu: {l}");
                }
                if let Some(w) = stdin.as_mut() {
                    ask_over_serial(w);
                }
                diagnosis_until = Some(Instant::now() + DIAGNOSIS_GRACE);
            }
            let deadline = start + d.deadline(last_progress);
            if now >= deadline && !killed && diagnosis_until.is_none() {
                problems.push(format!(
                    "timed out after {} s{}; QEMU killed (raise the deadline with --timeout SECS)",
                    start.elapsed().as_secs(),
                    match last_progress {
                        Some(p) => format!(
                            " (the last test finished {} s before)",
                            start.elapsed().saturating_sub(p).as_secs()
                        ),
                        None => String::new(),
                    }
                ));
                let _ = child.kill();
                killed = true;
            }
        }
        if let Some(u) = diagnosis_until {
            if now >= u && !killed {
                println!("---- {}: end of the diagnosis; QEMU killed", cfg.label);
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
    drop(stdin);
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
    if machine_failed && !cfg.verbose && !con.hidden.is_empty() {
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

/// Asks a silent machine for its state over the serial console: Ctrl-A three times switches
/// the console's input to Xen, which then takes debug keys (`q` domains and vCPUs, `e` event
/// channels, `r` run queues, `d` registers and stacks of every CPU); three more give the input
/// back to dom0, whose console (hvc) takes Ctrl-O + key as sysrq (`w` blocked tasks, `l`
/// backtraces of the active CPUs). The answers arrive on the console.
fn ask_over_serial(w: &mut ChildStdin) {
    let mut keys: Vec<u8> = Vec::new();
    keys.extend_from_slice(b"\x01\x01\x01");
    keys.extend_from_slice(b"qerd");
    keys.extend_from_slice(b"\x01\x01\x01");
    keys.extend_from_slice(b"\x0fw\x0fl");
    // One key at a time, with a pause: the emulated UART has a small FIFO, and Xen's key
    // handlers print a lot.
    for k in keys {
        if w.write_all(&[k]).and_then(|()| w.flush()).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(if k < 0x20 { 50 } else { 700 }));
    }
}

/// Asks QEMU over QMP for its run state and the emulated CPUs' registers; the answer's lines,
/// or why there is none (a QEMU whose main loop is stuck does not answer: that is a finding
/// too).
pub fn qmp_diagnosis(socket: &Path) -> Vec<String> {
    match qmp_ask(
        socket,
        &["query-status", "info cpus", "info registers -a", "x/8i $pc"],
    ) {
        Ok(v) => v,
        Err(e) => vec![format!("no answer over QMP ({}): {e}", socket.display())],
    }
}

fn qmp_ask(socket: &Path, questions: &[&str]) -> Result<Vec<String>, String> {
    let s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(QMP_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(QMP_TIMEOUT)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let mut w = s.try_clone().map_err(|e| format!("socket clone: {e}"))?;
    let mut r = BufReader::new(s);
    let mut reply = |w: &mut UnixStream, cmd: Option<serde_json::Value>| {
        if let Some(c) = cmd {
            w.write_all(format!("{c}\n").as_bytes())
                .map_err(|e| format!("write: {e}"))?;
        }
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => return Err("QEMU closed the socket".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("bad JSON ({e}): {line}"))?;
            // Events ("event") may come in between; the greeting has "QMP".
            if v.get("return").is_some() || v.get("error").is_some() || v.get("QMP").is_some() {
                return Ok(v);
            }
        }
    };
    reply(&mut w, None)?;
    reply(
        &mut w,
        Some(serde_json::json!({"execute": "qmp_capabilities"})),
    )?;
    let mut out = Vec::new();
    for q in questions {
        let cmd = if q.starts_with("query-") {
            serde_json::json!({"execute": q})
        } else {
            serde_json::json!({"execute": "human-monitor-command",
                               "arguments": {"command-line": q}})
        };
        out.push(format!("({q})"));
        match reply(&mut w, Some(cmd)) {
            Ok(v) => match &v["return"] {
                serde_json::Value::String(text) => {
                    out.extend(text.lines().map(str::to_string));
                }
                serde_json::Value::Null => out.push(v.to_string()),
                other => out.push(other.to_string()),
            },
            Err(e) => {
                out.push(format!("no answer: {e}"));
                break;
            }
        }
    }
    Ok(out)
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
        assert!(xen_cmdline().contains(" sched=credit"));
        assert!(s.contains("-monitor none -qmp unix:"), "{s}");
        assert!(s.contains(",server=on,wait=off"), "{s}");
    }

    #[test]
    fn qmp_questions_and_answers() {
        use std::os::unix::net::UnixListener;
        let path =
            std::env::temp_dir().join(format!("xen-rs-qmp-test-{}.sock", std::process::id()));
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        // A stand-in for QEMU: greeting, then one answer per command (an event in between).
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 0 {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                seen.push(v.clone());
                let answer = match v["execute"].as_str().unwrap() {
                    "query-status" => serde_json::json!({"return": {"status": "running"}}),
                    "human-monitor-command" => {
                        w.write_all(b"{\"event\": \"RESUME\"}\n").unwrap();
                        let c = v["arguments"]["command-line"].as_str().unwrap();
                        serde_json::json!({"return": format!("{c}: line 1\r\nline 2\r\n")})
                    }
                    _ => serde_json::json!({"return": {}}),
                };
                w.write_all(format!("{answer}\n").as_bytes()).unwrap();
                line.clear();
            }
            seen
        });
        let out = qmp_ask(&path, &["query-status", "info cpus"]).unwrap();
        assert_eq!(
            out,
            [
                "(query-status)",
                r#"{"status":"running"}"#,
                "(info cpus)",
                "info cpus: line 1",
                "line 2"
            ]
        );
        let seen = server.join().unwrap();
        assert_eq!(seen[0]["execute"], "qmp_capabilities");
        assert_eq!(seen.len(), 3);
        let _ = fs::remove_file(&path);
        // Nobody listening: a message, not an error or a hang.
        let d = qmp_diagnosis(&path);
        assert!(d[0].starts_with("no answer over QMP"), "{d:?}");
    }

    #[test]
    fn deadlines_grow_with_progress_up_to_the_cap() {
        let s = Duration::from_secs;
        let d = Deadlines {
            silence: s(60),
            base: s(300),
            progress: s(330),
            cap: s(1200),
        };
        assert_eq!(d.deadline(None), s(300));
        // Early progress does not shorten the deadline.
        assert_eq!(d.deadline(Some(s(10))), s(340));
        assert_eq!(d.deadline(Some(s(0))), s(330));
        // A run that keeps finishing tests goes on...
        assert_eq!(d.deadline(Some(s(500))), s(830));
        // ...but never beyond the cap.
        assert_eq!(d.deadline(Some(s(1000))), s(1200));
        let f = Deadlines::fixed(s(180));
        assert_eq!(f.deadline(None), s(180));
        assert_eq!(f.deadline(Some(s(170))), s(180));
        assert_eq!(f.silence, DEFAULT_SILENCE);
    }
}
