//! Running bindgen on one area: the clang arguments (shared with the C probe), the include
//! shims and wrapper headers, and the callbacks that fill in what bindgen cannot see.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::*;

/// The clang arguments shared by bindgen and the C probe.
pub(super) fn clang_args(arch: Arch, opts: &Options) -> Vec<String> {
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

pub(super) fn shim_dir(opts: &Options) -> PathBuf {
    opts.scratch_dir.join("shim")
}

/// Writes the include shims: Linux's `xen/privcmd.h` includes `<xen/interface/xen.h>`, a path
/// that exists only in the kernel tree; ours forwards to Xen's `<xen/xen.h>`.
pub(super) fn write_shims(opts: &Options) -> Result<(), String> {
    let dir = shim_dir(opts).join("xen/interface");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write(&dir.join("xen.h"), "#include <xen/xen.h>\n")
}

pub(super) fn write(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The wrapper every translation unit starts with: the freestanding C types the headers assume,
/// then Xen's base header.
pub(super) fn wrapper(headers: &[&str]) -> String {
    let mut s = String::from("#include <stddef.h>\n#include <stdint.h>\n#include <xen/xen.h>\n");
    for h in headers {
        let _ = writeln!(s, "#include <{h}>");
    }
    s
}

/// The regular expression bindgen matches against a header's path. Clang names a file by the
/// path it was last reached through (`.../xen/arch-x86/../xen.h`, `.../xen/hvm/../trace.h`), so
/// `dir/../` segments are allowed after `xen/`.
pub(super) fn file_regex(suffix: &str) -> String {
    match suffix.strip_prefix("xen/") {
        Some(rest) => format!(".*/xen/([^/]+/\\.\\./)*{rest}"),
        None => format!(".*/{suffix}"),
    }
}

/// What a type generated in an earlier area implements, for the areas that use it: bindgen cannot
/// see into blocklisted types, and would otherwise drop `Copy`/`Debug`/`Default` from every type
/// containing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Traits {
    pub(super) copy: bool,
    pub(super) debug: bool,
    /// `Some(true)`: derived; `Some(false)`: implemented by hand (zeroed); `None`: neither.
    pub(super) default: Option<bool>,
}

pub(super) const ALL_TRAITS: Traits = Traits {
    copy: true,
    debug: true,
    default: Some(true),
};

/// Rewrites `xen_mk_uint(X)`-style wrappers (which bindgen's macro evaluator cannot call) to `X`,
/// so `DOMID_SELF` and friends come out as constants; answers bindgen's questions about the
/// traits of types that belong to other areas.
#[derive(Debug)]
pub(super) struct Callbacks {
    pub(super) traits: BTreeMap<String, Traits>,
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
pub(super) fn bindgen_area(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
