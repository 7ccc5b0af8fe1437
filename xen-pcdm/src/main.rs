//! `xen-pcdm`: the PC device model for one HVM guest, run in dom0.
//!
//! ```text
//! xen-pcdm --domid N --memory MIB [--disk IMAGE] [--vcpus N]
//! ```
//! Serves the chipset, COM1 (the guest's serial output on stdout, stdin to the guest),
//! fw_cfg and, with `--disk`, a virtio-blk disk at 00:03.0 backed by the raw image. Prints
//! the requests served when the loop ends.

use std::process::ExitCode;

use xen_devicemodel::server::ServerBuilder;
use xen_devicemodel::{BufIoreqMode, DomId};
use xen_pcdm::blk::FileDisk;
use xen_pcdm::machine::{self, Config};

struct Args {
    dom: u16,
    memory_mib: u64,
    disk: Option<String>,
    vcpus: u16,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        dom: 0,
        memory_mib: 0,
        disk: None,
        vcpus: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--domid" => a.dom = v()?.parse().map_err(|e| format!("--domid: {e}"))?,
            "--memory" => a.memory_mib = v()?.parse().map_err(|e| format!("--memory: {e}"))?,
            "--disk" => a.disk = Some(v()?),
            "--vcpus" => a.vcpus = v()?.parse().map_err(|e| format!("--vcpus: {e}"))?,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.dom == 0 || a.memory_mib == 0 {
        return Err("usage: xen-pcdm --domid N --memory MIB [--disk IMAGE] [--vcpus N]".into());
    }
    Ok(a)
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
        serial_out: Box::new(std::io::stdout()),
        vcpus: args.vcpus,
    };
    let run = || -> xen_devicemodel::Result<()> {
        let builder = ServerBuilder::new(dom).buffered(BufIoreqMode::Atomic);
        let (builder, m) = machine::register(builder, cfg)?;
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
        let r = server.run();
        eprintln!("xen-pcdm: served {}", server.stats());
        if let Some(d) = &m.disk {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("xen-pcdm: disk {:?}", d.stats());
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
