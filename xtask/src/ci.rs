//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use crate::util::{self, cargo};
use crate::xen_test::packages;

/// Runs the whole suite. `args` may hold `--no-xen` to skip the Xen machine (for quick local runs;
/// CI never passes it).
pub fn run(args: &[String]) -> Result<(), String> {
    let no_xen = args.iter().any(|a| a == "--no-xen");
    // What a fresh Debian machine lacks: Debian packages (one list, shared with xen-test and the
    // demo) and the Rust targets of the aarch64 check and of the bare-metal test guest.
    packages::ensure(
        "ci",
        &[packages::BINDGEN, packages::MACHINE, packages::GUEST],
    )?;
    util::ensure_rust_target("aarch64-unknown-linux-gnu")?;
    util::ensure_rust_target("x86_64-unknown-none")?;
    util::run(cargo().args(["fmt", "--all", "--check"]))?;
    // xen-testkit's test guest is bare metal and outside the workspace: its own format and lints.
    let guest = util::workspace_root().join("xen-testkit/guest");
    util::run(cargo().current_dir(&guest).args(["fmt", "--check"]))?;
    util::run(
        cargo()
            .current_dir(&guest)
            .args(["clippy", "--release", "--", "-D", "warnings"]),
    )?;
    util::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::run(cargo().args(["test", "--workspace", "--all-features"]))?;
    // The committed xen-sys bindings must equal a fresh generation (this also re-proves the ioctl
    // numbers and struct layouts against clang and gcc).
    eprintln!("+ cargo xtask bindgen --check");
    crate::bindgen::check()?;
    // The other architecture: its bindings and their compile-time ABI assertions.
    util::run(cargo().args([
        "check",
        "--workspace",
        "--all-features",
        "--target",
        "aarch64-unknown-linux-gnu",
    ]))?;
    util::run(
        cargo()
            .args(["doc", "--workspace", "--all-features", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    if !no_xen {
        // Last: the tests inside a real Xen machine. If QEMU cannot run, that fails CI.
        eprintln!("+ cargo xtask xen-test");
        crate::xen_test::run(&[])?;
    }
    Ok(())
}
