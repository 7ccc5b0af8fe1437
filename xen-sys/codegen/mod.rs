//! The one generator behind `xen-sys`'s bindings, shared by two callers:
//!
//! - `cargo xtask bindgen [--check]` (`xtask/src/bindgen.rs`) generates every area for every
//!   architecture and writes (or compares) `xen-sys/src/bindings/<arch>/<area>.rs`;
//! - `xen-sys/build.rs`, with the opt-in `bindgen` feature, generates the target architecture's
//!   areas into `OUT_DIR` (honouring `XEN_SYS_INCLUDE_DIR`).
//!
//! Both pull this module in with `#[path]`, so there is exactly one list of areas, headers, clang
//! arguments and bindgen options.
//!
//! Besides the Rust bindings, it writes `<arch>/abi.rs`: compile-time assertions that every ioctl
//! number, every constant, and the size, alignment and field offsets of every named struct and union
//! equal what a C compiler computes from the same headers for that architecture (clang, and for
//! x86_64 also gcc, compiled with `-S` so no target machine is needed).

//!
//! One job per module: [`areas`] (what is generated), [`bindings`] (running bindgen),
//! [`provenance`] (each file's header), [`scan`] (reading bindgen's output back), [`probe`] and
//! [`asm`] (the C compilers' values and `abi.rs`), [`compare`](mod@compare) (`--check`), and [`features`]
//! (xen-sys's Cargo features, derived from the areas). This file drives them.

mod areas;
mod asm;
mod bindings;
mod compare;
mod features;
mod probe;
mod provenance;
mod scan;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[allow(unused_imports)] // `arch` is for build.rs
pub use areas::{arch, Arch, Area, ARCHES, AREAS, IOCTLS};
use bindings::{bindgen_area, write, write_shims};
#[allow(unused_imports)] // for `cargo xtask bindgen --check`, not build.rs
pub use compare::{compare, provenance_lines};
#[allow(unused_imports)] // for `cargo xtask bindgen --check`, not build.rs
pub use features::check_cargo_features;
use probe::abi_probe;
use provenance::{header_comment, Provenance};
use scan::{alias_traits, scan_items};

/// Prefix of the generated files' header lines that name versions and paths of this machine;
/// `--check` ignores them so a Debian package bump alone does not fail CI.
pub const PROVENANCE_PREFIX: &str = "// @provenance ";

/// Where the inputs are.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A directory holding `xen/xen.h` etc. searched before the system ones
    /// (`XEN_SYS_INCLUDE_DIR`).
    pub xen_include_dir: Option<PathBuf>,
    /// A directory holding a newer Linux `xen/privcmd.h` (Linux 6.12's, for the irqfd, ioeventfd
    /// and GSI ioctls), searched before every other; the rest of Linux's headers still come from
    /// the system. `None`: the system's `xen/privcmd.h`.
    pub privcmd_dir: Option<PathBuf>,
    /// Where `privcmd_dir`'s header came from, for the provenance lines.
    pub privcmd_origin: String,
    /// A scratch directory for the wrapper headers and the C probe.
    pub scratch_dir: PathBuf,
    /// When no `clang` executable can be run: write an `abi.rs` without assertions (and say so
    /// in the notes) instead of failing; and when no gcc for the architecture can be run, check
    /// against clang alone. `build.rs` allows both (libclang may be installed without the
    /// compiler drivers); `cargo xtask bindgen` allows neither.
    pub allow_no_probe: bool,
}

/// One generated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// The architecture it is for.
    pub arch: &'static str,
    /// The file name inside `<arch>/` (e.g. `memory.rs`, `abi.rs`).
    pub name: String,
    /// Its contents.
    pub contents: String,
}

/// What one architecture's generation produced.
#[derive(Clone, Debug, Default)]
pub struct ArchOutput {
    /// The generated files: one per area, then `abi.rs`.
    pub files: Vec<GeneratedFile>,
    /// Counts of what the ABI probe verified.
    pub verified: Verified,
    /// Compilers that computed the same values (e.g. `clang 14.0.6`, `gcc 12.2.0`).
    pub compilers: Vec<String>,
    /// Things worth telling the user (missing gcc, unverifiable items).
    pub notes: Vec<String>,
}

/// How many values the ABI probe proved equal to the C compiler's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// `IOCTL_*` numbers.
    pub ioctls: usize,
    /// Integer constants (macros and enumerators).
    pub consts: usize,
    /// Named structs and unions (size and alignment each).
    pub types: usize,
    /// Field offsets.
    pub fields: usize,
    /// Bitfield positions and widths.
    pub bitfields: usize,
}

/// Generates every area plus `abi.rs` for one architecture.
pub fn generate_arch(arch: Arch, opts: &Options) -> Result<ArchOutput, String> {
    std::fs::create_dir_all(&opts.scratch_dir)
        .map_err(|e| format!("creating {}: {e}", opts.scratch_dir.display()))?;
    write_shims(opts)?;
    let mut prov = Provenance {
        bindgen: String::new(),
        clang: bindgen::clang_version().full,
    };
    let mut out = ArchOutput::default();
    let mut seen: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut items = Vec::new();
    let mut traits = BTreeMap::new();
    for area in AREAS {
        let raw = bindgen_area(arch, area, opts, &traits)?;
        // Kept in the scratch directory for debugging the area split.
        write(
            &opts.scratch_dir.join(format!("raw-{}.rs", area.name)),
            &raw,
        )?;
        let mut body = String::new();
        for line in raw.lines() {
            if let Some(v) = line
                .strip_prefix("/* automatically generated by ")
                .and_then(|l| l.strip_suffix(" */"))
            {
                prov.bindgen = v.to_string();
                continue;
            }
            // bindgen marks its bitfield accessors' transmutes with a lint Rust 1.85 (our MSRV)
            // does not know (one `unknown_lints` warning each); the area module allows that lint
            // for the whole generated module instead (`generated!` in lib.rs).
            if line.trim() == "#[allow(unnecessary_transmutes)]" {
                continue;
            }
            body.push_str(line);
            body.push('\n');
        }
        let parsed = scan_items(&body);
        for (name, t) in &parsed.traits {
            traits.insert(name.clone(), *t);
        }
        for (name, rhs) in &parsed.alias_targets {
            if let Some(t) = alias_traits(rhs, &traits) {
                traits.insert(name.clone(), t);
            }
        }
        for name in parsed.names() {
            if name.starts_with("__Bindgen") || name.starts_with("__Incomplete") {
                continue;
            }
            if let Some(prev) = seen.insert(name.clone(), area.name) {
                return Err(format!(
                    "{}: `{name}` generated in both `{prev}` and `{}`: fix the area files/deps",
                    arch.name, area.name
                ));
            }
        }
        items.push((area, parsed));
        let mut contents = header_comment(arch, area, opts, &prov);
        contents.push('\n');
        for dep in area.deps {
            let _ = writeln!(contents, "#[allow(unused_imports)]\nuse crate::{dep}::*;");
        }
        if !area.deps.is_empty() {
            contents.push('\n');
        }
        contents.push_str(&body);
        out.files.push(GeneratedFile {
            arch: arch.name,
            name: format!("{}.rs", area.name),
            contents,
        });
    }
    let abi = abi_probe(arch, opts, &items, &prov, &mut out)?;
    out.files.push(GeneratedFile {
        arch: arch.name,
        name: "abi.rs".into(),
        contents: abi,
    });
    Ok(out)
}
