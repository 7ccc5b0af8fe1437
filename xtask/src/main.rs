//! `cargo xtask`: the project's own tasks, in Rust, so they run wherever cargo does.
//!
//! - `cargo xtask ci`: every check CI runs (format, clippy, tests, bindings, aarch64, docs, the Xen machine).
//! - `cargo xtask bindgen [--check]`: regenerate `xen-sys`'s committed bindings (or check them).
//! - `cargo xtask xen-test [FILTER] [--shell] [--keep] [-v]`: run the workspace's tests on a real Xen in QEMU.
//! - `cargo xtask icount [--check]`: instructions per hot-path operation, against their goals.
//! - `cargo xtask demo`: boot Xen and serve an HVM guest's firmware with our Rust device model.
//! - `cargo xtask bench [--rounds N]`: our device model and QEMU serving one Linux guest, side by side.

mod bench;
mod bindgen;
mod ci;
mod demo;
mod icount;
mod payloads;
mod util;
mod xen_test;

use std::process::ExitCode;

fn usage() -> &'static str {
    "usage: cargo xtask <command> [args]\n\
     \n\
     commands:\n\
     \x20 ci                  run every check CI runs\n\
     \x20 bindgen [--check]   regenerate xen-sys bindings (or fail if the committed ones are stale)\n\
     \x20 xen-test [FILTER] [--shell] [--keep] [-v] [-p PACKAGE]... [--timeout SECS]\n\
     \x20                     run the workspace's Xen tests inside Xen 4.17 under QEMU\n\
     \x20 icount [--check]    instructions per hot-path operation (callgrind), against the goals\n\
     \x20 demo [--firmware] [-v] [--timeout SECS]\n\
     \x20                     boot Xen and run Linux on our PC device model (--firmware: SeaBIOS alone)\n\
     \x20 bench [--rounds N] [--short] [-v] [--timeout SECS]\n\
     \x20                     our device model and QEMU serving one Linux guest, side by side\n"
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(cmd) = args.next() else {
        eprint!("{}", usage());
        return ExitCode::FAILURE;
    };
    let rest: Vec<String> = args.collect();
    let result = match cmd.as_str() {
        "ci" => ci::run(&rest),
        "xen-test" => xen_test::run(&rest),
        "demo" => demo::run(&rest),
        "bindgen" => bindgen::run(&rest),
        "icount" => icount::run(&rest),
        "bench" => bench::run(&rest),
        "-h" | "--help" | "help" => {
            print!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{}", usage())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An empty message: the task already reported (xen-test's summary line is last).
            if !e.is_empty() {
                eprintln!("xtask: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
