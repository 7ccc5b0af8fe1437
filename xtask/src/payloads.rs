//! Guest payloads and helper programs that go into the Xen test machine's dom0.
//!
//! Everything lands under `/opt/xen-rs/` in dom0 (the tests see that directory as
//! `XEN_RS_PAYLOAD_DIR`); `xen-testkit` knows these names (`xen_testkit::payload`):
//!
//! - `testguest-hvm.elf`: the tiny test guest (`xen-testkit/guest`) as an ELF32 image without Xen
//!   notes, the form libxc's HVM firmware loader accepts (xl's `firmware_override`);
//! - `testguest-pvh.elf`: the same guest as ELF64 with only the `XEN_ELFNOTE_PHYS32_ENTRY` note,
//!   a PVH kernel (xl's `kernel` with `type = "pvh"`);
//! - `testguest-pv.elf`: the same guest as ELF64 with only the PV notes (entry `pv_entry`, which
//!   just blocks), a PV kernel;
//! - `linux-guest.bzImage`: dom0's kernel image, for HVM guests that boot Linux (xen-pcdm);
//! - `xen-testkit-dm`: the fake device model (`xen-testkit/src/bin/xen-testkit-dm.rs`) that xl's
//!   `device_model_override` starts for HVM guests: it answers libxl's QMP handshake and writes
//!   the device-model state to xenstore.
//!
//! The guest is a separate package (excluded from the workspace) built for `x86_64-unknown-none`
//! with its own linker script; its `.cargo/config.toml` picks the target and its build script the
//! linker script, so a plain `cargo build --release` in `xen-testkit/guest` builds it too.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;
use crate::xen_test::{build, packages};

/// A file to place in dom0: where it is on the host, and its path inside dom0.
pub struct Payload {
    /// The file on the host.
    pub host: PathBuf,
    /// Its absolute path inside dom0's initramfs.
    pub dom0: String,
}

/// The bare-metal target the guest is built for.
const GUEST_TARGET: &str = "x86_64-unknown-none";

/// Builds every payload and returns what must be copied into dom0.
pub fn build() -> Result<Vec<Payload>, String> {
    let root = util::workspace_root();
    let guest_dir = root.join("xen-testkit/guest");
    let out_dir = root.join("target/xen-testkit-guest");

    // The guest, with the cargo that invoked us (its .cargo/config.toml sets target and flags).
    let mut cargo = util::cargo();
    cargo
        .current_dir(&guest_dir)
        .args(["build", "--release", "--target", GUEST_TARGET])
        .env("CARGO_TARGET_DIR", &out_dir)
        // The host's flags (e.g. from `cargo xtask ci`) are not for bare metal.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    util::ensure_rust_target(GUEST_TARGET)?;
    packages::ensure("xen-test", &[packages::GUEST])?; // objcopy, for the guest images below
    util::run(&mut cargo)?;
    let elf64 = out_dir.join(GUEST_TARGET).join("release/xen-testkit-guest");
    // One build, three images: each loader gets only the notes it wants. The PVH and PV images stay
    // ELF64; libxc's HVM firmware loader wants ELF32 and refuses images with Xen notes (it takes
    // those for PV/PVH kernels). The code is position-dependent and below 4 GiB, so the class
    // change is only a container change.
    let pvh = out_dir.join("testguest-pvh.elf");
    let pv = out_dir.join("testguest-pv.elf");
    let hvm = out_dir.join("testguest-hvm.elf");
    let objcopy = |args: &[&str], out: &Path| -> Result<(), String> {
        util::run(Command::new("objcopy").args(args).arg(&elf64).arg(out))
    };
    objcopy(&["--remove-section", ".note.XenPV"], &pvh)?;
    objcopy(&["--remove-section", ".note.Xen"], &pv)?;
    objcopy(
        &[
            "-O",
            "elf32-i386",
            "--remove-section",
            ".note.Xen",
            "--remove-section",
            ".note.XenPV",
        ],
        &hvm,
    )?;

    let dir = "/opt/xen-rs";
    Ok(vec![
        fake_dm()?,
        Payload {
            host: hvm,
            dom0: format!("{dir}/testguest-hvm.elf"),
        },
        Payload {
            host: pvh,
            dom0: format!("{dir}/testguest-pvh.elf"),
        },
        Payload {
            host: pv,
            dom0: format!("{dir}/testguest-pv.elf"),
        },
        linux_guest_kernel()?,
    ])
}

/// dom0's own kernel image (the bzImage), also booted as an HVM guest's kernel by the PC
/// device model's tests: `/opt/xen-rs/linux-guest.bzImage`.
pub fn linux_guest_kernel() -> Result<Payload, String> {
    let sys = crate::xen_test::system::System::find()?;
    Ok(Payload {
        host: sys.kernel,
        dom0: "/opt/xen-rs/linux-guest.bzImage".into(),
    })
}

/// Builds the fake device model alone (a binary of xen-testkit, built like the test
/// executables): `/opt/xen-rs/xen-testkit-dm`.
pub fn fake_dm() -> Result<Payload, String> {
    let mut cargo = util::cargo();
    cargo.args([
        "build",
        "-p",
        "xen-testkit",
        "--bin",
        "xen-testkit-dm",
        "--message-format=json-render-diagnostics",
    ]);
    Ok(Payload {
        host: build_binary(cargo, "xen-testkit-dm")?,
        dom0: "/opt/xen-rs/xen-testkit-dm".into(),
    })
}

/// Runs a `cargo build --message-format=json...` and returns the executable named `name`.
pub fn build_binary(mut cargo: Command, name: &str) -> Result<PathBuf, String> {
    eprintln!("+ {}", util::display(&cargo));
    let out = cargo
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", util::display(&cargo)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            util::display(&cargo),
            out.status
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(build::executable_artifact)
        .map(|(_, exe)| exe)
        .find(|exe| exe.file_name().is_some_and(|f| f == name))
        .ok_or_else(|| {
            format!(
                "`{}` built no executable named {name}",
                util::display(&cargo)
            )
        })
}
