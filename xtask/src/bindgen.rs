//! `cargo xtask bindgen [--check]`: regenerate xen-sys's committed bindings, or check them.
//!
//! The generator itself lives in `xen-sys/codegen/` (`mod.rs` and its modules), shared with xen-sys's `build.rs`
//! (feature `bindgen`), so both produce the same modules.

#[path = "../../xen-sys/codegen/mod.rs"]
#[allow(dead_code)] // `codegen::arch` is for build.rs
mod codegen;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::workspace_root;

/// Where the committed bindings live.
fn bindings_dir() -> PathBuf {
    workspace_root().join("xen-sys/src/bindings")
}

/// Generates every architecture: the files, and a printed summary of what was proven.
fn generate_all() -> Result<Vec<codegen::GeneratedFile>, String> {
    let xen_include_dir = std::env::var_os("XEN_SYS_INCLUDE_DIR").map(PathBuf::from);
    let (privcmd_dir, privcmd_origin) = newer_privcmd_header()?;
    let mut files = Vec::new();
    for arch in codegen::ARCHES {
        let opts = codegen::Options {
            xen_include_dir: xen_include_dir.clone(),
            privcmd_dir: Some(privcmd_dir.clone()),
            privcmd_origin: privcmd_origin.clone(),
            scratch_dir: workspace_root()
                .join("target/xtask-bindgen")
                .join(arch.name),
            allow_no_probe: false,
        };
        let out = codegen::generate_arch(arch, &opts)?;
        let v = out.verified;
        eprintln!(
            "{}: {} files; {} agree on {} ioctl numbers, {} constants, size+alignment of {} \
             structs/unions, {} field offsets and {} bitfields",
            arch.name,
            out.files.len(),
            out.compilers.join(" and "),
            v.ioctls,
            v.consts,
            v.types,
            v.fields,
            v.bitfields,
        );
        for note in &out.notes {
            eprintln!("note: {note}");
        }
        files.extend(out.files);
    }
    Ok(files)
}

/// The Debian release whose `linux-libc-dev` provides `xen/privcmd.h`, and the Linux version its
/// header must come from (6.12: irqfd and ioeventfd from 6.7, `PCIDEV_GET_GSI` from 6.12).
const PRIVCMD_SUITE: &str = "trixie";
const PRIVCMD_LINUX: &str = "6.12.";

/// A directory holding only Linux 6.12's `xen/privcmd.h` (every other Linux header still comes
/// from the system's 6.1 `linux-libc-dev`), and where it came from. Downloaded once into
/// `target/xtask-bindgen/linux-privcmd/` with a private apt configuration (its own sources list
/// and empty dpkg status: the host's apt state is not touched) and unpacked with `dpkg-deb -x`.
fn newer_privcmd_header() -> Result<(PathBuf, String), String> {
    let cache = workspace_root().join("target/xtask-bindgen/linux-privcmd");
    let include = cache.join("include");
    let header = include.join("xen/privcmd.h");
    let origin_file = cache.join("origin");
    if let (true, Ok(origin)) = (header.is_file(), std::fs::read_to_string(&origin_file)) {
        return Ok((include, origin.trim().to_string()));
    }
    let apt = cache.join("apt");
    let _ = std::fs::remove_dir_all(&cache);
    for d in [
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
        "deb",
    ] {
        mkdir(&apt.join(d))?;
    }
    write_file(
        &apt.join("etc/apt/sources.list"),
        &format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian {PRIVCMD_SUITE} main\n"
        ),
    )?;
    write_file(&apt.join("var/lib/dpkg/status"), "")?;
    let apt_get = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.current_dir(apt.join("deb"))
            .arg("-q")
            .arg(format!("-oDir={}", apt.display()))
            .arg(format!(
                "-oDir::State::status={}",
                apt.join("var/lib/dpkg/status").display()
            ))
            .arg("-oDebug::NoLocking=1")
            .arg("-oAPT::Sandbox::User=root")
            .args(args);
        c
    };
    crate::util::run(&mut apt_get(&["update"]))?;
    crate::util::run(&mut apt_get(&["download", "linux-libc-dev"]))?;
    let deb = std::fs::read_dir(apt.join("deb"))
        .map_err(|e| format!("reading {}: {e}", apt.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download linux-libc-dev left no .deb")?;
    // linux-libc-dev_6.12.117-1_all.deb
    let version = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').nth(1))
        .unwrap_or_default()
        .to_string();
    if !version.starts_with(PRIVCMD_LINUX) {
        return Err(format!(
            "{PRIVCMD_SUITE}'s linux-libc-dev is {version}, not Linux {PRIVCMD_LINUX}x: \
             check xen/privcmd.h's changes and update PRIVCMD_LINUX in xtask/src/bindgen.rs"
        ));
    }
    let root = cache.join("root");
    crate::util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    mkdir(&include.join("xen"))?;
    std::fs::copy(root.join("usr/include/xen/privcmd.h"), &header)
        .map_err(|e| format!("copying xen/privcmd.h out of {}: {e}", deb.display()))?;
    let origin = format!("linux-libc-dev {version} of Debian {PRIVCMD_SUITE}");
    write_file(&origin_file, &origin)?;
    Ok((include, origin))
}

fn mkdir(d: &Path) -> Result<(), String> {
    std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Runs the task: `args` is empty (write) or `--check` (compare only).
pub fn run(args: &[String]) -> Result<(), String> {
    match args {
        [] => write(),
        [a] if a == "--check" => check(),
        _ => Err("usage: cargo xtask bindgen [--check]".into()),
    }
}

fn write() -> Result<(), String> {
    let files = generate_all()?;
    let dir = bindings_dir();
    for f in &files {
        let path = dir.join(f.arch).join(&f.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, &f.contents)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    for stale in stale_files(&files)? {
        std::fs::remove_file(&stale).map_err(|e| format!("removing {}: {e}", stale.display()))?;
        eprintln!("removed stale {}", stale.display());
    }
    eprintln!("wrote {} files under {}", files.len(), dir.display());
    Ok(())
}

/// Files under the bindings directory that the generator no longer produces.
fn stale_files(files: &[codegen::GeneratedFile]) -> Result<Vec<PathBuf>, String> {
    let dir = bindings_dir();
    let mut stale = Vec::new();
    for arch in codegen::ARCHES {
        let Ok(entries) = std::fs::read_dir(dir.join(arch.name)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !files.iter().any(|f| f.arch == arch.name && f.name == name) {
                stale.push(e.path());
            }
        }
    }
    Ok(stale)
}

/// `cargo xtask bindgen --check`: fails when xen-sys's Cargo features differ from the area table,
/// or a fresh generation differs from the committed files (ignoring the lines that only name this
/// machine's package and tool versions).
pub fn check() -> Result<(), String> {
    let manifest = workspace_root().join("xen-sys/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    codegen::check_cargo_features(&manifest)?;
    let files = generate_all()?;
    let dir = bindings_dir();
    let mut problems = Vec::new();
    let mut version_notes = 0;
    for f in &files {
        let path = dir.join(f.arch).join(&f.name);
        let shown = format!("xen-sys/src/bindings/{}/{}", f.arch, f.name);
        let Ok(old) = std::fs::read_to_string(&path) else {
            problems.push(format!("{shown}: missing"));
            continue;
        };
        if let Some(d) = codegen::compare(&old, &f.contents) {
            problems.push(format!(
                "{shown}: -{} +{} lines; first difference at line {} (ignoring provenance):\n    \
                 committed: {}\n    fresh:     {}",
                d.removed, d.added, d.first, d.committed, d.fresh
            ));
        } else if codegen::provenance_lines(&old) != codegen::provenance_lines(&f.contents) {
            version_notes += 1;
            if version_notes == 1 {
                eprintln!(
                    "note: the header/tool versions on this machine differ from the committed \
                     ones, but the generated code is identical (e.g. {shown}):"
                );
                for (o, n) in codegen::provenance_lines(&old)
                    .iter()
                    .zip(codegen::provenance_lines(&f.contents))
                {
                    if *o != n {
                        eprintln!("  committed: {o}\n  here:      {n}");
                    }
                }
            }
        }
    }
    for stale in stale_files(&files)? {
        problems.push(format!(
            "{}: not produced by the generator",
            stale.display()
        ));
    }
    if problems.is_empty() {
        eprintln!("xen-sys bindings are up to date ({} files)", files.len());
        Ok(())
    } else {
        Err(format!(
            "xen-sys bindings are stale; run `cargo xtask bindgen` and commit:\n  {}",
            problems.join("\n  ")
        ))
    }
}
