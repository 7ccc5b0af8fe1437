//! `xen-pcdm`: the PC device model for one HVM guest, run in dom0.
//!
//! ```text
//! xen-pcdm --domid N --memory MIB [--disk IMAGE] [--vcpus N]
//!          [--kernel BZIMAGE [--init FILE] [--append WORDS]]
//! ```
//! Serves the chipset, COM1 (the guest's serial output on stdout, stdin to the guest),
//! fw_cfg and, with `--disk`, a virtio-blk disk at 00:03.0 backed by the raw image.
//!
//! With `--kernel` (and `--disk`), the guest boots that Linux kernel (dom0's own: the
//! initramfs takes busybox and the virtio modules from dom0) without a boot loader: the
//! disk's first sector is overwritten with [`xen_pcdm::linux`]'s boot sector. `--init`
//! names a file of shell commands the guest's init runs once the disk is there (default: a
//! shell on ttyS0, and power-off when it ends); `--append` adds kernel command-line words.
//!
//! It prints `xen-pcdm: serving domain N: ready` on stderr once set up (unpause the guest
//! then), and when the loop ends the requests served and its own peak resident memory.

use std::os::unix::fs::FileExt;
use std::process::ExitCode;

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{BufIoreqMode, DomId};
use xen_pcdm::blk::FileDisk;
use xen_pcdm::linux::{self, LinuxBoot};
use xen_pcdm::machine::{self, Config};

struct Args {
    dom: u16,
    memory_mib: u64,
    disk: Option<String>,
    vcpus: u16,
    kernel: Option<String>,
    init: Option<String>,
    append: Vec<String>,
}

const USAGE: &str = "usage: xen-pcdm --domid N --memory MIB [--disk IMAGE] [--vcpus N] \
                     [--kernel BZIMAGE [--init FILE] [--append WORDS]]";

/// What the guest's init runs without `--init`: a shell on the console (`poweroff` powers
/// the guest off at once, through ACPI), and power-off when it ends.
const DEFAULT_INIT: &str = r#"echo "alias poweroff='poweroff -f'; alias reboot='reboot -f'" >/etc/profile
export ENV=/etc/profile
setsid cttyhack sh
poweroff -f
"#;

fn parse() -> Result<Args, String> {
    let mut a = Args {
        dom: 0,
        memory_mib: 0,
        disk: None,
        vcpus: 1,
        kernel: None,
        init: None,
        append: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--domid" => a.dom = v()?.parse().map_err(|e| format!("--domid: {e}"))?,
            "--memory" => a.memory_mib = v()?.parse().map_err(|e| format!("--memory: {e}"))?,
            "--disk" => a.disk = Some(v()?),
            "--vcpus" => a.vcpus = v()?.parse().map_err(|e| format!("--vcpus: {e}"))?,
            "--kernel" => a.kernel = Some(v()?),
            "--init" => a.init = Some(v()?),
            "--append" => a.append.push(v()?),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.dom == 0 || a.memory_mib == 0 {
        return Err(USAGE.into());
    }
    if a.kernel.is_some() && a.disk.is_none() {
        return Err("--kernel needs --disk (the boot sector goes in its first sector)".into());
    }
    if a.kernel.is_none() && (a.init.is_some() || !a.append.is_empty()) {
        return Err("--init and --append need --kernel".into());
    }
    Ok(a)
}

/// Reads the kernel, builds the initramfs and the command line, and writes the boot sector
/// into the disk's first sector.
fn linux_boot(args: &Args, kernel: &str) -> Result<LinuxBoot, String> {
    // Only the setup is read: fw_cfg serves the kernel from the file.
    let bz = std::fs::File::open(kernel).map_err(|e| format!("{kernel}: {e}"))?;
    let body = match &args.init {
        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?,
        None => DEFAULT_INIT.to_owned(),
    };
    let initrd = linux::dom0_initramfs(&linux::Initramfs {
        init: linux::init_script(&body),
        extra: Vec::new(),
    })
    .map_err(|e| format!("the guest's initramfs: {e}"))?;
    let words: Vec<&str> = args.append.iter().map(String::as_str).collect();
    let boot = LinuxBoot::from_file(bz, initrd, &linux::cmdline(&words), args.memory_mib << 20)
        .map_err(|e| format!("{kernel}: {e}"))?;
    let disk = args.disk.as_deref().unwrap_or_default();
    std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .and_then(|f| f.write_all_at(&boot.boot_sector(), 0))
        .map_err(|e| format!("writing the boot sector to {disk}: {e}"))?;
    Ok(boot)
}

/// stdout without its line buffer: a shell's prompt ends without a newline and must show.
struct Unbuffered;

impl std::io::Write for Unbuffered {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout().lock();
        out.write_all(b)?;
        out.flush()?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// This process's peak resident memory (`VmHWM`), KiB.
fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xen-pcdm: {e}");
            return ExitCode::from(2);
        }
    };
    let dom = DomId::new(args.dom);
    let mut boot = match args.kernel.as_deref().map(|k| linux_boot(&args, k)) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            eprintln!("xen-pcdm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let disk = match args.disk.as_deref().map(|p| FileDisk::open(p.as_ref())) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("xen-pcdm: disk: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = Config {
        dom,
        ram_bytes: args.memory_mib << 20,
        disk,
        serial_out: Box::new(Unbuffered),
        vcpus: args.vcpus,
    };
    let run = || -> xen_devicemodel::Result<()> {
        let builder = ServerBuilder::new(dom).buffered(BufIoreqMode::Atomic);
        let (builder, m) = machine::register(builder, cfg)?;
        // Moved into fw_cfg: the kernel and the initramfs are held once for the run.
        if let Some(b) = boot.take() {
            b.install(&mut m.fw_cfg.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let mut server = builder.build()?;
        // The guest's poweroff ends the run (exit status 0).
        m.acpi_pm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stop_on_power_off(server.stop_handle());
        let irqs = server.interrupts();
        let uart = m.uart.clone();
        std::thread::spawn(move || {
            let _ = xen_pcdm::uart::pump_input(&uart, &irqs, std::io::stdin());
        });
        eprintln!("xen-pcdm: serving domain {}: ready", args.dom);
        let t0 = std::time::Instant::now();
        let r = server.run();
        eprintln!(
            "xen-pcdm: served {} in {:.1} s",
            server.stats(),
            t0.elapsed().as_secs_f64()
        );
        if let Some(d) = &m.disk {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("xen-pcdm: disk {:?}", d.stats());
        }
        if let Some(k) = peak_rss_kib() {
            eprintln!("xen-pcdm: peak resident memory (VmHWM of this process) {k} KiB");
        }
        r
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xen-pcdm: {e}");
            ExitCode::FAILURE
        }
    }
}
