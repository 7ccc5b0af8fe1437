//! xen-sys's Cargo features, derived from the area table: one feature per gated area, enabling
//! the features of the areas it uses, plus `all`. `cargo xtask bindgen --check` (and a unit test)
//! compares them with `xen-sys/Cargo.toml`'s `[features]`, so the table is the one source and
//! the manifest cannot drift from it.

use super::*;

/// The features the area table implies, in table order: (feature, features it enables), then
/// `all` (every area feature).
pub fn cargo_features() -> Vec<(String, Vec<String>)> {
    let feature_of = |name: &str| {
        AREAS
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.feature)
    };
    let mut out: Vec<(String, Vec<String>)> = AREAS
        .iter()
        .filter_map(|a| {
            let deps = a
                .deps
                .iter()
                .filter_map(|d| feature_of(d))
                .map(String::from);
            a.feature.map(|f| (f.to_string(), deps.collect()))
        })
        .collect();
    let all = out.iter().map(|(f, _)| f.clone()).collect();
    out.push(("all".to_string(), all));
    out
}

/// The `[features]` table of a Cargo manifest (`name = ["a", "b"]` lines, one per feature; the
/// form xen-sys's manifest uses), in file order.
fn manifest_features(manifest: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[features]";
            continue;
        }
        if !inside || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("[features]: cannot read `{line}`"))?;
        let list = value
            .trim()
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .ok_or_else(|| format!("[features]: `{line}` is not a one-line list"))?;
        let deps = list
            .split(',')
            .map(|d| d.trim().trim_matches('"'))
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect();
        out.push((name.trim().to_string(), deps));
    }
    Ok(out)
}

/// Features of the manifest that are not about areas.
const OTHER_FEATURES: &[&str] = &["default", "bindgen"];

/// Checks that `manifest` (xen-sys's `Cargo.toml`) declares exactly [`cargo_features`], besides
/// `default` and `bindgen`; the error lists the lines to write.
pub fn check_cargo_features(manifest: &str) -> Result<(), String> {
    let declared: Vec<_> = manifest_features(manifest)?
        .into_iter()
        .filter(|(name, _)| !OTHER_FEATURES.contains(&name.as_str()))
        .collect();
    let wanted = cargo_features();
    if declared == wanted {
        return Ok(());
    }
    let mut msg = String::from(
        "xen-sys/Cargo.toml's [features] differ from the area table in xen-sys/codegen/areas.rs; \
         the area features should read:\n",
    );
    for (name, deps) in &wanted {
        let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
        let _ = writeln!(msg, "{name} = [{}]", deps.join(", "));
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_sys_manifest_declares_the_area_features() {
        check_cargo_features(include_str!("../Cargo.toml")).unwrap();
    }

    #[test]
    fn a_missing_dependency_is_reported() {
        let manifest = include_str!("../Cargo.toml")
            .replace("dm_op = [\"event_channel\", \"hvm\"]", "dm_op = [\"hvm\"]");
        let err = check_cargo_features(&manifest).unwrap_err();
        assert!(
            err.contains("dm_op = [\"event_channel\", \"hvm\"]"),
            "{err}"
        );
    }
}
