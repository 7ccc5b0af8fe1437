//! The one generator behind `xen-sys`'s bindings, shared by two callers:
//!
//! - `cargo xtask bindgen [--check]` (`xtask/src/bindgen.rs`) generates every area for every
//!   architecture and writes (or compares) `xen-sys/src/bindings/<arch>/<area>.rs`;
//! - `xen-sys/build.rs`, with the opt-in `bindgen` feature, generates the target architecture's
//!   areas into `OUT_DIR` (honouring `XEN_SYS_INCLUDE_DIR`).
//!
//! Both pull this file in with `#[path]`, so there is exactly one list of areas, headers, clang
//! arguments and bindgen options.
//!
//! Besides the Rust bindings, it writes `<arch>/abi.rs`: compile-time assertions that every ioctl
//! number, every constant, and the size, alignment and field offsets of every named struct and union
//! equal what a C compiler computes from the same headers for that architecture (clang, and for
//! x86_64 also gcc, compiled with `-S` so no target machine is needed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A target architecture the bindings are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    /// Rust's `target_arch` and the directory name under `src/bindings/`.
    pub name: &'static str,
    /// The clang target triple.
    pub triple: &'static str,
    /// System include directories holding that architecture's Linux `asm/` uapi headers (the
    /// ones that exist are used, in this order, before the compiler's defaults).
    pub linux_include_dirs: &'static [&'static str],
    /// The gcc that compiles the ABI probe a second time, when this host has it.
    pub gcc: Option<&'static str>,
}

/// Every architecture xen-sys supports.
pub const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        triple: "x86_64-linux-gnu",
        linux_include_dirs: &[
            "/usr/include/x86_64-linux-gnu",
            "/usr/x86_64-linux-gnu/include",
        ],
        gcc: Some("x86_64-linux-gnu-gcc"),
    },
    Arch {
        name: "aarch64",
        triple: "aarch64-linux-gnu",
        linux_include_dirs: &[
            "/usr/aarch64-linux-gnu/include",
            "/usr/include/aarch64-linux-gnu",
        ],
        gcc: Some("aarch64-linux-gnu-gcc"),
    },
];

/// Looks an architecture up by Rust `target_arch` name.
pub fn arch(name: &str) -> Option<Arch> {
    ARCHES.iter().copied().find(|a| a.name == name)
}

/// One functional area: one generated module per architecture.
#[derive(Clone, Copy, Debug)]
pub struct Area {
    /// Module name, and the generated file's stem.
    pub name: &'static str,
    /// The Cargo feature gating the module (`None`: always built).
    pub feature: Option<&'static str>,
    /// Headers the area's wrapper includes after `<xen/xen.h>`.
    pub headers: &'static [&'static str],
    /// Path suffixes (regular expressions, matched against the end of a header's path) of the
    /// files whose items belong to this area.
    pub files: &'static [&'static str],
    /// Areas whose items this one uses (brought in with `use crate::<dep>::*`).
    pub deps: &'static [&'static str],
}

/// Every area, in dependency order.
pub const AREAS: &[Area] = &[
    Area {
        name: "xen",
        feature: None,
        headers: &["xen/xen.h"],
        files: &[
            "xen/xen\\.h",
            "xen/xen-compat\\.h",
            "xen/arch-x86_64\\.h",
            "xen/arch-x86/[^/]*\\.h",
            "xen/arch-arm\\.h",
            "xen/arch-arm/[^/]*\\.h",
        ],
        deps: &[],
    },
    Area {
        name: "version",
        feature: Some("version"),
        headers: &["xen/version.h"],
        files: &["xen/version\\.h", "xen/features\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "memory",
        feature: Some("memory"),
        headers: &["xen/memory.h"],
        files: &["xen/memory\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "event_channel",
        feature: Some("event_channel"),
        headers: &["xen/event_channel.h"],
        files: &["xen/event_channel\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "sched",
        feature: Some("sched"),
        headers: &["xen/sched.h"],
        files: &["xen/sched\\.h"],
        deps: &["xen", "event_channel"],
    },
    Area {
        name: "hvm",
        feature: Some("hvm"),
        headers: &["xen/hvm/hvm_op.h", "xen/hvm/params.h", "xen/hvm/ioreq.h"],
        files: &[
            "xen/hvm/hvm_op\\.h",
            "xen/hvm/params\\.h",
            "xen/hvm/ioreq\\.h",
        ],
        deps: &["xen", "event_channel"],
    },
    Area {
        name: "dm_op",
        feature: Some("dm_op"),
        headers: &["xen/hvm/dm_op.h"],
        files: &["xen/hvm/dm_op\\.h"],
        deps: &["xen", "event_channel", "hvm"],
    },
    Area {
        name: "privcmd",
        feature: Some("privcmd"),
        headers: &["xen/privcmd.h"],
        files: &["xen/privcmd\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "evtchn",
        feature: Some("evtchn"),
        headers: &["xen/evtchn.h"],
        files: &["xen/evtchn\\.h"],
        deps: &["xen"],
    },
    Area {
        name: "xs_wire",
        feature: Some("xs_wire"),
        headers: &["xen/io/xs_wire.h"],
        files: &["xen/io/xs_wire\\.h"],
        deps: &[],
    },
];

/// The ioctl numbers xen-sys computes by hand (bindgen cannot evaluate `_IOC(...)`): the area
/// module that defines each. The generator proves each against the C compiler and refuses headers
/// that define one not listed here.
pub const IOCTLS: &[(&str, &str)] = &[
    ("privcmd", "IOCTL_PRIVCMD_HYPERCALL"),
    ("privcmd", "IOCTL_PRIVCMD_MMAP"),
    ("privcmd", "IOCTL_PRIVCMD_MMAPBATCH"),
    ("privcmd", "IOCTL_PRIVCMD_MMAPBATCH_V2"),
    ("privcmd", "IOCTL_PRIVCMD_DM_OP"),
    ("privcmd", "IOCTL_PRIVCMD_RESTRICT"),
    ("privcmd", "IOCTL_PRIVCMD_MMAP_RESOURCE"),
    ("privcmd", "IOCTL_PRIVCMD_IRQFD"),
    ("privcmd", "IOCTL_PRIVCMD_IOEVENTFD"),
    ("privcmd", "IOCTL_PRIVCMD_PCIDEV_GET_GSI"),
    ("evtchn", "IOCTL_EVTCHN_BIND_VIRQ"),
    ("evtchn", "IOCTL_EVTCHN_BIND_INTERDOMAIN"),
    ("evtchn", "IOCTL_EVTCHN_BIND_UNBOUND_PORT"),
    ("evtchn", "IOCTL_EVTCHN_UNBIND"),
    ("evtchn", "IOCTL_EVTCHN_NOTIFY"),
    ("evtchn", "IOCTL_EVTCHN_RESET"),
    ("evtchn", "IOCTL_EVTCHN_RESTRICT_DOMID"),
];

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

/// The clang arguments shared by bindgen and the C probe.
fn clang_args(arch: Arch, opts: &Options) -> Vec<String> {
    let mut args = vec![
        format!("--target={}", arch.triple),
        "-ffreestanding".to_string(),
        "-D__XEN_TOOLS__".to_string(),
    ];
    if let Some(dir) = &opts.privcmd_dir {
        args.push(format!("-I{}", dir.display()));
    }
    if let Some(dir) = &opts.xen_include_dir {
        args.push(format!("-I{}", dir.display()));
    }
    args.push(format!("-I{}", shim_dir(opts).display()));
    for dir in arch.linux_include_dirs {
        if Path::new(dir).is_dir() {
            args.push("-isystem".to_string());
            args.push((*dir).to_string());
        }
    }
    args
}

fn shim_dir(opts: &Options) -> PathBuf {
    opts.scratch_dir.join("shim")
}

/// Writes the include shims: Linux's `xen/privcmd.h` includes `<xen/interface/xen.h>`, a path
/// that exists only in the kernel tree; ours forwards to Xen's `<xen/xen.h>`.
fn write_shims(opts: &Options) -> Result<(), String> {
    let dir = shim_dir(opts).join("xen/interface");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write(&dir.join("xen.h"), "#include <xen/xen.h>\n")
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The wrapper every translation unit starts with: the freestanding C types the headers assume,
/// then Xen's base header.
fn wrapper(headers: &[&str]) -> String {
    let mut s = String::from("#include <stddef.h>\n#include <stdint.h>\n#include <xen/xen.h>\n");
    for h in headers {
        let _ = writeln!(s, "#include <{h}>");
    }
    s
}

/// The regular expression bindgen matches against a header's path. Clang names a file by the
/// path it was last reached through (`.../xen/arch-x86/../xen.h`, `.../xen/hvm/../trace.h`), so
/// `dir/../` segments are allowed after `xen/`.
fn file_regex(suffix: &str) -> String {
    match suffix.strip_prefix("xen/") {
        Some(rest) => format!(".*/xen/([^/]+/\\.\\./)*{rest}"),
        None => format!(".*/{suffix}"),
    }
}

/// What a type generated in an earlier area implements, for the areas that use it: bindgen cannot
/// see into blocklisted types, and would otherwise drop `Copy`/`Debug`/`Default` from every type
/// containing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Traits {
    copy: bool,
    debug: bool,
    /// `Some(true)`: derived; `Some(false)`: implemented by hand (zeroed); `None`: neither.
    default: Option<bool>,
}

const ALL_TRAITS: Traits = Traits {
    copy: true,
    debug: true,
    default: Some(true),
};

/// Rewrites `xen_mk_uint(X)`-style wrappers (which bindgen's macro evaluator cannot call) to `X`,
/// so `DOMID_SELF` and friends come out as constants; answers bindgen's questions about the
/// traits of types that belong to other areas.
#[derive(Debug)]
struct Callbacks {
    traits: BTreeMap<String, Traits>,
}

impl bindgen::callbacks::ParseCallbacks for Callbacks {
    fn int_macro(&self, name: &str, value: i64) -> Option<bindgen::callbacks::IntKind> {
        // Domain ids are `domid_t` (u16) wherever they are used; give the constants that type.
        (name.starts_with("DOMID_") && u16::try_from(value).is_ok())
            .then_some(bindgen::callbacks::IntKind::U16)
    }

    fn blocklisted_type_implements_trait(
        &self,
        name: &str,
        derive_trait: bindgen::callbacks::DeriveTrait,
    ) -> Option<bindgen::callbacks::ImplementsTrait> {
        use bindgen::callbacks::{DeriveTrait, ImplementsTrait};
        let t = self.traits.get(name).copied().or_else(|| {
            let stdint = name.trim_start_matches('u');
            matches!(
                stdint,
                "int8_t" | "int16_t" | "int32_t" | "int64_t" | "intptr_t" | "size_t"
            )
            .then_some(ALL_TRAITS)
        })?;
        let yes = |b: bool| {
            if b {
                ImplementsTrait::Yes
            } else {
                ImplementsTrait::No
            }
        };
        Some(match derive_trait {
            DeriveTrait::Copy => yes(t.copy),
            DeriveTrait::Debug => yes(t.debug),
            DeriveTrait::Default => match t.default {
                Some(true) => ImplementsTrait::Yes,
                Some(false) => ImplementsTrait::Manually,
                None => ImplementsTrait::No,
            },
            _ => return None,
        })
    }

    fn modify_macro(&self, _name: &str, tokens: &mut Vec<bindgen::callbacks::Token>) {
        use bindgen::callbacks::TokenKind;
        let mut i = 0;
        while i + 3 < tokens.len() {
            let t = &tokens[i];
            let is_mk = t.kind == TokenKind::Identifier
                && matches!(&*t.raw, b"xen_mk_uint" | b"xen_mk_ulong" | b"xen_mk_ullong");
            if is_mk
                && &*tokens[i + 1].raw == b"("
                && tokens[i + 2].kind == TokenKind::Literal
                && &*tokens[i + 3].raw == b")"
            {
                let lit = tokens.remove(i + 2);
                tokens.splice(i..i + 3, [lit]);
            }
            i += 1;
        }
    }
}

/// Runs bindgen for one area on one architecture and returns the Rust code (without our header).
fn bindgen_area(
    arch: Arch,
    area: &Area,
    opts: &Options,
    traits: &BTreeMap<String, Traits>,
) -> Result<String, String> {
    let mut builder = bindgen::Builder::default()
        .header_contents("xen-sys-wrapper.h", &wrapper(area.headers))
        .clang_args(clang_args(arch, opts))
        .use_core()
        .ctypes_prefix("::core::ffi")
        .rust_target(bindgen::RustTarget::stable(85, 0).map_err(|e| e.to_string())?)
        .formatter(bindgen::Formatter::Prettyplease)
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .impl_debug(false)
        .prepend_enum_name(false)
        .layout_tests(true)
        .generate_comments(false)
        .allowlist_recursively(true)
        .blocklist_item("IOCTL_.*")
        .parse_callbacks(Box::new(Callbacks {
            traits: traits.clone(),
        }));
    for f in area.files {
        builder = builder.allowlist_file(file_regex(f));
    }
    for other in AREAS.iter().filter(|a| a.name != area.name) {
        for f in other.files {
            builder = builder.blocklist_file(file_regex(f));
        }
    }
    let bindings = builder
        .generate()
        .map_err(|e| format!("bindgen failed for {}/{}: {e}", arch.name, area.name))?;
    Ok(bindings.to_string())
}

/// The machine-specific facts named in each file's header.
#[derive(Clone, Debug, Default)]
struct Provenance {
    bindgen: String,
    clang: String,
}

/// Finds which file `header` resolves to, for the provenance lines.
fn resolve_header(arch: Arch, opts: &Options, header: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = &opts.privcmd_dir {
        dirs.push(d.clone());
    }
    if let Some(d) = &opts.xen_include_dir {
        dirs.push(d.clone());
    }
    dirs.extend(arch.linux_include_dirs.iter().map(PathBuf::from));
    dirs.push("/usr/include".into());
    dirs.into_iter()
        .map(|d| d.join(header))
        .find(|p| p.is_file())
}

/// `libxen-dev 4.17.7+...` for a file installed by a Debian package, else a plain note.
fn package_of(path: &Path) -> String {
    let out = Command::new("dpkg").arg("-S").arg(path).output();
    let Ok(out) = out else {
        return "not from a Debian package".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(pkg) = text.lines().next().and_then(|l| l.split(':').next()) else {
        return "not from a Debian package".into();
    };
    let pkg = pkg.trim();
    let version = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{pkg} {version}")
}

fn header_comment(arch: Arch, area: &Area, opts: &Options, prov: &Provenance) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by xen-sys/codegen: do not edit; regenerate with `cargo xtask bindgen`."
    );
    let _ = writeln!(
        s,
        "// Rust bindings of {} for {} (clang --target={}), area `{}`{}.",
        area.headers.join(", "),
        arch.name,
        arch.triple,
        area.name,
        match area.feature {
            Some(f) => format!(" (feature \"{f}\")"),
            None => " (always built)".into(),
        }
    );
    let _ = writeln!(
        s,
        "// The Xen public headers are MIT-licensed; Linux's xen/*.h uapi headers are\n\
         // (GPL-2.0 WITH Linux-syscall-note) OR MIT."
    );
    for h in area.headers {
        let src = match resolve_header(arch, opts, h) {
            Some(p) if opts.privcmd_dir.as_ref().is_some_and(|d| p.starts_with(d)) => {
                format!("{h} ({})", opts.privcmd_origin)
            }
            Some(p) => format!("{} ({})", p.display(), package_of(&p)),
            None => format!("{h} (not found)"),
        };
        let _ = writeln!(s, "{PROVENANCE_PREFIX}source: {src}");
    }
    let _ = writeln!(
        s,
        "{PROVENANCE_PREFIX}tools: {}, {}",
        prov.bindgen, prov.clang
    );
    s
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

/// Items found in one generated module.
#[derive(Clone, Debug, Default)]
struct Items {
    /// Named structs and unions: (name, is_union, fields (Rust names, not bitfields/anonymous)).
    types: Vec<(String, bool, Vec<String>)>,
    /// `pub const` names (integers).
    consts: Vec<String>,
    /// `pub const` names (byte strings).
    string_consts: Vec<String>,
    /// `pub type` names.
    aliases: Vec<String>,
    /// What each struct/union derives or implements.
    traits: Vec<(String, Traits)>,
    /// `pub type` name and right-hand side.
    alias_targets: Vec<(String, String)>,
    /// Bitfield accessors: (type, field, unit field (`_bitfield_N`), bit offset in the unit, width).
    bitfields: Vec<Bitfield>,
    /// Every member of every struct/union, anonymous ones included: (type, field, field type).
    members: Vec<(String, String, String)>,
}

/// A bitfield as bindgen laid it out.
#[derive(Clone, Debug)]
struct Bitfield {
    ty: String,
    field: String,
    unit: String,
    bit: u64,
    width: u64,
}

/// Reads the bitfield accessors of bindgen's output: in `impl T {`, a `pub fn set_F(&mut self, ..)`
/// whose body calls `self._bitfield_N.set_const::<OFFSETusize, WIDTHu8>(..)`.
fn scan_bitfields(code: &str) -> Vec<Bitfield> {
    let mut out = Vec::new();
    let mut ty: Option<String> = None;
    let mut setter: Option<String> = None;
    for line in code.lines() {
        if let Some(rest) = line.strip_prefix("impl ") {
            ty = rest
                .strip_suffix(" {")
                .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .map(str::to_string);
            continue;
        }
        if line == "}" {
            ty = None;
            continue;
        }
        let Some(t) = &ty else { continue };
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("pub fn set_") {
            setter = rest
                .split_once("(&mut self, val: ")
                .map(|(f, _)| f.to_string());
            continue;
        }
        if let (Some(f), Some((unit, rest))) = (&setter, l.split_once(".set_const::<")) {
            let unit = unit.trim_start_matches("self.").to_string();
            let nums: Vec<u64> = rest
                .split(['<', '>', ','])
                .take(2)
                .filter_map(|n| {
                    n.trim()
                        .trim_end_matches("usize")
                        .trim_end_matches("u8")
                        .parse()
                        .ok()
                })
                .collect();
            if let [bit, width] = nums[..] {
                out.push(Bitfield {
                    ty: t.clone(),
                    field: f.clone(),
                    unit,
                    bit,
                    width,
                });
            }
            setter = None;
        }
    }
    out
}

/// The traits of a type alias's right-hand side.
fn alias_traits(rhs: &str, known: &BTreeMap<String, Traits>) -> Option<Traits> {
    let rhs = rhs.trim();
    let prim = rhs.strip_prefix("::core::ffi::").unwrap_or(rhs);
    if matches!(
        prim,
        "u8" | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "usize"
            | "isize"
            | "bool"
            | "f32"
            | "f64"
            | "c_char"
            | "c_schar"
            | "c_uchar"
            | "c_short"
            | "c_ushort"
            | "c_int"
            | "c_uint"
            | "c_long"
            | "c_ulong"
            | "c_longlong"
            | "c_ulonglong"
            | "c_void"
    ) || rhs.starts_with("::core::option::Option<")
    {
        return Some(ALL_TRAITS);
    }
    if rhs.starts_with("*mut ") || rhs.starts_with("*const ") {
        return Some(Traits {
            default: Some(false),
            ..ALL_TRAITS
        });
    }
    known.get(rhs).copied()
}

impl Items {
    fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.types
            .iter()
            .map(|t| t.0.clone())
            .chain(self.consts.iter().cloned())
            .chain(self.string_consts.iter().cloned())
            .chain(self.aliases.iter().cloned())
    }
}

/// Reads bindgen's (prettyplease-formatted) output: top-level structs, unions, consts and type
/// aliases, and the named fields of the structs and unions.
fn scan_items(code: &str) -> Items {
    let mut items = Items::default();
    let mut current: Option<(String, bool, Vec<String>)> = None;
    let mut derives = String::new();
    let mut manual_default: BTreeSet<String> = BTreeSet::new();
    let mut derived: Vec<(String, String)> = Vec::new();
    for line in code.lines() {
        if let Some(rest) = line.strip_prefix("impl Default for ") {
            manual_default.insert(rest.trim_end_matches(" {").trim().to_string());
        }
        if let Some((name, is_union, fields)) = &mut current {
            if line == "}" {
                items
                    .types
                    .push((std::mem::take(name), *is_union, std::mem::take(fields)));
                current = None;
            } else if let Some(rest) = line.strip_prefix("    pub ") {
                if let Some((field, ty)) = rest.split_once(':') {
                    let field = field.trim();
                    let ty = ty.trim().trim_end_matches(',');
                    items
                        .members
                        .push((name.clone(), field.to_string(), ty.to_string()));
                    if !field.starts_with("__bindgen")
                        && !field.starts_with("_bitfield")
                        && field != "bindgen_union_field"
                    {
                        fields.push(field.to_string());
                    }
                }
            }
            continue;
        }
        if line.starts_with("#[derive(") {
            derives = line.to_string();
            continue;
        }
        let (kind, rest) = if let Some(r) = line.strip_prefix("pub struct ") {
            ("struct", r)
        } else if let Some(r) = line.strip_prefix("pub union ") {
            ("union", r)
        } else if let Some(r) = line.strip_prefix("pub const ") {
            ("const", r)
        } else if let Some(r) = line.strip_prefix("pub type ") {
            ("type", r)
        } else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        match kind {
            "struct" | "union" => {
                derived.push((name.clone(), std::mem::take(&mut derives)));
                if rest.trim_end().ends_with('{') {
                    current = Some((name, kind == "union", Vec::new()));
                } else {
                    items.types.push((name, kind == "union", Vec::new()));
                }
            }
            "const" => {
                // Only integers are probed (byte strings such as `PRI_xen_pfn` are not).
                let ty = rest.split_once(':').map(|(_, t)| t.trim_start());
                if ty.is_some_and(|t| !t.starts_with('&')) {
                    items.consts.push(name);
                } else {
                    items.string_consts.push(name);
                }
            }
            _ => {
                if let Some((_, rhs)) = rest.split_once(" = ") {
                    let rhs = rhs.trim_end_matches(';').trim().to_string();
                    items.alias_targets.push((name.clone(), rhs));
                }
                items.aliases.push(name);
            }
        }
        if kind != "struct" && kind != "union" {
            derives.clear();
        }
    }
    items.bitfields = scan_bitfields(code);
    for (name, d) in derived {
        let has = |t: &str| {
            d.contains(&format!(" {t},"))
                || d.contains(&format!("({t},"))
                || d.contains(&format!(" {t})"))
                || d.contains(&format!("({t})"))
        };
        let default = if has("Default") {
            Some(true)
        } else if manual_default.contains(&name) {
            Some(false)
        } else {
            None
        };
        items.traits.push((
            name,
            Traits {
                copy: has("Copy"),
                debug: has("Debug"),
                default,
            },
        ));
    }
    items
}

/// Rust keywords bindgen renames by appending `_`.
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
    "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true",
    "try", "type", "unsafe", "use", "where", "while", "yield", "abstract", "become", "do", "final",
    "macro", "override", "priv", "typeof", "unsized", "virtual", "gen",
];

fn c_field_name(rust: &str) -> &str {
    match rust.strip_suffix('_') {
        Some(s) if RUST_KEYWORDS.contains(&s) => s,
        _ => rust,
    }
}

/// How C reaches the members of an anonymous struct/union: from the named type `root`, through
/// the named members `c_path` (C11 anonymous members add none); `rust_base` sums the Rust offsets
/// of the members on the way.
struct MemberPath {
    root: String,
    c_path: Vec<String>,
    rust_base: Vec<String>,
}

/// Finds the member of another type whose type is `name`, and the path to it from a named type.
fn member_path(pre: &str, found: &Items, name: &str, depth: usize) -> Option<MemberPath> {
    if depth > 8 {
        return None;
    }
    let (parent, field, _) = found.members.iter().find(|(_, _, ty)| ty == name)?;
    let parent_is_union = found.types.iter().any(|t| &t.0 == parent && t.1);
    let parent_anonymous = parent
        .rsplit_once("__bindgen_ty_")
        .is_some_and(|(_, n)| n.chars().all(|c| c.is_ascii_digit()));
    let mut path = match (!parent_anonymous)
        .then(|| c_type_name(pre, parent, parent_is_union))
        .flatten()
    {
        Some(root) => MemberPath {
            root,
            c_path: Vec::new(),
            rust_base: Vec::new(),
        },
        None => member_path(pre, found, parent, depth + 1)?,
    };
    if !field.starts_with("__bindgen_anon_") {
        path.c_path.push(c_field_name(field).to_string());
    }
    path.rust_base
        .push(format!("::core::mem::offset_of!({parent}, {field})"));
    Some(path)
}

/// One value the C compiler computes: a C expression and the Rust expression that must equal it.
struct Probe {
    c: String,
    rust: String,
    what: String,
}

/// How C spells the type bindgen named `name`: `struct name`, `union name`, or the typedef.
/// A struct or union declared inside another is named `outer_inner` by bindgen but `inner` in C.
fn c_type_name(preprocessed: &str, name: &str, is_union: bool) -> Option<String> {
    let kw = if is_union { "union" } else { "struct" };
    if preprocessed.contains(&format!("{kw} {name} {{")) {
        return Some(format!("{kw} {name}"));
    }
    if preprocessed.contains(&format!("}} {name};")) || preprocessed.contains(&format!(" {name};"))
    {
        return Some(name.to_string());
    }
    name.match_indices('_')
        .map(|(i, _)| &name[i + 1..])
        .find(|inner| !inner.is_empty() && preprocessed.contains(&format!("{kw} {inner} {{")))
        .map(|inner| format!("{kw} {inner}"))
}

fn run_capture(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Collapses all whitespace runs to one space (to search preprocessed C).
fn squash(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = true;
        } else {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    out
}

/// Reads the bytes of the objects labelled `xsbf_N` out of clang/gcc assembly (little-endian
/// data directives; `.word` is 2 bytes on x86 and 4 on arm).
fn parse_asm_objects(asm: &str, arch: Arch, n: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut objects: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut current: Option<(usize, Vec<u8>)> = None;
    for line in asm.lines() {
        let t = line.trim();
        let first = t.split_whitespace().next().unwrap_or("");
        if let Some(label) = first.strip_suffix(':') {
            if let Some((i, bytes)) = current.take() {
                objects[i] = Some(bytes);
            }
            current = label
                .strip_prefix("xsbf_")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < n)
                .map(|i| (i, Vec::new()));
            continue;
        }
        let Some((i, bytes)) = &mut current else {
            continue;
        };
        let mut words = t.splitn(2, char::is_whitespace);
        let dir = words.next().unwrap_or("");
        let arg = words
            .next()
            .unwrap_or("")
            .split(['#', '@'])
            .next()
            .unwrap_or("")
            .trim();
        let arg = arg.split("//").next().unwrap_or("").trim();
        let size = match dir {
            ".byte" => 1,
            ".short" | ".hword" | ".2byte" | ".value" => 2,
            ".word" if arch.name == "x86_64" => 2,
            ".word" | ".long" | ".4byte" | ".int" => 4,
            ".quad" | ".xword" | ".8byte" => 8,
            ".zero" | ".space" => {
                let count: usize = arg
                    .parse()
                    .map_err(|_| format!("bad `{t}` in the bitfield probe"))?;
                bytes.extend(std::iter::repeat_n(0u8, count));
                continue;
            }
            ".size" => {
                objects[*i] = Some(std::mem::take(bytes));
                current = None;
                continue;
            }
            d if d.starts_with('.') => continue,
            _ => continue,
        };
        let v = parse_asm_int(arg).ok_or_else(|| format!("bad `{t}` in the bitfield probe"))?;
        bytes.extend_from_slice(&v.to_le_bytes()[..size]);
    }
    if let Some((i, bytes)) = current {
        objects[i] = Some(bytes);
    }
    objects
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.ok_or_else(|| format!("object xsbf_{i} not found in the assembly")))
        .collect()
}

/// An integer operand of a data directive, as clang and gcc spell it: decimal, `0x` hex, or
/// negative decimal (two's complement in 64 bits).
fn parse_asm_int(arg: &str) -> Option<u64> {
    if let Some(h) = arg.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(neg) = arg.strip_prefix('-') {
        neg.parse::<u64>().ok().map(|v| v.wrapping_neg())
    } else {
        arg.parse().ok()
    }
}

/// The set bits of an object whose one bitfield was set to all ones: (first bit, width).
fn bit_run(bytes: &[u8]) -> Option<(u64, u64)> {
    let bits: Vec<u64> = bytes
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            (0..8)
                .filter(move |k| b & (1 << k) != 0)
                .map(move |k| (i * 8 + k) as u64)
        })
        .collect();
    let (&first, &last) = (bits.first()?, bits.last()?);
    (last - first + 1 == bits.len() as u64).then_some((first, bits.len() as u64))
}

/// Reads `xsabi_N` values out of clang/gcc assembly (`.quad`, `.xword` or `.8byte`).
fn parse_asm(asm: &str, n: usize) -> Result<Vec<u64>, String> {
    let mut values = vec![None; n];
    let mut pending: Option<usize> = None;
    for line in asm.lines() {
        let t = line.trim();
        // Labels may carry a trailing comment (`xsabi_5:   # @xsabi_5`).
        let first = t.split_whitespace().next().unwrap_or("");
        if let Some(label) = first.strip_suffix(':') {
            pending = label.strip_prefix("xsabi_").and_then(|i| i.parse().ok());
            continue;
        }
        if let Some(i) = pending {
            let mut words = t.split_whitespace();
            if let (Some(dir), Some(val)) = (words.next(), words.next()) {
                if dir == ".zero" && val == "8" {
                    // gcc's spelling of an all-zero 8-byte object.
                    if i < n {
                        values[i] = Some(0);
                    }
                    pending = None;
                } else if matches!(dir, ".quad" | ".xword" | ".8byte") {
                    if i < n {
                        values[i] = parse_asm_int(val.trim_end_matches(','));
                    }
                    pending = None;
                }
            }
        }
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| format!("probe value xsabi_{i} not found in the assembly")))
        .collect()
}

/// Writes the C probe, compiles it, and returns `abi.rs`.
fn abi_probe(
    arch: Arch,
    opts: &Options,
    items: &[(&Area, Items)],
    prov: &Provenance,
    out: &mut ArchOutput,
) -> Result<String, String> {
    let all_headers: Vec<&str> = AREAS
        .iter()
        .flat_map(|a| a.headers.iter().copied())
        .collect();
    let mut c = wrapper(&all_headers);
    c.push_str("#include <linux/ioctl.h>\n");
    let wrapper_path = opts.scratch_dir.join(format!("abi-{}.h", arch.name));
    write(&wrapper_path, &c)?;
    let args = clang_args(arch, opts);
    let have_clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_clang && opts.allow_no_probe {
        out.notes.push(format!(
            "{}: no `clang` executable: the ABI of these bindings was not checked against C",
            arch.name
        ));
        return Ok(
            "// Generated by xen-sys/codegen without a C compiler: no ABI assertions.\n".into(),
        );
    }
    let pre = run_capture(
        Command::new("clang")
            .args(&args)
            .arg("-E")
            .arg("-dD")
            .arg(&wrapper_path),
    )?;
    let macros: BTreeSet<String> = pre
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .filter_map(|l| l.split([' ', '(']).next())
        .map(str::to_string)
        .collect();
    let pre = squash(&pre);

    // Every IOCTL_* the headers define must be one we compute.
    let known: BTreeSet<&str> = IOCTLS.iter().map(|i| i.1).collect();
    for m in &macros {
        if (m.starts_with("IOCTL_PRIVCMD_") || m.starts_with("IOCTL_EVTCHN_"))
            && !known.contains(m.as_str())
        {
            return Err(format!(
                "{}: the headers define {m}, which xen-sys does not compute yet: add it to \
                 xen-sys/src (the area module) and to IOCTLS in xen-sys/codegen/mod.rs",
                arch.name
            ));
        }
    }

    // (feature cfg, probes)
    let mut groups: Vec<(&Area, Vec<Probe>)> = Vec::new();
    let mut bit_groups: Vec<Vec<(Bitfield, String)>> = Vec::new();
    let (mut n_ioctl, mut n_const, mut n_type, mut n_field) = (0, 0, 0, 0);
    for (area, found) in items {
        let mut probes = Vec::new();
        for (_, name) in IOCTLS.iter().filter(|i| i.0 == area.name) {
            if !macros.contains(*name) {
                out.notes.push(format!(
                    "{}: {name} is not defined by these headers",
                    arch.name
                ));
                continue;
            }
            probes.push(Probe {
                c: format!("(unsigned long long)({name})"),
                rust: format!("{name} as u64"),
                what: format!("ioctl number {name}"),
            });
            n_ioctl += 1;
        }
        for name in &found.consts {
            // Constants bindgen derived from macros or enums; the probe proves the value.
            probes.push(Probe {
                c: format!("(unsigned long long)({name})"),
                rust: format!("{name} as u64"),
                what: format!("value of {name}"),
            });
            n_const += 1;
        }
        for (name, is_union, fields) in &found.types {
            if name.starts_with("__Bindgen") || name.starts_with("__Incomplete") {
                continue;
            }
            // A type with a C tag or typedef is probed by name; an anonymous one (`..__bindgen_ty_N`)
            // through the member path that reaches it from a named type.
            let anonymous = name
                .rsplit_once("__bindgen_ty_")
                .is_some_and(|(_, n)| n.chars().all(|c| c.is_ascii_digit()));
            let direct = if anonymous {
                None
            } else {
                c_type_name(&pre, name, *is_union)
            };
            if let Some(cty) = direct {
                probes.push(Probe {
                    c: format!("sizeof({cty})"),
                    rust: format!("::core::mem::size_of::<{name}>() as u64"),
                    what: format!("size of {cty}"),
                });
                probes.push(Probe {
                    c: format!("_Alignof({cty})"),
                    rust: format!("::core::mem::align_of::<{name}>() as u64"),
                    what: format!("alignment of {cty}"),
                });
                n_type += 1;
                for f in fields {
                    probes.push(Probe {
                        c: format!("offsetof({cty}, {})", c_field_name(f)),
                        rust: format!("::core::mem::offset_of!({name}, {f}) as u64"),
                        what: format!("offset of {cty}.{}", c_field_name(f)),
                    });
                    n_field += 1;
                }
                continue;
            }
            let Some(path) = member_path(&pre, found, name, 0) else {
                out.notes.push(format!(
                    "{}: no C name or member path for `{name}`; not probed",
                    arch.name
                ));
                continue;
            };
            let prefix: String = path.c_path.iter().map(|p| format!("{p}.")).collect();
            let base = if path.rust_base.is_empty() {
                String::new()
            } else {
                format!("{} + ", path.rust_base.join(" + "))
            };
            if !path.c_path.is_empty() {
                let expr = format!("(({}*)0)->{}", path.root, path.c_path.join("."));
                probes.push(Probe {
                    c: format!("sizeof({expr})"),
                    rust: format!("::core::mem::size_of::<{name}>() as u64"),
                    what: format!("size of {}.{}", path.root, path.c_path.join(".")),
                });
                probes.push(Probe {
                    c: format!("__alignof__({expr})"),
                    rust: format!("::core::mem::align_of::<{name}>() as u64"),
                    what: format!("alignment of {}.{}", path.root, path.c_path.join(".")),
                });
                n_type += 1;
            }
            for f in fields {
                let cf = c_field_name(f);
                probes.push(Probe {
                    c: format!("offsetof({}, {prefix}{cf})", path.root),
                    rust: format!("({base}::core::mem::offset_of!({name}, {f})) as u64"),
                    what: format!("offset of {}.{prefix}{cf}", path.root),
                });
                n_field += 1;
            }
        }
        let mut bits = Vec::new();
        for b in &found.bitfields {
            let is_union = found.types.iter().any(|t| t.0 == b.ty && t.1);
            if b.ty.contains("__bindgen") {
                continue;
            }
            match c_type_name(&pre, &b.ty, is_union) {
                Some(cty) => bits.push((b.clone(), cty)),
                None => out.notes.push(format!(
                    "{}: bitfield {}.{} not probed",
                    arch.name, b.ty, b.field
                )),
            }
        }
        groups.push((area, probes));
        bit_groups.push(bits);
    }

    // The C probe: one 8-byte constant per value.
    let mut src = c.clone();
    let mut index = 0usize;
    for (_, probes) in &groups {
        for p in probes {
            let _ = writeln!(
                src,
                "const unsigned long long xsabi_{index} = (unsigned long long)({});",
                p.c
            );
            index += 1;
        }
    }
    // Bitfields: one object per bitfield, with only that bitfield set to all ones.
    let mut n_objects = 0usize;
    for bits in &bit_groups {
        for (b, cty) in bits {
            let _ = writeln!(
                src,
                "const {cty} xsbf_{n_objects} = {{ .{} = -1 }};",
                c_field_name(&b.field)
            );
            n_objects += 1;
        }
    }
    let c_path = opts.scratch_dir.join(format!("abi-{}.c", arch.name));
    write(&c_path, &src)?;
    let asm = run_capture(
        Command::new("clang")
            .args(&args)
            .args(["-S", "-O0", "-w", "-o", "-"])
            .arg(&c_path),
    )?;
    let values = parse_asm(&asm, index)?;
    let objects = parse_asm_objects(&asm, arch, n_objects)?;
    out.compilers.push(prov.clang.clone());

    // A second compiler, where this host has one for the architecture.
    let host_gcc = if std::env::consts::ARCH == arch.name {
        Some("gcc")
    } else {
        None
    };
    let gcc = arch
        .gcc
        .filter(|g| {
            Command::new(g)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .or(host_gcc);
    match gcc {
        Some(gcc) => {
            // Same arguments minus `--target` (a gcc is built for one target). A cross gcc does
            // not search /usr/include, where libxen-dev puts the Xen headers: add it last, so the
            // architecture's own Linux headers still come first, as they do for clang.
            let mut gargs: Vec<String> = args
                .iter()
                .filter(|a| !a.starts_with("--target="))
                .cloned()
                .collect();
            gargs.extend(["-idirafter".to_string(), "/usr/include".to_string()]);
            let gasm = run_capture(
                Command::new(gcc)
                    .args(&gargs)
                    .args(["-S", "-O0", "-w", "-o", "-"])
                    .arg(&c_path),
            )?;
            let gvalues = parse_asm(&gasm, index)?;
            let gobjects = parse_asm_objects(&gasm, arch, n_objects)?;
            if let Some(k) =
                (0..n_objects).find(|k| bit_run(&objects[*k]) != bit_run(&gobjects[*k]))
            {
                let (b, _) = bit_groups.iter().flatten().nth(k).ok_or("bitfield index")?;
                return Err(format!(
                    "{}: clang and gcc disagree on the position of bitfield {}.{}",
                    arch.name, b.ty, b.field
                ));
            }
            let mut i = 0usize;
            for (_, probes) in &groups {
                for p in probes {
                    if values[i] != gvalues[i] {
                        return Err(format!(
                            "{}: clang and gcc disagree on the {}: {} vs {}",
                            arch.name, p.what, values[i], gvalues[i]
                        ));
                    }
                    i += 1;
                }
            }
            let v = run_capture(Command::new(gcc).arg("-dumpfullversion")).unwrap_or_default();
            out.compilers.push(format!("{gcc} {}", v.trim()));
        }
        None if opts.allow_no_probe => out.notes.push(format!(
            "{}: no gcc for this architecture here; only clang computed the ABI values",
            arch.name
        )),
        None => {
            return Err(format!(
                "{}: no gcc for this architecture ({}): the ABI proof needs a second compiler \
                 (Debian: apt-get install {})",
                arch.name,
                arch.gcc.unwrap_or("gcc"),
                if arch.name == "x86_64" {
                    "gcc"
                } else {
                    "gcc-aarch64-linux-gnu"
                }
            ))
        }
    }

    // abi.rs: compile-time assertions, one block per area, gated like the area.
    let mut rs = String::new();
    let _ = writeln!(
        rs,
        "// Generated by xen-sys/codegen: do not edit; regenerate with `cargo xtask bindgen`.\n\
         // Compile-time proof that xen-sys's {} bindings match the C compiler: every value below was\n\
         // computed by compiling the real headers with {} (clang --target={}).\n\
         // A mismatch fails the build for this architecture.",
        arch.name,
        if out.compilers.len() > 1 { "clang and gcc" } else { "clang" },
        arch.triple
    );
    let _ = writeln!(rs, "{PROVENANCE_PREFIX}tools: {}", out.compilers.join(", "));
    let mut i = 0usize;
    let mut k = 0usize;
    let mut n_bits = 0usize;
    for ((area, probes), bits) in groups.iter().zip(&bit_groups) {
        rs.push('\n');
        if let Some(f) = area.feature {
            let _ = writeln!(rs, "#[cfg(feature = \"{f}\")]");
        }
        let _ = writeln!(rs, "const _: () = {{");
        let _ = writeln!(
            rs,
            "    #[allow(unused_imports)]\n    use crate::{}::*;",
            area.name
        );
        for p in probes {
            let v = values[i];
            i += 1;
            let _ = writeln!(
                rs,
                "    assert!({} == {v:#x}, \"{}\");",
                p.rust,
                p.what.replace('"', "\\\"")
            );
        }
        // Bitfields: bindgen's accessors use bit `offset_of!(unit) * 8 + bit` of a little-endian
        // unit, `width` bits wide; the C compiler placed the all-ones field at (first, width).
        for (b, cty) in bits {
            let Some((first, width)) = bit_run(&objects[k]) else {
                return Err(format!(
                    "{}: the C bitfield {cty}.{} is not one run of bits",
                    arch.name, b.field
                ));
            };
            k += 1;
            n_bits += 1;
            let _ = writeln!(
                rs,
                "    assert!(::core::mem::offset_of!({}, {}) as u64 * 8 + {} == {first} && {} == {width}, \
                 \"bitfield {cty}.{} at bit {first}, {width} wide\");",
                b.ty,
                b.unit,
                b.bit,
                b.width,
                c_field_name(&b.field)
            );
        }
        let _ = writeln!(rs, "}};");
    }
    out.verified = Verified {
        ioctls: n_ioctl,
        consts: n_const,
        types: n_type,
        fields: n_field,
        bitfields: n_bits,
    };
    Ok(rs)
}

/// How a committed file differs from a fresh generation (provenance lines ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// 1-based line (among the compared lines) where they first differ.
    pub first: usize,
    /// That line in the committed file (empty past its end).
    pub committed: String,
    /// That line in the fresh output (empty past its end).
    pub fresh: String,
    /// Lines only in the committed file (counting duplicates).
    pub removed: usize,
    /// Lines only in the fresh output (counting duplicates).
    pub added: usize,
}

/// Compares two generated files ignoring the provenance lines; `None` when equal.
pub fn compare(committed: &str, fresh: &str) -> Option<Diff> {
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with(PROVENANCE_PREFIX))
            .map(str::to_string)
            .collect()
    };
    let (a, b) = (strip(committed), strip(fresh));
    if a == b {
        return None;
    }
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let mut counts: BTreeMap<&str, isize> = BTreeMap::new();
    for l in &a {
        *counts.entry(l).or_default() += 1;
    }
    for l in &b {
        *counts.entry(l).or_default() -= 1;
    }
    let removed = counts
        .values()
        .filter(|c| **c > 0)
        .map(|c| c.unsigned_abs())
        .sum();
    let added = counts
        .values()
        .filter(|c| **c < 0)
        .map(|c| c.unsigned_abs())
        .sum();
    Some(Diff {
        first: first + 1,
        committed: a.get(first).cloned().unwrap_or_default(),
        fresh: b.get(first).cloned().unwrap_or_default(),
        removed,
        added,
    })
}

/// The provenance lines of a file (to tell the user when only versions changed).
pub fn provenance_lines(s: &str) -> Vec<&str> {
    s.lines()
        .filter(|l| l.starts_with(PROVENANCE_PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asm_values_from_clang_and_gcc_spellings() {
        let asm =
            "xsabi_0:                  # @xsabi_0\n\t.quad\t48   # 0x30\n\t.size\txsabi_0, 8\n\
                   xsabi_1:\n\t.zero\t8\n\
                   xsabi_2:\n\t.xword\t-1\n";
        assert_eq!(parse_asm(asm, 3).unwrap(), vec![48, 0, u64::MAX]);
        assert!(
            parse_asm(asm, 4).is_err(),
            "a missing value is an error, not a zero"
        );
    }

    #[test]
    fn asm_objects_and_bit_runs() {
        let x86 = "xsbf_0:\n\t.zero\t30\n\t.byte\t15\n\t.zero\t1\n\t.size\txsbf_0, 32\n";
        let objs = parse_asm_objects(x86, ARCHES[0], 1).unwrap();
        assert_eq!(objs[0].len(), 32);
        assert_eq!(bit_run(&objs[0]), Some((240, 4)));
        // `.word` is 2 bytes on x86 and 4 on arm.
        let word = "xsbf_0:\n\t.word\t0xfff0\n\t.size\txsbf_0, 4\n";
        assert_eq!(parse_asm_objects(word, ARCHES[0], 1).unwrap()[0].len(), 2);
        assert_eq!(parse_asm_objects(word, ARCHES[1], 1).unwrap()[0].len(), 4);
        assert_eq!(bit_run(&[0b0101]), None, "two runs are not one bitfield");
    }

    #[test]
    fn compare_ignores_provenance_only() {
        let a = format!("// x\n{PROVENANCE_PREFIX}tools: clang 14\npub const A: u32 = 1;\n");
        let b = format!("// x\n{PROVENANCE_PREFIX}tools: clang 15\npub const A: u32 = 1;\n");
        assert_eq!(compare(&a, &b), None);
        let c = b.replace("= 1", "= 2");
        let d = compare(&a, &c).unwrap();
        assert_eq!((d.first, d.removed, d.added), (2, 1, 1));
        assert_eq!(d.fresh, "pub const A: u32 = 2;");
    }

    #[test]
    fn keyword_fields_map_back_to_c() {
        assert_eq!(c_field_name("type_"), "type");
        assert_eq!(c_field_name("pad_"), "pad_");
        assert_eq!(c_field_name("dom"), "dom");
    }

    #[test]
    fn area_files_match_paths_clang_reports() {
        let re = file_regex("xen/xen\\.h");
        assert_eq!(re, ".*/xen/([^/]+/\\.\\./)*xen\\.h");
        let full = |p: &str| {
            // The shape of the regex, checked by hand: `.../xen/` then `dir/../` segments.
            let rest = p.split_once("/xen/").map(|x| x.1).unwrap_or("");
            let mut r = rest;
            while let Some((seg, tail)) = r.split_once("/../") {
                assert!(!seg.contains('/'));
                r = tail;
            }
            r == "xen.h"
        };
        assert!(full("/usr/include/xen/xen.h"));
        assert!(full("/usr/include/xen/arch-x86/../xen.h"));
        assert!(!full("/tmp/shim/xen/interface/xen.h"));
    }

    #[test]
    fn scans_bindgen_output() {
        let code = "#[repr(C)]\n#[derive(Debug, Default, Copy, Clone)]\npub struct s {\n    pub type_: u8,\n    pub _bitfield_align_1: [u8; 0],\n    pub _bitfield_1: __BindgenBitfieldUnit<[u8; 1usize]>,\n}\n\
                    impl s {\n    pub fn set_state(&mut self, val: u8) {\n        unsafe {\n            self._bitfield_1.set_const::<4usize, 2u8>(val as u64)\n        }\n    }\n}\n\
                    pub const X: u32 = 1;\npub const S: &[u8; 3] = b\"lx\\0\";\npub type t = s;\n";
        let items = scan_items(code);
        assert_eq!(
            items.types,
            vec![("s".to_string(), false, vec!["type_".to_string()])]
        );
        assert_eq!(items.consts, vec!["X"]);
        assert_eq!(items.string_consts, vec!["S"]);
        assert_eq!(
            items.alias_targets,
            vec![("t".to_string(), "s".to_string())]
        );
        let b = &items.bitfields[0];
        assert_eq!(
            (
                b.ty.as_str(),
                b.field.as_str(),
                b.unit.as_str(),
                b.bit,
                b.width
            ),
            ("s", "state", "_bitfield_1", 4, 2)
        );
        assert_eq!(items.traits[0].1, ALL_TRAITS);
    }
}
