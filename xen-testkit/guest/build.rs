//! Links the guest with its own linker script (fixed addresses: see `link.ld`).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg=-T{dir}/link.ld");
    println!("cargo:rustc-link-arg=--no-relax");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=../src/protocol.rs");
}
