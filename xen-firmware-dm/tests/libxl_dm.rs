//! The `libxl_dm` program end to end (`cargo xtask xen-test -p xen-firmware-dm stock_host`): `xl`
//! starts this very executable as the guest's device model (`device_model_override`), which then
//! runs the program's code (the library's `libxl_dm::run`); libxl's handshake completes, hvmloader and SeaBIOS run on our
//! devices, and `xl pause`/`unpause`/`destroy` work as with QEMU.
//!
//! No libtest harness: libxl passes QEMU's command line, which libtest would refuse. Without
//! `--include-ignored` (a plain `cargo test`) it only says it needs Xen.

use std::time::{Duration, Instant};

use xen_firmware_dm::libxl_dm as dm;
use xen_testkit::{require_xen, Guest, GuestConfig};

const NAME: &str = "stock_host_libxl_dm_runs_as_xls_device_model";

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "-xen-domid") {
        return std::process::ExitCode::from(dm::run(argv));
    }
    let filter = argv.iter().find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !NAME.contains(f.as_str()) && !"libxl_dm".contains(f.as_str())) {
        println!("{NAME}: filtered out");
        return std::process::ExitCode::SUCCESS;
    }
    if !argv
        .iter()
        .any(|a| a == "--include-ignored" || a == "--ignored")
    {
        println!("{NAME}: ignored, needs Xen: cargo xtask xen-test");
        return std::process::ExitCode::SUCCESS;
    }
    stock_host_libxl_dm_runs_as_xls_device_model();
    println!("{NAME}: ok");
    std::process::ExitCode::SUCCESS
}

fn wait_for_log(path: &str, text: &str, secs: u64) -> String {
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(text) || t0.elapsed() > Duration::from_secs(secs) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stock_host_libxl_dm_runs_as_xls_device_model() {
    require_xen();
    let exe = std::env::current_exe().unwrap();
    // Created running: libxl starts us, waits for the state key, talks QMP, unpauses.
    let g = Guest::create(
        &GuestConfig::hvm_hvmloader()
            .device_model(&exe)
            .paused(false),
    )
    .unwrap();
    let log_path = format!("/var/log/xen/qemu-dm-{}.log", g.name());
    let log = wait_for_log(&log_path, "No bootable device", 90);
    println!("{log_path}:\n{log}");
    assert!(log.contains("libxl_dm: ready"), "{log}");
    assert!(log.contains("qmp_capabilities"), "{log}");
    assert!(log.contains("guest| SeaBIOS (version"), "{log}");
    assert!(log.contains("guest| No bootable device"), "{log}");
    // Pause and unpause go through QMP too.
    g.pause().unwrap();
    g.unpause().unwrap();
    let log = wait_for_log(&log_path, "qmp Cont", 30);
    assert!(log.contains("libxl_dm: qmp Cont"), "{log}");
    g.destroy().unwrap();
}
