//! `--check`: comparing committed files with a fresh generation, ignoring provenance.

use super::*;

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
    fn compare_ignores_provenance_only() {
        let a = format!("// x\n{PROVENANCE_PREFIX}tools: clang 14\npub const A: u32 = 1;\n");
        let b = format!("// x\n{PROVENANCE_PREFIX}tools: clang 15\npub const A: u32 = 1;\n");
        assert_eq!(compare(&a, &b), None);
        let c = b.replace("= 1", "= 2");
        let d = compare(&a, &c).unwrap();
        assert_eq!((d.first, d.removed, d.added), (2, 1, 1));
        assert_eq!(d.fresh, "pub const A: u32 = 2;");
    }
}
