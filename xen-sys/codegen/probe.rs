//! The ABI probe: a C file that makes clang (and gcc) compute every ioctl number, constant,
//! size, alignment, field offset and bitfield position, and the `abi.rs` that asserts the
//! Rust bindings agree.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::Command;

use super::asm::*;
use super::bindings::{clang_args, wrapper, write};
use super::provenance::Provenance;
use super::scan::{Bitfield, Items};
use super::*;

/// Rust keywords bindgen renames by appending `_`.
pub(super) const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move",
    "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true",
    "try", "type", "unsafe", "use", "where", "while", "yield", "abstract", "become", "do", "final",
    "macro", "override", "priv", "typeof", "unsized", "virtual", "gen",
];

pub(super) fn c_field_name(rust: &str) -> &str {
    match rust.strip_suffix('_') {
        Some(s) if RUST_KEYWORDS.contains(&s) => s,
        _ => rust,
    }
}

/// How C reaches the members of an anonymous struct/union: from the named type `root`, through
/// the named members `c_path` (C11 anonymous members add none); `rust_base` sums the Rust offsets
/// of the members on the way.
pub(super) struct MemberPath {
    pub(super) root: String,
    pub(super) c_path: Vec<String>,
    pub(super) rust_base: Vec<String>,
}

/// Finds the member of another type whose type is `name`, and the path to it from a named type.
pub(super) fn member_path(
    pre: &str,
    found: &Items,
    name: &str,
    depth: usize,
) -> Option<MemberPath> {
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
pub(super) struct Probe {
    pub(super) c: String,
    pub(super) rust: String,
    pub(super) what: String,
}

/// How C spells the type bindgen named `name`: `struct name`, `union name`, or the typedef.
/// A struct or union declared inside another is named `outer_inner` by bindgen but `inner` in C.
pub(super) fn c_type_name(preprocessed: &str, name: &str, is_union: bool) -> Option<String> {
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

pub(super) fn run_capture(cmd: &mut Command) -> Result<String, String> {
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
pub(super) fn squash(s: &str) -> String {
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

/// Writes the C probe, compiles it, and returns `abi.rs`.
pub(super) fn abi_probe(
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
                 xen-sys/src (the area module) and to IOCTLS in xen-sys/codegen/areas.rs",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_fields_map_back_to_c() {
        assert_eq!(c_field_name("type_"), "type");
        assert_eq!(c_field_name("pad_"), "pad_");
        assert_eq!(c_field_name("dom"), "dom");
    }
}
