//! Without the `bindgen` feature: nothing (the committed bindings under `src/bindings/` are used).
//!
//! With it: regenerates the target architecture's modules and `abi.rs` into `OUT_DIR` with the
//! same generator `cargo xtask bindgen` uses (`codegen/mod.rs`), from the installed headers or
//! those under `XEN_SYS_INCLUDE_DIR`, and sets `cfg(xen_sys_bindgen)` so `lib.rs` includes them.
//! On docs.rs (`DOCS_RS` set; `all-features` turns `bindgen` on there too, but it has no Xen
//! headers) it does nothing, and the committed bindings are documented.

#[cfg(feature = "bindgen")]
#[path = "codegen/mod.rs"]
#[allow(dead_code)] // `compare` and friends are for `cargo xtask bindgen --check`
mod codegen;

#[cfg(not(feature = "bindgen"))]
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(xen_sys_bindgen)");
}

#[cfg(feature = "bindgen")]
fn main() {
    use std::path::PathBuf;

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=codegen/mod.rs");
    println!("cargo:rerun-if-env-changed=XEN_SYS_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    println!("cargo::rustc-check-cfg=cfg(xen_sys_bindgen)");
    if std::env::var_os("DOCS_RS").is_some() {
        return;
    }
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let Some(arch) = codegen::arch(&target_arch) else {
        panic!("xen-sys: no bindings for target_arch {target_arch:?} (x86_64 and aarch64 only)");
    };
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let opts = codegen::Options {
        xen_include_dir: std::env::var_os("XEN_SYS_INCLUDE_DIR").map(PathBuf::from),
        scratch_dir: out_dir.join("codegen"),
        allow_no_probe: true,
    };
    let out = match codegen::generate_arch(arch, &opts) {
        Ok(out) => out,
        Err(e) => panic!("xen-sys: generating bindings failed: {e}"),
    };
    // (A missing cross gcc is normal here: the bindings are still proven against clang.)
    for note in out.notes.iter().filter(|n| !n.contains("no gcc")) {
        println!("cargo:warning=xen-sys: {note}");
    }
    for f in &out.files {
        let path = out_dir.join(&f.name);
        if let Err(e) = std::fs::write(&path, &f.contents) {
            panic!("xen-sys: writing {}: {e}", path.display());
        }
    }
    println!("cargo:rustc-cfg=xen_sys_bindgen");
}
