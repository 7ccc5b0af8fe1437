//! `firmware_dm <domid> [--until TEXT] [--timeout SECS] [--restrict] [--verbose]`: serves an
//! hvmloader + SeaBIOS guest created paused; see [`xen_firmware_dm::cli`].

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(xen_firmware_dm::cli::run(std::env::args().skip(1)))
}
