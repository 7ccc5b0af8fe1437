//! `xen-bench`: the dom0 side of `cargo xtask bench`.
//!
//! ```text
//! xen-bench [--rounds N] [--payloads DIR] [--seq-mib N] [--rand-count N] [--lsr-count N]
//! ```
//!
//! It boots one Linux HVM guest (dom0's kernel, one initramfs, a virtio-blk disk on a raw
//! image of the same bytes, 256 MiB, one vCPU) `N` times with each device model, interleaved
//! (the order alternates per round): ours (xen-pcdm's binary, `--kernel` and `--init`) and
//! Debian's QEMU as libxl's device model. The guest runs `xen-bench-guest`
//! (sequential and random O_DIRECT reads, UART status reads) and powers off. Per boot it
//! prints one `BENCH-ROW` line that `cargo xtask bench` turns into the table:
//!
//! - `boot_s`: `xl unpause` to the guest's init marker on its serial console;
//! - `seq_mbs`, `iops`, `lsr_per_s`: what the guest measured by its own clock;
//! - `hwm_kib`, `rss_kib`: the device model's VmHWM and VmRSS when the guest is done;
//! - `ready_s`: the device model's start to ready (ours: spawn to its `ready` line after
//!   the ioreq server is set up; QEMU: its process start to `xl create -p` returning, as
//!   libxl waits for QEMU's ready state: an upper bound);
//! - `cpu_us_lsr`, `cpu_us_rand`: the device model's CPU time (utime + stime of the process)
//!   over the guest's port-read part and random-read part, divided by the requests the guest
//!   made there: one port read is one ioreq; one 4 KiB read is one virtio request (its
//!   doorbell write, the descriptor walk, the copy and the interrupt). The guest pauses half
//!   a second around each part, so the samples are taken while the device model is idle.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_pcdm::linux::{self, Initramfs, LinuxBoot};

/// The guest's RAM.
const MEM_MIB: u64 = 256;
/// The disk images: 80 MiB, all of it written (the 64 MiB sequential read and the random
/// reads read data, not holes).
const DISK_MIB: u64 = 80;
/// Where the run keeps its files in dom0.
const WORK: &str = "/tmp/xen-bench";
/// How long one boot may take from unpause to the guest's last line.
const GUEST_DEADLINE: Duration = Duration::from_secs(600);
/// How long the guest may print nothing (the boot to init took 73 s on a loaded host).
const GUEST_SILENCE: Duration = Duration::from_secs(240);
/// The line the guest prints when it is done.
const DONE: &str = "BENCH-DONE";
/// QEMU as libxl starts it.
const QEMU: &str = "/usr/libexec/xen-qemu-system-i386";

macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), "xen-bench: {}", format!($($t)*));
    }};
}

/// The two device models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dm {
    Ours,
    Qemu,
}

impl Dm {
    fn name(self) -> &'static str {
        match self {
            Dm::Ours => "ours",
            Dm::Qemu => "qemu",
        }
    }
}

#[derive(Debug)]
struct Opts {
    rounds: u32,
    payloads: PathBuf,
    seq_mib: u64,
    rand_count: u64,
    lsr_count: u64,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        rounds: 3,
        payloads: PathBuf::from(
            std::env::var("XEN_RS_PAYLOAD_DIR").unwrap_or_else(|_| "/opt/xen-rs".into()),
        ),
        seq_mib: 64,
        rand_count: 2000,
        lsr_count: 20000,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--rounds" => o.rounds = v()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--payloads" => o.payloads = PathBuf::from(v()?),
            "--seq-mib" => o.seq_mib = v()?.parse().map_err(|e| format!("--seq-mib: {e}"))?,
            "--rand-count" => {
                o.rand_count = v()?.parse().map_err(|e| format!("--rand-count: {e}"))?
            }
            "--lsr-count" => o.lsr_count = v()?.parse().map_err(|e| format!("--lsr-count: {e}"))?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if o.rounds == 0 || o.seq_mib == 0 || o.seq_mib > DISK_MIB {
        return Err(format!(
            "--rounds must be at least 1 and --seq-mib between 1 and {DISK_MIB}"
        ));
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(|o| bench(&o)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bench.

/// What each boot is made of, shared by both device models.
struct Setup {
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    /// The init's commands (xen-pcdm's `--init`).
    body: PathBuf,
    /// xen-pcdm's binary.
    pcdm: PathBuf,
    /// Our disk: the boot sector, then the data.
    disk: PathBuf,
    /// QEMU's: the same bytes with a blank first sector, because SeaBIOS boots a bootable
    /// disk before QEMU's direct-boot option ROM.
    qemu_disk: PathBuf,
    fake_dm: PathBuf,
}

/// The init's commands: the guest tool comes from the disk, past the data (so the
/// initramfs is the one xen-pcdm's `--init` builds, the same for both device models).
fn guest_body(o: &Opts, tool_len: usize) -> String {
    format!(
        "dd if=/dev/vda bs=1M skip={DISK_MIB} count={} 2>/dev/null | head -c {tool_len} >/bin/xen-bench-guest\n\
         chmod +x /bin/xen-bench-guest\n\
         echo BENCH-DISK-SECTORS $(cat /sys/block/vda/size)\n\
         /bin/xen-bench-guest seq /dev/vda {}\n\
         /bin/xen-bench-guest rand /dev/vda {} 1\n\
         /bin/xen-bench-guest lsr {}\n\
         echo {DONE}\n\
         sleep 1\n\
         poweroff -f\n",
        tool_len.div_ceil(1 << 20),
        o.seq_mib,
        o.rand_count,
        o.lsr_count
    )
}

fn prepare(o: &Opts) -> Result<Setup, String> {
    std::fs::create_dir_all(WORK).map_err(|e| format!("{WORK}: {e}"))?;
    let kernel = o.payloads.join("linux-guest.bzImage");
    let tool_path = o.payloads.join("xen-bench-guest");
    let tool = std::fs::read(&tool_path).map_err(|e| format!("{}: {e}", tool_path.display()))?;
    let body_text = guest_body(o, tool.len());
    let body = Path::new(WORK).join("init-body.sh");
    std::fs::write(&body, &body_text).map_err(|e| format!("{}: {e}", body.display()))?;
    // What xen-pcdm builds from `--init` (no extra words on the command line).
    let spec = Initramfs {
        init: linux::init_script(&body_text),
        extra: Vec::new(),
    };
    let initrd_data = linux::dom0_initramfs(&spec).map_err(|e| format!("initramfs: {e}"))?;
    let cmdline = linux::cmdline(&[]);
    let bz = std::fs::read(&kernel).map_err(|e| format!("{}: {e}", kernel.display()))?;
    let boot = LinuxBoot::new(&bz, initrd_data.clone(), &cmdline, MEM_MIB << 20)
        .map_err(|e| e.to_string())?;
    let initrd = Path::new(WORK).join("initrd.cpio");
    std::fs::write(&initrd, &initrd_data).map_err(|e| format!("{}: {e}", initrd.display()))?;
    // The disk: our boot sector (QEMU boots the kernel from xl's kernel/ramdisk and never
    // reads it), then data everywhere.
    let disk = Path::new(WORK).join("disk.img");
    let qemu_disk = Path::new(WORK).join("disk-qemu.img");
    let mut chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (path, first) in [(&disk, boot.boot_sector()), (&qemu_disk, [0u8; 512])] {
        let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for i in 0..DISK_MIB {
            chunk[600] = i as u8;
            f.write_all_at(&chunk, i << 20)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        // The tool, then zeros to a whole MiB.
        let mut t = tool.clone();
        t.resize(tool.len().div_ceil(1 << 20) << 20, 0);
        f.write_all_at(&t, DISK_MIB << 20)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all_at(&first, 0)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    say!(
        "guest: kernel {} ({} KiB), initramfs {} KiB, disk {DISK_MIB} MiB, {MEM_MIB} MiB RAM, 1 vCPU, command line `{cmdline}`",
        kernel.display(),
        bz.len() >> 10,
        initrd_data.len() >> 10
    );
    Ok(Setup {
        kernel,
        initrd,
        cmdline,
        body,
        pcdm: o.payloads.join("xen-pcdm"),
        disk,
        qemu_disk,
        fake_dm: o.payloads.join("xen-testkit-dm"),
    })
}

fn versions() {
    let out = |c: &mut Command| {
        c.output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let qemu = out(Command::new(QEMU).arg("--version"));
    let qemu = qemu.lines().next().unwrap_or("unknown").trim().to_owned();
    let info = out(Command::new("xl").arg("info"));
    let field = |k: &str| {
        info.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let xen = format!(
        "{}.{}{}",
        field("xen_major"),
        field("xen_minor"),
        field("xen_extra")
    );
    println!(
        "BENCH-VERSION qemu={} xen={} dom0={}",
        qemu.replace(' ', "_"),
        xen,
        out(Command::new("uname").arg("-r")).trim()
    );
}

fn bench(o: &Opts) -> Result<(), String> {
    let setup = prepare(o)?;
    versions();
    let mut failed = Vec::new();
    for round in 1..=o.rounds {
        let order = if round % 2 == 1 {
            [Dm::Ours, Dm::Qemu]
        } else {
            [Dm::Qemu, Dm::Ours]
        };
        for dm in order {
            say!("round {round}/{}: {}", o.rounds, dm.name());
            match boot_once(&setup, dm, round, o) {
                Ok(row) => {
                    let fields: Vec<String> =
                        row.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
                    println!(
                        "BENCH-ROW dm={} round={round} {}",
                        dm.name(),
                        fields.join(" ")
                    );
                }
                Err(e) => {
                    say!("round {round} {}: FAILED: {e}", dm.name());
                    failed.push(format!("round {round} {}: {e}", dm.name()));
                }
            }
        }
    }
    if failed.is_empty() {
        say!("all {} rounds done", o.rounds);
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// A line of the guest's serial console (or of our device model's stderr), when it arrived.
struct Line {
    at: Instant,
    text: String,
    stderr: bool,
}

fn pump(r: impl Read + Send + 'static, tx: Sender<Line>, stderr: bool) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    if tx
                        .send(Line {
                            at: Instant::now(),
                            text,
                            stderr,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
}

/// Follows a file QEMU writes the guest's serial output to, polling every 10 ms.
/// Ends when `stop` is set.
fn tail(path: PathBuf, tx: Sender<Line>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut off = 0u64;
        let mut part = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        while !stop.load(Ordering::Relaxed) {
            let n = std::fs::File::open(&path)
                .and_then(|f| f.read_at(&mut buf, off))
                .unwrap_or(0);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            off += n as u64;
            let at = Instant::now();
            for &b in &buf[..n] {
                if b == b'\n' {
                    let text = String::from_utf8_lossy(&part)
                        .trim_end_matches('\r')
                        .to_owned();
                    part.clear();
                    if tx
                        .send(Line {
                            at,
                            text,
                            stderr: false,
                        })
                        .is_err()
                    {
                        return;
                    }
                } else {
                    part.push(b);
                }
            }
        }
    });
}

fn xl(args: &[&str]) -> Result<String, String> {
    let o = Command::new("xl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("xl {}: {e}", args.join(" ")))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "xl {}: {}: {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

fn xl_config(s: &Setup, dm: Dm, name: &str, serial_log: &Path) -> String {
    let mut c = vec![
        format!("name = \"{name}\""),
        "type = \"hvm\"".into(),
        format!("memory = {MEM_MIB}"),
        format!("maxmem = {MEM_MIB}"),
        "vcpus = 1".into(),
        "on_poweroff = \"destroy\"".into(),
        "on_reboot = \"destroy\"".into(),
        "on_crash = \"destroy\"".into(),
        "device_model_version = \"qemu-xen\"".into(),
        "vga = \"none\"".into(),
        "vnc = 0".into(),
        "sdl = 0".into(),
        "nographic = 1".into(),
        "usb = 0".into(),
        "vkb_device = 0".into(),
        // QEMU 7.2's emulated SVM gives no next-RIP for RDTSCP (see the testbed notes).
        "tsc_mode = \"native\"".into(),
    ];
    match dm {
        Dm::Ours => {
            // libxl's handshake answered by the stand-in; the devices are ours.
            c.push(format!(
                "device_model_override = \"{}\"",
                s.fake_dm.display()
            ));
            c.push("serial = \"none\"".into());
        }
        Dm::Qemu => {
            c.push(format!("kernel = \"{}\"", s.kernel.display()));
            c.push(format!("ramdisk = \"{}\"", s.initrd.display()));
            c.push(format!("cmdline = \"{}\"", s.cmdline));
            c.push(format!("serial = \"file:{}\"", serial_log.display()));
            c.push(format!(
                "device_model_args_hvm = [ \"-drive\", \"file={},if=none,id=benchdisk,format=raw\", \"-device\", \"virtio-blk-pci,drive=benchdisk,addr=0x3\" ]",
                s.qemu_disk.display()
            ));
        }
    }
    c.join("\n") + "\n"
}

/// What the device model's process did so far: CPU time, read- and write-class system
/// calls (/proc/PID/io, all threads), and the main thread's voluntary and involuntary
/// context switches (where both device models serve ioreqs).
#[derive(Debug, Default)]
struct Sample {
    cpu: Option<f64>,
    io: BTreeMap<String, f64>,
}

impl Sample {
    fn take(pid: u32) -> Sample {
        let mut io: BTreeMap<String, f64> = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| matches!(*k, "syscr" | "syscw"))
            .filter_map(|(k, v)| Some((k.to_owned(), v.trim().parse().ok()?)))
            .collect();
        for (k, name) in [
            ("voluntary_ctxt_switches:", "vcs"),
            ("nonvoluntary_ctxt_switches:", "nvcs"),
        ] {
            if let Some(v) = status_kib(pid, k) {
                io.insert(name.into(), v);
            }
        }
        Sample {
            cpu: cpu_secs(pid),
            io,
        }
    }

    /// `cpu_us_PART`, `syscr_PART`, ... per request since `a`, into `row`.
    fn per_request(&self, a: &Sample, n: f64, part: &str, row: &mut BTreeMap<String, f64>) {
        if let (Some(b), Some(a)) = (self.cpu, a.cpu) {
            row.insert(format!("cpu_us_{part}"), (b - a) * 1e6 / n);
        }
        for (k, b) in &self.io {
            if let Some(a) = a.io.get(k) {
                row.insert(format!("{k}_{part}"), (b - a) / n);
            }
        }
    }
}

/// /proc/PID/stat's utime + stime, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

/// The process's start, in seconds since boot.
fn start_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(19)?.parse::<u64>().ok()? as f64 / clk_tck())
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A `VmXXX:` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The QEMU process serving `domid` (its command line has `-xen-domid N`).
fn qemu_pid(domid: u16) -> Option<u32> {
    let want = format!("\0-xen-domid\0{domid}\0");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd).contains(&want).then_some(pid)
    })
}

/// The guest's `key=value` fields after `BENCH-RESULT name`.
fn fields(line: &str) -> BTreeMap<String, f64> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Ends the domain and the device model whatever happened.
struct Cleanup {
    domid: Option<u16>,
    child: Option<Child>,
    stop: Arc<AtomicBool>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.domid {
            let _ = xl(&["destroy", &d.to_string()]);
        }
        if let Some(c) = &mut self.child {
            for _ in 0..50 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn boot_once(s: &Setup, dm: Dm, round: u32, o: &Opts) -> Result<BTreeMap<String, f64>, String> {
    let name = format!("xen-bench-{}-{round}", dm.name());
    let dir = Path::new(WORK);
    let serial_log = dir.join(format!("{name}.serial"));
    let _ = std::fs::remove_file(&serial_log);
    let cfg_path = dir.join(format!("{name}.cfg"));
    std::fs::write(&cfg_path, xl_config(s, dm, &name, &serial_log))
        .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let mut row = BTreeMap::new();
    let mut clean = Cleanup {
        domid: None,
        child: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let created = xl(&["create", "-p", &cfg_path.to_string_lossy()]);
    let created_at = uptime();
    if let Err(e) = created {
        let _ = xl(&["destroy", &name]);
        if dm == Dm::Qemu {
            let log = format!("/var/log/xen/qemu-dm-{name}.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{e}; {log}: {text}"));
        }
        return Err(e);
    }
    let domid: u16 = xl(&["domid", &name])?
        .trim()
        .parse()
        .map_err(|e| format!("xl domid {name}: {e}"))?;
    clean.domid = Some(domid);
    let (tx, rx) = channel();
    let pid = match dm {
        Dm::Ours => {
            let t = Instant::now();
            let mut child = Command::new(&s.pcdm)
                .args(["--domid", &domid.to_string()])
                .args(["--memory", &MEM_MIB.to_string()])
                .arg("--disk")
                .arg(&s.disk)
                .arg("--kernel")
                .arg(&s.kernel)
                .arg("--init")
                .arg(&s.body)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting our device model: {e}"))?;
            let pid = child.id();
            if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) {
                pump(out, tx.clone(), false);
                pump(err, tx.clone(), true);
            }
            clean.child = Some(child);
            let ready = wait_line(&rx, Duration::from_secs(60), |l| {
                l.stderr && l.text.contains("xen-pcdm: serving domain") && l.text.ends_with("ready")
            })?;
            row.insert("ready_s".into(), (ready - t).as_secs_f64());
            pid
        }
        Dm::Qemu => {
            let pid = qemu_pid(domid).ok_or("no QEMU process for the domain")?;
            if round == 1 {
                let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                say!(
                    "QEMU: {}",
                    String::from_utf8_lossy(&argv).replace('\0', " ").trim()
                );
            }
            if let Some(start) = start_secs(pid) {
                row.insert("ready_s".into(), created_at - start);
            }
            tail(serial_log.clone(), tx.clone(), clean.stop.clone());
            pid
        }
    };
    drop(tx);
    let t0 = Instant::now();
    xl(&["unpause", &domid.to_string()])?;
    let mut begin = BTreeMap::new();
    let mut done = false;
    while !done {
        let left = GUEST_DEADLINE.saturating_sub(t0.elapsed());
        let l = match rx.recv_timeout(left.min(GUEST_SILENCE)) {
            Ok(l) => l,
            Err(_) => {
                return Err(format!(
                    "the guest did not finish: silent for {} s or over {} s in all (device model pid {pid} alive: {})",
                    GUEST_SILENCE.as_secs(),
                    GUEST_DEADLINE.as_secs(),
                    Path::new(&format!("/proc/{pid}")).exists()
                ))
            }
        };
        let text = l.text.trim_start_matches('\0');
        say!(
            "{:7.2} s {}{} {text}",
            (l.at - t0).as_secs_f64(),
            dm.name(),
            if l.stderr { "!" } else { "|" }
        );
        if text.contains(linux::INIT_MARKER) && !row.contains_key("boot_s") {
            row.insert("boot_s".into(), (l.at - t0).as_secs_f64());
        } else if let Some(part) = text.strip_prefix("BENCH-BEGIN ") {
            begin.insert(part.trim().to_owned(), Sample::take(pid));
        } else if let Some(r) = text.strip_prefix("BENCH-RESULT ") {
            let part = r.split_whitespace().next().unwrap_or_default().to_owned();
            let f = fields(r);
            let (key, value, requests) = match part.as_str() {
                "seq" => ("seq_mbs", "mbs", None),
                "rand" => ("iops", "iops", Some(o.rand_count)),
                "lsr" => ("lsr_per_s", "per_sec", Some(o.lsr_count)),
                _ => continue,
            };
            row.insert(key.into(), f.get(value).copied().unwrap_or(0.0));
            if let (Some(n), Some(a)) = (requests, begin.get(&part)) {
                Sample::take(pid).per_request(a, n as f64, &part, &mut row);
            }
        } else if text.starts_with("BENCH-ERROR") {
            return Err(format!("the guest: {text}"));
        } else if text.starts_with(DONE) {
            row.insert("hwm_kib".into(), status_kib(pid, "VmHWM:").unwrap_or(0.0));
            row.insert("rss_kib".into(), status_kib(pid, "VmRSS:").unwrap_or(0.0));
            if let Some(c) = cpu_secs(pid) {
                row.insert("cpu_total_s".into(), c);
            }
            done = true;
        }
    }
    // The guest powers off; our device model ends with it (its last lines are its counters).
    let gone = Instant::now();
    let mut late = Vec::new();
    while gone.elapsed() < Duration::from_secs(30) {
        if xl(&["list", &domid.to_string()]).is_err() {
            break;
        }
        while let Ok(l) = rx.try_recv() {
            say!(
                "{}{} {}",
                dm.name(),
                if l.stderr { "!" } else { "|" },
                l.text
            );
            late.push(l.text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(clean);
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
        say!(
            "{}{} {}",
            dm.name(),
            if l.stderr { "!" } else { "|" },
            l.text
        );
        late.push(l.text);
    }
    // Ours counts what it served over the whole boot (by kind).
    if let Some(f) = late
        .iter()
        .find(|t| t.contains("xen-pcdm: served"))
        .map(|t| fields(t))
    {
        let total: f64 = ["port", "mmio", "pci-config", "buffered", "other"]
            .iter()
            .filter_map(|k| f.get(*k))
            .sum();
        if total > 0.0 {
            row.insert("served".into(), total);
        }
    }
    for k in ["boot_s", "seq_mbs", "iops", "lsr_per_s"] {
        if !row.contains_key(k) {
            return Err(format!("no {k} measured"));
        }
    }
    Ok(row)
}

/// Waits for a line that `want` accepts (echoing everything) and returns when it came.
fn wait_line(
    rx: &Receiver<Line>,
    timeout: Duration,
    want: impl Fn(&Line) -> bool,
) -> Result<Instant, String> {
    let t = Instant::now();
    loop {
        let left = timeout.saturating_sub(t.elapsed());
        let l = rx
            .recv_timeout(left)
            .map_err(|_| format!("nothing ready within {} s", timeout.as_secs()))?;
        say!("{}{}", if l.stderr { "ours! " } else { "ours| " }, l.text);
        if want(&l) {
            return Ok(l.at);
        }
    }
}
