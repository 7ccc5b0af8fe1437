//! Small helpers shared by the tasks: locating the workspace and running commands loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The workspace root (the parent of the `xtask` package).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The `cargo` that invoked us (so toolchain overrides carry through), or plain `cargo`.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd`, echoing it first; fails with a message naming it if it does not exit 0.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("+ {}", display(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", display(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {status}", display(cmd)))
    }
}

/// A shell-like rendering of a command for logs.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Makes sure the Rust standard library for `target` is installed, adding it with `rustup` when it
/// is missing (a fresh machine has only the host's). Without rustup, says what to install.
pub fn ensure_rust_target(target: &str) -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if out.status.success() => {
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == target)
            {
                return Ok(());
            }
            run(Command::new("rustup").args(["target", "add", target]))
        }
        _ => Err(format!(
            "cannot ask rustup whether the {target} target is installed; install it \
             (`rustup target add {target}`) or a toolchain that has it"
        )),
    }
}

/// The value of a `--timeout SECS` option (`value`: the next argument), with `usage` in the
/// error when it is missing.
pub fn timeout_arg(value: Option<&String>, usage: &str) -> Result<Duration, String> {
    let s = value.ok_or_else(|| format!("--timeout needs seconds\n\n{usage}"))?;
    let secs: u64 = s
        .parse()
        .map_err(|_| format!("--timeout: `{s}` is not a number of seconds"))?;
    Ok(Duration::from_secs(secs))
}

/// Owned command-line arguments, for tests.
#[cfg(test)]
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
