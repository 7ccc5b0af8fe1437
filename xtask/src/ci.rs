//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::process::Command;
use std::time::Instant;

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
    runtime_checks()?;
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
    publishable()?;
    // Instructions per hot-path operation (callgrind), each at or under its gate.
    eprintln!("+ cargo xtask icount --check");
    crate::icount::run(&["--check".to_string()])?;
    if !no_xen {
        // Last: the tests inside a real Xen machine, on each Xen generation (the same test
        // executables on both). If QEMU cannot run, that fails CI.
        for generation in crate::xen_test::Generation::ALL {
            let args = ["--xen".to_string(), generation.xen().to_string()];
            eprintln!("+ cargo xtask xen-test {}", args.join(" "));
            let t0 = Instant::now();
            crate::xen_test::run(&args)?;
            eprintln!(
                "xen-test --xen {}: {:.0?} (fetching, building and running)",
                generation.xen(),
                t0.elapsed()
            );
        }
        // One short round of the device-model comparison (on the Xen 4.17 machine), so
        // that it keeps working; it fails on a broken boot, never on the numbers.
        let t = Instant::now();
        eprintln!("+ cargo xtask bench --rounds 1 --short");
        crate::bench::smoke()?;
        eprintln!("bench smoke: {:.0?}", t.elapsed());
    }
    Ok(())
}

// ---- Feature combinations, property tests, Miri, fuzz smoke runs (one block, called once from `run`) ----

/// Property-test cases per test in CI (`PROPTEST_CASES`): about 10 s here.
const PROPTEST_CASES: &str = "4096";

/// Checks every feature of every crate on its own, runs the property tests of the server's
/// dispatch and buffered ring with more cases than `cargo test` does, and runs the tests
/// that touch no kernel under Miri, and each fuzz target for a few seconds. Installs
/// cargo-hack, a nightly toolchain with Miri and cargo-fuzz when missing.
fn runtime_checks() -> Result<(), String> {
    let t0 = Instant::now();
    // Each feature alone (and none) with every target: a test that needs a feature it does
    // not declare (`required-features`) fails here. `check` only, for time; xen-sys's
    // `bindgen` feature regenerates the bindings at build time, which `bindgen --check` covers.
    if Command::new("cargo")
        .args(["hack", "--version"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        util::run(Command::new("cargo").args(["install", "cargo-hack", "--locked"]))?;
    }
    util::run(cargo().args([
        "hack",
        "check",
        "--workspace",
        "--each-feature",
        "--exclude-features",
        "bindgen",
        "--all-targets",
    ]))?;
    util::run(
        cargo()
            .args([
                "test",
                "-p",
                "xen-devicemodel",
                "--all-features",
                "--lib",
                "props",
            ])
            .env("PROPTEST_CASES", PROPTEST_CASES),
    )?;
    // Miri: nightly only; the tests that need a kernel are `cfg(not(miri))`.
    let has_miri = Command::new("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("miri"));
    if !has_miri {
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "miri",
            "--component",
            "rust-src",
        ]))?;
    }
    let miri = |args: &[&str], flags: &str| {
        let mut c = Command::new("cargo");
        c.current_dir(util::workspace_root())
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env("MIRIFLAGS", flags)
            .args(["+nightly", "miri", "test"])
            .args(args);
        util::run(&mut c)
    };
    miri(&["-p", "xen-hypercall", "--lib"], "")?;
    // The ring pointers and ioreq states are accessed with atomics of different sizes over
    // the same bytes (as Xen does), which Miri's weak-memory emulation cannot model; tree
    // borrows, because read-only views are made from pointers into memory Miri marks
    // read-only, which is what the read-only atomic-load test needs.
    miri(
        &["-p", "xen-foreignmemory", "--lib"],
        "-Zmiri-disable-weak-memory-emulation -Zmiri-tree-borrows",
    )?;
    miri(
        &[
            "-p",
            "xen-devicemodel",
            "--features",
            "server",
            "--lib",
            "server::",
        ],
        "-Zmiri-disable-weak-memory-emulation",
    )?;
    fuzz_smoke()?;
    eprintln!("runtime checks: {:.0?}", t0.elapsed());
    Ok(())
}

/// The fuzz targets of `fuzz/` (outside the workspace).
const FUZZ_TARGETS: [&str; 2] = ["virtio_blk", "ioreq_dispatch"];
/// Seconds each fuzz target runs in CI: a smoke run (the targets build, and the first inputs
/// find nothing); real campaigns are longer and by hand (fuzz/README.md).
const FUZZ_SMOKE_SECS: u32 = 20;

/// Builds and briefly runs each fuzz target with cargo-fuzz on nightly (installed above for
/// Miri); installs cargo-fuzz when missing.
fn fuzz_smoke() -> Result<(), String> {
    let dir = util::workspace_root().join("fuzz");
    util::run(cargo().current_dir(&dir).args(["fmt", "--check"]))?;
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        util::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    for target in FUZZ_TARGETS {
        let mut c = Command::new("cargo");
        c.current_dir(&dir)
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={FUZZ_SMOKE_SECS}"));
        util::run(&mut c)?;
    }
    Ok(())
}

/// The published crates, by package name.
const PUBLISHED: [&str; 6] = [
    "xen-rs-sys",
    "xen-hypercall",
    "xen-devicemodel",
    "xen-foreignmemory",
    "xen-evtchn",
    "xen-store",
];

/// The declared `rust-version`, checked with that toolchain.
const MSRV: &str = "1.85";

/// What crates.io and docs.rs users get: the docs with default features (links to
/// feature-gated items must not break), the declared MSRV (a `check` of the library crates,
/// warnings denied), and every published crate packaged and built from its package.
/// Removes the sources an earlier `cargo package --workspace` extracted for our packages.
/// Cargo verifies each package against the others through a local registry in the target
/// directory and extracts them under `$CARGO_HOME/registry/src/-<hash>/` (a local registry's
/// directory name starts with `-`); the hash comes from the registry's path, so a later run
/// from a checkout at the same path finds `NAME-0.1.0` already there and builds the old sources
/// instead of the new ones.
fn forget_packaged_sources() -> Result<(), String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry").join("src")) else {
        return Ok(());
    };
    let Ok(dirs) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for dir in dirs.flatten() {
        if !dir.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = PUBLISHED
                .iter()
                .chain(["xen-pcdm", "xen-firmware-dm"].iter())
                .any(|p| {
                    name.strip_prefix(p)
                        .is_some_and(|v| v.starts_with("-0.") || v.starts_with("-1."))
                });
            if ours {
                std::fs::remove_dir_all(e.path())
                    .map_err(|err| format!("removing {}: {err}", e.path().display()))?;
            }
        }
    }
    Ok(())
}

fn publishable() -> Result<(), String> {
    let mut doc = cargo();
    doc.args(["doc", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    util::run(PUBLISHED.iter().fold(&mut doc, |c, p| c.args(["-p", p])))?;
    util::run(Command::new("rustup").args(["toolchain", "install", MSRV, "--profile", "minimal"]))?;
    let mut msrv = Command::new("rustup");
    msrv.current_dir(util::workspace_root())
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .args(["run", MSRV, "cargo", "check", "--locked", "--all-features"])
        .args(["--target-dir", "target/msrv"])
        .env("RUSTFLAGS", "-D warnings");
    util::run(PUBLISHED.iter().fold(&mut msrv, |c, p| c.args(["-p", p])))?;
    forget_packaged_sources()?;
    // Built from the packages with default features, then with all (what docs.rs builds).
    for features in [&[][..], &["--all-features"][..]] {
        let mut package = cargo();
        package.args(["package", "--workspace", "--exclude", "xen-testkit"]);
        util::run(
            package
                .args(["--exclude", "xtask", "--exclude", "xen-icount"])
                .args(["--exclude", "xen-bench", "--exclude", "xen-bench-guest"])
                .args(features),
        )?;
    }
    Ok(())
}
