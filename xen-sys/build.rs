//! Without the `bindgen` feature: nothing (the committed bindings under `src/bindings/` are used).
//!
//! With it: regenerates the target architecture's modules and `abi.rs` into `OUT_DIR` with the
//! same generator `cargo xtask bindgen` uses (`codegen/`), from the installed headers or
//! those under `XEN_SYS_INCLUDE_DIR`, and sets `cfg(xen_sys_bindgen)` so `lib.rs` includes them.
//! On docs.rs (`DOCS_RS` set; `all-features` turns `bindgen` on there too, but it has no Xen
//! headers) it does nothing, and the committed bindings are documented.
//!
//! `privcmd` needs Linux 6.12's `xen/privcmd.h` (irqfd, ioeventfd, GSI): name a directory holding
//! `xen/privcmd.h` from Linux 6.12 or newer in `XEN_SYS_PRIVCMD_INCLUDE_DIR`, or have such a header
//! installed. With an older one, the committed `privcmd` bindings are used (its structs are a
//! superset of the older header's, and `abi.rs` still proves the older ones).

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
    println!("cargo:rerun-if-changed=codegen");
    println!("cargo:rerun-if-env-changed=XEN_SYS_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=XEN_SYS_PRIVCMD_INCLUDE_DIR");
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
        privcmd_dir: std::env::var_os("XEN_SYS_PRIVCMD_INCLUDE_DIR").map(PathBuf::from),
        privcmd_origin: "XEN_SYS_PRIVCMD_INCLUDE_DIR".into(),
        scratch_dir: out_dir.join("codegen"),
        allow_no_probe: true,
    };
    let out = match codegen::generate_arch(arch, &opts) {
        Ok(out) => out,
        Err(e) => panic!("xen-sys: generating bindings failed: {e}"),
    };
    // (A missing cross gcc is normal here: the bindings are still proven against clang; so is a
    // privcmd.h older than 6.12, see above.)
    for note in out
        .notes
        .iter()
        .filter(|n| !n.contains("no gcc") && !n.contains("is not defined by these headers"))
    {
        println!("cargo:warning=xen-sys: {note}");
    }
    for f in &out.files {
        let mut contents = f.contents.clone();
        if f.name == "privcmd.rs" && !contents.contains("pub struct privcmd_pcidev_get_gsi") {
            let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("src/bindings")
                .join(arch.name)
                .join(&f.name);
            contents = match std::fs::read_to_string(&committed) {
                Ok(c) => c,
                Err(e) => panic!("xen-sys: reading {}: {e}", committed.display()),
            };
        }
        let path = out_dir.join(&f.name);
        if let Err(e) = std::fs::write(&path, &contents) {
            panic!("xen-sys: writing {}: {e}", path.display());
        }
    }
    println!("cargo:rustc-cfg=xen_sys_bindgen");
}
