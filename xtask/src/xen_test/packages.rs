//! The Debian packages xtask's tasks need, in one place: checked with `dpkg-query`, installed
//! with apt when we run as root, otherwise named in the exact `apt-get install` line to run.

use std::process::Command;

use crate::util;

/// xen-sys's generation and its ABI proof (`ci`'s `bindgen --check`).
pub const BINDGEN: &[&str] = &[
    "libclang-dev",               // bindgen's libclang
    "clang",                      // its builtin headers
    "libxen-dev",                 // the Xen public headers
    "linux-libc-dev",             // Linux's uapi headers (x86_64)
    "linux-libc-dev-arm64-cross", // ... and aarch64
    "gcc",                        // computes every size/offset/ioctl number a second time
    "gcc-aarch64-linux-gnu",      // ... for aarch64
];

/// The Xen test machine (`xen-test`, `demo`, and `ci`).
pub const MACHINE: &[&str] = &[
    "qemu-system-x86",           // the machine (TCG)
    "xen-hypervisor-4.17-amd64", // /boot/xen-4.17-amd64.gz
    "xen-utils-4.17",            // xl, xenstored, xenconsoled, xen-init-dom0, hvmloader
    "xenstore-utils",            // xenstore-read/-write/-ls in dom0, for tests and --shell
    "linux-image-amd64",         // dom0's kernel and its modules
    "busybox-static",            // dom0's shell and tools
    "seabios",                   // /usr/share/seabios/bios-256k.bin for HVM guests
    "cpio",                      // the initramfs archive
    "xz-utils",                  // unpacks the dom0 bzImage's payload (a faster dom0 build)
    "qemu-system-xen",           // libxl's own device model (QEMU 7.2), beside-QEMU tests
    "binutils",                  // readelf: the Xen 4.20 machine's libraries, from its ELF files
    "kmod",                      // depmod for the Xen 4.20 machine's unpacked kernel
    "debian-archive-keyring",    // verifies Debian 13's archive (the Xen 4.20 machine)
];

/// xen-testkit's test guest (`ci`): objcopy makes its ELF32 HVM-firmware image.
pub const GUEST: &[&str] = &["binutils"];

/// Whether dpkg knows `pkg` as installed. `None` when dpkg-query itself cannot run.
fn installed(pkg: &str) -> Option<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .ok()?;
    Some(out.status.success() && String::from_utf8_lossy(&out.stdout).ends_with(" installed"))
}

/// The apt line that installs `missing`.
pub fn install_line(missing: &[&str]) -> String {
    format!(
        "apt-get install --no-install-recommends {}",
        missing.join(" ")
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Makes sure every package in `sets` is installed; `task` names the xtask task in messages.
pub fn ensure(task: &str, sets: &[&[&'static str]]) -> Result<(), String> {
    let all = sets.concat();
    let mut missing = Vec::new();
    for p in &all {
        match installed(p) {
            Some(true) => {}
            Some(false) => missing.push(*p),
            None => {
                return Err(format!(
                    "{task} needs a Debian 12 machine (dpkg-query did not run); packages: {}",
                    all.join(" ")
                ))
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing Debian packages for `cargo xtask {task}`; install them with:\n    sudo {}",
            install_line(&missing)
        ));
    }
    eprintln!("{task}: installing {}", missing.join(" "));
    util::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_line_names_packages() {
        assert_eq!(
            install_line(&["cpio", "seabios"]),
            "apt-get install --no-install-recommends cpio seabios"
        );
    }
}
