//! Building the test executables: `cargo test --no-run --message-format=json`, all features,
//! for the workspace (without xtask) or the `-p` packages; the executables are the artifacts
//! built with the test profile.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use crate::util::{self, cargo};

/// What `cargo metadata` says about the workspace.
pub struct Metadata {
    /// The target directory (`target/`, or wherever CARGO_TARGET_DIR points).
    pub target_directory: PathBuf,
    /// Workspace packages by manifest path.
    pub packages: BTreeMap<PathBuf, String>,
}

impl Metadata {
    /// Runs `cargo metadata --no-deps`.
    pub fn load() -> Result<Metadata, String> {
        let mut cmd = cargo();
        cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running cargo metadata: {e}"))?;
        if !out.status.success() {
            return Err(format!("`{}` failed: {}", util::display(&cmd), out.status));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("cargo metadata printed bad JSON: {e}"))?;
        let target_directory = v["target_directory"]
            .as_str()
            .ok_or("cargo metadata has no target_directory")?
            .into();
        let packages = v["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    PathBuf::from(p["manifest_path"].as_str()?),
                    p["name"].as_str()?.to_string(),
                ))
            })
            .collect();
        Ok(Metadata {
            target_directory,
            packages,
        })
    }
}

/// One test executable.
#[derive(Debug, Clone, PartialEq)]
pub struct TestExe {
    /// Its name in dom0 (`<package>.<kind>.<target>`, e.g. `xen-hypercall.test.privcmd`).
    pub name: String,
    /// The built file on the host.
    pub path: PathBuf,
}

/// One line of cargo's JSON output, if it reports a built executable: the whole message and the
/// executable's path.
pub fn executable_artifact(line: &str) -> Option<(Value, PathBuf)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" {
        return None;
    }
    let path = PathBuf::from(v["executable"].as_str()?);
    Some((v, path))
}

/// The test executables in one line of cargo's JSON output, if it is such an artifact.
pub fn parse_artifact(line: &str, packages: &BTreeMap<PathBuf, String>) -> Option<TestExe> {
    let (v, path) = executable_artifact(line)?;
    if v["profile"]["test"] != true {
        return None;
    }
    let target = v["target"]["name"].as_str()?;
    let kind = v["target"]["kind"][0].as_str().unwrap_or("test");
    let manifest = PathBuf::from(v["manifest_path"].as_str()?);
    let package = packages.get(&manifest).cloned().unwrap_or_else(|| {
        // Not a workspace member we know: the directory name is the next best thing.
        manifest
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into())
    });
    let name: String = format!("{package}.{kind}.{target}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(TestExe { name, path })
}

/// Builds the test executables (all features) and returns them, sorted by name.
pub fn test_executables(meta: &Metadata, packages: &[String]) -> Result<Vec<TestExe>, String> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--no-run",
        "--all-features",
        "--message-format=json-render-diagnostics",
    ]);
    if packages.is_empty() {
        // xtask's own tests are host tests (they look at the host's packages and files).
        cmd.args(["--workspace", "--exclude", "xtask"]);
    } else {
        for p in packages {
            cmd.args(["-p", p]);
        }
    }
    eprintln!("+ {}", util::display(&cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from cargo")?;
    let mut found: BTreeMap<String, TestExe> = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
        if let Some(t) = parse_artifact(&line, &meta.packages) {
            found.insert(t.name.clone(), t);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the test executables failed ({status}); other crates mid-change? try -p PACKAGE"
        ));
    }
    if found.is_empty() {
        return Err("cargo built no test executables".into());
    }
    Ok(found.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_test_artifacts_only() {
        let mut pk = BTreeMap::new();
        pk.insert(
            PathBuf::from("/w/xen-sys/Cargo.toml"),
            "xen-sys".to_string(),
        );
        let test = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/xen-sys#0.1.0","manifest_path":"/w/xen-sys/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"version","src_path":"/w/xen-sys/tests/version.rs"},"profile":{"opt_level":"0","test":true},"features":[],"filenames":["/w/target/debug/deps/version-0123"],"executable":"/w/target/debug/deps/version-0123","fresh":true}"#;
        let t = parse_artifact(test, &pk).unwrap();
        assert_eq!(t.name, "xen-sys.test.version");
        assert_eq!(t.path, PathBuf::from("/w/target/debug/deps/version-0123"));
        let lib = test
            .replace(r#"["test"]"#, r#"["lib"]"#)
            .replace("\"version\"", "\"xen_sys\"");
        assert_eq!(
            parse_artifact(&lib, &pk).unwrap().name,
            "xen-sys.lib.xen_sys"
        );
        let not_test = test.replace(r#""test":true"#, r#""test":false"#);
        assert!(parse_artifact(&not_test, &pk).is_none());
        let no_exe = test.replace(
            r#""executable":"/w/target/debug/deps/version-0123""#,
            r#""executable":null"#,
        );
        assert!(parse_artifact(&no_exe, &pk).is_none());
        assert!(parse_artifact(r#"{"reason":"build-finished","success":true}"#, &pk).is_none());
        assert!(parse_artifact("not json", &pk).is_none());
    }
}
